//! `make bench-sync`: loads one 1,000,000-row partition shaped like `recipe_daily_stats` from
//! staged NDJSON files into MariaDB through partition-sync's loader, and in the same run loads
//! the same rows with `LOAD DATA LOCAL INFILE` through the mariadb client into an identical
//! table. Prints rows/s of both, their ratio and the loader's peak resident memory.
//! A benchmark, not a test: it asserts nothing about time.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use domain::config::{SyncMode, TableSpec};
use domain::schema::{BqType, Column};
use mysql::prelude::Queryable;
use object_store::path::Path;
use partition_sync::load::{self, PartitionLoad, TableWork};
use partition_sync::partition::{Granularity, Scheme};
use partition_sync::plan::{Reason, SourcePartition};
use partition_sync::source::PartitionedSource;

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let rows: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let per_file: u64 = 100_000;
    let env = test_support::dev_env();
    let dir = std::env::temp_dir().join(format!("bench-sync-{}", uuid::Uuid::new_v4().simple()));
    let part_dir = dir.join("run/recipe_daily_stats/20260101");
    std::fs::create_dir_all(&part_dir).unwrap();

    // Staged files as the warehouse exports them (canonical NDJSON), and a TSV of the same rows.
    let started = Instant::now();
    let tsv_path = dir.join("rows.tsv");
    let mut tsv = std::io::BufWriter::new(std::fs::File::create(&tsv_path).unwrap());
    let mut files = Vec::new();
    let mut out: Option<std::io::BufWriter<std::fs::File>> = None;
    for i in 0..rows {
        if i % per_file == 0 {
            let name = format!("{:012}.json", i / per_file);
            out = Some(std::io::BufWriter::new(
                std::fs::File::create(part_dir.join(&name)).unwrap(),
            ));
            files.push(Path::from(format!(
                "run/recipe_daily_stats/20260101/{name}"
            )));
        }
        let note = format!("Recipe {i}, \"quoted\", crème brûlée 🍰 'x'");
        let micros = 1_767_225_600_000_000i64 + (i as i64) * 1_000;
        let rating = (i % 50) as f64 / 10.0 + 0.05;
        let row = serde_json::json!({"recipe_id": i, "day": "2026-01-01", "views": i * 7, "cooks": (i % 1000) as i32,
            "avg_rating": rating, "note": note, "updated_at": micros});
        writeln!(out.as_mut().unwrap(), "{row}").unwrap();
        let ts = chrono::DateTime::from_timestamp_micros(micros)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S%.6f");
        writeln!(
            tsv,
            "{i}\t2026-01-01\t{}\t{}\t{rating}\t{}\t{ts}",
            i * 7,
            i % 1000,
            note.replace('\\', "\\\\")
        )
        .unwrap();
    }
    drop(out);
    drop(tsv);
    println!(
        "generated {rows} rows in {} files in {:.1}s",
        files.len(),
        started.elapsed().as_secs_f64()
    );

    let db = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sync_engine::session::connect(&env.mysql_url).unwrap();
    admin.query_drop(format!("CREATE DATABASE `{db}`")).unwrap();
    let url = format!("{}/{db}", env.mysql_url);

    let id = |s: &str| domain::ident::Ident::parse(s).unwrap();
    let col = |name: &str, bq, varchar| Column {
        name: id(name),
        bq,
        required: true,
        varchar,
    };
    let table = PartitionedSource {
        spec: TableSpec {
            source: id("recipe_daily_stats"),
            target: id("recipe_daily_stats"),
            mode: SyncMode::Partition,
            partition_column: Some(id("day")),
            primary_key: vec![id("recipe_id"), id("day")],
            group: None,
            depends_on: vec![],
            varchar: Default::default(),
            change_detection: None,
            max_vanished_partitions: None,
            cursor_column: None,
            mysql_partitioning: false,
        },
        qualified: "`p.d.recipe_daily_stats`".into(),
        columns: vec![
            col("recipe_id", BqType::Int64, None),
            col("day", BqType::Date, None),
            col("views", BqType::Int64, None),
            col("cooks", BqType::Int64, None),
            col("avg_rating", BqType::Float64, None),
            col("note", BqType::String, Some(200)),
            col("updated_at", BqType::Timestamp, None),
        ],
        scheme: Scheme::new(&id("day"), Some(BqType::Date), Granularity::Day).unwrap(),
    };
    // The same shape for both: INT for cooks as in recipe_daily_stats.
    let ddl = |name: &str| {
        format!(
            "CREATE TABLE `{name}` (recipe_id BIGINT NOT NULL, day DATE NOT NULL, views BIGINT NOT NULL, cooks INT NOT NULL, \
             avg_rating DOUBLE NOT NULL, note VARCHAR(200) CHARACTER SET utf8mb4 NOT NULL, updated_at DATETIME(6) NOT NULL, \
             PRIMARY KEY (recipe_id, day), KEY day_idx (day)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
    };
    let mut conn = sync_engine::session::connect(&url).unwrap();
    sync_engine::session::ensure_state_tables(&mut conn).unwrap();
    conn.query_drop(ddl("recipe_daily_stats")).unwrap();
    conn.query_drop(ddl("baseline")).unwrap();

    // Baseline: LOAD DATA LOCAL INFILE through the mariadb client, same rows, same table shape.
    let (user_pass, host_port) = env
        .mysql_url
        .trim_start_matches("mysql://")
        .split_once('@')
        .unwrap();
    let (user, pass) = user_pass.split_once(':').unwrap();
    let (host, port) = host_port.split_once(':').unwrap();
    let t = Instant::now();
    let status = std::process::Command::new("mariadb")
        .args(["--no-defaults", "--local-infile=1", "-h", host, "-P", port, "-u", user, &format!("-p{pass}"), &db, "-e"])
        .arg(format!(
            "SET time_zone='+00:00'; START TRANSACTION; LOAD DATA LOCAL INFILE '{}' INTO TABLE baseline CHARACTER SET utf8mb4 \
             FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n'; COMMIT;",
            tsv_path.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let baseline_secs = t.elapsed().as_secs_f64();

    // partition-sync's loader from the staged files.
    let store: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&dir).unwrap());
    let work = vec![TableWork {
        table,
        loads: vec![PartitionLoad {
            partition: SourcePartition {
                id: "20260101".into(),
                rows: rows as i64,
                modified_micros: None,
                fingerprint: Some(1),
            },
            reason: Reason::New,
            files,
        }],
        vanished: vec![],
    }];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let loader = if std::env::var("BENCH_LOADER").as_deref() == Ok("insert") {
        domain::config::Loader::Insert
    } else {
        domain::config::Loader::Auto
    };
    let hwm_before = vm_hwm_kib();
    let t = Instant::now();
    let outcome = std::thread::spawn(move || {
        load::load_group(&mut conn, &store, &handle, "bench", &work, loader, &|_| {})
    })
    .join()
    .unwrap()
    .unwrap();
    let ours_secs = t.elapsed().as_secs_f64();
    assert_eq!(outcome[0].rows_loaded, rows);
    let mut check = sync_engine::session::connect(&url).unwrap();
    let n: Vec<(u64, u64)> = check
        .query("SELECT (SELECT COUNT(*) FROM recipe_daily_stats), (SELECT COUNT(*) FROM baseline)")
        .unwrap();
    assert_eq!(n[0], (rows, rows));

    let ours = rows as f64 / ours_secs;
    let base = rows as f64 / baseline_secs;
    println!();
    println!(
        "{:<42} {:>12} {:>10}",
        "loader (1 partition, one transaction)", "rows/s", "seconds"
    );
    println!(
        "{:<42} {:>12.0} {:>10.2}",
        format!("partition-sync ({loader:?} loader)"),
        ours,
        ours_secs
    );
    println!(
        "{:<42} {:>12.0} {:>10.2}",
        "LOAD DATA LOCAL INFILE (mariadb client)", base, baseline_secs
    );
    println!("ratio partition-sync / LOAD DATA: {:.2}x", ours / base);
    println!(
        "peak resident memory of the loader process: {} MiB (before the load: {} MiB)",
        vm_hwm_kib() / 1024,
        hwm_before / 1024
    );

    admin.query_drop(format!("DROP DATABASE `{db}`")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
