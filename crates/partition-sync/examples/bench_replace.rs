//! The replace half of `make bench-partition-scale`: replacing one day of a populated
//! partitioned table, by the exchange path (`docs/sync.md#exchange`: chunks into a shadow
//! table, then EXCHANGE PARTITION) and by the one-transaction path (DELETE + load), the same
//! number of rows through the same loader, each path replacing one of the table's two oldest
//! days. Twice: on the primary alone (a database the replica does not apply, no throttle; a
//! table of BENCH_REPLACE_DAYS days, default 10, larger than the dev server's buffer pool), and
//! with the dev MariaDB replica applying everything (3 days), the exchange path throttled at
//! 1 s of lag. A heartbeat written every 100 ms on the primary and read on the replica every
//! 200 ms gives the replica's lag during each path. Prints, for the checks that read them:
//!
//!   replace_day_speedup: X                    one-transaction / exchange seconds, primary alone
//!                                             (until the call returned; the table also shows
//!                                             until purge had removed the deleted rows)
//!   replica_lag_max_s: X                      highest lag during the exchange path
//!   replica_lag_max_s_one_transaction: Y      highest lag during the one-transaction path
//!
//! BENCH_REPLACE_ROWS (default 1,000,000) rows per day. A benchmark: it asserts nothing about
//! time.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use partition_sync::load::{self, LoadOptions, PartitionLoad, TableWork};
use partition_sync::plan::{Reason, SourcePartition};
use sync_engine::session::connect;
use sync_engine::throttle::{heartbeat_age, NoObserver, Throttle};

use common::{load_tsv_sql, mariadb, setting, stage_day, stats_ddl, stats_source};

