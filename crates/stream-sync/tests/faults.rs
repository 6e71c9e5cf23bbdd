//! stream-sync's fault policy (docs/architecture.md#error-handling) against BigQuery's own
//! failures, injected by the emulator (docs/emulator.md#faults): rate limits, backend errors,
//! a reset connection, an incomplete page and a slow answer are retried within the cycle and
//! the table converges; a fault that outlasts the retries fails the cycle (transient), and
//! MySQL keeps what it had.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{ok, table, Fixture};
use stream_sync::ErrorKind;
use test_support::Emulator;

async fn items(f: &Fixture, n: i64) {
    f.bq("CREATE TABLE {ds}.items (id INT64 NOT NULL, name STRING)")
        .await;
    f.bq(&format!(
        "INSERT INTO {{ds}}.items (id, name) SELECT x, CONCAT('item ', CAST(x AS STRING)) \
         FROM UNNEST(GENERATE_ARRAY(1, {n})) AS x"
    ))
    .await;
}

#[tokio::test]
async fn bigquery_faults_are_retried_within_the_cycle_and_the_table_converges() {
    let f = Fixture::new().await;
    items(&f, 100).await;
    let config = f.config(&table("items", &["id"], ""), "");
    ok(&f.sync(&config).await, "items");
    f.bq("UPDATE {ds}.items SET name = 'changed' WHERE id <= 5")
        .await;
    f.bq("INSERT INTO {ds}.items (id, name) VALUES (500, 'new')")
        .await;

    // Every kind of transient failure BigQuery documents, once each, on this test's queries.
    let emu = Emulator::new(&f.ds.env);
    let ds = &f.ds.dataset;
    let faults = [
        ("rateLimitExceeded", format!("{ds}.*_sync_bucket")),
        ("quotaExceeded", format!("(?s)COUNT.*{ds}")),
        ("backendError", format!("(?s){ds}")),
        ("unavailable", format!("(?s){ds}")),
        ("reset", format!("(?s){ds}")),
        ("empty_page", format!("(?s){ds}")),
    ];
    for (kind, sql) in &faults {
        emu.fault_on_sql(kind, sql, 1).await;
    }
    emu.fault(serde_json::json!({
        "fault": "rateLimitExceeded",
        "path": format!("/datasets/{ds}/tables/items$"),
        "method": "GET",
        "count": 2
    }))
    .await;
    let r = ok(&f.sync(&config).await, "items").clone();
    assert_eq!((r.updates, r.inserts), (5, 1), "{r:?}");
    for (_, sql) in &faults {
        assert!(emu.fault_hits(sql).await >= 1, "fault on {sql} never hit");
    }
    let mut runner = f.runner(&config, None).await;
    assert!(runner.verify(100).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_fault_that_outlasts_the_retries_fails_the_cycle_as_transient_and_changes_nothing() {
    let f = Fixture::new().await;
    items(&f, 20).await;
    let config = f.config(&table("items", &["id"], ""), "");
    ok(&f.sync(&config).await, "items");
    f.bq("DELETE FROM {ds}.items WHERE id <= 10").await;

    let emu = Emulator::new(&f.ds.env);
    // More failures than one cycle's attempts (5 per warehouse call, --once retries 3 cycles).
    let sql = format!("(?s){}.*_sync_bucket", f.ds.dataset);
    emu.fault_on_sql("backendError", &sql, 15).await;
    let outcomes = f.sync(&config).await;
    let o = outcomes.iter().find(|o| o.table == "items").unwrap();
    let (kind, error) = o.error.clone().expect("the cycle failed");
    assert_eq!(kind, ErrorKind::Transient, "{error}");
    assert!(
        error.contains("backendError") || error.contains("500"),
        "{error}"
    );
    assert_eq!(f.my_count("items"), 20, "nothing was deleted");
    assert_eq!(emu.fault_hits(&sql).await, 15);
}
