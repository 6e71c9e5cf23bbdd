//! The `LOAD DATA LOCAL INFILE` path of a partition's rows (`docs/sync.md#load`): rows are
//! decoded, checked, escaped as tab-separated text and streamed to the server from memory
//! through the connection's local-infile handler. With `LOCAL`, MySQL downgrades data errors
//! to warnings, so any warning (or a count of stored rows that differs from the rows sent)
//! fails the load as a bad row, its key re-read from the files.

use std::io::Write;
use std::sync::{Arc, Mutex};

use mysql::prelude::Queryable;
use mysql::Conn;

use domain::schema::SqlValue;
use sync_engine::batch;
use sync_engine::session::MysqlError;

use crate::load::{my_err, staging_err, LoadError, PartitionLoad, Progress, TableWork};
use crate::readers::{Chunk, RowCursor};
use crate::rows::{decode, key_at};
use crate::source::PartitionedSource;

/// Shared slot through which a partition's rows reach the LOAD DATA handler.
pub(crate) type Feed =
    Arc<Mutex<Option<Box<dyn FnMut(&mut mysql::LocalInfile<'_>) -> std::io::Result<()> + Send>>>>;

/// Bytes of text the feed gathers before writing them to the server.
const FEED_CHUNK: usize = 1 << 16;

/// Sets `conn` up for LOAD DATA when it may be used, returning the slot that feeds it; `None`
/// means batched INSERTs. LOAD DATA LOCAL INFILE fed from memory is MySQL's own bulk path; it
/// needs the server's `local_infile` on. (BYTES columns, which a text file can't carry
/// cleanly, use INSERTs whatever this returns.)
pub(crate) fn enable(conn: &mut Conn, loader: domain::config::Loader) -> Option<Feed> {
    let use_load_data = loader == domain::config::Loader::Auto
        && conn
            .query_first::<i64, _>("SELECT @@GLOBAL.local_infile")
            .unwrap_or(None)
            == Some(1);
    if !use_load_data {
        return None;
    }
    let feed: Feed = Arc::new(Mutex::new(None));
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
    Some(feed)
}

/// What the LOAD DATA feed did: rows sent, and the first decoding error (after which it
/// stops sending, so the statement ends cleanly and the transaction can be rolled back).
#[derive(Default)]
struct FeedOutcome {
    rows: u64,
    error: Option<LoadError>,
}

/// Loads the chunk's rows by LOAD DATA LOCAL INFILE. Returns the rows loaded (0: no rows
/// were left).
pub(crate) fn load_chunk(
    tx: &mut mysql::Transaction<'_>,
    feed: &Feed,
    rt: &tokio::runtime::Handle,
    work: &TableWork,
    load: &PartitionLoad,
    chunk: &Chunk<'_>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<u64, LoadError> {
    let target = work.table.spec.target.clone();
    let pid = load.partition.id.clone();
    let outcome = Arc::new(Mutex::new(FeedOutcome::default()));
    offer_rows(feed, rt, work, load, chunk, &outcome)?;
    tx.query_drop(load_data_sql(&work.table, chunk.into))
        .map_err(my_err(format!(
            "table {target}, partition {pid}: LOAD DATA"
        )))?;
    let warnings = tx.warnings();
    let affected = tx.affected_rows();
    let result = std::mem::take(&mut *outcome.lock().map_err(|_| feed_poisoned(&target, &pid))?);
    if let Some(e) = result.error {
        return Err(e);
    }
    if warnings > 0 || affected != result.rows {
        return Err(rejected_row(
            tx,
            chunk.rows,
            rt,
            work,
            load,
            (affected, result.rows),
            chunk.offset,
        ));
    }
    progress(Progress::Rows(result.rows));
    Ok(result.rows)
}

/// Puts the job that streams the chunk's rows in the feed, for the handler to run when the
/// server asks for the file. The job records what it sent in `outcome`.
fn offer_rows(
    feed: &Feed,
    rt: &tokio::runtime::Handle,
    work: &TableWork,
    load: &PartitionLoad,
    chunk: &Chunk<'_>,
    outcome: &Arc<Mutex<FeedOutcome>>,
) -> Result<(), LoadError> {
    let (rt, table, rows, limit, outcome) = (
        rt.clone(),
        work.table.clone(),
        chunk.rows.clone(),
        chunk.limit,
        outcome.clone(),
    );
    let part = load.partition.id.clone();
    let job = move |out: &mut mysql::LocalInfile<'_>| -> std::io::Result<()> {
        let mut cursor = rows
            .lock()
            .map_err(|_| std::io::Error::other("row cursor lock poisoned"))?;
        let sent = feed_rows(out, &mut cursor, &rt, &table, &part, limit)?;
        if let Ok(mut o) = outcome.lock() {
            *o = sent;
        }
        Ok(())
    };
    *feed
        .lock()
        .map_err(|_| feed_poisoned(&work.table.spec.target, &load.partition.id))? =
        Some(Box::new(job));
    Ok(())
}

