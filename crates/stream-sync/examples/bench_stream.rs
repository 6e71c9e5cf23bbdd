//! `make bench-stream`: a table of BENCH_ROWS rows (default 1,000,000) in the BigQuery
//! emulator, synced to MariaDB: a full reload, a no-change cycle, and a cycle after changing
//! 0.1% of the rows (updates, inserts and deletes). Prints time, warehouse rows fetched
//! (bucket digests, IBLT cells, keys, full rows) and MySQL rows written per case and the
//! ratios to the full reload. The same 0.1% change is then also applied from BigQuery's change
//! history (`change_detection = "changes"`, one `CHANGES` query; the emulator's history is aged
//! past BigQuery's 10-minute delay), to compare with the IBLT path. BENCH_BUCKETS sets the
//! bucket count (default 1024).
//! Service URLs come from the environment (`.dev/env`, loaded by make).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Instant;

use domain::config::SyncConfig;
use stream_sync::cycle::CycleReport;

mod bench_common;
use bench_common::{bench_runner, env, table_sql, Change, Place};
use stream_sync::runner::{Mode, Runner};

async fn cycle(runner: &mut Runner) -> (CycleReport, f64) {
    let t = Instant::now();
    let out = runner.run(Mode::Once { max_attempts: 3 }).await;
    let secs = t.elapsed().as_secs_f64();
    let o = out.into_iter().next().expect("one table");
    if let Some((kind, e)) = o.error {
        panic!("cycle failed ({kind:?}): {e}");
    }
    (o.report, secs)
}

/// The benchmark's config (fingerprint detection: every cycle diffs).
fn config_text(project: &str, tag: &str, bq_url: &str, buckets: u32) -> String {
    format!(
        "[mysql]\nurl_env = \"UNUSED\"\n[warehouse]\nproject = \"{project}\"\ndataset = \"{tag}\"\n\
         endpoint = \"{bq_url}\"\ncredentials = \"none\"\nchange_detection = \"fingerprint\"\n\
         [stream_sync]\nbuckets = {buckets}\n\
         [[tables]]\nsource = \"bench\"\ntarget = \"bench\"\nmode = \"stream\"\nprimary_key = [\"id\"]\n"
    )
}

#[tokio::main]
async fn main() {
    let rows: i64 = env("BENCH_ROWS", Some("1000000")).parse().unwrap();
    let buckets: u32 = env("BENCH_BUCKETS", Some("1024")).parse().unwrap();
    let bq_url = env("BIGQUERY_URL", None);
    let project = env("BIGQUERY_PROJECT", None);
    let mysql_server = env("MYSQL_URL", None);
    let tag = format!("bench_{}", std::process::id());

    let place = Place::create(&tag, &bq_url, &project, &mysql_server).await;
    let mysql_url = place.mysql_url.clone();
    println!("stream-sync benchmark: {rows} rows, {buckets} buckets (emulator + MariaDB)");
    let t = Instant::now();
    for sql in table_sql(rows, "OPTIONS (enable_change_history = TRUE)") {
        place.bq(&sql).await;
    }
    println!(
        "loaded the warehouse table in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let emu = test_support::Emulator::new(&test_support::dev_env());
    // Loaded a while ago: outside the change history's clock-skew margin.
    emu.age(&tag, "bench", std::time::Duration::from_secs(300))
        .await;

    let config =
        SyncConfig::parse(&config_text(&project, &tag, &bq_url, buckets), "bench").unwrap();
    let mut runner = bench_runner(&config, &mysql_url).await;

    let (full, full_s) = cycle(&mut runner).await;
    let (idle, idle_s) = cycle(&mut runner).await;
    drop(runner); // its session holds the table's advisory lock

    // 0.1% of the rows: half updated, a quarter deleted, a quarter inserted. Two rounds on
    // different rows: one applied from the change history, one through the IBLT path.
    let change = Change::per(rows, 1000);
    let apply_change = |round: i64| {
        let place = &place;
        let statements = change.sql(round);
        async move {
            for sql in statements {
                place.bq(&sql).await;
            }
        }
    };

    // The change-history runner: its first cycle is a full diff (nothing differs), where
    // its history starts; the change, then its window, as if BigQuery's 10-minute delay had
    // passed.
    let history_config = SyncConfig::parse(
        &config_text(&project, &tag, &bq_url, buckets).replace("\"fingerprint\"", "\"changes\""),
        "bench",
    )
    .unwrap();
    let mut history = bench_runner(&history_config, &mysql_url).await;
    cycle(&mut history).await;
    apply_change(0).await;
    let age = std::time::Duration::from_secs(20 * 60);
    emu.age(&tag, "bench", age).await;
    history.age_history(age);
    let (hist, hist_s) = cycle(&mut history).await;
    assert!(hist.history.is_some(), "a history cycle: {hist:?}");
    drop(history);

    // The same size of change through the IBLT path (fingerprint detection: no history).
    let mut runner = bench_runner(&config, &mysql_url).await;
    apply_change(1).await;
    let (delta, delta_s) = cycle(&mut runner).await;

    let fetched = |r: &CycleReport| {
        r.fetch.digest_rows + r.fetch.cell_rows + r.fetch.key_rows + r.fetch.full_rows
    };
    println!();
    println!(
        "{:<16} {:>9} {:>8} {:>12} {:>10} {:>10} {:>12} {:>10} {:>10} {:>10}",
        "case",
        "time_s",
        "queries",
        "digest_rows",
        "iblt_cells",
        "key_rows",
        "full_rows",
        "written",
        "time/full",
        "rows/full"
    );
    for (name, r, s) in [
        ("full reload", &full, full_s),
        ("no change", &idle, idle_s),
        ("0.1% changed", &delta, delta_s),
        ("0.1% (history)", &hist, hist_s),
    ] {
        println!(
            "{:<16} {:>9.2} {:>8} {:>12} {:>10} {:>10} {:>12} {:>10} {:>9.2}% {:>9.2}%",
            name,
            s,
            r.fetch.queries,
            r.fetch.digest_rows,
            r.fetch.cell_rows,
            r.fetch.key_rows,
            r.fetch.full_rows,
            r.rows_written(),
            100.0 * s / full_s,
            100.0 * fetched(r) as f64 / fetched(&full).max(1) as f64
        );
    }
    println!();
    println!(
        "0.1% cycle: {} changed rows ({} updates, {} inserts, {} deletes), {} buckets differed; \
         full rows fetched = {:.3}% of the table, all warehouse rows read (digests + IBLT cells + keys + rows) = {:.2}% of the table",
        change.total(),
        delta.updates,
        delta.inserts,
        delta.deleted,
        delta.buckets_differing,
        100.0 * delta.fetch.full_rows as f64 / rows as f64,
        100.0 * fetched(&delta) as f64 / rows as f64
    );

    println!(
        "0.1% cycle from the change history vs the IBLT path: {:.2} s vs {:.2} s ({:.0}%), warehouse rows read {} vs {} ({:.0}%), queries {} vs {}",
        hist_s,
        delta_s,
        100.0 * hist_s / delta_s,
        fetched(&hist),
        fetched(&delta),
        100.0 * fetched(&hist) as f64 / fetched(&delta).max(1) as f64,
        hist.fetch.queries,
        delta.fetch.queries
    );

    place.remove().await;
}
