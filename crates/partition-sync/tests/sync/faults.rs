//! partition-sync's fault policy (docs/architecture.md#error-handling) against BigQuery's own
//! failures, injected by the emulator (docs/emulator.md#faults): transient ones are retried
//! and the run succeeds; one that outlasts the retries fails the group as `warehouse`, and
//! MySQL and the watermarks stay as they were.

use partition_sync::runner::Options;
use test_support::Emulator;

use crate::helpers::*;

#[tokio::test]
async fn transient_bigquery_faults_are_retried_and_the_run_succeeds() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02"], 2).await;
    let emu = Emulator::new(&f.ds.env);
    let ds = &f.ds.dataset;
    let faults = [
        ("rateLimitExceeded", format!("(?s)EXPORT DATA.*{ds}")),
        ("quotaExceeded", format!("(?s)EXPORT DATA.*{ds}")),
        (
            "backendError",
            format!("(?s)FARM_FINGERPRINT.*{ds}|{ds}.INFORMATION_SCHEMA"),
        ),
        (
            "reset",
            format!("(?s)FARM_FINGERPRINT.*{ds}|{ds}.INFORMATION_SCHEMA"),
        ),
        (
            "empty_page",
            format!("(?s)FARM_FINGERPRINT.*{ds}|{ds}.INFORMATION_SCHEMA"),
        ),
        ("unavailable", format!("(?s)EXPORT DATA.*{ds}")),
    ];
    for (kind, sql) in &faults {
        emu.fault_on_sql(kind, sql, 1).await;
    }
    let s = f.run(STATS, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(count(&f, "stats"), 4);
    for (_, sql) in &faults {
        assert!(emu.fault_hits(sql).await >= 1, "fault on {sql} never hit");
    }
}

#[tokio::test]
async fn a_bigquery_fault_that_outlasts_the_retries_fails_the_group_and_changes_nothing() {
    let f = stats_fixture(&["2026-01-01"], 2).await;
    assert!(f.run(STATS, Options::default()).await.ok);
    f.sql("UPDATE `{ds}.stats` SET views = 7 WHERE recipe_id = 1")
        .await;
    let emu = Emulator::new(&f.ds.env);
    // Five attempts per warehouse call: all five fail.
    let sql = format!("(?s)EXPORT DATA.*{}", f.ds.dataset);
    emu.fault_on_sql("backendError", &sql, 5).await;
    let s = f.run(STATS, Options::default()).await;
    assert!(!s.ok);
    assert_eq!(s.groups[0].error_kind, Some("warehouse"), "{s:?}");
    let error = s.groups[0].error.clone().unwrap();
    assert!(error.contains("stats"), "{error}");
    assert_eq!(
        f.rows::<i64>("SELECT views FROM stats WHERE recipe_id = 1"),
        vec![10],
        "MySQL unchanged"
    );
    assert_eq!(emu.fault_hits(&sql).await, 5);
    // The next run, without the fault, catches up.
    assert!(f.run(STATS, Options::default()).await.ok);
    assert_eq!(
        f.rows::<i64>("SELECT views FROM stats WHERE recipe_id = 1"),
        vec![7]
    );
}
