//! The binary itself: `--help`, `verify` exiting 1 with the mismatch listed, `status`, and
//! the `/metrics` and `/healthz` endpoints.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::{ok, table, Fixture};
use mysql::prelude::Queryable;
use stream_sync::runner::Mode;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stream-sync"))
}

/// Sends SIGTERM and waits (at most 20 s) for the exit status.
async fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[test]
fn help_explains_the_commands() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "status", "verify", "resync", "bucket", "--config"] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
    let out = bin().args(["run", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--once") && text.contains("--table"),
        "{text}"
    );
}

#[tokio::test]
async fn verify_exits_1_and_lists_a_row_changed_in_mysql_and_status_reports_the_table() {
    let f = Fixture::new().await;
    f.bq("CREATE TABLE {ds}.items (id INT64 NOT NULL, name STRING)")
        .await;
    f.bq("INSERT INTO {ds}.items (id, name) VALUES (1, 'a'), (2, 'b'), (5, 'e')")
        .await;
    let tables = table("items", &["id"], "");
    ok(&f.sync(&f.config(&tables, "")).await, "items");
    let path = std::env::temp_dir().join(format!("stream-sync-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, f.config_text(&tables, "")).unwrap();
    let run = |args: &[&str]| {
        bin()
            .args(args)
            .arg("--config")
            .arg(&path)
            .env("STREAM_SYNC_TEST_URL", &f.db.url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };

    let out = run(&["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("items: in sync") && text.contains("MySQL 3 rows"),
        "{text}"
    );

    f.my()
        .query_drop("UPDATE items SET name = 'tampered' WHERE id = 5")
        .unwrap();
    let out = run(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("items key (5): values differ in column(s) name"),
        "{text}"
    );
    let _ = std::fs::remove_file(&path);
}

fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_healthz_are_served() {
    let f = Fixture::new().await;
    f.bq("CREATE TABLE {ds}.items (id INT64 NOT NULL, name STRING)")
        .await;
    f.bq("INSERT INTO {ds}.items (id, name) VALUES (1, 'a'), (2, 'b')")
        .await;
    let config = f.config(&table("items", &["id"], ""), "");
    let mut runner = f.runner(&config, None).await;
    let (server, addr) =
        stream_sync::http::serve("127.0.0.1:0", runner.metrics.clone(), runner.health.clone())
            .unwrap();
    let handle = server.handle();
    tokio::spawn(server);
    ok(&runner.run(Mode::Once { max_attempts: 3 }).await, "items");

    let metrics = tokio::task::spawn_blocking(move || get(addr, "/metrics"))
        .await
        .unwrap();
    assert!(metrics.starts_with("HTTP/1.0 200") || metrics.starts_with("HTTP/1.1 200"));
    for line in [
        "stream_sync_rows_applied_total{op=\"insert\",table=\"items\"} 2",
        "stream_sync_rows_loaded_total{table=\"items\"} 2",
        "stream_sync_rows_deleted_total{table=\"items\"} 0",
        "stream_sync_cycles_total{outcome=\"changed\",table=\"items\"} 1",
        "stream_sync_warehouse_rows_fetched_total{kind=\"row\",table=\"items\"} 2",
        "stream_sync_table_up{table=\"items\"} 1",
        "stream_sync_buckets_differing{table=\"items\"}",
        "stream_sync_cycle_duration_seconds_count{table=\"items\"} 1",
        "stream_sync_last_success_timestamp_seconds{table=\"items\"}",
        "stream_sync_lag_seconds{table=\"items\"}",
    ] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }
    let health = tokio::task::spawn_blocking(move || get(addr, "/healthz"))
        .await
        .unwrap();
    assert!(
        health.contains("200") && health.contains(r#""items":"ok""#),
        "{health}"
    );
    handle.stop(true).await;
}

#[tokio::test]
async fn sigterm_stops_the_daemon_cleanly_after_its_cycle() {
    let f = Fixture::new().await;
    f.bq("CREATE TABLE {ds}.items (id INT64 NOT NULL, name STRING)")
        .await;
    f.bq(
        "INSERT INTO {ds}.items (id, name) SELECT x, 'n' FROM UNNEST(GENERATE_ARRAY(1, 500)) AS x",
    )
    .await;
    let path = std::env::temp_dir().join(format!("stream-sync-{}.toml", uuid::Uuid::new_v4()));
    let text = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        f.config_text(&table("items", &["id"], ""), "interval_secs = 1")
    );
    std::fs::write(&path, text).unwrap();
    let mut child = bin()
        .args(["run", "--config"])
        .arg(&path)
        .env("STREAM_SYNC_TEST_URL", &f.db.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while f.my_count_if_exists("items") != Some(500) {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not sync"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let code = terminate(&mut child).await;
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(code.success(), "{code:?}\n{logs}");
    // Not a terminal: one JSON object per line, with dotted fields.
    assert!(
        logs.lines()
            .any(|l| l.starts_with('{') && l.contains("\"table.name\":\"items\"")),
        "{logs}"
    );
    assert!(logs.contains("shutdown requested"), "{logs}");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn sigterm_mid_apply_finishes_the_current_batch_and_exits() {
    let f = Fixture::new().await;
    let rows = 60_000;
    f.bq("CREATE TABLE {ds}.items (id INT64 NOT NULL, name STRING)")
        .await;
    f.bq(&format!(
        "INSERT INTO {{ds}}.items (id, name) SELECT x, CONCAT('item ', CAST(x AS STRING)) \
         FROM UNNEST(GENERATE_ARRAY(1, {rows})) AS x"
    ))
    .await;
    let path = std::env::temp_dir().join(format!("stream-sync-{}.toml", uuid::Uuid::new_v4()));
    let text = f.config_text(
        &table("items", &["id"], ""),
        "interval_secs = 1\nbatch_rows = 100",
    );
    std::fs::write(&path, text).unwrap();
    let mut child = bin()
        .args(["run", "--config"])
        .arg(&path)
        .env("STREAM_SYNC_TEST_URL", &f.db.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // As soon as the first batches are committed, while the first cycle is still applying.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while f.my_count_if_exists("items").unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing applied");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let code = terminate(&mut child).await;
    assert!(code.success(), "{code:?}");
    let applied = f.my_count("items");
    assert!(
        applied < rows,
        "the cycle stopped early ({applied} of {rows} rows applied)"
    );
    assert_eq!(
        applied % 100,
        0,
        "only whole batches are committed: {applied}"
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn resync_rewrites_a_row_changed_behind_the_syncs_back() {
    let f = Fixture::new().await;
    f.bq("CREATE TABLE {ds}.items (id INT64 NOT NULL, name STRING)")
        .await;
    f.bq("INSERT INTO {ds}.items (id, name) SELECT x, 'n' FROM UNNEST(GENERATE_ARRAY(1, 50)) AS x")
        .await;
    let config_text = f.config_text(&table("items", &["id"], ""), "");
    let path = std::env::temp_dir().join(format!("stream-sync-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, &config_text).unwrap();
    ok(
        &f.sync(&f.config(&table("items", &["id"], ""), "")).await,
        "items",
    );
    // The stored hash is unchanged, so no cycle sees this; resync does.
    f.my()
        .query_drop("UPDATE items SET name = 'tampered' WHERE id = 5")
        .unwrap();
    let out = bin()
        .args(["resync", "--table", "items", "--config"])
        .arg(&path)
        .env("STREAM_SYNC_TEST_URL", &f.db.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("items: rewrote 50 rows, deleted 0"),
        "{stdout}"
    );
    assert_eq!(
        f.my_rows("SELECT name FROM items WHERE id = 5"),
        vec![vec!["n"]]
    );
    let bad = bin()
        .args(["resync", "--table", "nope", "--config"])
        .arg(&path)
        .env("STREAM_SYNC_TEST_URL", &f.db.url)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nope"));
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn run_once_does_not_take_the_daemons_metrics_port() {
    let f = Fixture::new().await;
    f.bq("CREATE TABLE {ds}.items (id INT64 NOT NULL, name STRING)")
        .await;
    f.bq("INSERT INTO {ds}.items (id, name) VALUES (1, 'a'), (2, 'b')")
        .await;
    // The daemon's port, already taken.
    let daemon = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let path = std::env::temp_dir().join(format!("stream-sync-{}.toml", uuid::Uuid::new_v4()));
    let text = format!(
        "{}\n[metrics]\nlisten = \"{}\"\n",
        f.config_text(&table("items", &["id"], ""), ""),
        daemon.local_addr().unwrap()
    );
    std::fs::write(&path, text).unwrap();
    let out = bin()
        .args(["run", "--once", "--config"])
        .arg(&path)
        .env("STREAM_SYNC_TEST_URL", &f.db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.my_count("items"), 2);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn the_daemon_exits_non_zero_when_every_table_has_stopped() {
    let f = Fixture::new().await;
    // The only table does not exist in the warehouse: a permanent error that stops it.
    let path = std::env::temp_dir().join(format!("stream-sync-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, f.config_text(&table("missing", &["id"], ""), "")).unwrap();
    let out = bin()
        .args(["run", "--config"])
        .arg(&path)
        .env("STREAM_SYNC_TEST_URL", &f.db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        !out.status.success(),
        "a daemon with nothing left to sync must not exit 0"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
