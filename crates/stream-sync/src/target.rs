//! The MySQL side of a stream table: creating it (with `_sync_hash`, `_sync_bucket` and their
//! index), bucket digests, `(key, hash)` of differing buckets, and the writes. Every write
//! batch is one transaction: a crash leaves whole batches, and the next cycle converges.

use domain::config::TableSpec;
use domain::ident::{quote as quote_ident, Ident};
use domain::schema::{
    create_table_sql, key_collation_problems, padded_key_columns, schema_drift, unique_key_problem,
    Column,
};
use mysql::prelude::Queryable;
use mysql::{Conn, TxOpts, Value};
use sync_engine::batch::BatchInserter;
use sync_engine::session::{table_columns, MysqlError};
use sync_engine::values::to_mysql;

use crate::canon;
use crate::plan::{BucketDigest, Digests, KeyHash, StaleRow};
use crate::SyncError;

/// Name of the index the digests and drill-downs read.
pub const SYNC_INDEX: &str = "_sync_bucket_key_hash";

/// Creates the target when missing; adds the sync columns and index when an existing table
/// lacks them; fails permanently, naming each column, when the table cannot hold the
/// warehouse's rows.
pub fn ensure_table(
    conn: &mut Conn,
    spec: &TableSpec,
    columns: &[Column],
) -> Result<(), SyncError> {
    let table = spec.target.quoted();
    let have = match table_columns(conn, &spec.target)? {
        Some(h) => h,
        None => {
            let collation = sync_engine::session::exact_collation(conn)?;
            let sql = create_table_sql(&spec.target, columns, &spec.primary_key, None, &collation)
                .map_err(|e| SyncError::Permanent(format!("{}: {e}", spec.target)))?;
            conn.query_drop(sql)?;
            tracing::info!(table.name = %spec.target, "created the MySQL table from the warehouse schema");
            table_columns(conn, &spec.target)?.unwrap_or_default()
        }
    };
    // A table this sync wrote (it carries the bucket marker) whose string keys still have the
    // padding collation earlier versions created gets the exact one, once.
    let padded = padded_key_columns(&spec.primary_key, &have);
    let have = if !padded.is_empty() && bucket_marker(conn, &spec.target)?.is_some() {
        let collation = sync_engine::session::exact_collation(conn)?;
        tracing::warn!(table.name = %spec.target, columns = ?padded, collation = %collation, "converting key columns to an exact collation (one-time; rebuilds the table)");
        sync_engine::session::convert_collation(conn, &spec.target, &padded, &collation)?;
        table_columns(conn, &spec.target)?.unwrap_or_default()
    } else {
        have
    };
    let mut drift = schema_drift(&spec.target, columns, &have);
    drift.extend(key_collation_problems(
        &spec.target,
        &spec.primary_key,
        &have,
    ));
    if !drift.is_empty() {
        return Err(SyncError::Permanent(format!(
            "schema mismatch between the warehouse and MySQL: {}",
            drift.join("; ")
        )));
    }
    let keys = sync_engine::session::unique_keys(conn, &spec.target)?;
    if let Some(problem) = unique_key_problem(&spec.target, &spec.primary_key, &keys) {
        return Err(SyncError::Permanent(problem));
    }
    let has = |n: &str| have.iter().any(|c| c.name.eq_ignore_ascii_case(n));
    let mut adds = Vec::new();
    if !has("_sync_hash") {
        adds.push("ADD COLUMN `_sync_hash` BIGINT NOT NULL DEFAULT 0".to_string());
    }
    if !has("_sync_bucket") {
        adds.push("ADD COLUMN `_sync_bucket` SMALLINT UNSIGNED NOT NULL DEFAULT 0".to_string());
    }
    let index: Option<String> = conn.exec_first(
        "SELECT INDEX_NAME FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = ? LIMIT 1",
        (spec.target.as_str(), SYNC_INDEX),
    )?;
    if index.is_none() {
        let mut cols = vec!["`_sync_bucket`".to_string()];
        cols.extend(spec.primary_key.iter().map(|k| k.quoted().to_string()));
        cols.push("`_sync_hash`".into());
        adds.push(format!(
            "ADD KEY {} ({})",
            quote_ident(SYNC_INDEX),
            cols.join(", ")
        ));
    }
    if !adds.is_empty() {
        conn.query_drop(format!("ALTER TABLE {table} {}", adds.join(", ")))?;
    }
    Ok(())
}

