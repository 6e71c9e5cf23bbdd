//! Bad rows, schema drift, an unreachable warehouse and a locked group: clear errors that
//! name what failed, and MySQL left exactly as it was.

use mysql::prelude::Queryable;
use partition_sync::runner::Options;

use crate::helpers::*;

type Snapshot = (Vec<(i64, String, i64)>, Vec<(String, i64, Option<i64>)>);

fn snapshot(f: &Fixture) -> Snapshot {
    (
        f.rows("SELECT recipe_id, CAST(day AS CHAR), views FROM stats ORDER BY recipe_id, day"),
        f.rows("SELECT partition_id, row_count, fingerprint FROM sync_partitions ORDER BY partition_id"),
    )
}

#[tokio::test]
async fn bad_rows_fail_their_group_with_table_partition_key_and_column_and_change_nothing() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02"], 2).await;
    assert!(f.run(STATS, Options::default()).await.ok);
    let before = snapshot(&f);

    // A string longer than its VARCHAR(20).
    f.sql("UPDATE `{ds}.stats` SET note = 'this note is much too long for twenty' WHERE recipe_id = 2 AND day = DATE '2026-01-02'").await;
    let s = f.run(STATS, Options::default()).await;
    assert!(!s.ok);
    let err = s.groups[0].error.clone().unwrap();
    for part in [
        "table stats",
        "partition 20260102",
        "recipe_id=2",
        "day=2026-01-02",
        "column note",
        "VARCHAR(20)",
    ] {
        assert!(err.contains(part), "`{part}` missing in: {err}");
    }
    assert_eq!(s.groups[0].error_kind, Some("bad_row"));
    assert_eq!(snapshot(&f), before);
    assert!(
        staged_files(&f).is_empty(),
        "a failed run left staging files: {:?}",
        staged_files(&f)
    );
}

#[tokio::test]
async fn a_bad_row_fails_its_partition_and_the_rest_of_the_batch_loads() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02", "2026-01-03"], 2).await;
    assert!(f.run(STATS, Options::default()).await.ok);
    let watermark = |f: &Fixture, pid: &str| -> Vec<(i64, Option<i64>)> {
        f.rows(&format!(
            "SELECT row_count, fingerprint FROM sync_partitions WHERE partition_id = '{pid}'"
        ))
    };
    let old_0102 = watermark(&f, "20260102");
    // Three changed partitions in one batch; the middle one has a bad row.
    f.sql("UPDATE `{ds}.stats` SET views = views + 100 WHERE day IN (DATE '2026-01-01', DATE '2026-01-03')")
        .await;
    f.sql("UPDATE `{ds}.stats` SET note = 'this note is much too long for twenty', views = views + 100 WHERE recipe_id = 2 AND day = DATE '2026-01-02'").await;
    let s = f.run(STATS, Options::default()).await;
    assert!(!s.ok, "{s:?}");
    let g = &s.groups[0];
    assert_eq!((g.status, g.error_kind), ("failed", Some("bad_row")));
    let err = g.error.clone().unwrap();
    assert!(
        err.contains("partition 20260102") && err.contains("column note"),
        "{err}"
    );
    assert_eq!(g.tables[0].partitions_loaded, 2, "{s:?}");
    // The good partitions are in, the bad one is as it was (rows and watermark).
    let views: Vec<(String, i64)> =
        f.rows("SELECT CAST(day AS CHAR), SUM(views) FROM stats GROUP BY day ORDER BY day");
    let before: Vec<i64> = views.iter().map(|(_, v)| *v).collect();
    assert!(before[0] >= 200 && before[2] >= 200, "{views:?}");
    assert!(before[1] < 200, "the bad partition changed: {views:?}");
    assert_eq!(watermark(&f, "20260102"), old_0102);

    // Repaired in the warehouse: the next run loads only that partition.
    f.sql("UPDATE `{ds}.stats` SET note = 'short' WHERE recipe_id = 2 AND day = DATE '2026-01-02'")
        .await;
    let s = f.run(STATS, Options::default()).await;
    assert!(s.ok, "{s:?}");
    let planned: Vec<&str> = s.groups[0]
        .plan
        .iter()
        .map(|p| p.partition.as_str())
        .collect();
    assert_eq!(planned, vec!["20260102"]);
    f.assert_in_sync(STATS).await;
}

