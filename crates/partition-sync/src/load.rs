//! The MySQL side of a run: target tables created or checked against the warehouse schema,
//! then one transaction per group that deletes the changed and vanished partitions' rows
//! (children first), bulk-inserts the exported rows (parents first) and upserts the state
//! rows. Nothing is visible before commit; any error rolls everything back. Blocking code:
//! run it on a blocking thread.

use std::sync::Arc;

use base64::Engine as _;
use futures::StreamExt;
use mysql::prelude::Queryable;
use mysql::{Conn, TxOpts, Value};
use object_store::path::Path;
use object_store::ObjectStore;

use domain::ident::quote as quote_ident;
use domain::schema::{convert, create_table_sql, schema_drift};
use sync_engine::batch;
use sync_engine::batch::BatchInserter;
use sync_engine::session;
use sync_engine::session::MysqlError;
use sync_engine::values;

use crate::plan::{Reason, SourcePartition};
use crate::source::SourceTable;

/// One partition to load and the exported files that hold its rows.
#[derive(Debug, Clone)]
pub struct PartitionLoad {
    pub partition: SourcePartition,
    pub reason: Reason,
    pub files: Vec<Path>,
}

/// The work of one table in a group.
#[derive(Debug, Clone)]
pub struct TableWork {
    pub table: SourceTable,
    pub loads: Vec<PartitionLoad>,
    pub vanished: Vec<String>,
}

/// What a group's transaction did to one table.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TableOutcome {
    pub table: String,
    pub partitions_loaded: usize,
    pub partitions_removed: usize,
    pub rows_loaded: u64,
    pub rows_deleted: u64,
}

/// Errors of the load. Each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("table {table}, partition {partition}, key {key}, column {column}: {message}")]
    BadRow {
        table: String,
        partition: String,
        key: String,
        column: String,
        message: String,
    },
    #[error("table {table}: MySQL schema differs from the warehouse: {}", problems.join("; "))]
    SchemaDrift {
        table: String,
        problems: Vec<String>,
    },
    #[error("table {table}: cannot create it: {message}")]
    Create { table: String, message: String },
    #[error("table {table}, partition {partition}: staging file {file}: {message}")]
    Staging {
        table: String,
        partition: String,
        file: String,
        message: String,
    },
    #[error("{context}: {source}")]
    Sink {
        context: String,
        #[source]
        source: MysqlError,
    },
}

impl LoadError {
    pub fn transient(&self) -> bool {
        matches!(self, LoadError::Sink { source, .. } if source.transient())
    }

    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LoadError::BadRow { .. } => "bad_row",
            LoadError::SchemaDrift { .. } | LoadError::Create { .. } => "schema",
            LoadError::Staging { .. } => "staging",
            LoadError::Sink { .. } => "mysql",
        }
    }
}

fn sink_err(context: impl Into<String>) -> impl FnOnce(MysqlError) -> LoadError {
    let context = context.into();
    move |source| LoadError::Sink { context, source }
}

fn my_err(context: impl Into<String>) -> impl FnOnce(mysql::Error) -> LoadError {
    let context = context.into();
    move |e| LoadError::Sink {
        context,
        source: e.into(),
    }
}

