//! The real GCS read path: objects seeded into fake-gcs-server through its JSON API are listed
//! and read back through `object_store` (feature `gcp`) via `sync_engine::staging::open`.
#![allow(clippy::expect_used, clippy::unwrap_used)] // helpers of tests

use futures::TryStreamExt;
use object_store::path::Path;

#[tokio::test]
async fn objects_seeded_through_the_json_api_are_listed_and_read() {
    let env = test_support::dev_env();
    let bucket = format!("test-{}", uuid::Uuid::new_v4().simple());
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/storage/v1/b?project=test", env.gcs_url))
        .json(&serde_json::json!({ "name": bucket }))
        .send()
        .await
        .expect("GCS emulator reachable; start it with deploy/dev/env.sh up");
    assert!(
        resp.status().is_success(),
        "create bucket: {}",
        resp.status()
    );
    let files = [
        ("exports/run1/t/p1/000.json", "{\"a\":1}\n"),
        ("exports/run1/t/p1/001.json", "{\"a\":2}\n"),
        ("other/x", "x"),
    ];
    for (name, body) in files {
        let resp = http
            .post(format!("{}/upload/storage/v1/b/{bucket}/o", env.gcs_url))
            .query(&[("uploadType", "media"), ("name", name)])
            .body(body)
            .send()
            .await
            .expect("upload");
        assert!(
            resp.status().is_success(),
            "upload {name}: {}",
            resp.status()
        );
    }

    let staging =
        sync_engine::staging::open(&format!("gs://{bucket}/exports/run1"), Some(&env.gcs_url))
            .expect("open");
    let mut listed: Vec<String> = staging
        .store
        .list(Some(&staging.prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list");
    listed.sort();
    assert_eq!(
        listed,
        vec!["exports/run1/t/p1/000.json", "exports/run1/t/p1/001.json"]
    );
    let body = staging
        .store
        .get(&Path::from("exports/run1/t/p1/001.json"))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("read");
    assert_eq!(&body[..], b"{\"a\":2}\n");

    let missing = staging.store.get(&Path::from("exports/run1/nope")).await;
    assert!(
        matches!(missing, Err(object_store::Error::NotFound { .. })),
        "{missing:?}"
    );
}

#[tokio::test]
async fn a_local_directory_stands_in_for_the_bucket() {
    let dir = std::env::temp_dir().join(format!("staging-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("run/t/p")).expect("mkdir");
    std::fs::write(dir.join("run/t/p/a.json"), "{}\n").expect("write");
    let staging = sync_engine::staging::open(dir.to_str().expect("utf8"), None).expect("open");
    let listed: Vec<_> = staging
        .store
        .list(Some(&Path::from("run")))
        .try_collect()
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
