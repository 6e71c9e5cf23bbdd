//! `make bench-sync`: loads one 1,000,000-row partition shaped like `recipe_daily_stats` from
//! staged NDJSON files into MariaDB through partition-sync's loader, and in the same run loads
//! the same rows with `LOAD DATA LOCAL INFILE` through the mariadb client into an identical
//! table. Prints rows/s of both, their ratio and the loader's peak resident memory.
//! A benchmark, not a test: it asserts nothing about time.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use mysql::prelude::Queryable;
use partition_sync::load::{self, PartitionLoad, TableWork};
use partition_sync::plan::{Reason, SourcePartition};

#[path = "common/mod.rs"]
mod common;

use common::{mariadb, setting, stage_day, stats_ddl, stats_source, vm_hwm_kib};

fn main() {
    let rows: u64 = setting("BENCH_ROWS", 1_000_000);
    let per_file: u64 = 100_000;
    let env = test_support::dev_env();
    let dir = std::env::temp_dir().join(format!("bench-sync-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();

    // Staged files as the warehouse exports them (canonical NDJSON), and a TSV of the same rows.
    let started = Instant::now();
    let (files, tsv_path) = stage_day(&dir, "2026-01-01", rows, per_file);
    println!(
        "generated {rows} rows in {} files in {:.1}s",
        files.len(),
        started.elapsed().as_secs_f64()
    );

    let db = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sync_engine::session::connect(&env.mysql_url).unwrap();
    admin.query_drop(format!("CREATE DATABASE `{db}`")).unwrap();
    let url = format!("{}/{db}", env.mysql_url);

    let table = stats_source(false);
    let ddl = |name: &str| stats_ddl(name, "");
    let mut conn = sync_engine::session::connect(&url).unwrap();
    sync_engine::session::ensure_state_tables(&mut conn).unwrap();
    conn.query_drop(ddl("recipe_daily_stats")).unwrap();
    conn.query_drop(ddl("baseline")).unwrap();

    // Baseline: LOAD DATA LOCAL INFILE through the mariadb client, same rows, same table shape.
    // Returns the seconds it took.
    let load_data = |tsv: &std::path::Path, table: &str| -> f64 {
        let t = Instant::now();
        mariadb(
            &env.mysql_url,
            &db,
            &format!(
                "SET time_zone='+00:00'; START TRANSACTION; {}; COMMIT;",
                common::load_tsv_sql(tsv, table)
            ),
        );
        t.elapsed().as_secs_f64()
    };
    let baseline_secs = load_data(&tsv_path, "baseline");

    // partition-sync's loader from the staged files.
    let store: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&dir).unwrap());
    let work = vec![TableWork {
        table,
        loads: vec![PartitionLoad {
            partition: SourcePartition {
                id: "20260101".into(),
                rows: rows as i64,
                modified_micros: None,
                fingerprint: Some(1),
            },
            reason: Reason::New,
            files,
            synced_rows: None,
        }],
        vanished: vec![],
    }];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let loader = if std::env::var("BENCH_LOADER").as_deref() == Ok("insert") {
        domain::config::Loader::Insert
    } else {
        domain::config::Loader::Auto
    };
    let hwm_before = vm_hwm_kib();
    let t = Instant::now();
    let outcome = std::thread::spawn(move || {
        load::load_group(&mut conn, &store, &handle, "bench", &work, loader, &|_| {})
    })
    .join()
    .unwrap()
    .unwrap();
    let ours_secs = t.elapsed().as_secs_f64();
    assert_eq!(outcome[0].rows_loaded, rows);
    let mut check = sync_engine::session::connect(&url).unwrap();
    let n: Vec<(u64, u64)> = check
        .query("SELECT (SELECT COUNT(*) FROM recipe_daily_stats), (SELECT COUNT(*) FROM baseline)")
        .unwrap();
    assert_eq!(n[0], (rows, rows));

    let loader_peak_kib = vm_hwm_kib();
    let ours = rows as f64 / ours_secs;
    let base = rows as f64 / baseline_secs;
    println!();
    println!(
        "{:<42} {:>12} {:>10}",
        "loader (1 partition, one transaction)", "rows/s", "seconds"
    );
    println!(
        "{:<42} {:>12.0} {:>10.2}",
        format!("partition-sync ({loader:?} loader)"),
        ours,
        ours_secs
    );
    println!(
        "{:<42} {:>12.0} {:>10.2}",
        "LOAD DATA LOCAL INFILE (mariadb client)", base, baseline_secs
    );
    println!("ratio partition-sync / LOAD DATA: {:.2}x", ours / base);

    // Why exports are ordered by primary key (docs/sync.md#export): the same LOAD DATA of the
    // same rows in a random order.
    let text = std::fs::read_to_string(&tsv_path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    for i in (1..lines.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        lines.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let shuffled = dir.join("shuffled.tsv");
    std::fs::write(&shuffled, lines.join("\n") + "\n").unwrap();
    drop(text);
    check.query_drop(ddl("shuffled")).unwrap();
    let shuffled_secs = load_data(&shuffled, "shuffled");
    println!(
        "{:<42} {:>12.0} {:>10.2}",
        "  the same rows in random order",
        rows as f64 / shuffled_secs,
        shuffled_secs
    );
    println!(
        "primary-key order vs random order (LOAD DATA): {:.2}x",
        shuffled_secs / baseline_secs
    );
    println!(
        "peak resident memory of the loader process: {} MiB (before the load: {} MiB)",
        loader_peak_kib / 1024,
        hwm_before / 1024
    );

    admin.query_drop(format!("DROP DATABASE `{db}`")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