fn main() {
    let rows: u64 = setting("BENCH_REPLACE_ROWS", 1_000_000);
    let env = test_support::dev_env();
    let dir = std::env::temp_dir().join(format!("bench-replace-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = Instant::now();
    // Each path replaces a day of its own, the two oldest (coldest) of the table.
    let (files1, tsv) = stage_day(&dir, "2026-01-01", rows, 100_000);
    let (files2, _) = stage_day(&dir, "2026-01-02", rows, 100_000);
    println!(
        "staged {rows} rows of 2026-01-01 and of 2026-01-02 in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let store: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&dir).unwrap());
    let day_work = |pid: &str, files: Vec<object_store::path::Path>| {
        vec![TableWork {
            table: stats_source(true),
            loads: vec![PartitionLoad {
                partition: SourcePartition {
                    id: pid.into(),
                    rows: rows as i64,
                    modified_micros: None,
                    fingerprint: Some(1),
                },
                reason: Reason::Modified,
                files,
                // The day was synced before: its watermark holds its row count.
                synced_rows: Some(rows),
            }],
            vanished: vec![],
        }]
    };
    let days: u64 = setting("BENCH_REPLACE_DAYS", 10);
    let bench = Bench {
        env: &env,
        dir: &dir,
        tsv: &tsv,
        rows,
        store,
        one_tx_work: day_work("20260101", files1),
        exchange_work: day_work("20260102", files2),
    };
    // The primary alone (a database the replica does not apply, no throttle), a table of
    // BENCH_REPLACE_DAYS days (10: 10M rows, about 1.8 GB, more than the dev server's 512 MB
    // buffer pool, so the replaced days are not all in memory, as in production): what each
    // path costs the server it runs on. Then with the replica applying everything on the same
    // two cores (3 days), throttled at 1 s of lag: how far behind each path leaves it.
    let alone = bench.replace_both(false, days.max(2));
    let watched = bench.replace_both(true, 3);

    println!();
    println!(
        "{:<52} {:>9} {:>9} {:>16} {:>18}",
        format!(
            "replace one day ({rows} rows; table of {} days)",
            days.max(2)
        ),
        "returned",
        "purged",
        "replica lag max",
        "applied on replica"
    );
    let line = |name: &str, took: Took, replica: bool| {
        let (returned, purged) = (took.returned, took.purged);
        if replica {
            println!(
                "{name:<52} {returned:>8.2}s {purged:>8.2}s {:>14.2} s {:>16.2} s",
                took.lag_max, took.applied
            )
        } else {
            println!(
                "{name:<52} {returned:>8.2}s {purged:>8.2}s {:>16} {:>18}",
                "-", "-"
            )
        }
    };
    line(
        "primary alone: one transaction (DELETE + load)",
        alone.one_tx,
        false,
    );
    line(
        "primary alone: exchange (50k-row chunks)",
        alone.exchange,
        false,
    );
    line("with the replica: one transaction", watched.one_tx, true);
    line(
        "with the replica: exchange, throttled at 1 s lag",
        watched.exchange,
        true,
    );
    println!(
        "(seconds from the start of each replace: returned: the call returned on the primary; \
         purged: InnoDB's purge had also removed what it deleted; applied on replica: the \
         replica had applied it too. The replica shares this machine's 2 cores)"
    );
    println!(
        "(until purged: one transaction / exchange = {:.2})",
        alone.one_tx.purged / alone.exchange.purged
    );
    println!(
        "replace_day_speedup: {:.2}",
        alone.one_tx.returned / alone.exchange.returned
    );
    println!("replica_lag_max_s: {:.2}", watched.exchange.lag_max);
    println!(
        "replica_lag_max_s_one_transaction: {:.2}",
        watched.one_tx.lag_max
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a replace took, in seconds from its start.
#[derive(Clone, Copy)]
struct Took {
    /// Until the call returned on the primary.
    returned: f64,
    /// Until InnoDB's purge had also finished with it (the history list back to its length
    /// before the replace): a DELETE's rows are only delete-marked at commit; purge threads
    /// remove them afterwards, on the same cores.
    purged: f64,
    /// The replica's highest lag during the replace (0 without the replica).
    lag_max: f64,
    /// Until the replica had applied it too (0 without the replica).
    applied: f64,
}

struct Figures {
    one_tx: Took,
    exchange: Took,
}

struct Bench<'a> {
    env: &'a test_support::DevEnv,
    dir: &'a std::path::Path,
    tsv: &'a std::path::Path,
    rows: u64,
    store: Arc<dyn object_store::ObjectStore>,
    /// Day 2026-01-01, replaced by one transaction; day 2026-01-02, by exchange.
    one_tx_work: Vec<TableWork>,
    exchange_work: Vec<TableWork>,
}

impl Bench<'_> {
    /// A fresh database with the table partitioned by day as partition-sync makes it and `days`
    /// days of rows; day 1 replaced by one transaction, then day 2 by exchange.
    fn replace_both(&self, replicated: bool, days: u64) -> Figures {
        let (env, rows) = (self.env, self.rows);
        let prefix = if replicated { "repl_bench" } else { "bench" };
        let db = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect(&env.mysql_url).unwrap();
        admin.query_drop(format!("CREATE DATABASE `{db}`")).unwrap();
        let url = format!("{}/{db}", env.mysql_url);
        let replica_url = format!("{}/{db}", env.mysql_replica_url);
        let mut conn = connect(&url).unwrap();
        sync_engine::session::ensure_state_tables(&mut conn).unwrap();
        let dates: Vec<chrono::NaiveDate> = (0..days)
            .map(|d| chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(d))
            .collect();
        let parts: Vec<String> = dates
            .iter()
            .map(|d| {
                format!(
                    "PARTITION p{} VALUES LESS THAN ('{}')",
                    d.format("%Y%m%d"),
                    *d + chrono::Days::new(1)
                )
            })
            .collect();
        conn.query_drop(stats_ddl(
            "recipe_daily_stats",
            &format!(
                " PARTITION BY RANGE COLUMNS(day) (PARTITION p_floor VALUES LESS THAN ('1000-01-01'), \
                 PARTITION pgap_20260101 VALUES LESS THAN ('2026-01-01'), {})",
                parts.join(", ")
            ),
        ))
        .unwrap();
        let t = Instant::now();
        let fill: Vec<String> = dates
            .iter()
            .map(|d| {
                load_tsv_sql(self.tsv, "recipe_daily_stats").replace(
                    "LINES TERMINATED BY '\\n'",
                    &format!(
                        "LINES TERMINATED BY '\\n' (recipe_id, @d, views, cooks, avg_rating, note, updated_at) SET day = '{d}'"
                    ),
                )
            })
            .collect();
        mariadb(
            &env.mysql_url,
            &db,
            &format!("SET time_zone='+00:00'; {};", fill.join("; ")),
        );
        println!(
            "{db}: populated {days} days ({} rows) in {:.1}s",
            days * rows,
            t.elapsed().as_secs_f64()
        );
        let lag = replicated.then(|| LagWatch::start(&url, &replica_url));
        if let Some(lag) = &lag {
            lag.wait_caught_up();
            println!("the replica has caught up");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let took = |t: Instant, history: u64, conn: &mut mysql::Conn, lag: &Option<LagWatch>| {
            let returned = t.elapsed().as_secs_f64();
            wait_purged(conn, history);
            let purged = t.elapsed().as_secs_f64();
            let (lag_max, applied) = match lag {
                Some(lag) => {
                    lag.wait_caught_up();
                    (lag.max(), t.elapsed().as_secs_f64())
                }
                None => (0.0, 0.0),
            };
            Took {
                returned,
                purged,
                lag_max,
                applied,
            }
        };
        // What the populating left for purge is done before the first path starts.
        let history = history_len(&mut conn);
        wait_purged(&mut conn, history.min(8));

        // Today's path: DELETE + load in one transaction.
        if let Some(lag) = &lag {
            lag.reset();
        }
        let history = history_len(&mut conn);
        let t = Instant::now();
        let done = load::load_group(
            &mut conn,
            &self.store,
            &handle,
            "bench-tx",
            &self.one_tx_work,
            Default::default(),
            &|_| {},
        )
        .unwrap();
        let one_tx = took(t, history, &mut conn, &lag);
        assert_eq!((done[0].rows_loaded, done[0].rows_deleted), (rows, rows));

        // The exchange path; with the replica, throttled on its lag (limit 1 s).
        let throttle = if replicated {
            let url_file = self.dir.join(format!("{db}-replica-url"));
            std::fs::write(&url_file, &replica_url).unwrap();
            let settings = domain::config::ThrottleConfig {
                max_replica_lag_secs: 1.0,
                replicas: vec![domain::config::ReplicaConfig {
                    name: "dev-replica".into(),
                    url_env: None,
                    url_file: Some(url_file.display().to_string()),
                }],
                ..Default::default()
            };
            Throttle::start(&settings, &url, Arc::new(NoObserver)).unwrap()
        } else {
            Throttle::off()
        };
        let opts = LoadOptions {
            loader: Default::default(),
            replace: domain::config::Replace::Exchange,
            chunk_rows: setting("BENCH_CHUNK_ROWS", 50_000),
            ddl_lock_wait_secs: 5,
            throttle: &throttle,
        };
        if let Some(lag) = &lag {
            lag.reset();
        }
        let history = history_len(&mut conn);
        let t = Instant::now();
        let done = load::load_batch(
            &mut conn,
            &self.store,
            &handle,
            "bench-ex",
            &self.exchange_work,
            &opts,
            &|_| {},
        )
        .unwrap();
        let exchange = took(t, history, &mut conn, &lag);
        drop(throttle);
        assert_eq!(
            (
                done[0].partitions_exchanged,
                done[0].rows_loaded,
                done[0].rows_deleted
            ),
            (1, rows, rows)
        );
        let counts: Vec<(u64, u64, u64)> = conn
            .query(
                "SELECT COUNT(*), SUM(day = '2026-01-01'), SUM(day = '2026-01-02') FROM recipe_daily_stats",
            )
            .unwrap();
        assert_eq!(counts[0], (days * rows, rows, rows));
        if let Some(lag) = lag {
            let mut replica = connect(&replica_url).unwrap();
            let on_replica: Option<u64> = replica
                .query_first("SELECT COUNT(*) FROM recipe_daily_stats")
                .unwrap();
            assert_eq!(on_replica, Some(days * rows), "the replica holds every row");
            lag.stop();
        }
        admin.query_drop(format!("DROP DATABASE `{db}`")).unwrap();
        Figures { one_tx, exchange }
    }
}

/// InnoDB's history list length: transactions whose undo purge has not processed yet.
fn history_len(conn: &mut mysql::Conn) -> u64 {
    sync_engine::throttle::global_status(conn, "Innodb_history_list_length").unwrap()
}

/// Waits until the history list is no longer than `target` (purge has caught up).
fn wait_purged(conn: &mut mysql::Conn, target: u64) {
    let started = Instant::now();
    while history_len(conn) > target {
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "purge did not catch up within 15 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A heartbeat written on the primary every 100 ms and its age read on the replica every
/// 200 ms, keeping the highest age since the last reset.
struct LagWatch {
    primary: Mutex<mysql::Conn>,
    replica: Mutex<mysql::Conn>,
    server_id: u64,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<(f64, f64)>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LagWatch {
    fn start(primary_url: &str, replica_url: &str) -> LagWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new((0.0f64, f64::INFINITY)));
        let mut primary = connect(primary_url).unwrap();
        let server_id: u64 = primary.query_first("SELECT @@server_id").unwrap().unwrap();
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    primary
                        .query_drop(
                            "INSERT INTO sync_heartbeat (server_id, ts) VALUES (@@server_id, UTC_TIMESTAMP(6)) \
                             ON DUPLICATE KEY UPDATE ts = VALUES(ts)",
                        )
                        .unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let reader = {
            let (stop, seen) = (stop.clone(), seen.clone());
            let mut replica = connect(replica_url).unwrap();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // No row yet (the first beat not applied): as lagging as can be.
                    let age = heartbeat_age(&mut replica, server_id).unwrap_or(f64::INFINITY);
                    if let Ok(mut s) = seen.lock() {
                        if age.is_finite() {
                            s.0 = s.0.max(age);
                        }
                        s.1 = age;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        LagWatch {
            primary: Mutex::new(connect(primary_url).unwrap()),
            replica: Mutex::new(connect(replica_url).unwrap()),
            server_id,
            stop,
            seen,
            threads: vec![writer, reader],
        }
    }

    fn reset(&self) {
        self.seen.lock().unwrap().0 = 0.0;
    }

    fn max(&self) -> f64 {
        self.seen.lock().unwrap().0
    }

    /// Waits until a heartbeat written after this call began has reached the replica:
    /// everything committed before it has been applied there.
    fn wait_caught_up(&self) {
        let now: String = self
            .primary
            .lock()
            .unwrap()
            .query_first("SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%d %H:%i:%s.%f')")
            .unwrap()
            .unwrap();
        let started = Instant::now();
        loop {
            let arrived: Option<Option<i64>> = self
                .replica
                .lock()
                .unwrap()
                .exec_first(
                    "SELECT ts >= ? FROM sync_heartbeat WHERE server_id = ?",
                    (now.as_str(), self.server_id),
                )
                .unwrap();
            if arrived == Some(Some(1)) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "the replica did not catch up within 10 minutes"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}
