//! The real GCS read path: exported files seeded into fake-gcs-server (through its JSON API,
//! as uploads through object_store fail there) are listed and loaded through `object_store`.

use futures::TryStreamExt;
use object_store::path::Path;

use partition_sync::load::{self, PartitionLoad, TableWork};
use partition_sync::plan::{Reason, SourcePartition};

use crate::helpers::*;

#[tokio::test]
async fn a_partition_staged_in_gcs_loads_through_object_store() {
    let f = stats_fixture(&["2026-01-01"], 1).await;
    let gcs = f.ds.env.gcs_url.clone();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{gcs}/storage/v1/b?project=test"))
        .json(&serde_json::json!({"name": f.bucket}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let files = [
        ("exports/run1/stats/20260101/000000000000.json", "{\"recipe_id\":1,\"day\":\"2026-01-01\",\"views\":10,\"rating\":4.5,\"note\":\"a\",\"updated\":1767261600123456}\n"),
        ("exports/run1/stats/20260101/000000000001.json", "{\"recipe_id\":\"2\",\"day\":\"2026-01-01\",\"views\":\"20\",\"rating\":null,\"note\":\"b\",\"updated\":null}\n\n"),
    ];
    for (name, body) in files {
        let resp = http
            .post(format!("{gcs}/upload/storage/v1/b/{}/o", f.bucket))
            .query(&[("uploadType", "media"), ("name", name)])
            .body(body)
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
    assert_eq!(paths.len(), 2);

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
                rows: 2,
                modified_micros: None,
                fingerprint: Some(7),
            },
            reason: Reason::New,
            files: paths,
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
    assert_eq!(outcomes[0].rows_loaded, 2);
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
