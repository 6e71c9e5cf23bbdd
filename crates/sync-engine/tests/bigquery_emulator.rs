//! The real `gcp-bigquery-client` against the BigQuery emulator: a day-partitioned table is
//! created, rows are inserted with insertAll and read back through paged query results, with
//! `errors[]` checked on every response.
#![allow(clippy::expect_used, clippy::unwrap_used)] // helpers of tests

use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use gcp_bigquery_client::model::time_partitioning::TimePartitioning;
use sync_engine::warehouse::{Warehouse, WarehouseError};
use test_support::TestDataset;

async fn partitioned_table(ds: &TestDataset) {
    let schema = TableSchema::new(vec![
        TableFieldSchema::integer("id"),
        TableFieldSchema::date("day"),
        TableFieldSchema::string("name"),
    ]);
    let mut partitioning = TimePartitioning::per_day();
    partitioning.field = Some("day".to_string());
    let table =
        Table::new(&ds.project, &ds.dataset, "events", schema).time_partitioning(partitioning);
    ds.client.table().create(table).await.expect("create table");
}

#[tokio::test]
async fn inserted_rows_come_back_through_paged_query_results() {
    let ds = TestDataset::new().await;
    partitioned_table(&ds).await;
    let mut insert = TableDataInsertAllRequest::new();
    for id in 0..25i64 {
        let day = format!("2026-01-{:02}", 1 + id % 3);
        insert
            .add_row(
                None,
                serde_json::json!({"id": id, "day": day, "name": format!("n'{id}, \"ü\"")}),
            )
            .expect("row");
    }
    let resp = ds
        .client
        .tabledata()
        .insert_all(&ds.project, &ds.dataset, "events", insert)
        .await
        .expect("insertAll");
    assert!(resp.insert_errors.unwrap_or_default().is_empty());

    let mut wh = Warehouse::new(ds.client.clone(), ds.project.clone());
    wh.page_size = 7; // 25 rows → 4 pages
    let mut pages = 0;
    let mut ids = Vec::new();
    let sql = format!(
        "SELECT id, day, name FROM `{}.{}.events` ORDER BY id",
        ds.project, ds.dataset
    );
    wh.query_pages(&sql, |page| {
        pages += 1;
        assert_eq!(page.columns, vec!["id", "day", "name"]);
        for row in page.rows {
            let id: i64 = row[0]
                .as_ref()
                .and_then(|v| v.as_str())
                .expect("id")
                .parse()
                .expect("int");
            assert_eq!(
                row[2].as_ref().and_then(|v| v.as_str()),
                Some(format!("n'{id}, \"ü\"").as_str())
            );
            ids.push(id);
        }
        Ok::<(), WarehouseError>(())
    })
    .await
    .expect("query");
    assert!(pages >= 4, "expected several pages, got {pages}");
    assert_eq!(ids, (0..25).collect::<Vec<_>>());

    let parts = wh
        .query_all(&format!(
            "SELECT partition_id, total_rows FROM `{}.{}.INFORMATION_SCHEMA.PARTITIONS` \
             WHERE table_name = 'events' ORDER BY partition_id",
            ds.project, ds.dataset
        ))
        .await
        .expect("partitions");
    let ids: Vec<_> = parts
        .rows
        .iter()
        .map(|r| r[0].clone().and_then(|v| v.as_str().map(String::from)))
        .collect();
    assert_eq!(
        ids,
        vec![
            Some("20260101".into()),
            Some("20260102".into()),
            Some("20260103".into())
        ]
    );
}

#[tokio::test]
async fn a_failing_query_is_an_error_not_an_empty_result() {
    let ds = TestDataset::new().await;
    let wh = Warehouse::new(ds.client.clone(), ds.project.clone());
    let err = wh
        .query_all(&format!(
            "SELECT no_such_column FROM `{}.{}.missing`",
            ds.project, ds.dataset
        ))
        .await
        .expect_err("query of a missing table must fail");
    assert!(!err.transient(), "a bad query is permanent: {err}");
}

#[tokio::test]
async fn an_unreachable_warehouse_is_a_transient_network_error() {
    let client = sync_engine::warehouse::client(
        Some("http://127.0.0.1:1/bigquery/v2"),
        &sync_engine::warehouse::Credentials::None,
    )
    .await
    .expect("client");
    let mut wh = Warehouse::new(client, "p");
    wh.max_attempts = 2;
    let err = wh
        .query_all("SELECT 1")
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, WarehouseError::Network(_)), "{err:?}");
    assert!(err.transient());
}
