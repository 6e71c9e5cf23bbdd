//! Exchange-partition replace and the throttle (`docs/sync.md#exchange`,
//! `docs/sync.md#throttling`), against MariaDB and its real replica.

use mysql::prelude::Queryable;
use partition_sync::runner::{Options, RunSummary};

use crate::helpers::*;

fn partitioned(extra: &str) -> String {
    format!("{extra}\n{STATS}mysql_partitioning = true\n")
}

fn exchanged(s: &RunSummary) -> usize {
    s.groups
        .iter()
        .flat_map(|g| g.tables.iter())
        .map(|t| t.partitions_exchanged)
        .sum()
}

fn shadows(f: &Fixture) -> Vec<String> {
    f.rows(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME LIKE 'sync\\_shadow\\_%'",
    )
}

fn watermark(f: &Fixture, partition: &str) -> Option<(i64, String)> {
    f.rows(&format!(
        "SELECT row_count, run_id FROM sync_partitions WHERE target_table = 'stats' AND partition_id = '{partition}'"
    ))
    .into_iter()
    .next()
}

#[tokio::test]
async fn a_changed_partition_is_loaded_in_chunks_and_exchanged_in() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02", "2026-01-03"], 5).await;
    let tables = partitioned("[partition_sync]\nchunk_rows = 2");
    // A dry run says how each would be replaced (the target does not exist yet).
    let dry = f
        .run(
            &tables,
            Options {
                dry_run: true,
                ..Options::default()
            },
        )
        .await;
    let how: Vec<Option<&str>> = dry.groups[0].plan.iter().map(|p| p.replace).collect();
    assert_eq!(how, vec![Some("exchange"); 3], "{dry:?}");
    let s = f.run(&tables, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(s.partitions_loaded, 3);
    // Each day is exactly one MySQL partition (gaps get their own): all three exchanged.
    assert_eq!(exchanged(&s), 3, "{s:?}");
    assert_eq!(count(&f, "stats"), 15);

    f.sql("DELETE FROM `{ds}.stats` WHERE day = DATE '2026-01-02' AND recipe_id > 3")
        .await;
    f.sql("UPDATE `{ds}.stats` SET views = 999 WHERE day = DATE '2026-01-02'")
        .await;
    let s = f.run(&tables, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!((s.partitions_loaded, exchanged(&s)), (1, 1), "{s:?}");
    assert_eq!((s.rows_loaded, s.rows_deleted), (3, 5), "{s:?}");
    let day2: Vec<(i64, i64)> =
        f.rows("SELECT recipe_id, views FROM stats WHERE day = '2026-01-02' ORDER BY recipe_id");
    assert_eq!(day2, vec![(1, 999), (2, 999), (3, 999)]);
    // The other days are untouched; the watermark is the run's; no shadow is left.
    assert_eq!(
        f.rows::<i64>("SELECT COUNT(*) FROM stats WHERE day <> '2026-01-02'"),
        vec![10]
    );
    assert_eq!(watermark(&f, "20260102"), Some((3, s.run_id.clone())));
    assert!(shadows(&f).is_empty());
    f.assert_in_sync(&tables).await;
    // Nothing changed: nothing loads.
    assert_eq!(
        f.run(&tables, Options::default()).await.partitions_loaded,
        0
    );
    // The rows replaced are the watermark's count; without a watermark they are counted.
    f.mysql()
        .query_drop("DELETE FROM sync_partitions WHERE partition_id = '20260102'")
        .unwrap();
    let s = f.run(&tables, Options::default()).await;
    assert_eq!(
        (exchanged(&s), s.rows_loaded, s.rows_deleted),
        (1, 3, 3),
        "{s:?}"
    );
}

#[tokio::test]
async fn replace_transaction_keeps_the_one_transaction_path() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02"], 3).await;
    let tables = partitioned("[partition_sync]\nreplace = \"transaction\"");
    let s = f.run(&tables, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!((s.partitions_loaded, exchanged(&s)), (2, 0));
    f.sql("UPDATE `{ds}.stats` SET views = 1 WHERE day = DATE '2026-01-01'")
        .await;
    let s = f.run(&tables, Options::default()).await;
    assert_eq!((s.partitions_loaded, exchanged(&s)), (1, 0), "{s:?}");
    f.assert_in_sync(&tables).await;
}

#[tokio::test]
async fn a_bad_row_in_a_later_chunk_leaves_the_partition_as_it_was() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02"], 6).await;
    let tables = partitioned("[partition_sync]\nchunk_rows = 2");
    assert!(f.run(&tables, Options::default()).await.ok);
    let before: Vec<(i64, i64)> =
        f.rows("SELECT recipe_id, views FROM stats WHERE day = '2026-01-02' ORDER BY recipe_id");
    let mark = watermark(&f, "20260102");
    // Row 5 of the day (chunk 3) can't be stored: `note` is VARCHAR(20) in MySQL.
    f.sql("UPDATE `{ds}.stats` SET views = views + 1 WHERE day = DATE '2026-01-02'")
        .await;
    f.sql("UPDATE `{ds}.stats` SET note = REPEAT('x', 30) WHERE day = DATE '2026-01-02' AND recipe_id = 5")
        .await;
    let s = f.run(&tables, Options::default()).await;
    assert!(!s.ok, "{s:?}");
    let err = s.groups[0].error.clone().unwrap_or_default();
    for part in ["stats", "20260102", "recipe_id=5", "note"] {
        assert!(err.contains(part), "error should name {part}: {err}");
    }
    let after: Vec<(i64, i64)> =
        f.rows("SELECT recipe_id, views FROM stats WHERE day = '2026-01-02' ORDER BY recipe_id");
    assert_eq!(after, before, "the partition must be as it was");
    assert_eq!(watermark(&f, "20260102"), mark);
    assert!(shadows(&f).is_empty(), "the failed shadow is dropped");
}