#[tokio::test]
async fn null_into_not_null_and_out_of_range_numbers_are_named() {
    let f = stats_fixture(&["2026-01-01"], 3).await;
    // The target exists with tighter columns than the warehouse's.
    f.mysql()
        .query_drop(
            "CREATE TABLE stats (recipe_id BIGINT NOT NULL, day DATE NOT NULL, views BIGINT UNSIGNED NOT NULL, rating DOUBLE, \
             note VARCHAR(20), updated DATETIME(6), PRIMARY KEY (recipe_id, day))",
        )
        .unwrap();
    f.sql("UPDATE `{ds}.stats` SET views = NULL WHERE recipe_id = 3")
        .await;
    let s = f.run(STATS, Options::default()).await;
    let err = s.groups[0].error.clone().unwrap();
    for part in [
        "table stats",
        "partition 20260101",
        "recipe_id=3",
        "column views",
        "NOT NULL",
    ] {
        assert!(err.contains(part), "`{part}` missing in: {err}");
    }
    assert_eq!(count(&f, "stats"), 0);

    f.sql("UPDATE `{ds}.stats` SET views = -5 WHERE recipe_id = 3")
        .await;
    let s = f.run(STATS, Options::default()).await;
    let err = s.groups[0].error.clone().unwrap();
    for part in [
        "table stats",
        "partition 20260101",
        "recipe_id=3",
        "column views",
        "Out of range",
    ] {
        assert!(err.contains(part), "`{part}` missing in: {err}");
    }
    assert_eq!(count(&f, "stats"), 0);
    assert_eq!(f.rows::<i64>("SELECT COUNT(*) FROM sync_partitions")[0], 0);
}

#[tokio::test]
async fn schema_drift_stops_the_table_naming_each_column() {
    let f = stats_fixture(&["2026-01-01"], 1).await;
    f.mysql().query_drop("CREATE TABLE stats (recipe_id BIGINT, day DATE, views VARCHAR(10), rating DOUBLE, extra INT NOT NULL)").unwrap();
    let s = f.run(STATS, Options::default()).await;
    assert!(!s.ok);
    let err = s.groups[0].error.clone().unwrap();
    for part in [
        "stats.views",
        "stats.note: missing",
        "stats.updated: missing",
        "stats.extra",
    ] {
        assert!(err.contains(part), "`{part}` missing in: {err}");
    }
    assert_eq!(count(&f, "stats"), 0);
}

#[tokio::test]
async fn one_failing_group_does_not_stop_the_others() {
    let f = stats_fixture(&["2026-01-01"], 2).await;
    let tables = format!("{STATS}\n[[tables]]\nsource='missing'\ntarget='missing'\nmode='partition'\npartition_column='day'\n");
    let s = f.run(&tables, Options::default()).await;
    assert!(!s.ok);
    let failed: Vec<_> = s
        .groups
        .iter()
        .filter(|g| g.status == "failed")
        .map(|g| g.group.as_str())
        .collect();
    assert_eq!(failed, vec!["missing"]);
    assert_eq!(count(&f, "stats"), 2);
}

#[tokio::test]
async fn a_locked_group_is_skipped_with_an_error() {
    let f = stats_fixture(&["2026-01-01"], 1).await;
    let mut holder = f.mysql();
    assert!(sync_engine::session::get_lock(
        &mut holder,
        &partition_sync::runner::lock_name(&f.db.name, "stats"),
        std::time::Duration::from_secs(1)
    )
    .unwrap());
    let name = partition_sync::runner::lock_name(&f.db.name, "stats");
    let used: Option<Option<i64>> = f
        .mysql()
        .exec_first("SELECT IS_USED_LOCK(?)", (&name,))
        .unwrap();
    assert!(used.flatten().is_some(), "lock {name} not held");
    let tables = STATS.to_string();
    let mut cfg = f.config(&tables);
    cfg.partition_sync.lock_timeout_secs = 1;
    let ctx = partition_sync::runner::Context::new(cfg).await.unwrap();
    let s = partition_sync::runner::run(&ctx, &Options::default(), std::sync::Arc::new(|_| {}))
        .await
        .unwrap();
    assert_eq!(s.groups[0].error_kind, Some("locked"), "{s:?}");
    drop(holder);
    assert!(f.run(&tables, Options::default()).await.ok);
}

#[tokio::test]
async fn the_insert_loader_names_bad_rows_too() {
    let f = stats_fixture(&["2026-01-01"], 3).await;
    f.mysql()
        .query_drop(
            "CREATE TABLE stats (recipe_id BIGINT NOT NULL, day DATE NOT NULL, views BIGINT UNSIGNED NOT NULL, rating DOUBLE, \
             note VARCHAR(20), updated DATETIME(6), PRIMARY KEY (recipe_id, day))",
        )
        .unwrap();
    let insert = STATS.to_string();
    let mut cfg = f.config(&insert);
    cfg.partition_sync.loader = domain::config::Loader::Insert;
    let ctx = partition_sync::runner::Context::new(cfg.clone())
        .await
        .unwrap();
    let s = partition_sync::runner::run(&ctx, &Options::default(), std::sync::Arc::new(|_| {}))
        .await
        .unwrap();
    assert!(s.ok, "{s:?}");
    assert_eq!(count(&f, "stats"), 3);

    f.sql("UPDATE `{ds}.stats` SET views = -5 WHERE recipe_id = 3")
        .await;
    let s = partition_sync::runner::run(&ctx, &Options::default(), std::sync::Arc::new(|_| {}))
        .await
        .unwrap();
    let err = s.groups[0].error.clone().unwrap();
    for part in [
        "table stats",
        "partition 20260101",
        "recipe_id=3",
        "column views",
        "Out of range",
    ] {
        assert!(err.contains(part), "`{part}` missing in: {err}");
    }
    assert_eq!(
        f.rows::<i64>("SELECT views FROM stats ORDER BY recipe_id"),
        vec![10, 20, 30]
    );
}
