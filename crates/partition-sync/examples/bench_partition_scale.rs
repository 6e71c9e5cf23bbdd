//! `make bench-partition-scale`: does a backlog larger than one run converge under a deadline?
//! A DAY-partitioned warehouse table with two years of partitions (BENCH_BACKLOG_DAYS, default
//! 730; BENCH_BACKLOG_ROWS_PER_DAY rows each, default 50) in the BigQuery emulator, none yet in
//! MariaDB; partition-sync runs again and again (in this process, as the CronJob would start
//! it), each run under a deadline D (BENCH_BACKLOG_DEADLINE_S, default 15) with
//! `max_run_secs` = D / 3 (room for the batch in flight, as the CronJob keeps 300 s) and
//! batches of `max_batch_partitions` = 25, until nothing is pending. Prints, for the checks
//! that read them:
//!
//!   backlog_converged: yes|no
//!   backlog_run_max_s: X
//!   backlog_deadline_s: D
//!
//! `backlog_converged` is yes when the last run left nothing pending, every run succeeded
//! and MariaDB holds every warehouse row. The exchange-partition and replica-lag figures come
//! from `bench_replace`, which the make target runs first. A benchmark: it asserts nothing
//! about time.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use partition_sync::runner::{self, Context, Options};
use test_support::SyncFixture;

#[path = "common/mod.rs"]
mod common;
use common::setting;

#[tokio::main]
async fn main() {
    let days = setting("BENCH_BACKLOG_DAYS", 730);
    let per_day = setting("BENCH_BACKLOG_ROWS_PER_DAY", 50);
    let deadline = setting("BENCH_BACKLOG_DEADLINE_S", 15);
    let max_run_secs = (deadline / 3).max(1);

    let f = SyncFixture::new().await;
    let mut id = TableFieldSchema::integer("recipe_id");
    id.mode = Some("REQUIRED".into());
    let mut day_field = TableFieldSchema::date("day");
    day_field.mode = Some("REQUIRED".into());
    f.create_table(
        "stats",
        vec![id, day_field, TableFieldSchema::integer("views")],
        Some("day"),
    )
    .await;
    let first = day(0);
    let mut rows = Vec::new();
    for d in 0..days {
        let date = day(d);
        for r in 0..per_day {
            rows.push(serde_json::json!({"recipe_id": r, "day": date, "views": d * r}));
            if rows.len() == 5_000 {
                f.insert("stats", std::mem::take(&mut rows)).await;
            }
        }
    }
    if !rows.is_empty() {
        f.insert("stats", rows).await;
    }
    let total = days * per_day;
    println!(
        "partition-sync backlog: {days} daily partitions from {first} ({total} rows), deadline {deadline} s per run \
         (max_run_secs {max_run_secs}, batches of 25 partitions)"
    );

    let tables = format!(
        "[partition_sync]\nmax_batch_partitions = 25\nmax_run_secs = {max_run_secs}\n\
         [[tables]]\nsource = \"stats\"\ntarget = \"stats\"\nmode = \"partition\"\n\
         partition_column = \"day\"\nprimary_key = [\"recipe_id\", \"day\"]\n"
    );
    let config = f.config(Some("json"), &tables);
    let (mut runs, mut run_max_s, mut all_s, mut all_ok) = (0, 0f64, 0f64, true);
    let mut pending = usize::MAX;
    while pending > 0 && runs < 200 {
        let started = Instant::now();
        let ctx = Context::new(config.clone()).await.unwrap();
        let summary = runner::run(&ctx, &Options::default(), Arc::new(|_| {}))
            .await
            .unwrap();
        let secs = started.elapsed().as_secs_f64();
        runs += 1;
        run_max_s = run_max_s.max(secs);
        all_s += secs;
        all_ok &= summary.ok;
        pending = summary.partitions_pending;
        println!(
            "run {runs}: {:.2} s, {} partitions loaded, {} pending{}",
            secs,
            summary.partitions_loaded,
            pending,
            if summary.ok { "" } else { ", FAILED" }
        );
        if !summary.ok {
            break;
        }
    }
    let loaded = f.mysql_count("stats").unwrap_or(0);
    // Converged: nothing pending, every run succeeded within the deadline, every row there.
    let converged = pending == 0 && all_ok && loaded == total && run_max_s <= deadline as f64;
    println!(
        "{runs} runs, {all_s:.1} s in all (one run without a deadline would need about that), \
         {loaded} of {total} rows in MariaDB"
    );
    println!(
        "backlog_converged: {}",
        if converged { "yes" } else { "no" }
    );
    println!("backlog_run_max_s: {run_max_s:.2}");
    println!("backlog_deadline_s: {deadline}");
}

/// The date `offset` days after 2024-01-01, as `YYYY-MM-DD`.
fn day(offset: u64) -> String {
    (chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Days::new(offset)).to_string()
}
