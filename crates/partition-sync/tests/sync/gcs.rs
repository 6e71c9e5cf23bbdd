//! The real GCS read path: exported files seeded into fake-gcs-server (through its JSON API,
//! as uploads through object_store fail there) are listed and loaded through `object_store`.

use futures::TryStreamExt;
use object_store::path::Path;

use mysql::prelude::Queryable;
use partition_sync::load::{self, PartitionLoad, TableWork};
use partition_sync::plan::{Reason, SourcePartition};

use crate::helpers::*;

#[tokio::test]
async fn a_partition_staged_in_gcs_loads_through_object_store() {
    let f = stats_fixture(&["2026-01-01"], 1).await;
    let files = [
        ("exports/run1/stats/20260101/000000000000.json", "{\"recipe_id\":1,\"day\":\"2026-01-01\",\"views\":10,\"rating\":4.5,\"note\":\"a\",\"updated\":1767261600123456}\n".as_bytes().to_vec()),
        ("exports/run1/stats/20260101/000000000001.json", "{\"recipe_id\":\"2\",\"day\":\"2026-01-01\",\"views\":\"20\",\"rating\":null,\"note\":\"b\",\"updated\":null}\n\n".as_bytes().to_vec()),
    ];
    let loaded = load_from_gcs(&f, &files).await;
    assert_eq!(loaded, 2);
    let rows: Vec<(i64, i64, Option<String>)> =
        f.rows("SELECT recipe_id, views, CAST(updated AS CHAR) FROM stats ORDER BY recipe_id");
    assert_eq!(
        rows,
        vec![
            (1, 10, Some("2026-01-01 10:00:00.123456".into())),
            (2, 20, None)
        ]
    );
}

#[tokio::test]
async fn a_parquet_export_in_gcs_loads_through_object_store() {
    // A real Parquet export of the emulator (kept), seeded into fake-gcs-server, read through
    // its ranged GETs (their count is checked by ranged.rs's own test).
    let f = stats_fixture(&["2026-01-01"], 300).await;
    f.format.set("parquet");
    let s = f
        .run(&format!("keep_files = true\n{STATS}"), Default::default())
        .await;
    assert!(s.ok, "{s:?}");
    let exported: Vec<_> = staged_files(&f)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(!exported.is_empty());
    let files: Vec<(String, Vec<u8>)> = exported
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                format!("exports/run1/stats/20260101/{i:012}.parquet"),
                std::fs::read(p).unwrap(),
            )
        })
        .collect();
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    f.mysql().query_drop("DELETE FROM stats").unwrap();
    let loaded = load_from_gcs(&f, &files).await;
    assert_eq!(loaded, 300);
    assert_eq!(
        f.rows::<(i64, i64)>("SELECT COUNT(*), SUM(views) FROM stats"),
        vec![(300, (1..=300).map(|r| r * 10).sum::<i64>())]
    );
}

/// Seeds `files` (name under the fixture's bucket, bytes) into fake-gcs-server, then loads
/// them as partition 20260101 of `stats` through `object_store`'s GCS client. Returns the rows
/// loaded.
async fn load_from_gcs(f: &Fixture, files: &[(&str, Vec<u8>)]) -> u64 {
    let gcs = f.ds.env.gcs_url.clone();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{gcs}/storage/v1/b?project=test"))
        .json(&serde_json::json!({"name": f.bucket}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    for (name, body) in files {
        let resp = http
            .post(format!("{gcs}/upload/storage/v1/b/{}/o", f.bucket))
            .query(&[("uploadType", "media"), ("name", name)])
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }

    let staging =
        sync_engine::staging::open(&format!("gs://{}/exports", f.bucket), Some(&gcs)).unwrap();
    let prefix = Path::from(format!("{}/run1/stats/20260101", staging.prefix.as_ref()));
    let mut paths: Vec<Path> = staging
        .store
        .list(Some(&prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .unwrap();
    paths.sort();
    assert_eq!(paths.len(), files.len());

    let cfg = f.config(STATS);
    let client = sync_engine::warehouse::client(
        Some(&f.ds.env.bigquery_url),
        &sync_engine::warehouse::Credentials::None,
    )
    .await
    .unwrap();
    let wh = sync_engine::warehouse::Warehouse::new(client, f.ds.project.clone());
    let table = partition_sync::source::describe(&wh, &f.ds.dataset, &cfg.tables[0])
        .await
        .unwrap();
    let work = vec![TableWork {
        table,
        loads: vec![PartitionLoad {
            partition: SourcePartition {
                id: "20260101".into(),
                rows: 0,
                modified_micros: None,
                fingerprint: Some(7),
            },
            reason: Reason::New,
            files: paths,
            synced_rows: None,
        }],
        vanished: vec![],
    }];
    let store = staging.store.clone();
    let url = f.db.url.clone();
    let rt = tokio::runtime::Handle::current();
    let outcomes = tokio::task::spawn_blocking(move || {
        let mut conn = sync_engine::session::connect(&url).unwrap();
        sync_engine::session::ensure_state_tables(&mut conn).unwrap();
        let mut work = work;
        load::ensure_target(&mut conn, &mut work[0].table).unwrap();
        load::load_group(
            &mut conn,
            &store,
            &rt,
            "run1",
            &work,
            domain::config::Loader::Auto,
            &|_| {},
        )
    })
    .await
    .unwrap()
    .unwrap();
    outcomes[0].rows_loaded
}
