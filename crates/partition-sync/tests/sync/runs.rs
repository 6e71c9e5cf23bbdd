//! Runs: first sync, incremental reloads, idempotency, catch-up, vanished partitions,
//! ingestion-time tables, verify and resync.

use mysql::prelude::Queryable;
use partition_sync::runner::{Force, Options};

use crate::helpers::*;

#[tokio::test]
async fn first_sync_loads_every_partition_and_a_second_run_writes_nothing() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02", "2026-01-03"], 4).await;
    let s = f.run(STATS, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(s.partitions_loaded, 3);
    assert_eq!(s.rows_loaded, 12);
    assert_eq!(count(&f, "stats"), 12);
    let (note, updated, rating): (String, String, f64) =
        f.rows::<(String, String, f64)>("SELECT note, CAST(updated AS CHAR), rating FROM stats WHERE recipe_id = 2 AND day = '2026-01-02'")[0].clone();
    assert_eq!(note, "r2 «ü», 'q'");
    assert_eq!(updated, "2026-01-01 10:00:00.123456");
    assert_eq!(rating, 4.5);
    assert_eq!(
        f.rows::<i64>("SELECT COUNT(*) FROM sync_partitions WHERE target_table = 'stats'")[0],
        3
    );

    let again = f.run(STATS, Options::default()).await;
    assert!(again.ok);
    assert_eq!(again.partitions_loaded, 0);
    assert_eq!(again.rows_loaded + again.rows_deleted, 0);
    assert_eq!(again.groups[0].status, "unchanged");
    // The staging prefix of the first run was cleaned.
    let left = staged_files(&f);
    assert!(left.is_empty(), "staging files left: {left:?}");
}

#[tokio::test]
async fn a_modified_partition_is_reloaded_and_only_it() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02", "2026-01-03"], 3).await;
    assert!(f.run(STATS, Options::default()).await.ok);
    f.sql("UPDATE `{ds}.stats` SET views = 999 WHERE recipe_id = 1 AND day = DATE '2026-01-02'")
        .await;
    let s = f.run(STATS, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(s.partitions_loaded, 1);
    assert_eq!(s.groups[0].plan[0].partition, "20260102");
    assert_eq!(s.rows_deleted, 3);
    assert_eq!(s.rows_loaded, 3);
    assert_eq!(
        f.rows::<i64>("SELECT views FROM stats WHERE recipe_id = 1 AND day = '2026-01-02'"),
        vec![999]
    );
    assert_eq!(count(&f, "stats"), 9);
}

#[tokio::test]
async fn missed_runs_catch_up_oldest_first() {
    let f = stats_fixture(&["2026-01-01"], 2).await;
    assert!(f.run(STATS, Options::default()).await.ok);
    // Three "days" of changes happen without a run.
    f.insert(
        "stats",
        vec![stat(1, "2026-01-03", 1), stat(1, "2026-01-02", 1)],
    )
    .await;
    f.sql("DELETE FROM `{ds}.stats` WHERE recipe_id = 2 AND day = DATE '2026-01-01'")
        .await;
    let dry = f
        .run(
            STATS,
            Options {
                dry_run: true,
                ..Options::default()
            },
        )
        .await;
    let planned: Vec<_> = dry.groups[0]
        .plan
        .iter()
        .map(|p| p.partition.as_str())
        .collect();
    assert_eq!(planned, vec!["20260101", "20260102", "20260103"]);
    // What it would cost and change: BigQuery bytes of each export (dry-run jobs), and the
    // MySQL rows each partition holds today (2026-01-01: 2 rows, replaced by 1).
    let plan = &dry.groups[0].plan;
    assert!(
        plan.iter()
            .all(|p| p.estimated_bytes.is_some_and(|b| b > 0)),
        "{plan:?}"
    );
    let mysql_rows: Vec<_> = plan.iter().map(|p| p.mysql_rows).collect();
    assert_eq!(mysql_rows, vec![Some(2), Some(0), Some(0)]);
    // Not partitioned in MySQL: each would load in the batch's transaction.
    assert!(
        plan.iter().all(|p| p.replace == Some("transaction")),
        "{plan:?}"
    );
    assert_eq!(
        plan.iter().map(|p| p.rows).collect::<Vec<_>>(),
        vec![1, 1, 1]
    );
    assert_eq!(count(&f, "stats"), 2, "a dry run changes nothing");
    let s = f.run(STATS, Options::default()).await;
    assert!(s.ok);
    assert_eq!(s.partitions_loaded, 3);
    assert_eq!(count(&f, "stats"), 3);
}