#[tokio::test]
async fn a_shadow_left_by_a_killed_run_is_replaced() {
    let f = stats_fixture(&["2026-01-01"], 4).await;
    let tables = partitioned("");
    assert!(f.run(&tables, Options::default()).await.ok);
    // What a run killed mid-load leaves: a half-filled shadow, the old watermark.
    f.mysql()
        .query_drop(
            "CREATE TABLE sync_shadow_stats LIKE stats; ALTER TABLE sync_shadow_stats REMOVE PARTITIONING; \
             INSERT INTO sync_shadow_stats SELECT * FROM stats LIMIT 2",
        )
        .unwrap();
    let interrupted = || async {
        let ctx = partition_sync::runner::Context::new(f.config(&tables))
            .await
            .unwrap();
        partition_sync::commands::status(&ctx, &Options::default())
            .await
            .unwrap()[0]
            .interrupted_exchange
            .clone()
    };
    assert_eq!(interrupted().await.as_deref(), Some("sync_shadow_stats"));
    f.sql("UPDATE `{ds}.stats` SET views = 5 WHERE TRUE").await;
    let s = f.run(&tables, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(exchanged(&s), 1);
    assert_eq!(interrupted().await, None);
    assert_eq!(f.rows::<i64>("SELECT DISTINCT views FROM stats"), vec![5]);
    assert_eq!(count(&f, "stats"), 4);
    assert!(shadows(&f).is_empty());
}

/// The config of a run watching the dev replica.
fn watched(extra: &str) -> String {
    partitioned(&format!(
        "[throttle]\nmax_replica_lag_secs = 1.0\nmax_pause_secs = 3\n{extra}\n\
         [[throttle.replicas]]\nname = \"dev-replica\"\nurl_file = \"{{replica}}\"\n"
    ))
}

#[tokio::test]
async fn the_load_waits_for_a_lagging_replica_and_goes_on_when_it_catches_up() {
    let f = fill_stats(
        Fixture::replicated().await,
        &["2026-01-01", "2026-01-02"],
        3,
    )
    .await;
    let tables = watched("").replace(
        "{replica}",
        &f.dir.join("replica-url").display().to_string(),
    );
    let s = f.run(&tables, Options::default()).await;
    assert!(s.ok, "{s:?}");
    let lag = s.replica_lag_max_seconds.get("dev-replica").copied();
    assert!(
        lag.is_some_and(|l| l < 1.0),
        "lag read on the replica: {s:?}"
    );
    f.db.wait_replicated();
    let mut replica = mysql::Conn::new(f.db.replica_url.as_str()).unwrap();
    assert_eq!(
        replica
            .query_first::<i64, _>("SELECT COUNT(*) FROM stats")
            .unwrap(),
        Some(6)
    );

    // A replica that stops applying: its heartbeat ages; the run pauses, then gives up
    // (transient) with the target unchanged.
    f.sql("UPDATE `{ds}.stats` SET views = 77 WHERE TRUE").await;
    let _stopped = StoppedReplica::new();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let s = f.run(&tables, Options::default()).await;
    assert!(!s.ok, "{s:?}");
    let err = s.groups[0].error.clone().unwrap_or_default();
    assert!(err.contains("dev-replica") && err.contains("lag"), "{err}");
    assert!(
        s.throttled_seconds
            .get("replica_lag")
            .is_some_and(|t| *t >= 2.0),
        "{s:?}"
    );
    assert_eq!(
        f.rows::<i64>("SELECT COUNT(*) FROM stats WHERE views = 77"),
        vec![0]
    );
    drop(_stopped);

    let s = f.run(&tables, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(
        f.rows::<i64>("SELECT COUNT(*) FROM stats WHERE views = 77"),
        vec![6]
    );
}

/// Stops the dev replica's SQL thread until dropped. The replica is shared: only this test
/// stops it.
struct StoppedReplica(mysql::Conn);

impl StoppedReplica {
    fn new() -> StoppedReplica {
        let url = test_support::dev_env().mysql_replica_url;
        let mut c = mysql::Conn::new(url.as_str()).unwrap();
        c.query_drop("STOP SLAVE SQL_THREAD").unwrap();
        StoppedReplica(c)
    }
}

impl Drop for StoppedReplica {
    fn drop(&mut self) {
        let _ = self.0.query_drop("START SLAVE SQL_THREAD");
    }
}

#[tokio::test]
async fn a_busy_primary_pauses_the_load() {
    let f = stats_fixture(&["2026-01-01"], 3).await;
    // Five statements running for 4 s put the server over the limit.
    let busy = test_support::BusyPrimary::start(&f.db.url, 4);
    let tables = partitioned(&format!(
        "[throttle]\nmax_threads_running = {}\nmax_pause_secs = 120",
        busy.max_threads_running
    ));
    let s = f.run(&tables, Options::default()).await;
    busy.join();
    assert!(s.ok, "{s:?}");
    assert!(
        s.throttled_seconds
            .get("threads_running")
            .is_some_and(|t| *t > 0.0),
        "{s:?}"
    );
    assert_eq!(count(&f, "stats"), 3);
}

#[tokio::test]
async fn a_pause_that_reaches_the_runs_deadline_leaves_the_batch_for_the_next_run() {
    let f = stats_fixture(&["2026-01-01"], 3).await;
    // Five statements running for 20 s keep the server over a limit of 2 long past the
    // run's 5 s (a fixed limit: another test's busy statements may end meanwhile).
    let busy = test_support::BusyPrimary::start(&f.db.url, 20);
    let busy_config = partitioned("[throttle]\nmax_threads_running = 2\nmax_pause_secs = 600");
    let bounded = || Options {
        max_run_secs: Some(5),
        ..Options::default()
    };
    let s = f.run(&busy_config, bounded()).await;
    // The run stopped pausing at its deadline, not when MySQL quietened down.
    assert!(busy.running(), "the run waited out the busy server: {s:?}");
    assert!(s.ok, "{s:?}");
    assert_eq!((s.partitions_loaded, s.partitions_pending), (0, 1), "{s:?}");
    assert_eq!(s.groups[0].status, "partial", "{s:?}");
    assert!(
        s.throttled_seconds
            .get("threads_running")
            .is_some_and(|t| *t > 0.0),
        "{s:?}"
    );
    assert!(watermark(&f, "20260101").is_none());
    assert!(shadows(&f).is_empty());
    busy.join();

    let s = f.run(&partitioned(""), bounded()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!((s.partitions_loaded, s.partitions_pending), (1, 0), "{s:?}");
    assert_eq!(count(&f, "stats"), 3);
}

#[tokio::test]
async fn a_bad_row_in_a_later_exchange_keeps_the_earlier_one_and_reports_it() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02"], 3).await;
    let tables = partitioned("");
    assert_eq!(exchanged(&f.run(&tables, Options::default()).await), 2);
    f.sql("UPDATE `{ds}.stats` SET views = 500 WHERE day = DATE '2026-01-01'")
        .await;
    f.sql("UPDATE `{ds}.stats` SET views = 500, note = 'this note is much too long for twenty' WHERE recipe_id = 2 AND day = DATE '2026-01-02'").await;
    let s = f.run(&tables, Options::default()).await;
    assert!(!s.ok, "{s:?}");
    let g = &s.groups[0];
    assert_eq!(g.error_kind, Some("bad_row"), "{s:?}");
    assert!(g
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("partition 20260102"));
    // The first day was swapped in before the bad row was met, and counts as loaded.
    assert_eq!(
        (
            g.tables[0].partitions_loaded,
            g.tables[0].partitions_exchanged
        ),
        (1, 1),
        "{s:?}"
    );
    assert_eq!(
        f.rows::<(String, i64)>(
            "SELECT CAST(day AS CHAR), MAX(views) FROM stats GROUP BY day ORDER BY day"
        ),
        vec![("2026-01-01".into(), 500), ("2026-01-02".into(), 30)]
    );
    assert_eq!(
        watermark(&f, "20260101").map(|w| w.1),
        Some(s.run_id.clone())
    );
    assert!(shadows(&f).is_empty());
}
