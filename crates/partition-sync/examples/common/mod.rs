//! What partition-sync's benchmarks share: a `recipe_daily_stats`-shaped table, a day of its
//! rows staged as the warehouse exports them (canonical NDJSON) plus the same rows as a TSV
//! for `LOAD DATA` through the mariadb client, and the process's peak memory.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path as FsPath, PathBuf};

use domain::config::{SyncMode, TableSpec};
use domain::schema::{BqType, Column};
use object_store::path::Path;
use partition_sync::partition::{Granularity, Scheme};
use partition_sync::source::PartitionedSource;

/// A number from the environment (`BENCH_…`), or `default`; panics on one that isn't.
pub fn setting(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{key}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// Peak resident memory of this process (VmHWM), KiB.
pub fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The `recipe_daily_stats` source as partition-sync sees it.
pub fn stats_source(mysql_partitioning: bool) -> PartitionedSource {
    let id = |s: &str| domain::ident::Ident::parse(s).unwrap();
    let col = |name: &str, bq, varchar| Column {
        name: id(name),
        bq,
        required: true,
        varchar,
    };
    PartitionedSource {
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
            mysql_partitioning,
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
    }
}

/// `CREATE TABLE` of the stats shape (INT for cooks, as in recipe_daily_stats), with `tail`
/// appended (e.g. a PARTITION BY clause).
pub fn stats_ddl(name: &str, tail: &str) -> String {
    format!(
        "CREATE TABLE `{name}` (recipe_id BIGINT NOT NULL, day DATE NOT NULL, views BIGINT NOT NULL, cooks INT NOT NULL, \
         avg_rating DOUBLE NOT NULL, note VARCHAR(200) CHARACTER SET utf8mb4 NOT NULL, updated_at DATETIME(6) NOT NULL, \
         PRIMARY KEY (recipe_id, day), KEY day_idx (day)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4{tail}"
    )
}

/// One day of stats rows: NDJSON files of `per_file` rows under
/// `dir/run/recipe_daily_stats/<pid>/` (their store paths returned) and the same rows as
/// `dir/<pid>.tsv`.
pub fn stage_day(dir: &FsPath, day: &str, rows: u64, per_file: u64) -> (Vec<Path>, PathBuf) {
    let pid = day.replace('-', "");
    let part_dir = dir.join(format!("run/recipe_daily_stats/{pid}"));
    std::fs::create_dir_all(&part_dir).unwrap();
    let tsv_path = dir.join(format!("{pid}.tsv"));
    let mut tsv = std::io::BufWriter::new(std::fs::File::create(&tsv_path).unwrap());
    let mut files = Vec::new();
    let mut out: Option<std::io::BufWriter<std::fs::File>> = None;
    for i in 0..rows {
        if i % per_file == 0 {
            let name = format!("{:012}.json", i / per_file);
            out = Some(std::io::BufWriter::new(
                std::fs::File::create(part_dir.join(&name)).unwrap(),
            ));
            files.push(Path::from(format!("run/recipe_daily_stats/{pid}/{name}")));
        }
        let note = format!("Recipe {i}, \"quoted\", crème brûlée 🍰 'x'");
        let micros = 1_767_225_600_000_000i64 + (i as i64) * 1_000;
        let rating = (i % 50) as f64 / 10.0 + 0.05;
        let row = serde_json::json!({"recipe_id": i, "day": day, "views": i * 7, "cooks": (i % 1000) as i32,
            "avg_rating": rating, "note": note, "updated_at": micros});
        writeln!(out.as_mut().unwrap(), "{row}").unwrap();
        let ts = chrono::DateTime::from_timestamp_micros(micros)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S%.6f");
        writeln!(
            tsv,
            "{i}\t{day}\t{}\t{}\t{rating}\t{}\t{ts}",
            i * 7,
            i % 1000,
            note.replace('\\', "\\\\")
        )
        .unwrap();
    }
    (files, tsv_path)
}

/// Runs `sql` in database `db` through the mariadb client (LOCAL INFILE allowed), against the
/// server of `server_url` (`mysql://user:pass@host:port`).
pub fn mariadb(server_url: &str, db: &str, sql: &str) {
    let (user_pass, host_port) = server_url
        .trim_start_matches("mysql://")
        .split_once('@')
        .unwrap();
    let (user, pass) = user_pass.split_once(':').unwrap();
    let (host, port) = host_port.trim_end_matches('/').split_once(':').unwrap();
    let status = std::process::Command::new("mariadb")
        .args([
            "--no-defaults",
            "--local-infile=1",
            "-h",
            host,
            "-P",
            port,
            "-u",
            user,
            &format!("-p{pass}"),
            db,
            "-e",
            sql,
        ])
        .status()
        .unwrap();
    assert!(status.success(), "mariadb -e {sql} failed");
}

/// `LOAD DATA LOCAL INFILE` of a staged day's TSV into `table` (statement text for [`mariadb`]).
pub fn load_tsv_sql(tsv: &FsPath, table: &str) -> String {
    format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE `{table}` CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n'",
        tsv.display()
    )
}
