//! `make bench-stream-scale`: does stream-sync's memory follow the change or the table? Two
//! tables in the BigQuery emulator, BENCH_ROWS rows (default 250,000) and 4x that, each synced
//! to MariaDB, then 0.01% of its rows changed (one in BENCH_CHANGE_PER, default 10,000); a fresh `stream-sync run --once` process (the
//! release binary, as a pod starts) syncs the change while its peak resident memory (VmHWM)
//! is sampled every 20 ms. Prints, for the checks that read it:
//!
//!   peak_rss_mib_1x: A
//!   peak_rss_mib_4x: B
//!
//! Service URLs come from the environment (`.dev/env`, loaded by make).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use domain::config::SyncConfig;
use stream_sync::runner::Mode;

mod bench_common;
use bench_common::{bench_runner, env, table_sql, Change, Place};

/// The stream-sync release binary, next to this example's directory.
fn stream_sync_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("stream-sync")
}

/// Peak resident memory (VmHWM, KiB) of a running process, if it still runs.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Case {
    rows: i64,
    changed: i64,
    peak_mib: f64,
    secs: f64,
    log: String,
}

async fn case(label: &str, rows: i64, bq_url: &str, project: &str, mysql_server: &str) -> Case {
    let tag = format!("bench_scale_{label}_{}", std::process::id());
    let place = Place::create(&tag, bq_url, project, mysql_server).await;
    let mysql_url = place.mysql_url.clone();
    for sql in table_sql(rows, "") {
        place.bq(&sql).await;
    }
    let dir = std::env::temp_dir().join(&tag);
    std::fs::create_dir_all(&dir).unwrap();
    let config_text = format!(
        "[mysql]\nurl_env = \"BENCH_SCALE_MYSQL_URL\"\n[warehouse]\nproject = \"{project}\"\ndataset = \"{tag}\"\n\
         endpoint = \"{bq_url}\"\ncredentials = \"none\"\nchange_detection = \"fingerprint\"\n\
         [stream_sync]\nbuckets = 1024\n\
         [[tables]]\nsource = \"bench\"\ntarget = \"bench\"\nmode = \"stream\"\nprimary_key = [\"id\"]\n"
    );
    let config_path = dir.join("sync.toml");
    std::fs::write(&config_path, &config_text).unwrap();
    // The initial load, in this process (its memory is not what is measured).
    let config = SyncConfig::parse(&config_text, "bench").unwrap();
    let mut runner = bench_runner(&config, &mysql_url).await;
    let out = runner.run(Mode::Once { max_attempts: 3 }).await;
    assert!(out.iter().all(|o| o.error.is_none()), "initial load failed");
    drop(runner);

    // 0.01% of the rows: half updated, a quarter deleted, a quarter inserted.
    // One row in BENCH_CHANGE_PER (default 10,000: 0.01%).
    let per: i64 = env("BENCH_CHANGE_PER", Some("10000")).parse().unwrap();
    let change = Change::per(rows, per);
    for sql in change.sql(0) {
        place.bq(&sql).await;
    }

    // The change, synced by a fresh process.
    let started = Instant::now();
    let mut child = Command::new(stream_sync_bin())
        .args(["--config", config_path.to_str().unwrap(), "run", "--once"])
        .env("BENCH_SCALE_MYSQL_URL", &mysql_url)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the stream-sync release binary (cargo build --release -p stream-sync)");
    let pid = child.id();
    let mut peak_kib = 0;
    while child.try_wait().unwrap().is_none() {
        if let Some(k) = vm_hwm_kib(pid) {
            peak_kib = peak_kib.max(k);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "stream-sync run --once failed");
    let log = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.contains("cycle done"))
        .collect::<Vec<_>>()
        .join("\n");

    place.remove().await;
    let _ = std::fs::remove_dir_all(&dir);
    Case {
        rows,
        changed: change.total(),
        peak_mib: peak_kib as f64 / 1024.0,
        secs,
        log,
    }
}

#[tokio::main]
async fn main() {
    let rows: i64 = env("BENCH_ROWS", Some("250000")).parse().unwrap();
    let bq_url = env("BIGQUERY_URL", None);
    let project = env("BIGQUERY_PROJECT", None);
    let mysql_server = env("MYSQL_URL", None);
    let per: i64 = env("BENCH_CHANGE_PER", Some("10000")).parse().unwrap();
    let share = 100.0 / per as f64;
    println!("stream-sync memory at scale: {rows} rows and 4x, {share}% changed, a fresh `run --once` process each");
    let one = case("1x", rows, &bq_url, &project, &mysql_server).await;
    let four = case("4x", 4 * rows, &bq_url, &project, &mysql_server).await;
    for (label, c) in [("1x", &one), ("4x", &four)] {
        println!(
            "{label}: {} rows, the {share}% change ({} rows) synced in {:.2} s, peak RSS {:.1} MiB",
            c.rows, c.changed, c.secs, c.peak_mib
        );
        println!("    {}", c.log);
    }
    println!("peak_rss_mib_1x: {:.1}", one.peak_mib);
    println!("peak_rss_mib_4x: {:.1}", four.peak_mib);
}
