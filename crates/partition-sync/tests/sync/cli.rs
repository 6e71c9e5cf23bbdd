//! The binary: exit codes, the JSON summary, a dead warehouse, a SIGKILL mid-load.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use partition_sync::runner::Options;

use crate::helpers::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_partition-sync"));
    c.env("RUST_LOG", "warn");
    c
}

/// `partition-sync --config CFG run`, which must exit 0.
fn run_ok(cfg: &std::path::Path) -> std::process::Output {
    let out = bin()
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn run_prints_a_one_line_json_summary_and_exits_zero() {
    let f = stats_fixture(&["2026-01-01", "2026-01-02"], 2).await;
    let cfg = f.write_config(STATS);
    let out = run_ok(&cfg);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["rows_loaded"], 4);

    let out = bin()
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--output",
            "text",
            "status",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("stats") && text.contains("ok"), "{text}");

    let out = bin()
        .args(["--config", cfg.to_str().unwrap(), "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    f.mysql().query_drop("DELETE FROM stats LIMIT 1").unwrap();
    let out = bin()
        .args(["--config", cfg.to_str().unwrap(), "verify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn bad_config_exits_2_naming_the_key() {
    let f = Fixture::new().await;
    let cfg = f.write_config("[[tables]]\nsource='a'\ntarget='a'\nmode='partition'\npartition_column='d'\nprimary_kee=['x']\n");
    let out = bin()
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("primary_kee"));
    let out = bin()
        .args(["--config", "/nonexistent.toml", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin().args(["resync", "--table", "t"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "resync needs --partition or --all"
    );
}

#[tokio::test]
async fn an_unreachable_warehouse_is_a_clear_error_a_non_zero_exit_and_untouched_state() {
    let f = stats_fixture(&["2026-01-01"], 2).await;
    assert!(f.run(STATS, Options::default()).await.ok);
    let before: Vec<(String, i64)> = f.rows("SELECT partition_id, row_count FROM sync_partitions");
    let text = f
        .config_text(STATS)
        .replace(&f.ds.env.bigquery_url, "http://127.0.0.1:9/bigquery/v2");
    let cfg = f.dir.join("down.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = bin()
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = v["groups"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("warehouse table stats") && err.contains("BigQuery request failed"),
        "{err}"
    );
    assert_eq!(
        f.rows::<(String, i64)>("SELECT partition_id, row_count FROM sync_partitions"),
        before
    );
    assert_eq!(count(&f, "stats"), 2);
}

#[tokio::test]
async fn a_process_killed_mid_insert_leaves_mysql_as_before_and_the_next_run_completes() {
    let f = stats_fixture(&["2026-01-01"], 2).await;
    assert!(f.run(STATS, Options::default()).await.ok);
    let before: Vec<(i64, String)> =
        f.rows("SELECT recipe_id, CAST(day AS CHAR) FROM stats ORDER BY 1, 2");
    // A big new partition, so that the insert takes a while.
    f.sql(
        "INSERT INTO `{ds}.stats` (recipe_id, day, views, rating, note, updated) SELECT x, DATE '2026-01-05', x, 1.5, 'n', \
         TIMESTAMP '2026-01-05 00:00:00+00' FROM UNNEST(GENERATE_ARRAY(1, 60000)) AS x",
    )
    .await;
    // Hold the lock of the partition's state row, so that the load's transaction, having
    // inserted every row of the partition, waits right before recording the watermark: a
    // deterministic "mid-load".
    let mut blocker = f.mysql();
    blocker.query_drop("START TRANSACTION").unwrap();
    blocker
        .query_drop(
            "INSERT INTO sync_partitions (target_table, partition_id, row_count, synced_at, run_id) \
             VALUES ('stats', '20260105', 0, NOW(6), 'test-blocker')",
        )
        .unwrap();
    let cfg = f.write_config(STATS);
    let mut child = bin()
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut admin = f.mysql();
    let started = Instant::now();
    let mut modified = None;
    while started.elapsed() < Duration::from_secs(120) {
        let n: Option<Option<i64>> = admin
            .query_first(format!(
                "SELECT MAX(t.trx_rows_modified) FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p \
                 ON p.ID = t.trx_mysql_thread_id WHERE p.DB = '{}' AND t.trx_state = 'LOCK WAIT'",
                f.db.name
            ))
            .unwrap();
        let n = n.flatten();
        if n.is_some() {
            modified = n;
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
            panic!("the run ended ({status}) before it could be killed: {out}");
        }
        // InnoDB refreshes INNODB_TRX only when it was not read in the last 100 ms.
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        modified.unwrap_or(0) >= 60_000,
        "the load's transaction was not waiting after its inserts: {modified:?}"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    blocker.query_drop("ROLLBACK").unwrap();
    drop(blocker);
    // The server rolls the dead session's transaction back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now: Vec<(i64, String)> =
            f.rows("SELECT recipe_id, CAST(day AS CHAR) FROM stats ORDER BY 1, 2");
        if now == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "MySQL changed after the kill: {} rows",
            now.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(f.rows::<i64>("SELECT COUNT(*) FROM sync_partitions")[0], 1);
    let s = f.run(STATS, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(count(&f, "stats"), 60_002);
}

#[tokio::test]
async fn metrics_are_pushed_and_a_failed_run_keeps_the_last_success_time() {
    let f = stats_fixture(&["2026-01-01"], 2).await;
    // A table name of its own, as every test shares the Pushgateway.
    let table = format!("m{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    f.create_table(&table, stats_fields(), Some("day")).await;
    f.insert(
        &table,
        vec![stat(1, "2026-01-01", 1), stat(2, "2026-01-01", 2)],
    )
    .await;
    let tables = STATS.replace("\"stats\"", &format!("\"{table}\""));
    let pgw = f.ds.env.pushgateway_url.clone();
    let text = format!("{}\n", f.config_text(&tables)).replace(
        "[staging]",
        &format!("[metrics]\npushgateway = \"{pgw}\"\n[staging]"),
    );
    let cfg = f.dir.join("metrics.toml");
    std::fs::write(&cfg, text).unwrap();
    run_ok(&cfg);
    let scrape = || async {
        reqwest::get(format!("{pgw}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let line = |body: &str, name: &str| -> Option<String> {
        body.lines()
            .find(|l| l.starts_with(name) && l.contains(&format!("table=\"{table}\"")))
            .map(str::to_string)
    };
    let body = scrape().await;
    let success =
        line(&body, "partition_sync_last_success_timestamp_seconds").expect("last success pushed");
    assert!(
        line(&body, "partition_sync_last_run_rows_loaded")
            .unwrap()
            .ends_with(" 2"),
        "{body}"
    );

    // A failing run: the success time stays, the error is counted by kind.
    f.sql(&format!("UPDATE `{{ds}}.{table}` SET note = 'far too long for a varchar of twenty' WHERE recipe_id = 1")).await;
    let out = bin()
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let body = scrape().await;
    assert_eq!(
        line(&body, "partition_sync_last_success_timestamp_seconds").unwrap(),
        success
    );
    let err = body
        .lines()
        .find(|l| {
            l.starts_with("partition_sync_last_run_errors")
                && l.contains("kind=\"bad_row\"")
                && l.contains(&table)
        })
        .expect("error pushed");
    assert!(err.ends_with(" 1"), "{err}");

    // The counters count over runs: the failed run added an error and no rows; a repaired
    // run adds its rows to the first run's, and the error count stays.
    f.sql(&format!(
        "UPDATE `{{ds}}.{table}` SET note = 'short' WHERE recipe_id = 1"
    ))
    .await;
    run_ok(&cfg);
    let body = scrape().await;
    let value = |name: &str, extra: &str| -> String {
        body.lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains(&format!("table=\"{table}\""))
                    && l.contains(extra)
            })
            .unwrap_or_else(|| panic!("{name} {extra}: {body}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(value("partition_sync_rows_loaded_total", ""), "4");
    assert_eq!(value("partition_sync_rows_deleted_total", ""), "2");
    assert_eq!(value("partition_sync_partitions_synced_total", ""), "2");
    assert_eq!(
        value("partition_sync_errors_total", "kind=\"bad_row\""),
        "1"
    );
    assert!(
        body.contains("partition_sync_run_duration_seconds"),
        "{body}"
    );
    assert!(
        body.contains("partition_sync_warehouse_bytes_processed_total"),
        "{body}"
    );
}

#[tokio::test]
async fn a_config_without_partition_tables_or_staging_is_a_no_op_run() {
    let f = Fixture::new().await;
    let text =
        f.config_text("[[tables]]\nsource='n'\ntarget='n'\nmode='stream'\nprimary_key=['id']\n");
    let start = text.find("[staging]").unwrap();
    let end = text[start..]
        .find("\n[[tables]]")
        .map(|i| start + i)
        .unwrap();
    let cfg = f.dir.join("stream-only.toml");
    std::fs::write(&cfg, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let out = run_ok(&cfg);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["groups"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_connection_killed_mid_load_is_retried_and_the_run_succeeds() {
    let f = stats_fixture(&["2026-01-01"], 2).await;
    assert!(f.run(STATS, Options::default()).await.ok);
    f.insert(
        "stats",
        vec![stat(5, "2026-01-07", 1), stat(6, "2026-01-07", 1)],
    )
    .await;
    // Make the load wait on the state row, then kill its MySQL connection server-side.
    let mut blocker = f.mysql();
    blocker.query_drop("START TRANSACTION").unwrap();
    blocker
        .query_drop(
            "INSERT INTO sync_partitions (target_table, partition_id, row_count, synced_at, run_id) \
             VALUES ('stats', '20260107', 0, NOW(6), 'test-blocker')",
        )
        .unwrap();
    let cfg = f.write_config(STATS);
    let child = bin()
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut admin = f.mysql();
    let started = Instant::now();
    let mut victim = None;
    while victim.is_none() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(250));
        victim = admin
            .query_first::<u64, _>(format!(
                "SELECT t.trx_mysql_thread_id FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p \
                 ON p.ID = t.trx_mysql_thread_id WHERE p.DB = '{}' AND t.trx_state = 'LOCK WAIT'",
                f.db.name
            ))
            .unwrap();
    }
    let victim = victim.expect("the load never waited");
    admin.query_drop(format!("KILL {victim}")).unwrap();
    blocker.query_drop("ROLLBACK").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(count(&f, "stats"), 4);
    assert_eq!(
        f.rows::<i64>("SELECT row_count FROM sync_partitions WHERE partition_id = '20260107'"),
        vec![2]
    );
}