/// Where the bucket count a table's `_sync_bucket` values were computed with is recorded: a
/// word in the table's comment (other comment text is kept).
const MARKER: &str = "stream-sync:buckets=";

/// The table's comment ("" when it has none).
fn table_comment(conn: &mut Conn, table: &str) -> Result<String, MysqlError> {
    let comment: Option<String> = conn.exec_first(
        "SELECT TABLE_COMMENT FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        (table,),
    )?;
    Ok(comment.unwrap_or_default())
}

/// The bucket count recorded on the table, if any.
pub fn bucket_marker(conn: &mut Conn, table: &Ident) -> Result<Option<u32>, MysqlError> {
    Ok(parse_marker(&table_comment(conn, table)?))
}

/// The bucket count in a table comment: the digits after the marker, found the same way
/// [`with_marker`] finds it to replace.
pub fn parse_marker(comment: &str) -> Option<u32> {
    let at = comment.find(MARKER)? + MARKER.len();
    let digits: String = comment[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Longest table comment MySQL 8 and MariaDB accept.
const MAX_COMMENT: usize = 2048;

/// `comment` with the marker for `buckets` (replacing any earlier one); the rest of the text is
/// kept as it was, shortened at its end if the marker would not fit otherwise.
pub fn with_marker(comment: &str, buckets: u32) -> String {
    let mut rest = String::with_capacity(comment.len());
    let mut tail = comment;
    while let Some(at) = tail.find(MARKER) {
        rest.push_str(&tail[..at]);
        let after = &tail[at + MARKER.len()..];
        tail = after.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    rest.push_str(tail);
    let marker = format!("{MARKER}{buckets}");
    let room = MAX_COMMENT - marker.chars().count() - 1;
    let rest: String = rest.trim_end().chars().take(room).collect();
    let rest = rest.trim_end();
    if rest.is_empty() {
        marker
    } else {
        format!("{rest} {marker}")
    }
}

/// Records `buckets` on the table (a metadata-only change). The ALTER needs the table's
/// metadata lock: it gives up after 10 s (a transient error, retried) rather than queueing
/// readers behind a long transaction.
pub fn set_bucket_marker(conn: &mut Conn, table: &Ident, buckets: u32) -> Result<(), MysqlError> {
    let text = with_marker(&table_comment(conn, table)?, buckets);
    // A literal (DDL takes no parameters): the text is digits and the table's own comment,
    // quoted by the client library's rules (the sessions never set NO_BACKSLASH_ESCAPES).
    let quoted = mysql::Value::from(text).as_sql(false);
    conn.query_drop("SET SESSION lock_wait_timeout = 10")?;
    let altered = conn.query_drop(format!("ALTER TABLE {} COMMENT = {quoted}", table.quoted()));
    conn.query_drop("SET SESSION lock_wait_timeout = DEFAULT")?;
    altered?;
    Ok(())
}

/// Whether the table has no rows.
pub fn is_empty(conn: &mut Conn, table: &Ident) -> Result<bool, MysqlError> {
    let any: Option<u8> = conn.query_first(format!("SELECT 1 FROM {} LIMIT 1", table.quoted()))?;
    Ok(any.is_none())
}

/// Per-bucket `COUNT(*)` and `BIT_XOR(_sync_hash)`: an index-only scan.
pub fn digests(conn: &mut Conn, table: &Ident) -> Result<Digests, MysqlError> {
    let rows: Vec<(u16, u64, u64)> = conn.query(format!(
        "SELECT `_sync_bucket`, COUNT(*), BIT_XOR(`_sync_hash`) FROM {} GROUP BY `_sync_bucket`",
        table.quoted()
    ))?;
    Ok(rows
        .into_iter()
        .map(|(b, count, xor)| (b, BucketDigest { count, xor }))
        .collect())
}

/// The whole table's count and XOR (for the no-cost skip).
pub fn table_digest(conn: &mut Conn, table: &Ident) -> Result<BucketDigest, MysqlError> {
    let row: Option<(u64, u64)> = conn.query_first(format!(
        "SELECT COUNT(*), BIT_XOR(`_sync_hash`) FROM {}",
        table.quoted()
    ))?;
    let (count, xor) = row.unwrap_or((0, 0));
    Ok(BucketDigest { count, xor })
}

/// `(key, hash)` of the rows in `buckets`.
pub fn keys(
    conn: &mut Conn,
    table: &Ident,
    pk: &[Column],
    buckets: &[u16],
) -> Result<MysqlKeys, MysqlError> {
    let cols: Vec<&str> = pk.iter().map(|c| c.name.quoted()).collect();
    let mut out = MysqlKeys::default();
    for chunk in buckets.chunks(4096) {
        let list: Vec<String> = chunk.iter().map(u16::to_string).collect();
        let sql = format!(
            "SELECT {}, `_sync_hash` FROM {} WHERE `_sync_bucket` IN ({})",
            cols.join(", "),
            table.quoted(),
            list.join(",")
        );
        collect_keys(conn.query(sql)?, pk, &mut out);
    }
    Ok(out)
}

/// MySQL's IBLT with `m` cells per sub-table from the stored row hashes of `buckets` (`None`:
/// the whole table), an index-only read streamed into the table: memory is the IBLT's, not
/// the rows' (a 50M-row table would otherwise hold 400 MB of hashes).
pub fn hash_iblt(
    conn: &mut Conn,
    table: &Ident,
    buckets: Option<&[u16]>,
    m: u32,
) -> Result<crate::iblt::Iblt, MysqlError> {
    let mut iblt = crate::iblt::Iblt::new(m);
    let mut add = |sql: String| -> Result<(), MysqlError> {
        for row in conn.query_iter(sql)? {
            let h: i64 = mysql::from_row(row?);
            iblt.insert(h);
        }
        Ok(())
    };
    match buckets {
        None => add(format!("SELECT `_sync_hash` FROM {}", table.quoted()))?,
        Some(buckets) => {
            for chunk in buckets.chunks(4096) {
                add(format!(
                    "SELECT `_sync_hash` FROM {} WHERE `_sync_bucket` IN ({})",
                    table.quoted(),
                    join_u16(chunk)
                ))?;
            }
        }
    }
    Ok(iblt)
}

/// `(key, hash)` of the rows of `buckets` that have one of `hashes`.
pub fn keys_with_hashes(
    conn: &mut Conn,
    table: &Ident,
    pk: &[Column],
    buckets: &[u16],
    hashes: &[i64],
) -> Result<MysqlKeys, MysqlError> {
    let mut out = MysqlKeys::default();
    let cols: Vec<&str> = pk.iter().map(|c| c.name.quoted()).collect();
    for chunk in hashes.chunks(10_000) {
        let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
        let sql = format!(
            "SELECT {}, `_sync_hash` FROM {} WHERE `_sync_bucket` IN ({}) AND `_sync_hash` IN ({})",
            cols.join(", "),
            table.quoted(),
            join_u16(buckets),
            list.join(",")
        );
        collect_keys(conn.query(sql)?, pk, &mut out);
    }
    Ok(out)
}

/// How many of `keys` (key values as an upsert binds them) MySQL has.
pub fn count_existing(
    conn: &mut Conn,
    table: &Ident,
    pk: &[Column],
    keys: &[Vec<Value>],
) -> Result<u64, MysqlError> {
    let cols: Vec<&str> = pk.iter().map(|c| c.name.quoted()).collect();
    let tuple = format!("({})", vec!["?"; pk.len()].join(", "));
    let mut n = 0u64;
    for chunk in keys.chunks(1000) {
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE ({}) IN ({})",
            table.quoted(),
            cols.join(", "),
            vec![tuple.as_str(); chunk.len()].join(", ")
        );
        let params: Vec<Value> = chunk.iter().flatten().cloned().collect();
        n += conn.exec_first::<u64, _, _>(sql, params)?.unwrap_or(0);
    }
    Ok(n)
}

fn join_u16(v: &[u16]) -> String {
    v.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// A `_sync_hash` as MySQL returned it (an integer, or digits over the text protocol).
pub fn hash_of(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::UInt(u) => *u as i64,
        Value::Bytes(b) => String::from_utf8_lossy(b).parse().unwrap_or(0),
        _ => 0,
    }
}

/// Adds MySQL rows of `(key columns…, _sync_hash)` to `out`.
fn collect_keys(rows: Vec<mysql::Row>, pk: &[Column], out: &mut MysqlKeys) {
    for row in rows {
        let mut values = row.unwrap();
        let key = canon::key(
            pk.iter()
                .zip(&values)
                .map(|(c, v)| sync_engine::values::canonical(c, v)),
        );
        let hash = values.get(pk.len()).map_or(0, hash_of);
        values.truncate(pk.len());
        out.raw.insert(key.clone(), values);
        out.keys.push(KeyHash { key, hash });
    }
}

/// The `(key, hash)` pairs of MySQL rows, and each key's values exactly as MySQL returned them:
/// what a DELETE binds, so that it matches whatever the key's type (a re-parsed canonical text
/// would not, e.g. for binary keys or keys containing the canonical separator).
#[derive(Debug, Default)]
pub struct MysqlKeys {
    pub keys: Vec<KeyHash>,
    pub raw: std::collections::HashMap<String, Vec<Value>>,
}

/// Column names written by an upsert: the warehouse's plus bucket and hash.
pub fn write_columns(columns: &[Column]) -> Vec<String> {
    let mut names: Vec<String> = columns.iter().map(|c| c.name.to_string()).collect();
    names.push("_sync_bucket".into());
    names.push("_sync_hash".into());
    names
}

/// Upserts `rows` (values in [`write_columns`] order) in one transaction.
pub fn upsert_batch(
    conn: &mut Conn,
    table: &Ident,
    columns: &[String],
    max_packet: usize,
    rows: Vec<Vec<Value>>,
) -> Result<usize, SyncError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let mut ins = BatchInserter::new(table, columns, max_packet, true);
    let n = rows.len();
    for r in rows {
        ins.push(&mut tx, r).map_err(|e| insert_error(table, e))?;
    }
    ins.flush(&mut tx).map_err(|e| insert_error(table, e))?;
    tx.commit()?;
    Ok(n)
}

fn insert_error(table: &str, e: sync_engine::batch::InsertError) -> SyncError {
    if e.error.transient() {
        return SyncError::Mysql(e.error);
    }
    let column = e
        .column
        .map(|c| format!(" column `{c}`"))
        .unwrap_or_default();
    SyncError::BadRow(format!("{table}{column}: {}", e.error))
}

/// Deletes `rows` in one transaction, each only while it still has the hash it was planned
/// with (a row an upsert just rewrote stays). Returns rows deleted.
pub fn delete_batch(
    conn: &mut Conn,
    table: &Ident,
    pk: &[Column],
    rows: &[StaleRow],
    raw: &std::collections::HashMap<String, Vec<Value>>,
) -> Result<usize, SyncError> {
    let mut tuples: Vec<Vec<Value>> = Vec::with_capacity(rows.len());
    for r in rows {
        let key = raw.get(&r.key).ok_or_else(|| {
            SyncError::Permanent(format!("{table}: no MySQL key values for a stale row"))
        })?;
        let mut tuple = key.clone();
        tuple.push(Value::Int(r.hash));
        tuples.push(tuple);
    }
    let mut cols: Vec<&str> = pk.iter().map(|c| c.name.quoted()).collect();
    cols.push("`_sync_hash`");
    delete_tuples(conn, table, &cols, tuples)
}

/// Deletes the rows with these keys (MySQL values, as an upsert binds them) in one transaction,
/// whatever version they hold. Returns the rows deleted.
pub fn delete_keys(
    conn: &mut Conn,
    table: &Ident,
    pk: &[Column],
    keys: &[Vec<Value>],
) -> Result<usize, SyncError> {
    let cols: Vec<&str> = pk.iter().map(|c| c.name.quoted()).collect();
    delete_tuples(conn, table, &cols, keys.to_vec())
}

/// `DELETE … WHERE (cols) IN ((…), …)` of these value tuples, in one transaction. Returns
/// the rows deleted.
fn delete_tuples(
    conn: &mut Conn,
    table: &Ident,
    cols: &[&str],
    tuples: Vec<Vec<Value>>,
) -> Result<usize, SyncError> {
    if tuples.is_empty() {
        return Ok(0);
    }
    let tuple = format!("({})", vec!["?"; cols.len()].join(", "));
    let sql = format!(
        "DELETE FROM {} WHERE ({}) IN ({})",
        table.quoted(),
        cols.join(", "),
        vec![tuple.as_str(); tuples.len()].join(", ")
    );
    let params: Vec<Value> = tuples.into_iter().flatten().collect();
    let mut tx = conn.start_transaction(TxOpts::default())?;
    tx.exec_drop(sql, params)?;
    let n = tx.affected_rows() as usize;
    tx.commit()?;
    Ok(n)
}

/// MySQL's largest cursor value, as a BigQuery literal; `None` when the table is empty. Time
/// cursors count only values up to now: one future-dated row must not hide every row after it
/// until the next full diff (docs/sync.md#cursor-mode).
pub fn cursor_watermark(
    conn: &mut Conn,
    table: &Ident,
    cursor: &Column,
) -> Result<Option<String>, MysqlError> {
    use domain::schema::BqType;
    let c = cursor.name.quoted();
    let up_to_now = match cursor.bq {
        BqType::Int64 => String::new(),
        BqType::Date => format!(" WHERE {c} <= UTC_DATE()"),
        _ => format!(" WHERE {c} <= UTC_TIMESTAMP(6)"),
    };
    let v: Option<Value> = conn.query_first(format!(
        "SELECT MAX({c}) FROM {}{up_to_now}",
        table.quoted()
    ))?;
    let Some(v) = v.filter(|v| *v != Value::NULL) else {
        return Ok(None);
    };
    let text = sync_engine::values::canonical(cursor, &v);
    Ok(Some(match cursor.bq {
        BqType::Int64 => text,
        BqType::Date => format!("DATE '{text}'"),
        BqType::Datetime => format!("DATETIME '{text}'"),
        _ => format!("TIMESTAMP '{text}+00'"),
    }))
}

/// Converts one exported warehouse row (columns, then bucket and hash) into MySQL values;
/// a bad value is an error naming table, key and column.
pub fn convert_row(
    table: &Ident,
    columns: &[Column],
    pk_idx: &[usize],
    cells: Vec<Option<serde_json::Value>>,
) -> Result<(Vec<Value>, i64), SyncError> {
    let n = columns.len();
    let key_of = |cells: &[Option<serde_json::Value>]| {
        canon::display_key(&canon::key(pk_idx.iter().map(|i| {
            cells
                .get(*i)
                .and_then(|v| v.as_ref())
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string())
                })
                .unwrap_or_else(|| "NULL".into())
        })))
    };
    let mut out = Vec::with_capacity(n + 2);
    for (i, c) in columns.iter().enumerate() {
        let v = cells
            .get(i)
            .cloned()
            .flatten()
            .unwrap_or(serde_json::Value::Null);
        match domain::schema::convert(c, &v) {
            Ok(sv) => out.push(to_mysql(sv)),
            Err(e) => {
                return Err(SyncError::BadRow(format!(
                    "{table} key ({}) column `{}`: {e}",
                    key_of(&cells),
                    c.name
                )))
            }
        }
    }
    let num = |i: usize| cells.get(i).and_then(sync_engine::warehouse::cell_i64);
    let (Some(bucket), Some(hash)) = (num(n), num(n + 1)) else {
        return Err(SyncError::Permanent(format!(
            "{table}: warehouse row without bucket or hash"
        )));
    };
    out.push(Value::Int(bucket));
    out.push(Value::Int(hash));
    Ok((out, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_marker_is_one_word_of_the_comment() {
        assert_eq!(parse_marker("stream-sync:buckets=1024"), Some(1024));
        assert_eq!(
            parse_marker("owned by team x stream-sync:buckets=64"),
            Some(64)
        );
        assert_eq!(parse_marker("no marker"), None);
        assert_eq!(parse_marker("stream-sync:buckets=lots"), None);
        assert_eq!(
            with_marker("owned by x stream-sync:buckets=64", 1024),
            "owned by x stream-sync:buckets=1024"
        );
        assert_eq!(with_marker("", 16), "stream-sync:buckets=16");
        // The rest of the comment keeps its own spacing and lines.
        assert_eq!(
            with_marker("line one\n  line two stream-sync:buckets=64", 16),
            "line one\n  line two stream-sync:buckets=16"
        );
        // A full comment is shortened at its end so that the marker fits MySQL's limit.
        let long = "x".repeat(3000);
        let marked = with_marker(&long, 1024);
        assert_eq!(marked.chars().count(), MAX_COMMENT);
        assert_eq!(parse_marker(&marked), Some(1024));
    }
}