/// Streams up to `limit` rows from the cursor to `out` as LOAD DATA text, in chunks of
/// [`FEED_CHUNK`]. Stops at the first row that can't be read or decoded, sending nothing
/// more, and returns it as the outcome's error.
fn feed_rows(
    out: &mut impl Write,
    cursor: &mut RowCursor,
    rt: &tokio::runtime::Handle,
    table: &PartitionedSource,
    part: &str,
    limit: Option<u64>,
) -> std::io::Result<FeedOutcome> {
    let mut buf: Vec<u8> = Vec::with_capacity(FEED_CHUNK);
    let mut rows = 0u64;
    let mut error = None;
    while limit.is_none_or(|l| rows < l) {
        let obj = match cursor.next_row(rt) {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err((file, m)) => {
                error = Some(staging_err(&table.spec.target, part, &file, m));
                break;
            }
        };
        match decode(table, part, &obj) {
            Ok(values) => {
                write_row(&mut buf, &values);
                rows += 1;
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        if buf.len() >= FEED_CHUNK {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    if error.is_none() {
        out.write_all(&buf)?;
    }
    Ok(FeedOutcome { rows, error })
}

/// The LOAD DATA statement reading the fed text into table `into`, the target's columns.
fn load_data_sql(table: &PartitionedSource, into: &str) -> String {
    let into = domain::ident::quote(into);
    let cols: Vec<&str> = table.columns.iter().map(|c| c.name.quoted()).collect();
    format!(
        "LOAD DATA LOCAL INFILE 'partition-sync' INTO TABLE {into} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
        cols.join(", ")
    )
}

/// The error of a LOAD DATA that MySQL only warned about, or that stored `affected` rows of the
/// `sent`: the first warning's message and column, and the offending row's key re-read from the
/// files.
fn rejected_row(
    tx: &mut mysql::Transaction<'_>,
    rows: &Arc<Mutex<RowCursor>>,
    rt: &tokio::runtime::Handle,
    work: &TableWork,
    load: &PartitionLoad,
    (affected, sent): (u64, u64),
    offset: u64,
) -> LoadError {
    let target = work.table.spec.target.clone();
    let w: Option<(String, u32, String)> = match tx.query_first("SHOW WARNINGS LIMIT 1") {
        Ok(w) => w,
        Err(e) => return my_err(format!("table {target}: SHOW WARNINGS"))(e),
    };
    let (message, column, row) = match &w {
        Some((_, _, m)) => {
            let e = MysqlError::Server {
                code: 0,
                message: m.clone(),
            };
            let (row, column) = batch::locate(&e);
            (m.clone(), column, row)
        }
        None => (format!("{affected} rows stored of {sent} sent"), None, None),
    };
    let store = rows.lock().map(|c| c.store()).ok();
    let key = row
        .zip(store)
        .and_then(|(r, store)| key_at(&store, rt, &work.table, &load.files, offset as usize + r))
        .unwrap_or_else(|| "(unknown)".into());
    LoadError::BadRow {
        table: target.to_string(),
        partition: load.partition.id.clone(),
        key,
        column: column.unwrap_or_else(|| "(unknown)".into()),
        message,
    }
}

/// The error of a poisoned feed lock.
fn feed_poisoned(target: &str, pid: &str) -> LoadError {
    LoadError::Staging {
        table: target.to_string(),
        partition: pid.to_string(),
        file: String::new(),
        message: "feed lock poisoned".into(),
    }
}

/// Appends one row as a line of LOAD DATA text: tab-separated fields, then `\n`.
fn write_row(buf: &mut Vec<u8>, values: &[SqlValue]) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            buf.push(b'\t');
        }
        write_field(buf, v);
    }
    buf.push(b'\n');
}

/// Appends one value in LOAD DATA's escaped text form (`\N` for NULL).
fn write_field(out: &mut Vec<u8>, v: &SqlValue) {
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