/// Creates the target when missing (with the partition column indexed); otherwise checks that
/// its columns can hold the warehouse's. Returns whether it was created. DDL commits
/// implicitly in MySQL, so this runs before the group's transaction.
/// For an existing target, the columns' own limits (NOT NULL, VARCHAR length) are adopted so
/// that a value MySQL would reject is caught while decoding, naming its row.
pub fn ensure_target(conn: &mut Conn, table: &mut SourceTable) -> Result<bool, LoadError> {
    let target = table.spec.target.clone();
    match session::table_columns(conn, &target)
        .map_err(sink_err(format!("table {target}: reading its columns")))?
    {
        Some(have) => {
            let problems = schema_drift(&target, &table.columns, &have);
            if !problems.is_empty() {
                return Err(LoadError::SchemaDrift {
                    table: target,
                    problems,
                });
            }
            let limits: Vec<(String, String, String, Option<u64>)> = conn
                .exec(
                    "SELECT COLUMN_NAME, IS_NULLABLE, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                    (&target,),
                )
                .map_err(my_err(format!("table {target}: reading its columns")))?;
            for (name, nullable, data_type, max_chars) in limits {
                if let Some(col) = table
                    .columns
                    .iter_mut()
                    .find(|c| c.name.eq_ignore_ascii_case(&name))
                {
                    col.required |= nullable == "NO";
                    if matches!(data_type.as_str(), "varchar" | "char") {
                        col.varchar = max_chars.map(|n| n.min(u64::from(u32::MAX)) as u32);
                    }
                }
            }
            Ok(false)
        }
        None => {
            let mut ddl = create_table_sql(
                &target,
                &table.columns,
                &table.spec.primary_key,
                Some(&table.scheme.target_column),
            )
            .map_err(|message| LoadError::Create {
                table: target.clone(),
                message,
            })?;
            if table.spec.mysql_partitioning {
                // A first partition below any real value holds NULL partition keys; the
                // warehouse's partitions are added by `ensure_mysql_partitions`.
                let floor = if table.scheme.column_type == domain::schema::BqType::Date {
                    "1000-01-01"
                } else {
                    "1000-01-01 00:00:00"
                };
                ddl.push_str(&format!(
                    " PARTITION BY RANGE COLUMNS({}) (PARTITION p_floor VALUES LESS THAN ('{floor}'))",
                    quote_ident(&table.scheme.target_column)
                ));
            }
            conn.query_drop(ddl)
                .map_err(my_err(format!("table {target}: CREATE TABLE")))?;
            tracing::info!(table.name = %target, "created target table from the warehouse schema");
            Ok(true)
        }
    }
}

/// For a target partitioned in MySQL (`RANGE COLUMNS` on the partition column), adds a
/// partition for every warehouse partition about to load whose range ends above the highest
/// existing bound. DDL: runs before the group's transaction.
pub fn ensure_mysql_partitions(
    conn: &mut Conn,
    table: &SourceTable,
    partitions: &[String],
) -> Result<usize, LoadError> {
    let target = &table.spec.target;
    let bounds: Vec<Option<String>> = conn
        .exec(
            "SELECT PARTITION_DESCRIPTION FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = ? AND PARTITION_NAME IS NOT NULL ORDER BY PARTITION_ORDINAL_POSITION",
            (target,),
        )
        .map_err(my_err(format!("table {target}: reading its MySQL partitions")))?;
    if bounds.is_empty() {
        // Not partitioned in MySQL (created before the option was set): leave it.
        return Ok(0);
    }
    let mut max = bounds
        .iter()
        .flatten()
        .map(|b| b.trim_matches('\'').to_string())
        .max()
        .unwrap_or_default();
    let mut ends: Vec<(String, String)> = Vec::new();
    for pid in partitions
        .iter()
        .filter(|p| p.as_str() != crate::partition::NULL_PARTITION)
    {
        let (_, end) = table
            .scheme
            .range(pid)
            .map_err(|message| LoadError::Create {
                table: target.clone(),
                message,
            })?;
        let end = if table.scheme.column_type == domain::schema::BqType::Date {
            end.format("%Y-%m-%d").to_string()
        } else {
            end.format("%Y-%m-%d %H:%M:%S").to_string()
        };
        ends.push((pid.clone(), end));
    }
    ends.sort_by(|a, b| a.1.cmp(&b.1));
    let mut added = 0;
    for (pid, end) in ends {
        if end > max {
            conn.query_drop(format!(
                "ALTER TABLE {} ADD PARTITION (PARTITION {} VALUES LESS THAN ('{end}'))",
                quote_ident(target),
                quote_ident(&format!("p{pid}"))
            ))
            .map_err(my_err(format!(
                "table {target}: adding MySQL partition for {pid}"
            )))?;
            max = end;
            added += 1;
        }
    }
    Ok(added)
}

/// Progress of a load, for the progress bar and logs.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The `done`-th of `total` partitions of a group is being exported.
    Exporting {
        table: String,
        partition: String,
        done: usize,
        total: usize,
    },
    PartitionStarted {
        table: String,
        partition: String,
        rows: i64,
    },
    Rows(u64),
    PartitionDone {
        table: String,
        partition: String,
        rows: u64,
    },
}

