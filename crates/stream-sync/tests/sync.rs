//! stream-sync against the BigQuery emulator and MariaDB: changes reach MySQL in one cycle, an
//! unchanged table costs only the bucket digests, composite keys, the mass-delete guard, a
//! schema mismatch that stops only its table, and `verify`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{ok, table, Fixture};
use domain::config::SyncConfig;
use stream_sync::cycle::CycleSettings;
use stream_sync::runner::{Mode, Runner};
use stream_sync::ErrorKind;

async fn items(f: &Fixture, n: i64) {
    f.bq("CREATE TABLE {ds}.items (id INT64 NOT NULL, name STRING, qty INT64)")
        .await;
    f.bq(&format!(
        "INSERT INTO {{ds}}.items (id, name, qty) SELECT x, CONCAT('item ', CAST(x AS STRING)), x * 10 \
         FROM UNNEST(GENERATE_ARRAY(1, {n})) AS x"
    ))
    .await;
}

#[tokio::test]
async fn inserts_updates_and_deletes_all_reach_mysql_in_one_cycle() {
    let f = Fixture::new().await;
    items(&f, 200).await;
    let config = f.config(&table("items", &["id"], ""), "");
    let first = f.sync(&config).await;
    let r = ok(&first, "items");
    assert_eq!((r.inserts, r.upserted, r.deleted), (200, 200, 0));
    assert_eq!(f.my_count("items"), 200);

    f.bq("UPDATE {ds}.items SET name = 'renamed ✓', qty = NULL WHERE id IN (3, 50, 199)")
        .await;
    f.bq("DELETE FROM {ds}.items WHERE id IN (7, 8)").await;
    f.bq("INSERT INTO {ds}.items (id, name, qty) VALUES (1001, 'new', 1), (1002, NULL, -2)")
        .await;
    let second = f.sync(&config).await;
    let r = ok(&second, "items");
    assert_eq!(
        (r.inserts, r.updates, r.deleted, r.upserted),
        (2, 3, 2, 5),
        "{r:?}"
    );
    assert_eq!(
        r.fetch.full_rows, 5,
        "only new and changed rows are fetched"
    );
    // 7 changed keys touch at most 7 of the 64 buckets; only those are drilled into
    // (200 rows over 64 buckets: ~3 key rows each, far below the table's 200).
    assert!(r.buckets_differing <= 7, "{r:?}");
    assert!(
        r.fetch.key_rows < 60,
        "keys read beyond the differing buckets: {r:?}"
    );
    assert_eq!(f.my_count("items"), 200 - 2 + 2);
    assert_eq!(
        f.my_rows("SELECT id, name, qty FROM items WHERE id IN (3, 7, 8, 1001, 1002) ORDER BY id"),
        vec![
            vec!["3", "renamed ✓", "NULL"],
            vec!["1001", "new", "1"],
            vec!["1002", "NULL", "-2"],
        ]
    );
    let mut runner = f.runner(&config, None).await;
    assert!(runner.verify(100).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_cycle_without_warehouse_changes_writes_nothing_and_reads_only_bucket_digests() {
    let f = Fixture::new().await;
    items(&f, 300).await;
    // Without trusting the table's metadata (fingerprint detection), an unchanged table
    // costs one digest query.
    let config = f.config(
        &table("items", &["id"], "change_detection = \"fingerprint\""),
        "",
    );
    let mut runner = f.runner(&config, None).await;
    ok(&runner.run(Mode::Once { max_attempts: 3 }).await, "items");
    let checksum = f.my_rows("CHECKSUM TABLE items");
    let runs = f.my_rows("SELECT COUNT(*) FROM sync_runs");

    // Twice: the same runner (warm state) and a fresh one (cold state).
    for mut r in [runner, f.runner(&config, None).await] {
        let out = r.run(Mode::Once { max_attempts: 3 }).await;
        let rep = ok(&out, "items");
        assert_eq!(rep.rows_written(), 0, "{rep:?}");
        assert_eq!(rep.buckets_differing, 0);
        assert_eq!(
            rep.fetch.queries, 1,
            "only the digest query: {:?}",
            rep.fetch
        );
        assert!(rep.fetch.digest_rows <= 64, "{:?}", rep.fetch);
        assert_eq!((rep.fetch.key_rows, rep.fetch.full_rows), (0, 0));
    }
    assert_eq!(f.my_rows("CHECKSUM TABLE items"), checksum);
    assert_eq!(f.my_rows("SELECT COUNT(*) FROM sync_runs"), runs);
}

#[tokio::test]
async fn trusted_unchanged_metadata_skips_the_cycle_without_a_query() {
    let f = Fixture::new().await;
    items(&f, 20).await;
    let config = f.config(&table("items", &["id"], ""), "");
    let settings = CycleSettings {
        change_detection: domain::config::ChangeDetection::Metadata,
        ..Runner::settings_from(&config)
    };
    let mut runner = f.runner(&config, Some(settings)).await;
    ok(&runner.run(Mode::Once { max_attempts: 3 }).await, "items");
    let out = runner.run(Mode::Once { max_attempts: 3 }).await;
    let rep = ok(&out, "items");
    assert!(rep.skipped);
    assert_eq!(rep.fetch.queries, 0, "{:?}", rep.fetch);
    assert_eq!(rep.fetch.metadata_calls, 1);

    // An in-place update keeps the row count: only `lastModifiedTime` tells (the emulator
    // advances it on every write, as BigQuery does), and the next cycle is not skipped.
    f.bq("UPDATE {ds}.items SET name = 'changed' WHERE id = 3")
        .await;
    let out = runner.run(Mode::Once { max_attempts: 3 }).await;
    let rep = ok(&out, "items");
    assert!(!rep.skipped, "{rep:?}");
    assert_eq!(rep.updates, 1, "{rep:?}");
    assert_eq!(
        f.my_rows("SELECT name FROM items WHERE id = 3"),
        vec![vec!["changed"]]
    );
}

#[tokio::test]
async fn composite_primary_keys_sync_inserts_updates_and_deletes() {
    let f = Fixture::new().await;
    f.bq("CREATE TABLE {ds}.stats (region STRING NOT NULL, day DATE NOT NULL, views INT64)")
        .await;
    f.bq("INSERT INTO {ds}.stats (region, day, views) SELECT r, DATE_ADD(DATE '2026-01-01', INTERVAL d DAY), d \
          FROM UNNEST(['eu', 'us', 'ü-asia']) AS r, UNNEST(GENERATE_ARRAY(0, 29)) AS d")
        .await;
    let config = f.config(
        &table("stats", &["region", "day"], "varchar = { region = 32 }"),
        "max_delete_fraction = 0.5",
    );
    assert_eq!(ok(&f.sync(&config).await, "stats").upserted, 90);
    f.bq("UPDATE {ds}.stats SET views = 999 WHERE region = 'eu' AND day = DATE '2026-01-05'")
        .await;
    f.bq("DELETE FROM {ds}.stats WHERE region = 'ü-asia' AND day < DATE '2026-01-03'")
        .await;
    f.bq("INSERT INTO {ds}.stats (region, day, views) VALUES ('eu', DATE '2027-01-01', 1)")
        .await;
    let out = f.sync(&config).await;
    let r = ok(&out, "stats");
    assert_eq!((r.inserts, r.updates, r.deleted), (1, 1, 2), "{r:?}");
    assert_eq!(f.my_count("stats"), 89);
    assert_eq!(
        f.my_rows("SELECT views FROM stats WHERE region = 'eu' AND day = '2026-01-05'"),
        vec![vec!["999"]]
    );
    f.assert_in_sync(&config).await;
}

#[tokio::test]
async fn the_mass_delete_guard_stops_a_cycle_that_would_empty_or_gut_the_table() {
    let f = Fixture::new().await;
    items(&f, 100).await;
    let config = f.config(&table("items", &["id"], ""), "");
    ok(&f.sync(&config).await, "items");

    f.bq("DELETE FROM {ds}.items WHERE id <= 20").await;
    let out = f.sync(&config).await;
    let (kind, msg) = out[0].error.clone().expect("20% deletes must stop");
    assert_eq!(kind, ErrorKind::Cycle);
    assert!(msg.contains("20 of 100"), "{msg}");
    assert_eq!(f.my_count("items"), 100);

    f.bq("DELETE FROM {ds}.items WHERE TRUE").await;
    let out = f.sync(&config).await;
    let (_, msg) = out[0].error.clone().expect("an empty source must stop");
    assert!(msg.contains("returned 0 rows"), "{msg}");
    assert_eq!(f.my_count("items"), 100);

    let allow = CycleSettings {
        allow_mass_delete: true,
        ..Runner::settings_from(&config)
    };
    let out = f
        .runner(&config, Some(allow))
        .await
        .run(Mode::Once { max_attempts: 3 })
        .await;
    assert_eq!(ok(&out, "items").deleted, 100);
    assert_eq!(f.my_count("items"), 0);
}

/// Ten `items` that sync, and `prices` whose MySQL column `price` is a DATE where the
/// warehouse has FLOAT64 (a permanent error); returns the config syncing both.
async fn prices_mismatched_beside_items(f: &Fixture) -> SyncConfig {
    items(f, 10).await;
    f.bq("CREATE TABLE {ds}.prices (id INT64 NOT NULL, price FLOAT64)")
        .await;
    f.bq("INSERT INTO {ds}.prices (id, price) VALUES (1, 1.5), (2, 2.5)")
        .await;
    {
        use mysql::prelude::Queryable;
        f.my()
            .query_drop("CREATE TABLE prices (id BIGINT PRIMARY KEY, price DATE NULL)")
            .unwrap();
    }
    f.config(
        &format!(
            "{}{}",
            table("prices", &["id"], ""),
            table("items", &["id"], "")
        ),
        "",
    )
}

#[tokio::test]
async fn a_schema_mismatch_stops_its_table_with_a_clear_error_while_another_keeps_syncing() {
    let f = Fixture::new().await;
    let config = prices_mismatched_beside_items(&f).await;
    let mut runner = f.runner(&config, None).await;
    let out = runner.run(Mode::Once { max_attempts: 3 }).await;
    let prices = out.iter().find(|o| o.table == "prices").unwrap();
    let (kind, msg) = prices.error.clone().expect("prices must fail");
    assert_eq!(kind, ErrorKind::Permanent);
    assert!(
        msg.contains("prices.price") && msg.contains("date"),
        "{msg}"
    );
    assert_eq!(ok(&out, "items").upserted, 10);
    assert_eq!(f.my_count("items"), 10);
    let health = runner.health.lock().unwrap().clone();
    assert!(health["prices"].starts_with("stopped"), "{health:?}");
    assert_eq!(health["items"], "ok");
}

/// `stream_sync_table_up{table}` as the daemon exports it.
fn table_up(runner_metrics: &stream_sync::metrics::Metrics, table: &str) -> Option<f64> {
    runner_metrics
        .registry
        .gather()
        .iter()
        .find(|m| m.name() == "stream_sync_table_up")?
        .get_metric()
        .iter()
        .find(|m| m.get_label().iter().any(|l| l.value() == table))
        .map(|m| m.get_gauge().get_value())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_rechecks_a_stopped_table_and_it_heals_once_the_cause_is_fixed() {
    let f = Fixture::new().await;
    let config = prices_mismatched_beside_items(&f).await;
    let mut runner = f.runner(&config, None).await;
    runner.set_permanent_recheck(std::time::Duration::from_secs(1));
    let (stop, health, metrics) = (
        runner.shutdown_flag(),
        runner.health.clone(),
        runner.metrics.clone(),
    );
    let daemon = tokio::spawn(async move {
        runner
            .run(Mode::Forever {
                interval: std::time::Duration::from_millis(200),
            })
            .await
    });
    let state = |t: &str| health.lock().unwrap().get(t).cloned().unwrap_or_default();
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    wait("prices to stop", &|| state("prices").starts_with("stopped"));
    assert_eq!(table_up(&metrics, "prices"), Some(0.0));
    assert_eq!(state("items"), "ok");
    assert!(
        !daemon.is_finished(),
        "one stopped table must not end the daemon"
    );

    // The operator fixes the schema: the next re-check syncs the table, no restart.
    {
        use mysql::prelude::Queryable;
        f.my().query_drop("DROP TABLE prices").unwrap();
    }
    wait("prices to heal", &|| state("prices") == "ok");
    assert_eq!(f.my_count("prices"), 2);
    assert_eq!(table_up(&metrics, "prices"), Some(1.0));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    daemon.await.unwrap();
}

#[tokio::test]
async fn verify_reports_a_row_changed_behind_the_syncs_back() {
    let f = Fixture::new().await;
    items(&f, 50).await;
    let config = f.config(&table("items", &["id"], ""), "");
    ok(&f.sync(&config).await, "items");
    let mut runner = f.runner(&config, None).await;
    assert!(runner.verify(10).await.unwrap().is_empty());
    {
        use mysql::prelude::Queryable;
        let mut c = f.my();
        c.query_drop("UPDATE items SET qty = 12345 WHERE id = 42")
            .unwrap();
        c.query_drop("DELETE FROM items WHERE id = 43").unwrap();
    }
    let found = runner.verify(10).await.unwrap();
    let text: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 2, "{text:?}");
    assert!(
        text.iter()
            .any(|m| m.contains("key (42)") && m.contains("qty")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|m| m.contains("key (43)") && m.contains("not in MySQL")),
        "{text:?}"
    );
}

/// A warehouse table `events (id, updated_at, v)` of 40 rows, `v = 'a'`, ten minutes apart
/// (a cursor's 5-minute overlap re-reads only the newest row).
async fn events_fixture() -> Fixture {
    let f = Fixture::new().await;
    f.bq("CREATE TABLE {ds}.events (id INT64 NOT NULL, updated_at TIMESTAMP, v STRING)")
        .await;
    f.bq("INSERT INTO {ds}.events (id, updated_at, v) SELECT x, TIMESTAMP_SECONDS(1700000000 + 600 * x), 'a' \
          FROM UNNEST(GENERATE_ARRAY(1, 40)) AS x")
        .await;
    f
}

#[tokio::test]
async fn cursor_mode_fetches_only_rows_past_the_watermark() {
    let f = events_fixture().await;
    let config = f.config(
        &table("events", &["id"], "cursor_column = \"updated_at\""),
        "",
    );
    let mut runner = f.runner(&config, None).await;
    let out = runner.run(Mode::Once { max_attempts: 3 }).await;
    assert!(!ok(&out, "events").cursor, "the first cycle is a full diff");
    f.bq("UPDATE {ds}.events SET v = 'b', updated_at = TIMESTAMP_SECONDS(1700024000) WHERE id = 5")
        .await;
    let out = runner.run(Mode::Once { max_attempts: 3 }).await;
    let r = ok(&out, "events");
    assert!(r.cursor);
    assert_eq!(
        (r.fetch.full_rows, r.fetch.digest_rows),
        (2, 0),
        "the changed row, and the newest one again (the overlap): {r:?}"
    );
    assert_eq!(
        f.my_rows("SELECT v FROM events WHERE id = 5"),
        vec![vec!["b"]]
    );

    // A row committed later with the watermark's own value, and a row dated in the future
    // followed by an ordinary one: none waits for the next full diff.
    f.bq("INSERT INTO {ds}.events (id, updated_at, v) VALUES (41, TIMESTAMP_SECONDS(1700024000), 'same'), \
          (42, TIMESTAMP_SECONDS(4000000000), 'future')")
        .await;
    let r = ok(&runner.run(Mode::Once { max_attempts: 3 }).await, "events").clone();
    assert!(r.cursor);
    f.bq("INSERT INTO {ds}.events (id, updated_at, v) VALUES (43, TIMESTAMP_SECONDS(1700024100), 'after')")
        .await;
    let r = ok(&runner.run(Mode::Once { max_attempts: 3 }).await, "events").clone();
    assert!(r.cursor, "{r:?}");
    assert_eq!(
        f.my_rows("SELECT id, v FROM events WHERE id > 40 ORDER BY id"),
        vec![
            vec!["41", "same"],
            vec!["42", "future"],
            vec!["43", "after"]
        ]
    );
}

#[tokio::test]
async fn deletes_bind_the_keys_as_mysql_returned_them() {
    // A key holding the separator of canonical composite keys (U+001F) and a DATE key: the
    // DELETE must match the rows MySQL holds, not a re-parsed text form of their keys.
    let f = Fixture::new().await;
    f.bq("CREATE TABLE {ds}.odd (code STRING NOT NULL, day DATE NOT NULL, v INT64)")
        .await;
    f.bq("INSERT INTO {ds}.odd (code, day, v) VALUES (CONCAT('a', CHR(31), 'b'), DATE '2026-01-01', 1), ('plain', DATE '2026-01-02', 2), ('keep', DATE '2026-01-03', 3)")
        .await;
    let config = f.config(
        &table("odd", &["code", "day"], "varchar = { code = 20 }\n"),
        "max_delete_fraction = 1.0\n",
    );
    ok(&f.sync(&config).await, "odd");
    assert_eq!(f.my_count("odd"), 3);
    assert_eq!(
        f.my_rows("SELECT HEX(code) FROM odd WHERE v = 1"),
        vec![vec!["611F62"]],
        "the key really holds U+001F"
    );
    f.bq("DELETE FROM {ds}.odd WHERE v IN (1, 2)").await;
    let r = ok(&f.sync(&config).await, "odd").clone();
    assert_eq!(r.deleted, 2, "{r:?}");
    assert_eq!(f.my_rows("SELECT code FROM odd"), vec![vec!["keep"]]);
}

/// A runner over `buckets` buckets (few and large, so that the IBLT pays off).
async fn runner_with_buckets(
    f: &Fixture,
    config: &domain::config::SyncConfig,
    buckets: u32,
) -> Runner {
    let settings = CycleSettings {
        buckets,
        ..Runner::settings_from(config)
    };
    f.runner(config, Some(settings)).await
}

/// `items` with `rows` rows, synced once by a runner of `buckets` buckets.
async fn synced_items(rows: i64, buckets: u32) -> (Fixture, Runner) {
    let f = Fixture::new().await;
    items(&f, rows).await;
    let config = f.config(&table("items", &["id"], ""), "");
    let mut runner = runner_with_buckets(&f, &config, buckets).await;
    ok(&cycle(&mut runner).await, "items");
    (f, runner)
}

async fn cycle(runner: &mut Runner) -> Vec<stream_sync::runner::TableOutcome> {
    runner.run(Mode::Once { max_attempts: 3 }).await
}

#[tokio::test]
async fn a_few_changes_in_large_buckets_are_found_through_an_iblt_without_reading_keys() {
    let (f, mut runner) = synced_items(3000, 4).await;

    f.bq("UPDATE {ds}.items SET name = 'renamed', qty = NULL WHERE id IN (3, 1500, 2999)")
        .await;
    f.bq("DELETE FROM {ds}.items WHERE id IN (7, 8)").await;
    f.bq("INSERT INTO {ds}.items (id, name, qty) VALUES (5001, 'new', 1), (5002, NULL, -2)")
        .await;
    let out = cycle(&mut runner).await;
    let r = ok(&out, "items");
    assert_eq!(
        (r.inserts, r.updates, r.deleted, r.upserted),
        (2, 3, 2, 5),
        "{r:?}"
    );
    assert_eq!(r.fetch.key_rows, 0, "no key scan: {r:?}");
    assert!(
        r.fetch.cell_rows > 0 && r.fetch.cell_rows < 100,
        "a few dozen IBLT cells for 7 changed rows over 3,000: {r:?}"
    );
    assert_eq!(r.fetch.full_rows, 5, "only new and changed rows: {r:?}");
    assert_eq!(f.my_count("items"), 3000);
    assert_eq!(
        f.my_rows(
            "SELECT id, name, qty FROM items WHERE id IN (3, 7, 8, 2999, 5001, 5002) ORDER BY id"
        ),
        vec![
            vec!["3", "renamed", "NULL"],
            vec!["2999", "renamed", "NULL"],
            vec!["5001", "new", "1"],
            vec!["5002", "NULL", "-2"],
        ]
    );
    assert!(runner.verify(100).await.unwrap().is_empty());

    // Nothing changed since: digests only.
    let out = cycle(&mut runner).await;
    let r = ok(&out, "items");
    assert_eq!(
        (r.fetch.cell_rows, r.fetch.key_rows, r.rows_written()),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn an_iblt_over_a_few_differing_buckets_reads_only_those() {
    let (f, mut runner) = synced_items(3000, 16).await;

    // Two changed rows touch at most 2 of 16 buckets (~375 rows): the IBLT is built over those
    // buckets only, on both sides.
    f.bq("UPDATE {ds}.items SET name = 'renamed' WHERE id = 10")
        .await;
    f.bq("DELETE FROM {ds}.items WHERE id = 2000").await;
    let out = cycle(&mut runner).await;
    let r = ok(&out, "items");
    assert_eq!((r.updates, r.inserts, r.deleted), (1, 0, 1), "{r:?}");
    assert!(r.buckets_differing <= 2, "{r:?}");
    assert!(r.fetch.cell_rows > 0 && r.fetch.key_rows == 0, "{r:?}");
    assert_eq!(r.fetch.full_rows, 1, "{r:?}");
    assert_eq!(
        f.my_rows("SELECT COUNT(*), SUM(name = 'renamed'), SUM(id = 2000) FROM items"),
        vec![vec!["2999", "1", "0"]]
    );
    assert!(runner.verify(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_undersized_iblt_is_tried_once_more_at_four_times_the_size() {
    let (f, mut runner) = synced_items(3000, 4).await;

    // 30 updates leave the 4 buckets' counts alone: sized for ~8 differences, the first table
    // can't hold 60; the second, 4x larger, can.
    f.bq("UPDATE {ds}.items SET qty = -qty WHERE MOD(id, 100) = 0")
        .await;
    let out = cycle(&mut runner).await;
    let r = ok(&out, "items");
    assert_eq!((r.updates, r.inserts, r.deleted), (30, 0, 0), "{r:?}");
    assert_eq!(r.fetch.key_rows, 0, "no key scan: {r:?}");
    assert_eq!(r.fetch.full_rows, 30, "{r:?}");
    assert_eq!(r.fetch.queries, 4, "digests, 2 IBLTs, rows: {r:?}");
    assert!(runner.verify(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_difference_too_large_for_the_iblt_falls_back_to_the_key_scan() {
    let (f, mut runner) = synced_items(3000, 4).await;

    // 300 updates leave every bucket's count alone: the IBLT is sized for a few changes
    // per bucket and can't be decoded.
    f.bq("UPDATE {ds}.items SET qty = -qty WHERE MOD(id, 10) = 0")
        .await;
    let out = cycle(&mut runner).await;
    let r = ok(&out, "items");
    assert_eq!((r.updates, r.inserts, r.deleted), (300, 0, 0), "{r:?}");
    assert!(r.fetch.cell_rows > 0, "the IBLT was tried: {r:?}");
    assert_eq!(r.fetch.key_rows, 3000, "then the keys were read: {r:?}");
    assert_eq!(
        f.my_rows("SELECT COUNT(*) FROM items WHERE qty < 0"),
        vec![vec!["300"]]
    );
    assert!(runner.verify(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_duplicate_key_in_the_warehouse_stops_the_table_naming_the_key() {
    let (f, mut runner) = synced_items(3000, 4).await;

    f.bq("INSERT INTO {ds}.items (id, name, qty) VALUES (42, 'second 42', 0)")
        .await;
    let out = cycle(&mut runner).await;
    let (kind, msg) = out[0]
        .error
        .clone()
        .expect("a duplicate key must stop the table");
    assert_eq!(kind, ErrorKind::Cycle);
    assert!(msg.contains("42") && msg.contains("not unique"), "{msg}");
    assert_eq!(
        f.my_rows("SELECT name FROM items WHERE id = 42"),
        vec![vec!["item 42"]],
        "MySQL unchanged"
    );
}

#[tokio::test]
async fn a_changed_bucket_count_rewrites_every_row_once() {
    let f = Fixture::new().await;
    items(&f, 500).await;
    let config = f.config(&table("items", &["id"], ""), "");
    ok(&f.sync(&config).await, "items"); // 64 buckets
    f.bq("DELETE FROM {ds}.items WHERE id = 77").await;

    let mut runner = runner_with_buckets(&f, &config, 16).await;
    let status = runner.status().await.unwrap().join("\n");
    assert!(
        status.contains("synced with 64 buckets, configured 16"),
        "{status}"
    );
    let out = cycle(&mut runner).await;
    let r = ok(&out, "items");
    assert_eq!((r.upserted, r.deleted), (499, 1), "{r:?}");
    let status = runner.status().await.unwrap().join("\n");
    assert!(status.contains("items: in sync"), "{status}");
    assert_eq!(
        f.my_rows("SELECT COUNT(*), MAX(_sync_bucket) < 16, SUM(id = 77) FROM items"),
        vec![vec!["499", "1", "0"]]
    );
    assert!(runner.verify(10).await.unwrap().is_empty());
    let out = cycle(&mut runner).await;
    assert_eq!(ok(&out, "items").rows_written(), 0, "converged");
    // A new process with the same count does not rewrite again.
    drop(runner);
    let mut again = runner_with_buckets(&f, &config, 16).await;
    let out = cycle(&mut again).await;
    assert_eq!(ok(&out, "items").rows_written(), 0);
}

#[tokio::test]
async fn a_table_filled_by_something_else_is_adopted_by_one_rewrite() {
    let f = Fixture::new().await;
    items(&f, 300).await;
    let config = f.config(&table("items", &["id"], ""), "");
    ok(&f.sync(&config).await, "items");
    // Make it look like a table another tool filled: no sync columns, index or marker, stale
    // values, and a key the warehouse does not have.
    let mut my = f.my();
    use mysql::prelude::Queryable;
    my.query_drop(
        "ALTER TABLE items DROP INDEX _sync_bucket_key_hash, DROP COLUMN _sync_hash, \
         DROP COLUMN _sync_bucket, COMMENT = 'filled by the old loader'",
    )
    .unwrap();
    my.query_drop("UPDATE items SET name = 'stale' WHERE id <= 10")
        .unwrap();
    my.query_drop("INSERT INTO items (id, name, qty) VALUES (9999, 'orphan', 0)")
        .unwrap();

    let out = f.sync(&config).await;
    let r = ok(&out, "items");
    assert_eq!((r.upserted, r.deleted), (300, 1), "{r:?}");
    assert_eq!(
        f.my_rows("SELECT COUNT(*), SUM(name = 'stale'), SUM(id = 9999) FROM items"),
        vec![vec!["300", "0", "0"]]
    );
    assert_eq!(
        f.my_rows(
            "SELECT TABLE_COMMENT FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'items'"
        ),
        vec![vec!["filled by the old loader stream-sync:buckets=64"]]
    );
    let mut runner = f.runner(&config, None).await;
    assert!(runner.verify(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_blocked_in_mysql_does_not_hold_back_the_others() {
    let f = Fixture::new().await;
    for t in ["a", "b"] {
        f.bq(&format!(
            "CREATE TABLE {{ds}}.{t} (id INT64 NOT NULL, v STRING)"
        ))
        .await;
        f.bq(&format!("INSERT INTO {{ds}}.{t} (id, v) VALUES (1, 'x')"))
            .await;
    }
    let config = f.config(&(table("a", &["id"], "") + &table("b", &["id"], "")), "");
    let first = f.sync(&config).await;
    ok(&first, "a");
    ok(&first, "b");

    // Another session holds a's row, so a's upsert waits for the lock.
    use mysql::prelude::Queryable;
    let mut holder = f.my();
    holder.query_drop("START TRANSACTION").unwrap();
    holder
        .query_drop("SELECT * FROM a WHERE id = 1 FOR UPDATE")
        .unwrap();
    f.bq("UPDATE {ds}.a SET v = 'y' WHERE id = 1").await;
    f.bq("UPDATE {ds}.b SET v = 'y' WHERE id = 1").await;
    let mut runner = f.runner(&config, None).await;
    let run = tokio::spawn(async move { runner.run(Mode::Once { max_attempts: 3 }).await });

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while f.my_rows("SELECT v FROM b WHERE id = 1") != vec![vec!["y"]] {
        assert!(
            std::time::Instant::now() < deadline,
            "b waited for a's lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        f.my_rows("SELECT v FROM a WHERE id = 1"),
        vec![vec!["x"]],
        "a is still waiting"
    );
    holder.query_drop("COMMIT").unwrap();
    let out = run.await.unwrap();
    ok(&out, "a");
    ok(&out, "b");
    assert_eq!(f.my_rows("SELECT v FROM a WHERE id = 1"), vec![vec!["y"]]);
}

#[tokio::test]
async fn string_keys_that_differ_only_by_trailing_spaces_or_case_stay_distinct() {
    let f = Fixture::new().await;
    f.bq("CREATE TABLE {ds}.codes (id STRING NOT NULL, v INT64)")
        .await;
    f.bq("INSERT INTO {ds}.codes (id, v) VALUES ('k339', 1), ('k339 ', 2), ('K339', 3), ('k339  ', 4)")
        .await;
    let config = f.config(&table("codes", &["id"], "varchar = { id = 64 }"), "");
    assert_eq!(ok(&f.sync(&config).await, "codes").upserted, 4);
    assert_eq!(f.my_count("codes"), 4);
    assert_eq!(
        f.my_rows("SELECT CONCAT('[', id, ']'), v FROM codes ORDER BY v"),
        vec![
            vec!["[k339]", "1"],
            vec!["[k339 ]", "2"],
            vec!["[K339]", "3"],
            vec!["[k339  ]", "4"],
        ]
    );
    // Converged: the next cycle writes nothing (no flip-flop between colliding keys).
    let rep = ok(&f.sync(&config).await, "codes").clone();
    assert_eq!(rep.rows_written(), 0, "{rep:?}");
    f.bq("UPDATE {ds}.codes SET v = 20 WHERE id = 'k339 '")
        .await;
    let rep = ok(&f.sync(&config).await, "codes").clone();
    assert_eq!((rep.updates, rep.rows_written()), (1, 1), "{rep:?}");
    f.assert_in_sync(&config).await;
}

#[tokio::test]
async fn an_adopted_table_whose_key_collation_pads_spaces_is_refused_naming_the_column() {
    let f = Fixture::new().await;
    f.bq("CREATE TABLE {ds}.codes (id STRING NOT NULL, v INT64)")
        .await;
    f.bq("INSERT INTO {ds}.codes (id, v) VALUES ('a', 1), ('a ', 2)")
        .await;
    use mysql::prelude::Queryable;
    f.my()
        .query_drop(
            "CREATE TABLE codes (id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
             v BIGINT, PRIMARY KEY (id))",
        )
        .unwrap();
    let config = f.config(&table("codes", &["id"], "varchar = { id = 64 }"), "");
    let out = f.sync(&config).await;
    let o = out.iter().find(|o| o.table == "codes").unwrap();
    let (kind, error) = o.error.clone().expect("refused");
    assert_eq!(kind, ErrorKind::Permanent);
    assert!(
        error.contains("codes.id") && error.contains("utf8mb4_bin"),
        "{error}"
    );
    assert_eq!(f.my_count("codes"), 0, "nothing written");
}

#[tokio::test]
async fn change_history_mode_applies_only_the_rows_the_history_lists() {
    let f = Fixture::new().await;
    f.bq(
        "CREATE TABLE {ds}.items (id INT64 NOT NULL, name STRING, qty INT64) \
          OPTIONS (enable_change_history = TRUE)",
    )
    .await;
    f.bq(
        "INSERT INTO {ds}.items (id, name, qty) SELECT x, CONCAT('item ', CAST(x AS STRING)), x \
          FROM UNNEST(GENERATE_ARRAY(1, 300)) AS x",
    )
    .await;
    let emu = test_support::Emulator::new(&f.ds.env);
    // The table was filled a while ago (beyond the history's clock-skew margin).
    emu.age(&f.ds.dataset, "items", std::time::Duration::from_secs(300))
        .await;
    let config = f.config(
        &table("items", &["id"], "change_detection = \"changes\""),
        "",
    );
    let mut runner = f.runner(&config, None).await;
    let first = ok(&runner.run(Mode::Once { max_attempts: 3 }).await, "items").clone();
    assert!(first.history.is_none(), "the first cycle is a full diff");
    assert_eq!(f.my_count("items"), 300);

    f.bq("UPDATE {ds}.items SET name = 'changed' WHERE id IN (3, 4)")
        .await;
    f.bq("UPDATE {ds}.items SET qty = -1 WHERE id = 3").await;
    f.bq("DELETE FROM {ds}.items WHERE id = 5").await;
    f.bq("INSERT INTO {ds}.items (id, name, qty) VALUES (1000, 'new', 1)")
        .await;
    // Right away the history has not settled (BigQuery answers CHANGES 10 minutes behind).
    let early = ok(&runner.run(Mode::Once { max_attempts: 3 }).await, "items").clone();
    assert!(early.skipped && early.history.is_none(), "{early:?}");
    // As if 20 minutes had passed since the full diff and the changes.
    let age = std::time::Duration::from_secs(20 * 60);
    emu.age(&f.ds.dataset, "items", age).await;
    runner.age_history(age);

    let r = ok(&runner.run(Mode::Once { max_attempts: 3 }).await, "items").clone();
    assert!(r.history.is_some(), "{r:?}");
    assert_eq!(r.fetch.queries, 1, "one CHANGES query: {:?}", r.fetch);
    assert_eq!(r.fetch.digest_rows, 0);
    // Changed rows only: 3 updates (each an old and a new version), a delete, an insert.
    assert_eq!(r.fetch.full_rows, 8, "{:?}", r.fetch);
    assert_eq!((r.inserts, r.updates, r.deleted), (1, 2, 1), "{r:?}");
    assert_eq!(
        f.my_rows("SELECT id, name, qty FROM items WHERE id IN (3, 4, 5, 1000) ORDER BY id"),
        vec![
            vec!["3", "changed", "-1"],
            vec!["4", "changed", "4"],
            vec!["1000", "new", "1"],
        ]
    );
    assert!(runner.verify(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn change_history_mode_without_the_table_option_falls_back_to_the_full_diff() {
    let f = Fixture::new().await;
    items(&f, 50).await;
    let config = f.config(
        &table("items", &["id"], "change_detection = \"changes\""),
        "",
    );
    let mut runner = f.runner(&config, None).await;
    ok(&runner.run(Mode::Once { max_attempts: 3 }).await, "items");
    f.bq("UPDATE {ds}.items SET name = 'changed' WHERE id = 3")
        .await;
    let age = std::time::Duration::from_secs(20 * 60);
    test_support::Emulator::new(&f.ds.env)
        .age(&f.ds.dataset, "items", age)
        .await;
    runner.age_history(age);
    let r = ok(&runner.run(Mode::Once { max_attempts: 3 }).await, "items").clone();
    assert!(r.history.is_none(), "{r:?}");
    assert_eq!(r.updates, 1, "the full diff found it: {r:?}");
}

#[tokio::test]
async fn an_adopted_table_keyed_by_a_surrogate_id_is_refused_until_the_key_is_unique() {
    let f = Fixture::new().await;
    f.bq("CREATE TABLE {ds}.codes (code STRING NOT NULL, v INT64)")
        .await;
    f.bq("INSERT INTO {ds}.codes (code, v) VALUES ('a', 1), ('b', 2)")
        .await;
    use mysql::prelude::Queryable;
    f.my()
        .query_drop(
            "CREATE TABLE codes (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
             code VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL, v BIGINT)",
        )
        .unwrap();
    let config = f.config(&table("codes", &["code"], "varchar = { code = 16 }"), "");
    let out = f.sync(&config).await;
    let o = out.iter().find(|o| o.table == "codes").unwrap();
    let (kind, error) = o.error.clone().expect("refused");
    assert_eq!(kind, ErrorKind::Permanent);
    assert!(
        error.contains("primary_key (code)") && error.contains("PRIMARY (id)"),
        "{error}"
    );
    assert_eq!(f.my_count("codes"), 0);

    f.my()
        .query_drop("ALTER TABLE codes ADD UNIQUE KEY (code)")
        .unwrap();
    ok(&f.sync(&config).await, "codes");
    f.bq("UPDATE {ds}.codes SET v = 20 WHERE code = 'b'").await;
    ok(&f.sync(&config).await, "codes");
    assert_eq!(
        f.my_count("codes"),
        2,
        "an update did not insert a second row"
    );
}

#[tokio::test]
async fn a_table_an_earlier_version_created_with_padding_key_collation_is_upgraded_once() {
    let f = Fixture::new().await;
    f.bq("CREATE TABLE {ds}.codes (id STRING NOT NULL, v INT64)")
        .await;
    f.bq("INSERT INTO {ds}.codes (id, v) VALUES ('a', 1), ('b', 2)")
        .await;
    let config = f.config(&table("codes", &["id"], "varchar = { id = 64 }"), "");
    ok(&f.sync(&config).await, "codes");
    // What earlier versions created: utf8mb4_bin, which pads trailing spaces.
    use mysql::prelude::Queryable;
    f.my()
        .query_drop(
            "ALTER TABLE codes MODIFY id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL",
        )
        .unwrap();
    f.bq("INSERT INTO {ds}.codes (id, v) VALUES ('a ', 3)")
        .await;
    ok(&f.sync(&config).await, "codes");
    assert_eq!(
        f.my_rows(
            "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = 'codes' AND COLUMN_NAME = 'id'"
        ),
        vec![vec!["utf8mb4_nopad_bin"]]
    );
    assert_eq!(f.my_count("codes"), 3, "'a' and 'a ' are two rows");
}

/// `stream_sync_throttled_seconds_total{reason}` as the daemon exports it.
fn throttled(runner_metrics: &stream_sync::metrics::Metrics, reason: &str) -> f64 {
    runner_metrics
        .registry
        .gather()
        .iter()
        .find(|m| m.name() == "stream_sync_throttled_seconds_total")
        .and_then(|m| {
            m.get_metric()
                .iter()
                .find(|m| m.get_label().iter().any(|l| l.value() == reason))
                .map(|m| m.get_counter().get_value())
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn write_batches_pause_while_the_primary_is_busy() {
    let f = Fixture::new().await;
    items(&f, 50).await;
    // Five statements running for 3 s put the server over the limit (docs/sync.md#throttling).
    let busy = test_support::BusyPrimary::start(&f.db.url, 3);
    let config = f.config(
        &table("items", &["id"], ""),
        &format!(
            "[throttle]\nmax_threads_running = {}\nmax_pause_secs = 120\n",
            busy.max_threads_running
        ),
    );
    let mut runner = f.runner(&config, None).await;
    let out = runner.run(Mode::Once { max_attempts: 3 }).await;
    busy.join();
    assert_eq!(ok(&out, "items").upserted, 50);
    assert!(throttled(&runner.metrics, "threads_running") > 0.0);
    f.assert_in_sync(&config).await;
}

#[tokio::test]
async fn a_replica_whose_dsn_cannot_be_read_fails_at_start() {
    let f = Fixture::new().await;
    let config = f.config(
        &table("items", &["id"], ""),
        "[throttle]\n[[throttle.replicas]]\nname = \"eu-replica\"\nurl_env = \"STREAM_SYNC_TEST_UNSET_REPLICA_URL\"\n",
    );
    let settings = Runner::settings_from(&config);
    let err = match Runner::new(&config, f.db.url.clone(), settings, None).await {
        Ok(_) => panic!("a runner started with a replica it cannot reach"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("eu-replica") && err.contains("STREAM_SYNC_TEST_UNSET_REPLICA_URL"),
        "{err}"
    );
}

#[tokio::test]
async fn an_empty_answer_to_the_key_scan_fails_the_cycle_and_deletes_nothing() {
    let (f, mut runner) = synced_items(3000, 4).await;

    // Too many changes for the IBLT: the key scan runs, and its warehouse answer comes back
    // empty though complete-looking (docs/emulator.md#faults, `truncated`). Every MySQL row of
    // the mixed buckets would look deleted; the digests of the same snapshot say otherwise.
    f.bq("UPDATE {ds}.items SET qty = -qty WHERE MOD(id, 10) = 0")
        .await;
    let emu = test_support::Emulator::new(&f.ds.env);
    let keys_sql = format!("(?s){}.*ORDER BY _sync_bucket", f.ds.dataset);
    emu.fault_on_sql("truncated", &keys_sql, 1).await;
    let out = cycle(&mut runner).await;
    let items = out.iter().find(|o| o.table == "items").unwrap();
    let (kind, msg) = items.error.clone().expect("the cycle must fail");
    assert_eq!(kind, ErrorKind::Cycle, "{msg}");
    assert!(
        msg.contains("listed 0 keys") && msg.contains("nothing deleted"),
        "{msg}"
    );
    assert_eq!(emu.fault_hits(&keys_sql).await, 1);
    assert_eq!(f.my_count("items"), 3000);
    assert_eq!(
        f.my_rows("SELECT COUNT(*) FROM items WHERE qty < 0"),
        vec![vec!["0"]],
        "nothing written either"
    );

    // The next cycle reads a full answer and converges.
    let r = ok(&cycle(&mut runner).await, "items").clone();
    assert_eq!((r.updates, r.inserts, r.deleted), (300, 0, 0), "{r:?}");
    assert!(runner.verify(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn shards_split_the_tables_between_them_and_cover_them_all() {
    let f = Fixture::new().await;
    let names = ["alpha", "beta", "gamma", "delta", "epsilon"];
    let mut tables = String::new();
    for n in names {
        f.bq(&format!(
            "CREATE TABLE {{ds}}.{n} (id INT64 NOT NULL, v STRING); \
             INSERT INTO {{ds}}.{n} (id, v) VALUES (1, '{n}')"
        ))
        .await;
        tables.push_str(&table(n, &["id"], ""));
    }
    let config = f.config(&tables, "shards = 2\n");
    // The names spread over both shards (a fixed hash: this holds for every build).
    for index in 0..2u64 {
        assert!(
            names.iter().any(|n| domain::shard::shard_of(n, 2) == index),
            "no table for shard {index}: pick other names"
        );
    }
    let mut synced: Vec<String> = Vec::new();
    for index in 0..2u64 {
        let mut settings = Runner::settings_from(&config);
        assert_eq!(settings.shard, (0, 1), "only `run` shards");
        settings.shard = (index, config.stream_sync.shards);
        let mut runner = f.runner(&config, Some(settings)).await;
        let out = runner.run(Mode::Once { max_attempts: 3 }).await;
        for o in &out {
            assert!(o.error.is_none(), "{o:?}");
            assert_eq!(
                domain::shard::shard_of(&o.table, 2),
                index,
                "{} synced by the wrong shard",
                o.table
            );
            synced.push(o.table.clone());
        }
    }
    synced.sort();
    let mut all: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    all.sort();
    assert_eq!(synced, all, "every table exactly once");
    for n in names {
        assert_eq!(f.my_count(n), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_lock_held_by_a_dying_session_is_waited_for_and_a_held_one_is_transient() {
    use mysql::prelude::Queryable;
    let f = Fixture::new().await;
    f.bq("CREATE TABLE {ds}.t (id INT64 NOT NULL, v STRING)")
        .await;
    f.bq("INSERT INTO {ds}.t (id, v) VALUES (1, 'x')").await;
    let config = f.config(&table("t", &["id"], ""), "");
    let mut holder = f.my();
    let db: String = holder.query_first("SELECT DATABASE()").unwrap().unwrap();
    let lock = format!("stream-sync:{db}.t");
    let take = |c: &mut mysql::Conn| -> i64 {
        c.exec_first("SELECT GET_LOCK(?, 0)", (lock.as_str(),))
            .unwrap()
            .unwrap()
    };
    assert_eq!(take(&mut holder), 1);

    // The session of a killed run that MySQL ends a moment later: the cycle waits for it.
    let dying = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        drop(holder);
    });
    let out = f.sync(&config).await;
    assert_eq!(ok(&out, "t").upserted, 1);
    dying.join().unwrap();

    // A lock that stays held (another stream-sync): a transient error naming the table,
    // retried up to --max-attempts, not a bad row.
    let mut other = f.my();
    assert_eq!(take(&mut other), 1);
    let mut runner = f.runner(&config, None).await;
    let out = runner.run(Mode::Once { max_attempts: 2 }).await;
    let (kind, message) = out[0].error.clone().expect("the lock is held");
    assert_eq!(kind, stream_sync::ErrorKind::Transient, "{message}");
    assert!(
        message.contains("table t: another session holds its stream-sync lock"),
        "{message}"
    );
}

#[tokio::test]
async fn a_bad_row_fails_itself_and_the_rest_of_the_cycle_applies() {
    let f = Fixture::new().await;
    f.bq("CREATE TABLE {ds}.items (id INT64 NOT NULL, name STRING)")
        .await;
    // Rows 10..40 keep the delete below the mass-delete guard's 10%.
    let more: Vec<String> = (10..40).map(|i| format!("({i}, 'x')")).collect();
    f.bq(&format!(
        "INSERT INTO {{ds}}.items (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c'), {}",
        more.join(", ")
    ))
    .await;
    let config = f.config(&table("items", &["id"], "varchar = { name = 5 }"), "");
    ok(&f.sync(&config).await, "items");

    // One row grows past VARCHAR(5); another changes; another goes.
    f.bq("UPDATE {ds}.items SET name = 'far too long' WHERE id = 1")
        .await;
    f.bq("UPDATE {ds}.items SET name = 'bb' WHERE id = 2").await;
    f.bq("DELETE FROM {ds}.items WHERE id = 3").await;
    f.bq("INSERT INTO {ds}.items (id, name) VALUES (4, 'd')")
        .await;
    let out = f.sync(&config).await;
    let (kind, message) = out[0].error.clone().expect("the bad row fails the cycle");
    assert_eq!(kind, stream_sync::ErrorKind::Cycle, "{message}");
    for part in ["1 rows left out", "items", "name", "VARCHAR(5)"] {
        assert!(message.contains(part), "`{part}` missing in: {message}");
    }
    // The rest was applied: the update, the insert and the delete; row 1 keeps its old value.
    assert_eq!(
        f.my_rows("SELECT id, name FROM items WHERE id < 10 ORDER BY id"),
        vec![vec!["1", "a"], vec!["2", "bb"], vec!["4", "d"]]
    );
    assert_eq!(out[0].report.bad_rows, 1);

    // Repaired in the warehouse: the next cycle converges.
    f.bq("UPDATE {ds}.items SET name = 'aa' WHERE id = 1").await;
    ok(&f.sync(&config).await, "items");
    f.assert_in_sync(&config).await;
}

#[tokio::test]
async fn in_cursor_mode_a_bad_row_is_named_again_until_repaired() {
    let f = events_fixture().await;
    let config = f.config(
        &table(
            "events",
            &["id"],
            "cursor_column = \"updated_at\"\nvarchar = { v = 5 }",
        ),
        "",
    );
    let mut runner = f.runner(&config, None).await;
    ok(&runner.run(Mode::Once { max_attempts: 3 }).await, "events");
    // Two rows move past the watermark; one of them can't be stored.
    f.bq("UPDATE {ds}.events SET v = 'far too long', updated_at = TIMESTAMP_SECONDS(1700030000) WHERE id = 5")
        .await;
    f.bq("UPDATE {ds}.events SET v = 'b', updated_at = TIMESTAMP_SECONDS(1700030000) WHERE id = 6")
        .await;
    let out = runner.run(Mode::Once { max_attempts: 3 }).await;
    assert!(out[0].report.cursor, "{:?}", out[0].report);
    let (_, message) = out[0].error.clone().expect("the bad row fails the cycle");
    assert!(message.contains("1 rows left out"), "{message}");
    assert_eq!(
        f.my_rows("SELECT id, v FROM events WHERE id IN (5, 6) ORDER BY id"),
        vec![vec!["5", "a"], vec!["6", "b"]]
    );
    // MySQL's watermark is past the bad row now: a cursor cycle would not see it again. The
    // next cycle is a full diff instead, and names it again.
    let out = runner.run(Mode::Once { max_attempts: 3 }).await;
    assert!(!out[0].report.cursor, "{:?}", out[0].report);
    let (_, message) = out[0].error.clone().expect("still bad");
    assert!(message.contains("1 rows left out"), "{message}");
    // Repaired: converged, and cursor cycles resume.
    f.bq("UPDATE {ds}.events SET v = 'c' WHERE id = 5").await;
    ok(&runner.run(Mode::Once { max_attempts: 3 }).await, "events");
    assert_eq!(
        f.my_rows("SELECT v FROM events WHERE id = 5"),
        vec![vec!["c"]]
    );
    f.bq("UPDATE {ds}.events SET v = 'd', updated_at = TIMESTAMP_SECONDS(1700040000) WHERE id = 7")
        .await;
    let r = ok(&runner.run(Mode::Once { max_attempts: 3 }).await, "events").clone();
    assert!(r.cursor, "{r:?}");
}