#[tokio::test]
async fn a_vanished_partition_is_removed_and_the_cap_blocks_a_mass_removal() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"], 2).await;
    let capped = format!("{STATS}max_vanished_partitions = 1\n");
    assert!(f.run(&capped, Options::default()).await.ok);
    f.sql("DELETE FROM `{ds}.stats` WHERE day = DATE '2026-01-01'")
        .await;
    let s = f.run(&capped, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(s.partitions_removed, 1);
    assert_eq!(count(&f, "stats"), 6);

    f.sql("DELETE FROM `{ds}.stats` WHERE day >= DATE '2026-01-03'")
        .await;
    let blocked = f.run(&capped, Options::default()).await;
    assert!(!blocked.ok);
    let err = blocked.groups[0].error.clone().unwrap();
    assert!(
        err.contains("2 partitions vanished") && err.contains("--allow-mass-delete"),
        "{err}"
    );
    assert_eq!(count(&f, "stats"), 6, "a blocked run changes nothing");

    let allowed = f
        .run(
            &capped,
            Options {
                allow_mass_delete: true,
                ..Options::default()
            },
        )
        .await;
    assert!(allowed.ok);
    assert_eq!(count(&f, "stats"), 2);
}

#[tokio::test]
async fn null_partition_values_load_into_the_null_partition() {
    let f = Fixture::new().await;
    f.create_table(
        "events",
        vec![
            TableFieldSchema::integer("id"),
            TableFieldSchema::date("day"),
        ],
        Some("day"),
    )
    .await;
    f.insert(
        "events",
        vec![
            serde_json::json!({"id": 1, "day": null}),
            serde_json::json!({"id": 2, "day": "2026-02-01"}),
        ],
    )
    .await;
    let t =
        "[[tables]]\nsource='events'\ntarget='events'\nmode='partition'\npartition_column='day'\n";
    let s = f.run(t, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(s.partitions_loaded, 2);
    assert_eq!(
        f.rows::<i64>("SELECT id FROM events WHERE day IS NULL"),
        vec![1]
    );
    f.sql("UPDATE `{ds}.events` SET id = 3 WHERE day IS NULL")
        .await;
    let s = f.run(t, Options::default()).await;
    assert_eq!(s.partitions_loaded, 1);
    assert_eq!(
        f.rows::<i64>("SELECT id FROM events ORDER BY id"),
        vec![2, 3]
    );
}

use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;

#[tokio::test]
async fn an_ingestion_time_table_gets_its_partition_as_a_real_column() {
    let f = Fixture::new().await;
    f.create_table(
        "ingest",
        vec![
            TableFieldSchema::integer("id"),
            TableFieldSchema::string("v"),
        ],
        None,
    )
    .await;
    f.insert(
        "ingest",
        vec![
            serde_json::json!({"id": 1, "v": "a"}),
            serde_json::json!({"id": 2, "v": "b"}),
        ],
    )
    .await;
    let t = "[[tables]]\nsource='ingest'\ntarget='ingest'\nmode='partition'\npartition_column='_PARTITIONDATE'\nprimary_key=['id', 'partition_date']\n";
    // Streamed rows sit in the streaming buffer (no partition yet): they wait, in both
    // detection modes, and nothing fails.
    for how in ["metadata", "fingerprint"] {
        let s = f
            .run(
                &format!("{t}change_detection = '{how}'\n"),
                Options::default(),
            )
            .await;
        assert!(s.ok, "{how}: {s:?}");
        assert_eq!(s.rows_loaded, 0, "{how}");
    }
    test_support::Emulator::new(&f.ds.env)
        .flush(&f.ds.dataset, "ingest")
        .await;
    let s = f.run(t, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(s.rows_loaded, 2);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let dates: Vec<String> = f.rows("SELECT CAST(partition_date AS CHAR) FROM ingest ORDER BY id");
    assert_eq!(dates, vec![today.clone(), today]);
    assert!(f.run(t, Options::default()).await.groups[0].status == "unchanged");
}

#[tokio::test]
async fn rows_dated_outside_bigquerys_partitionable_range_are_loaded_and_reloaded() {
    out_of_range_rows(false).await;
}

#[tokio::test]
async fn out_of_range_rows_load_into_a_target_partitioned_in_mysql_which_keeps_growing() {
    let f = out_of_range_rows(true).await;
    let names = |f: &Fixture| -> Vec<String> {
        f.rows(
            "SELECT PARTITION_NAME FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = 'stats' ORDER BY PARTITION_ORDINAL_POSITION",
        )
    };
    assert_eq!(
        names(&f),
        vec!["p_floor", "pgap_20260101", "p20260101", "p_beyond"]
    );
    // A new day is split off the far-future partition; its rows stay where they belong.
    f.insert("stats", vec![stat(4, "2026-01-03", 40)]).await;
    let t = format!("{STATS}mysql_partitioning = true\n");
    let dry = f
        .run(
            &t,
            Options {
                dry_run: true,
                ..Options::default()
            },
        )
        .await;
    let how: Vec<(&str, Option<&str>)> = dry.groups[0]
        .plan
        .iter()
        .map(|p| (p.partition.as_str(), p.replace))
        .collect();
    assert_eq!(
        how,
        vec![
            ("20260101", Some("exchange")),
            ("20260103", Some("exchange")),
            ("__UNPARTITIONED__", Some("transaction"))
        ]
    );
    let s = f.run(&t, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(
        names(&f),
        vec![
            "p_floor",
            "pgap_20260101",
            "p20260101",
            "pgap_20260103",
            "p20260103",
            "p_beyond"
        ]
    );
    assert_eq!(
        f.rows::<(String, i64)>(
            "SELECT CAST(day AS CHAR), views FROM stats PARTITION (p_beyond) UNION ALL \
             SELECT CAST(day AS CHAR), views FROM stats PARTITION (p20260103)"
        ),
        vec![
            ("9999-12-31".to_string(), 22),
            ("2026-01-03".to_string(), 40)
        ]
    );
    // The days went by exchange (2026-01-01 again too: the last run's fingerprint watermarks
    // hold no modification times), the far-future rows in the batch's transaction.
    let t0 = &s.groups[0].tables[0];
    assert_eq!(
        (t0.partitions_loaded, t0.partitions_exchanged),
        (3, 2),
        "{s:?}"
    );
    f.assert_in_sync(&t).await;
}

/// Rows dated before 1960-01-01 or after 2159-12-31, which BigQuery keeps in
/// `__UNPARTITIONED__`, load and reload (both detection modes).
async fn out_of_range_rows(mysql_partitioning: bool) -> Fixture {
    let f = Fixture::new().await;
    f.create_table("stats", stats_fields(), Some("day")).await;
    f.insert(
        "stats",
        vec![
            stat(1, "1950-06-01", 10),
            stat(2, "9999-12-31", 20),
            stat(3, "2026-01-01", 30),
        ],
    )
    .await;
    for how in ["metadata", "fingerprint"] {
        let mut t = format!("{STATS}change_detection = '{how}'\n");
        if mysql_partitioning {
            t.push_str("mysql_partitioning = true\n");
        }
        let s = f.run(&t, Options::default()).await;
        assert!(s.ok, "{how}: {s:?}");
        f.sql(&format!(
            "UPDATE `{{ds}}.stats` SET views = views + 1 WHERE recipe_id IN (1, 2) -- {how}"
        ))
        .await;
        let s = f.run(&t, Options::default()).await;
        assert!(s.ok, "{how}: {s:?}");
        let planned: Vec<_> = s.groups[0]
            .plan
            .iter()
            .map(|p| p.partition.as_str())
            .collect();
        assert_eq!(planned, vec!["__UNPARTITIONED__"], "{how}");
    }
    assert_eq!(
        f.rows::<(i64, String, i64)>(
            "SELECT recipe_id, CAST(day AS CHAR), views FROM stats ORDER BY recipe_id"
        ),
        vec![
            (1, "1950-06-01".to_string(), 12),
            (2, "9999-12-31".to_string(), 22),
            (3, "2026-01-01".to_string(), 30),
        ]
    );
    f
}

#[tokio::test]
async fn verify_finds_a_row_altered_behind_the_syncs_back_and_resync_repairs_it() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02"], 3).await;
    assert!(f.run(STATS, Options::default()).await.ok);
    f.assert_in_sync(STATS).await;
    let ctx = partition_sync::runner::Context::new(f.config(STATS))
        .await
        .unwrap();

    f.mysql()
        .query_drop("UPDATE stats SET note = 'tampered' WHERE recipe_id = 2 AND day = '2026-01-02'")
        .unwrap();
    let m = partition_sync::commands::verify(&ctx, &Options::default())
        .await
        .unwrap();
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(
        (m[0].partition.as_str(), m[0].detail),
        ("20260102", "contents differ")
    );
    // The state did not change, so a normal run does not notice; resync does.
    assert_eq!(f.run(STATS, Options::default()).await.partitions_loaded, 0);
    let opts = Options {
        table: Some("stats".into()),
        force: Some(("stats".into(), Force::Partitions(vec!["20260102".into()]))),
        ..Options::default()
    };
    let s = f.run(STATS, opts).await;
    assert_eq!(s.partitions_loaded, 1);
    assert!(partition_sync::commands::verify(&ctx, &Options::default())
        .await
        .unwrap()
        .is_empty());

    f.mysql()
        .query_drop("DELETE FROM stats WHERE day = '2026-01-01'")
        .unwrap();
    let m = partition_sync::commands::verify(&ctx, &Options::default())
        .await
        .unwrap();
    assert_eq!(m[0].detail, "missing in MySQL");
    let all = Options {
        table: Some("stats".into()),
        force: Some(("stats".into(), Force::All)),
        ..Options::default()
    };
    assert_eq!(f.run(STATS, all).await.partitions_loaded, 2);
    assert!(partition_sync::commands::verify(&ctx, &Options::default())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn every_supported_type_round_trips() {
    types_round_trip("json", false).await;
}

#[tokio::test]
async fn every_supported_type_round_trips_through_parquet_exports() {
    types_round_trip("parquet", false).await;
}

/// The exchange path (a shadow table loaded by INSERT, as BYTES can't go through LOAD DATA's
/// text) keeps every type too (docs/sync.md#exchange).
#[tokio::test]
async fn every_supported_type_round_trips_through_an_exchanged_partition() {
    types_round_trip("json", true).await;
}

async fn types_round_trip(format: &'static str, mysql_partitioning: bool) {
    let f = Fixture::new().await;
    f.format.set(format);
    let mut fields = vec![
        TableFieldSchema::integer("id"),
        TableFieldSchema::date("day"),
        TableFieldSchema::timestamp("ts"),
        TableFieldSchema::float("f"),
        TableFieldSchema::numeric("n"),
        TableFieldSchema::string("s"),
        TableFieldSchema::bool("b"),
        TableFieldSchema::bytes("by"),
        TableFieldSchema::date_time("dt"),
        TableFieldSchema::time("tm"),
        TableFieldSchema::json("j"),
    ];
    fields[0].mode = Some("REQUIRED".into());
    f.create_table("types", fields, Some("day")).await;
    f.insert(
        "types",
        vec![
            serde_json::json!({"id": i64::MAX, "day": "2026-01-01", "ts": "2026-01-01T10:00:00.123456Z", "f": -1.0e300, "n": "-12345678901234567890.123456789",
                "s": "a'b,\"c\"\n🍰 DROP TABLE x;--", "b": true, "by": "AAEC/w==", "dt": "2026-01-01T10:00:00.5", "tm": "23:59:59.999999", "j": "{\"k\":[1,2,null]}"}),
            serde_json::json!({"id": i64::MIN, "day": "2026-01-01"}),
            // The first year (BigQuery's FORMAT_DATETIME('%Y') writes it as `1`, which MySQL
            // reads as 2001) and a double a best-effort JSON parser rounds 1 ULP off.
            serde_json::json!({"id": 7, "day": "2026-01-01", "ts": "0001-01-01T00:00:00Z", "f": 4.055474706295447e-187,
                "dt": "0001-01-01T00:00:00.5", "n": "0", "s": "", "b": false, "by": "", "tm": "00:00:00", "j": "{}"}),
        ],
    )
    .await;
    let t = if mysql_partitioning {
        "[[tables]]\nsource='types'\ntarget='types'\nmode='partition'\npartition_column='day'\nprimary_key=['id', 'day']\nmysql_partitioning=true\n"
    } else {
        "[[tables]]\nsource='types'\ntarget='types'\nmode='partition'\npartition_column='day'\nprimary_key=['id']\n"
    };
    let s = f.run(t, Options::default()).await;
    assert!(s.ok, "{s:?}");
    let exchanged: usize = s.groups[0]
        .tables
        .iter()
        .map(|t| t.partitions_exchanged)
        .sum();
    assert_eq!(exchanged, usize::from(mysql_partitioning), "{s:?}");
    type Row = (
        i64,
        String,
        f64,
        String,
        String,
        i64,
        Vec<u8>,
        String,
        String,
    );
    let r: Vec<Row> = f.rows(
        "SELECT id, CAST(ts AS CHAR), f, CAST(n AS CHAR), s, b, `by`, CAST(dt AS CHAR), CAST(tm AS CHAR) FROM types WHERE id > 0 ORDER BY id DESC",
    );
    assert_eq!(
        r[0],
        (
            i64::MAX,
            "2026-01-01 10:00:00.123456".into(),
            -1.0e300,
            "-12345678901234567890.123456789".into(),
            "a'b,\"c\"\n🍰 DROP TABLE x;--".into(),
            1,
            vec![0, 1, 2, 255],
            "2026-01-01 10:00:00.500000".into(),
            "23:59:59.999999".into()
        )
    );
    assert_eq!(
        (r[1].0, r[1].1.as_str(), r[1].2.to_bits(), r[1].7.as_str()),
        (
            7,
            "0001-01-01 00:00:00.000000",
            4.055474706295447e-187f64.to_bits(),
            "0001-01-01 00:00:00.500000"
        )
    );
    let nulls: Vec<(i64, Option<String>, Option<f64>)> =
        f.rows("SELECT id, s, f FROM types WHERE id < 0");
    assert_eq!(nulls, vec![(i64::MIN, None, None)]);
    f.assert_in_sync(t).await;
}

#[tokio::test]
async fn hour_partitioned_timestamp_tables_and_month_partitioned_date_tables_sync() {
    use gcp_bigquery_client::model::table::Table;
    use gcp_bigquery_client::model::table_schema::TableSchema;
    use gcp_bigquery_client::model::time_partitioning::TimePartitioning;
    let f = Fixture::new().await;
    let mut hour = TimePartitioning::per_hour();
    hour.field = Some("ts".into());
    let t = Table::new(
        &f.ds.project,
        &f.ds.dataset,
        "hourly",
        TableSchema::new(vec![
            TableFieldSchema::integer("id"),
            TableFieldSchema::timestamp("ts"),
        ]),
    )
    .time_partitioning(hour);
    f.ds.client.table().create(t).await.unwrap();
    let mut month = TimePartitioning::new("MONTH".into());
    month.field = Some("d".into());
    let t = Table::new(
        &f.ds.project,
        &f.ds.dataset,
        "monthly",
        TableSchema::new(vec![
            TableFieldSchema::integer("id"),
            TableFieldSchema::date("d"),
        ]),
    )
    .time_partitioning(month);
    f.ds.client.table().create(t).await.unwrap();
    f.insert(
        "hourly",
        vec![
            serde_json::json!({"id": 1, "ts": "2026-01-01T10:15:00Z"}),
            serde_json::json!({"id": 2, "ts": "2026-01-01T10:45:00Z"}),
            serde_json::json!({"id": 3, "ts": "2026-01-01T11:00:00Z"}),
        ],
    )
    .await;
    f.insert(
        "monthly",
        vec![
            serde_json::json!({"id": 1, "d": "2026-01-31"}),
            serde_json::json!({"id": 2, "d": "2026-02-01"}),
        ],
    )
    .await;
    let tables = "[[tables]]\nsource='hourly'\ntarget='hourly'\nmode='partition'\npartition_column='ts'\nprimary_key=['id']\n\
                  [[tables]]\nsource='monthly'\ntarget='monthly'\nmode='partition'\npartition_column='d'\nprimary_key=['id']\n";
    let s = f.run(tables, Options::default()).await;
    assert!(s.ok, "{s:?}");
    let mut planned: Vec<_> = s
        .groups
        .iter()
        .flat_map(|g| g.plan.iter().map(|p| p.partition.clone()))
        .collect();
    planned.sort();
    assert_eq!(
        planned,
        vec!["202601", "2026010110", "2026010111", "202602"]
    );
    assert_eq!((count(&f, "hourly"), count(&f, "monthly")), (3, 2));
    f.sql("UPDATE `{ds}.hourly` SET id = 20 WHERE id = 2").await;
    let s = f.run(tables, Options::default()).await;
    assert_eq!(s.partitions_loaded, 1);
    assert_eq!(
        s.groups
            .iter()
            .flat_map(|g| g.plan.iter())
            .next()
            .unwrap()
            .partition,
        "2026010110"
    );
    assert_eq!(
        f.rows::<i64>("SELECT id FROM hourly ORDER BY id"),
        vec![1, 3, 20]
    );
}

#[tokio::test]
async fn metadata_change_detection_finds_new_and_grown_partitions() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02"], 2).await;
    let tables = format!("{STATS}change_detection = \"metadata\"\n");
    let s = f.run(&tables, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(s.partitions_loaded, 2);
    assert_eq!(
        f.run(&tables, Options::default()).await.partitions_loaded,
        0
    );
    f.insert(
        "stats",
        vec![stat(9, "2026-01-02", 1), stat(9, "2026-01-03", 1)],
    )
    .await;
    let s = f.run(&tables, Options::default()).await;
    assert_eq!(s.partitions_loaded, 2, "{s:?}");
    assert_eq!(count(&f, "stats"), 6);
}

#[tokio::test]
async fn a_target_partitioned_in_mysql_gets_a_partition_per_new_warehouse_partition() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02"], 2).await;
    let tables = format!("{STATS}mysql_partitioning = true\n");
    let s = f.run(&tables, Options::default()).await;
    assert!(s.ok, "{s:?}");
    let parts = |f: &Fixture| -> Vec<(String, i64)> {
        f.rows(
            "SELECT PARTITION_NAME, TABLE_ROWS FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = 'stats' ORDER BY PARTITION_ORDINAL_POSITION",
        )
        .into_iter()
        .map(|(n, r): (String, i64)| (n, r.min(1)))
        .collect()
    };
    let names: Vec<String> = parts(&f).into_iter().map(|p| p.0).collect();
    // A gap before a new range gets its own partition, so that each warehouse partition is
    // exactly one MySQL partition (docs/sync.md#exchange).
    assert_eq!(
        names,
        vec!["p_floor", "pgap_20260101", "p20260101", "p20260102"]
    );
    f.insert("stats", vec![stat(1, "2026-01-05", 1)]).await;
    assert!(f.run(&tables, Options::default()).await.ok);
    let names: Vec<String> = parts(&f).into_iter().map(|p| p.0).collect();
    assert_eq!(
        names,
        vec![
            "p_floor",
            "pgap_20260101",
            "p20260101",
            "p20260102",
            "pgap_20260105",
            "p20260105"
        ]
    );
    assert_eq!(count(&f, "stats"), 5);
    f.assert_in_sync(&tables).await;
}

#[tokio::test]
async fn parquet_exports_load_and_reload_like_json_ones() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02"], 3).await;
    f.format.set("parquet");
    let s = f.run(STATS, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(s.rows_loaded, 6);
    f.sql("UPDATE `{ds}.stats` SET note = NULL, views = 7 WHERE recipe_id = 2 AND day = DATE '2026-01-02'").await;
    let s = f.run(STATS, Options::default()).await;
    assert_eq!(s.partitions_loaded, 1);
    let row: Vec<(i64, Option<String>)> =
        f.rows("SELECT views, note FROM stats WHERE recipe_id = 2 AND day = '2026-01-02'");
    assert_eq!(row, vec![(7, None)]);
    f.assert_in_sync(STATS).await;
}

#[tokio::test]
async fn change_history_detection_reloads_exactly_the_partitions_the_history_names() {
    let f = Fixture::new().await;
    f.sql(
        "CREATE TABLE `{ds}.stats` (recipe_id INT64 NOT NULL, day DATE NOT NULL, views INT64, \
         rating FLOAT64, note STRING, updated TIMESTAMP) PARTITION BY day \
         OPTIONS (enable_change_history = TRUE)",
    )
    .await;
    f.sql(
        "INSERT INTO `{ds}.stats` (recipe_id, day, views, note) SELECT r, d, r * 10, 'n' \
         FROM UNNEST([1, 2]) AS r, UNNEST([DATE '2026-01-01', DATE '2026-01-02', DATE '2026-01-03']) AS d",
    )
    .await;
    let emu = test_support::Emulator::new(&f.ds.env);
    emu.age(&f.ds.dataset, "stats", std::time::Duration::from_secs(300))
        .await;
    let t = format!("{STATS}change_detection = 'changes'\n");
    let first = f.run(&t, Options::default()).await;
    assert!(first.ok, "{first:?}");
    assert_eq!(
        first.partitions_loaded, 3,
        "the first run lists every partition"
    );

    f.sql("UPDATE `{ds}.stats` SET views = 99 WHERE recipe_id = 1 AND day = DATE '2026-01-02'")
        .await;
    let early = f.run(&t, Options::default()).await;
    assert_eq!(
        early.partitions_loaded, 0,
        "the history answers 10 minutes behind"
    );

    // As if 20 minutes had passed since the first run and the update.
    emu.age(&f.ds.dataset, "stats", std::time::Duration::from_secs(1200))
        .await;
    use mysql::prelude::Queryable;
    let mut my = f.mysql();
    my.query_drop(
        "UPDATE sync_history SET from_micros = from_micros - 1200000000, \
         not_before_micros = not_before_micros - 1200000000",
    )
    .unwrap();
    // The first run's watermarks move back with it (it ran before the aged update).
    my.query_drop(
        "UPDATE sync_partitions SET source_modified_at = source_modified_at - INTERVAL 1500 SECOND",
    )
    .unwrap();
    let s = f.run(&t, Options::default()).await;
    assert!(s.ok, "{s:?}");
    let planned: Vec<_> = s.groups[0]
        .plan
        .iter()
        .map(|p| (p.partition.as_str(), p.reason.as_str()))
        .collect();
    assert_eq!(planned, vec![("20260102", "named by the change history")]);
    assert_eq!(
        f.rows::<i64>("SELECT views FROM stats WHERE recipe_id = 1 AND day = '2026-01-02'"),
        vec![99]
    );
    // The window moved on: the same change is not read again.
    assert_eq!(f.run(&t, Options::default()).await.partitions_loaded, 0);
}

#[tokio::test]
async fn change_history_detection_without_the_table_option_falls_back_to_metadata() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02"], 2).await;
    let t = format!("{STATS}change_detection = 'changes'\n");
    assert!(f.run(&t, Options::default()).await.ok);
    f.sql("UPDATE `{ds}.stats` SET views = 7 WHERE recipe_id = 1 AND day = DATE '2026-01-01'")
        .await;
    // A window the history would answer (its end 20 minutes back): the query fails on the
    // missing table option, and the run plans from metadata instead.
    use mysql::prelude::Queryable;
    f.mysql()
        .query_drop(
            "UPDATE sync_history SET from_micros = from_micros - 1200000000, \
             not_before_micros = not_before_micros - 1200000000",
        )
        .unwrap();
    let s = f.run(&t, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(s.partitions_loaded, 1, "{s:?}");
    assert_eq!(
        f.rows::<i64>("SELECT views FROM stats WHERE recipe_id = 1 AND day = '2026-01-01'"),
        vec![7]
    );
}

#[tokio::test]
async fn ddl_behind_a_long_reader_gives_up_quickly_instead_of_queueing_the_table() {
    let f = stats_fixture(&["2026-01-01"], 2).await;
    let tables =
        format!("[partition_sync]\nddl_lock_wait_secs = 1\n{STATS}mysql_partitioning = true\n");
    assert!(f.run(&tables, Options::default()).await.ok);
    f.insert("stats", vec![stat(1, "2026-01-05", 1)]).await;
    // A long reader: its open transaction holds the table's metadata lock, which ADD
    // PARTITION needs exclusively.
    use mysql::prelude::Queryable;
    let mut reader = f.mysql();
    reader.query_drop("START TRANSACTION").unwrap();
    let _: Vec<i64> = reader.query("SELECT recipe_id FROM stats LIMIT 1").unwrap();

    let started = std::time::Instant::now();
    let s = f.run(&tables, Options::default()).await;
    assert!(!s.ok, "{s:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "waited {:?}",
        started.elapsed()
    );
    let error = s.groups[0].error.clone().unwrap();
    assert!(
        error.contains("stats") && error.to_lowercase().contains("lock wait"),
        "{error}"
    );
    assert_eq!(s.groups[0].error_kind, Some("mysql"));
    reader.query_drop("COMMIT").unwrap();
    assert!(f.run(&tables, Options::default()).await.ok);
    assert_eq!(count(&f, "stats"), 3);
}

#[tokio::test]
async fn fingerprints_see_a_change_to_duplicate_rows() {
    // No primary key: a partition may hold identical rows, whose hashes cancel under XOR.
    let f = Fixture::new().await;
    f.create_table("stats", stats_fields(), Some("day")).await;
    f.insert(
        "stats",
        vec![stat(1, "2026-01-01", 10), stat(1, "2026-01-01", 10)],
    )
    .await;
    let t = "[[tables]]\nsource = 'stats'\ntarget = 'stats'\nmode = 'partition'\n\
             partition_column = 'day'\nvarchar = { note = 20 }\nchange_detection = 'fingerprint'\n";
    assert!(f.run(t, Options::default()).await.ok);
    f.sql("UPDATE `{ds}.stats` SET views = 20 WHERE TRUE").await;
    let s = f.run(t, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(
        s.partitions_loaded, 1,
        "the change of both duplicates was seen"
    );
    assert_eq!(f.rows::<i64>("SELECT views FROM stats"), vec![20, 20]);
}

#[tokio::test]
async fn a_backlog_larger_than_a_run_loads_in_batches_oldest_first_and_converges_over_runs() {
    let days = [
        "2026-01-01",
        "2026-01-02",
        "2026-01-03",
        "2026-01-04",
        "2026-01-05",
        "2026-01-06",
    ];
    let f = stats_fixture(&days, 2).await;
    // Each export takes over a second here; a run may start batches for 2 seconds.
    let emu = test_support::Emulator::new(&f.ds.env);
    emu.fault(serde_json::json!({
        "fault": "slow", "delay_ms": 1200, "count": 100,
        "sql": format!("(?s)EXPORT DATA.*{}", f.ds.dataset),
    }))
    .await;
    let t = format!("[partition_sync]\nmax_batch_partitions = 2\nmax_run_secs = 2\n{STATS}");
    let first = f.run(&t, Options::default()).await;
    assert!(
        first.ok,
        "a run that stops in time is not a failure: {first:?}"
    );
    assert_eq!(first.groups[0].status, "partial");
    assert_eq!(
        first.partitions_loaded, 2,
        "one batch, the oldest: {first:?}"
    );
    assert_eq!(first.partitions_pending, 4);
    assert_eq!(first.groups[0].partitions_pending.get("stats"), Some(&4));
    assert_eq!(
        f.rows::<String>("SELECT partition_id FROM sync_partitions ORDER BY partition_id"),
        vec!["20260101", "20260102"],
        "the batch committed with its watermarks"
    );
    let mut runs = 1;
    loop {
        let s = f.run(&t, Options::default()).await;
        assert!(s.ok, "{s:?}");
        runs += 1;
        if s.partitions_pending == 0 {
            assert_eq!(s.groups[0].status, "ok");
            break;
        }
        assert!(runs < 6, "the backlog does not converge");
    }
    assert_eq!(runs, 3);
    assert_eq!(count(&f, "stats"), 12);
}

#[tokio::test]
async fn a_load_that_differs_from_the_warehouse_after_commit_is_drift_and_reloads_next_run() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02"], 2).await;
    assert!(f.run(STATS, Options::default()).await.ok);
    // Something in MySQL changes rows as they are written (a trigger, say).
    use mysql::prelude::Queryable;
    f.mysql()
        .query_drop(
            "CREATE TRIGGER stats_bump BEFORE INSERT ON stats FOR EACH ROW SET NEW.views = NEW.views + 1",
        )
        .unwrap();
    f.sql("UPDATE `{ds}.stats` SET views = 5 WHERE day = DATE '2026-01-02'")
        .await;
    let s = f.run(STATS, Options::default()).await;
    assert!(!s.ok, "{s:?}");
    assert_eq!(s.groups[0].error_kind, Some("drift"));
    let error = s.groups[0].error.clone().unwrap();
    assert!(
        error.contains("partition 20260102") && error.contains("contents differ"),
        "{error}"
    );
    assert_eq!(s.groups[0].drift_partitions.get("stats"), Some(&1));
    assert_eq!(
        f.rows::<String>("SELECT partition_id FROM sync_partitions ORDER BY partition_id"),
        vec!["20260101"],
        "the drifted partition's watermark is forgotten"
    );
    f.mysql().query_drop("DROP TRIGGER stats_bump").unwrap();
    let s = f.run(STATS, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(s.partitions_loaded, 1);
    assert_eq!(
        f.rows::<i64>("SELECT views FROM stats WHERE day = '2026-01-02' ORDER BY recipe_id"),
        vec![5, 5]
    );
}

#[tokio::test]
async fn exports_are_in_primary_key_order() {
    let f = Fixture::new().await;
    f.create_table("stats", stats_fields(), Some("day")).await;
    // Inserted in reverse key order.
    let rows = (1..=40).rev().map(|r| stat(r, "2026-01-01", r)).collect();
    f.insert("stats", rows).await;
    let s = f
        .run(&format!("keep_files = true\n{STATS}"), Options::default())
        .await;
    assert!(s.ok, "{s:?}");
    let mut files = staged_files(&f);
    files.sort();
    let ids: Vec<i64> = files
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    match &v["recipe_id"] {
                        serde_json::Value::String(s) => s.parse().unwrap(),
                        n => n.as_i64().unwrap(),
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ids, (1..=40).collect::<Vec<_>>());
}

#[tokio::test]
async fn sync_runs_holds_the_whole_run_across_batches() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02", "2026-01-03"], 5).await;
    let t = format!("[partition_sync]\nmax_batch_partitions = 1\n{STATS}");
    let s = f.run(&t, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(s.rows_loaded, 15);
    let recorded: Vec<(i64, i64)> = f.rows(&format!(
        "SELECT rows_loaded, rows_deleted FROM sync_runs WHERE run_id = '{}' AND target_table = 'stats'",
        s.run_id
    ));
    assert_eq!(recorded, vec![(15, 0)], "three batches of 5 rows");
}