/// Loads a group in one transaction. The caller holds the group's advisory lock.
pub fn load_group(
    conn: &mut Conn,
    store: &Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    run_id: &str,
    tables: &[TableWork],
    loader: domain::config::Loader,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<TableOutcome>, LoadError> {
    let max_packet =
        session::max_allowed_packet(conn).map_err(sink_err("reading max_allowed_packet"))?;
    // LOAD DATA LOCAL INFILE fed from memory is MySQL's own bulk path; it needs the server's
    // `local_infile` on. Otherwise (and for BYTES columns, which a text file can't carry
    // cleanly) batched multi-row INSERTs are used.
    let use_load_data = loader == domain::config::Loader::Auto
        && conn
            .query_first::<i64, _>("SELECT @@GLOBAL.local_infile")
            .unwrap_or(None)
            == Some(1);
    let feed: Feed = Arc::new(std::sync::Mutex::new(None));
    if use_load_data {
        let slot = feed.clone();
        conn.set_local_infile_handler(Some(mysql::LocalInfileHandler::new(move |_name, out| {
            let job = slot
                .lock()
                .map_err(|_| std::io::Error::other("feed lock poisoned"))?
                .take();
            match job {
                Some(mut job) => job(out),
                None => Err(std::io::Error::other(
                    "LOAD DATA asked for a file nobody offered",
                )),
            }
        })));
    }
    let mut outcomes: Vec<TableOutcome> = tables
        .iter()
        .map(|t| TableOutcome {
            table: t.table.spec.target.clone(),
            ..Default::default()
        })
        .collect();
    let mut tx = conn
        .start_transaction(TxOpts::default())
        .map_err(my_err("starting the transaction"))?;

    // Children before parents: delete in reverse load order.
    for (i, work) in tables.iter().enumerate().rev() {
        let target = &work.table.spec.target;
        let ids = work
            .loads
            .iter()
            .map(|l| l.partition.id.as_str())
            .chain(work.vanished.iter().map(String::as_str));
        for id in ids {
            let (cond, params) =
                work.table
                    .scheme
                    .mysql_filter(id)
                    .map_err(|message| LoadError::Create {
                        table: target.clone(),
                        message,
                    })?;
            tx.exec_drop(
                format!("DELETE FROM {} WHERE {cond}", quote_ident(target)),
                params,
            )
            .map_err(my_err(format!("table {target}, partition {id}: DELETE")))?;
            outcomes[i].rows_deleted += tx.affected_rows();
        }
    }

    // Parents before children: insert in load order.
    for (i, work) in tables.iter().enumerate() {
        let target = &work.table.spec.target;
        let names: Vec<String> = work.table.columns.iter().map(|c| c.name.clone()).collect();
        for load in &work.loads {
            let pid = &load.partition.id;
            progress(Progress::PartitionStarted {
                table: target.clone(),
                partition: pid.clone(),
                rows: load.partition.rows,
            });
            let bytes_column = work
                .table
                .columns
                .iter()
                .any(|c| c.bq == domain::schema::BqType::Bytes);
            let loaded = if use_load_data && !bytes_column {
                load_data(&mut tx, &feed, store, rt, work, load, progress)?
            } else {
                insert_rows(&mut tx, store, rt, work, load, &names, max_packet, progress)?
            };
            progress(Progress::PartitionDone {
                table: target.clone(),
                partition: pid.clone(),
                rows: loaded,
            });
            upsert_state(&mut tx, target, &load.partition, loaded, run_id)?;
            outcomes[i].partitions_loaded += 1;
            outcomes[i].rows_loaded += loaded;
        }
        for id in &work.vanished {
            tx.exec_drop(
                "DELETE FROM sync_partitions WHERE target_table = ? AND partition_id = ?",
                (target, id),
            )
            .map_err(my_err(format!(
                "table {target}: removing state of vanished partition {id}"
            )))?;
            outcomes[i].partitions_removed += 1;
        }
        let o = &outcomes[i];
        tx.exec_drop(
            "INSERT INTO sync_runs (run_id, target_table, engine, started_at, finished_at, status, rows_loaded, rows_deleted) \
             VALUES (?, ?, 'partition', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), 'ok', ?, ?) \
             ON DUPLICATE KEY UPDATE finished_at = VALUES(finished_at), status = VALUES(status), \
             rows_loaded = VALUES(rows_loaded), rows_deleted = VALUES(rows_deleted)",
            (run_id, target, o.rows_loaded, o.rows_deleted),
        )
        .map_err(my_err(format!("table {target}: recording the run")))?;
    }
    tx.commit().map_err(my_err("committing"))?;
    Ok(outcomes)
}

/// Shared slot through which a partition's rows reach the LOAD DATA handler.
type Feed = Arc<
    std::sync::Mutex<
        Option<Box<dyn FnMut(&mut mysql::LocalInfile<'_>) -> std::io::Result<()> + Send>>,
    >,
>;

/// The multi-row INSERT path. Returns the rows loaded.
#[allow(clippy::too_many_arguments)]
fn insert_rows(
    tx: &mut mysql::Transaction<'_>,
    store: &Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    work: &TableWork,
    load: &PartitionLoad,
    names: &[String],
    max_packet: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<u64, LoadError> {
    let target = &work.table.spec.target;
    let pid = &load.partition.id;
    let mut inserter = BatchInserter::new(target, names, max_packet, false);
    let mut loaded = 0u64;
    // A MySQL error names the row ("at row N" of a batch); its key is re-read from the files.
    let named = |e: batch::InsertError| -> LoadError {
        let key = e
            .row
            .and_then(|r| key_at(store, rt, &work.table, &load.files, r + 1));
        match (key, e.column) {
            (Some(key), Some(column)) => LoadError::BadRow {
                table: target.clone(),
                partition: pid.clone(),
                key,
                column,
                message: e.error.to_string(),
            },
            _ => LoadError::Sink {
                context: format!("table {target}, partition {pid}: INSERT"),
                source: e.error,
            },
        }
    };
    for file in &load.files {
        let mut rows =
            RowReader::open(store, file, rt).map_err(|m| staging_err(target, pid, file, m))?;
        while let Some(obj) = rows
            .next_row(rt)
            .map_err(|m| staging_err(target, pid, file, m))?
        {
            let values = decode(&work.table, pid, &obj)?;
            let row: Vec<Value> = values.into_iter().map(values::to_mysql).collect();
            let written = inserter.push(tx, row).map_err(named)?;
            loaded += 1;
            if written > 0 {
                progress(Progress::Rows(written as u64));
            }
        }
    }
    let written = inserter.flush(tx).map_err(named)?;
    progress(Progress::Rows(written as u64));
    Ok(loaded)
}

/// Converts one exported row into the row's MySQL values, checking each.
fn decode(
    table: &SourceTable,
    pid: &str,
    obj: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<domain::schema::SqlValue>, LoadError> {
    let target = &table.spec.target;
    let mut row = Vec::with_capacity(table.columns.len());
    for col in &table.columns {
        let v = obj.get(&col.name).unwrap_or(&serde_json::Value::Null);
        let value = convert(col, v).map_err(|message| LoadError::BadRow {
            table: target.clone(),
            partition: pid.to_string(),
            key: key_of(table, obj),
            column: col.name.clone(),
            message,
        })?;
        row.push(value);
    }
    Ok(row)
}

/// Appends one value in LOAD DATA's escaped text form (`\N` for NULL).
fn write_field(out: &mut Vec<u8>, v: &domain::schema::SqlValue) {
    use domain::schema::SqlValue;
    match v {
        SqlValue::Null => out.extend_from_slice(b"\\N"),
        SqlValue::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        SqlValue::Double(f) => out.extend_from_slice(format!("{f:e}").as_bytes()),
        SqlValue::Text(s) => escape_into(out, s.as_bytes()),
        SqlValue::Bytes(b) => escape_into(out, b),
    }
}

fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => out.extend_from_slice(b"\\0"),
            _ => out.push(b),
        }
    }
}

/// What the LOAD DATA feed did: rows sent, and the first decoding error (after which it
/// stops sending, so the statement ends cleanly and the transaction can be rolled back).
#[derive(Default)]
struct FeedOutcome {
    rows: u64,
    error: Option<LoadError>,
}

/// The LOAD DATA LOCAL INFILE path: rows are decoded, checked and streamed to the server from
/// memory. With LOCAL, MySQL downgrades data errors to warnings, so any warning fails the load.
fn load_data(
    tx: &mut mysql::Transaction<'_>,
    feed: &Feed,
    store: &Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    work: &TableWork,
    load: &PartitionLoad,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<u64, LoadError> {
    let target = work.table.spec.target.clone();
    let pid = load.partition.id.clone();
    let outcome = Arc::new(std::sync::Mutex::new(FeedOutcome::default()));
    {
        let (store, rt, table, files, outcome) = (
            store.clone(),
            rt.clone(),
            work.table.clone(),
            load.files.clone(),
            outcome.clone(),
        );
        let part = pid.clone();
        let job = move |out: &mut mysql::LocalInfile<'_>| -> std::io::Result<()> {
            use std::io::Write;
            let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
            let mut rows = 0u64;
            let mut error = None;
            'files: for file in &files {
                let mut lines = match RowReader::open(&store, file, &rt) {
                    Ok(l) => l,
                    Err(m) => {
                        error = Some(staging_err(&table.spec.target, &part, file, m));
                        break;
                    }
                };
                loop {
                    let obj = match lines.next_row(&rt) {
                        Ok(Some(l)) => l,
                        Ok(None) => break,
                        Err(m) => {
                            error = Some(staging_err(&table.spec.target, &part, file, m));
                            break 'files;
                        }
                    };
                    match decode(&table, &part, &obj) {
                        Ok(values) => {
                            for (i, v) in values.iter().enumerate() {
                                if i > 0 {
                                    buf.push(b'\t');
                                }
                                write_field(&mut buf, v);
                            }
                            buf.push(b'\n');
                            rows += 1;
                        }
                        Err(e) => {
                            error = Some(e);
                            break 'files;
                        }
                    }
                    if buf.len() >= 1 << 16 {
                        out.write_all(&buf)?;
                        buf.clear();
                    }
                }
            }
            if error.is_none() {
                out.write_all(&buf)?;
            }
            if let Ok(mut o) = outcome.lock() {
                o.rows = rows;
                o.error = error;
            }
            Ok(())
        };
        *feed.lock().map_err(|_| LoadError::Staging {
            table: target.clone(),
            partition: pid.clone(),
            file: String::new(),
            message: "feed lock poisoned".into(),
        })? = Some(Box::new(job));
    }
    let cols: Vec<String> = work
        .table
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    let sql = format!(
        "LOAD DATA LOCAL INFILE 'partition-sync' INTO TABLE {} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
        quote_ident(&target),
        cols.join(", ")
    );
    tx.query_drop(sql).map_err(my_err(format!(
        "table {target}, partition {pid}: LOAD DATA"
    )))?;
    let warnings = tx.warnings();
    let affected = tx.affected_rows();
    let result = std::mem::take(&mut *outcome.lock().map_err(|_| LoadError::Staging {
        table: target.clone(),
        partition: pid.clone(),
        file: String::new(),
        message: "feed lock poisoned".into(),
    })?);
    if let Some(e) = result.error {
        return Err(e);
    }
    if warnings > 0 || affected != result.rows {
        let w: Option<(String, u32, String)> = tx
            .query_first("SHOW WARNINGS LIMIT 1")
            .map_err(my_err(format!("table {target}: SHOW WARNINGS")))?;
        let (message, column, row) = match &w {
            Some((_, _, m)) => {
                let e = MysqlError::Server {
                    code: 0,
                    message: m.clone(),
                };
                let (row, column) = batch::locate(&e);
                (m.clone(), column, row)
            }
            None => (
                format!("{affected} rows stored of {} sent", result.rows),
                None,
                None,
            ),
        };
        let key = row
            .and_then(|r| key_at(store, rt, &work.table, &load.files, r))
            .unwrap_or_else(|| "(unknown)".into());
        return Err(LoadError::BadRow {
            table: target,
            partition: pid,
            key,
            column: column.unwrap_or_else(|| "(unknown)".into()),
            message,
        });
    }
    progress(Progress::Rows(result.rows));
    Ok(result.rows)
}

/// The key of the `n`-th (1-based) row of a partition's files, re-read for an error message.
fn key_at(
    store: &Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    table: &SourceTable,
    files: &[Path],
    n: usize,
) -> Option<String> {
    let mut i = 0;
    for file in files {
        let mut rows = RowReader::open(store, file, rt).ok()?;
        while let Some(obj) = rows.next_row(rt).ok()? {
            i += 1;
            if i == n {
                return Some(key_of(table, &obj));
            }
        }
    }
    None
}

fn staging_err(table: &str, partition: &str, file: &Path, message: impl Into<String>) -> LoadError {
    LoadError::Staging {
        table: table.into(),
        partition: partition.into(),
        file: file.to_string(),
        message: message.into(),
    }
}

fn upsert_state(
    tx: &mut mysql::Transaction<'_>,
    target: &str,
    p: &SourcePartition,
    rows: u64,
    run_id: &str,
) -> Result<(), LoadError> {
    let modified: Value = match p
        .modified_micros
        .and_then(chrono::DateTime::from_timestamp_micros)
    {
        Some(t) => Value::Bytes(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string().into_bytes()),
        None => Value::NULL,
    };
    // The row count recorded is what was loaded: if the partition changed between detection
    // and export, the counts differ and the next run loads it again.
    tx.exec_drop(
        "INSERT INTO sync_partitions (target_table, partition_id, source_modified_at, fingerprint, row_count, synced_at, run_id) \
         VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6), ?) ON DUPLICATE KEY UPDATE source_modified_at = VALUES(source_modified_at), \
         fingerprint = VALUES(fingerprint), row_count = VALUES(row_count), synced_at = VALUES(synced_at), run_id = VALUES(run_id)",
        (target, &p.id, modified, p.fingerprint, rows, run_id),
    )
    .map_err(my_err(format!("table {target}, partition {}: recording state", p.id)))
}

/// The primary key of an exported row, for messages: `recipe_id=7, day=2026-01-01`.
fn key_of(table: &SourceTable, obj: &serde_json::Map<String, serde_json::Value>) -> String {
    if table.spec.primary_key.is_empty() {
        return "(no primary key configured)".into();
    }
    table
        .spec
        .primary_key
        .iter()
        .map(|k| match obj.get(k) {
            Some(serde_json::Value::String(s)) => format!("{k}={s}"),
            Some(v) => format!("{k}={v}"),
            None => format!("{k}=NULL"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of one staged file: newline-delimited JSON (streamed) or Parquet (by extension).
enum RowReader {
    Json(LineReader),
    Parquet(ParquetRows),
}

impl RowReader {
    fn open(
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        rt: &tokio::runtime::Handle,
    ) -> Result<RowReader, String> {
        if path.extension() == Some("parquet") {
            Ok(RowReader::Parquet(ParquetRows::open(store, path, rt)?))
        } else {
            Ok(RowReader::Json(LineReader::open(store, path, rt)?))
        }
    }

    fn next_row(
        &mut self,
        rt: &tokio::runtime::Handle,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
        match self {
            RowReader::Json(lines) => match lines.next_line(rt)? {
                None => Ok(None),
                Some(line) => serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|e| format!("line is not a JSON object: {e}")),
            },
            RowReader::Parquet(rows) => rows.next_row(),
        }
    }
}

/// A Parquet file, copied from the store to a local temporary file (so memory stays bounded
/// by a row group, whatever the file's size) and read row by row.
struct ParquetRows {
    rows: parquet::record::reader::RowIter<'static>,
    _file: TempFile,
}

struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl ParquetRows {
    fn open(
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        rt: &tokio::runtime::Handle,
    ) -> Result<ParquetRows, String> {
        use std::io::Write;
        let tmp = TempFile(std::env::temp_dir().join(format!(
            "partition-sync-{}.parquet",
            uuid::Uuid::new_v4().simple()
        )));
        let mut out = std::fs::File::create(&tmp.0).map_err(|e| format!("temporary file: {e}"))?;
        let mut stream = rt
            .block_on(store.get(path))
            .map_err(|e| e.to_string())?
            .into_stream();
        while let Some(chunk) = rt.block_on(stream.next()) {
            out.write_all(&chunk.map_err(|e| e.to_string())?)
                .map_err(|e| format!("temporary file: {e}"))?;
        }
        drop(out);
        let file = std::fs::File::open(&tmp.0).map_err(|e| format!("temporary file: {e}"))?;
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(file)
            .map_err(|e| format!("not a Parquet file: {e}"))?;
        Ok(ParquetRows {
            rows: reader.into_iter(),
            _file: tmp,
        })
    }

    fn next_row(&mut self) -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
        match self.rows.next() {
            None => Ok(None),
            Some(Err(e)) => Err(format!("Parquet: {e}")),
            Some(Ok(row)) => Ok(Some(
                row.get_column_iter()
                    .map(|(name, field)| (name.clone(), parquet_value(field)))
                    .collect(),
            )),
        }
    }
}

/// A Parquet value in the form the exported JSON has (see `Column::export_expr`).
fn parquet_value(field: &parquet::record::Field) -> serde_json::Value {
    use parquet::record::Field;
    use serde_json::Value as J;
    match field {
        Field::Null => J::Null,
        Field::Bool(b) => J::Bool(*b),
        Field::Byte(v) => J::from(*v),
        Field::Short(v) => J::from(*v),
        Field::Int(v) => J::from(*v),
        Field::Long(v) => J::from(*v),
        Field::UByte(v) => J::from(*v),
        Field::UShort(v) => J::from(*v),
        Field::UInt(v) => J::from(*v),
        Field::ULong(v) => J::from(*v),
        Field::Float(v) => serde_json::Number::from_f64(f64::from(*v))
            .map(J::Number)
            .unwrap_or_else(|| J::String(v.to_string())),
        Field::Double(v) => serde_json::Number::from_f64(*v)
            .map(J::Number)
            .unwrap_or_else(|| J::String(v.to_string())),
        Field::Str(s) => J::String(s.clone()),
        Field::Bytes(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b.data())),
        Field::Date(days) => chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|d| d.checked_add_signed(chrono::Duration::days(i64::from(*days))))
            .map(|d| J::String(d.format("%Y-%m-%d").to_string()))
            .unwrap_or(J::Null),
        Field::TimestampMicros(us) => J::from(*us),
        Field::TimestampMillis(ms) => J::from(ms.saturating_mul(1000)),
        other => J::String(other.to_string()),
    }
}

/// Reads newline-delimited records from one object as a stream: memory stays at one chunk
/// plus one line.
struct LineReader {
    stream: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    start: usize,
    done: bool,
}

impl LineReader {
    fn open(
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        rt: &tokio::runtime::Handle,
    ) -> Result<LineReader, String> {
        let result = rt.block_on(store.get(path)).map_err(|e| e.to_string())?;
        Ok(LineReader {
            stream: result.into_stream(),
            buf: Vec::new(),
            start: 0,
            done: false,
        })
    }

    fn next_line(&mut self, rt: &tokio::runtime::Handle) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(nl) = self.buf[self.start..].iter().position(|b| *b == b'\n') {
                let line = self.buf[self.start..self.start + nl].to_vec();
                self.start += nl + 1;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            if self.done {
                let rest = self.buf[self.start..].to_vec();
                self.start = self.buf.len();
                return Ok(if rest.iter().all(u8::is_ascii_whitespace) {
                    None
                } else {
                    Some(rest)
                });
            }
            // Compact before reading more, so the buffer holds at most one chunk and a line.
            self.buf.drain(..self.start);
            self.start = 0;
            match rt.block_on(self.stream.next()) {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(e.to_string()),
                None => self.done = true,
            }
        }
    }
}
