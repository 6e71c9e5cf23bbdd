//! The MySQL side of the sync (both binaries), over the `mysql` crate: sessions in UTC with a
//! strict `sql_mode` and utf8mb4, identifier quoting, advisory locks, the state tables,
//! batched multi-row inserts sized to the server's `max_allowed_packet` with bound values, and
//! the classification of MySQL errors into transient (retry) and permanent.

use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, Value};

use crate::config::quote_ident;
use crate::schema::{MysqlColumn, SqlValue};

/// Statements every sync session starts with.
pub const SESSION_INIT: [&str; 3] = [
    "SET NAMES utf8mb4",
    "SET time_zone = '+00:00'",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'",
];

/// The state tables' DDL: the same text as the migration, so the sync can create them in a
/// database where the API's migrations never ran.
const STATE_DDL: &str =
    include_str!("../../../migrations/2026-11-26-000002_create_sync_state/up.sql");

/// Errors of the MySQL sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("MySQL URL is invalid: {0}")]
    Url(String),
    #[error("MySQL error {code}: {message}")]
    Server { code: u16, message: String },
    #[error("MySQL connection failed: {0}")]
    Io(String),
    #[error("MySQL: {0}")]
    Other(String),
}

impl SinkError {
    /// Deadlock (1213), lock wait timeout (1205), too many connections (1040), server gone
    /// (2006/2013), connection failures and I/O errors may go away when retried.
    pub fn transient(&self) -> bool {
        match self {
            SinkError::Server { code, .. } => matches!(
                code,
                1040 | 1205 | 1213 | 2002 | 2003 | 2006 | 2013 | 1927 | 1053
            ),
            SinkError::Io(_) => true,
            _ => false,
        }
    }
}

impl From<mysql::Error> for SinkError {
    fn from(e: mysql::Error) -> Self {
        match e {
            mysql::Error::MySqlError(m) => SinkError::Server {
                code: m.code,
                message: m.message,
            },
            mysql::Error::IoError(io) => SinkError::Io(io.to_string()),
            mysql::Error::CodecError(c) => SinkError::Io(c.to_string()),
            mysql::Error::DriverError(d) => {
                let s = d.to_string();
                if s.contains("connect") || s.contains("Connection") {
                    SinkError::Io(s)
                } else {
                    SinkError::Other(s)
                }
            }
            mysql::Error::UrlError(u) => SinkError::Url(u.to_string()),
            other => SinkError::Other(other.to_string()),
        }
    }
}

/// Opens a session (UTC, strict, utf8mb4). The URL is never logged.
pub fn connect(url: &str) -> Result<Conn, SinkError> {
    let opts = Opts::from_url(url).map_err(|e| SinkError::Url(e.to_string()))?;
    let opts = OptsBuilder::from_opts(opts)
        .init(SESSION_INIT.to_vec())
        .tcp_connect_timeout(Some(Duration::from_secs(5)))
        .stmt_cache_size(Some(64));
    Ok(Conn::new(opts)?)
}

/// Creates the sync's state tables when missing.
pub fn ensure_state_tables(conn: &mut Conn) -> Result<(), SinkError> {
    for stmt in STATE_DDL
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let body: String = stmt
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if body.trim().is_empty() {
            continue;
        }
        conn.query_drop(body.replacen("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))?;
    }
    Ok(())
}

/// Columns of `table` in the current database, or `None` when it does not exist.
pub fn table_columns(conn: &mut Conn, table: &str) -> Result<Option<Vec<MysqlColumn>>, SinkError> {
    let rows: Vec<(String, String, String, Option<String>, String)> = conn.exec(
        "SELECT COLUMN_NAME, DATA_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (table,),
    )?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .map(|(name, data_type, nullable, default, extra)| MysqlColumn {
                name,
                data_type,
                nullable: nullable == "YES",
                has_default: default.is_some()
                    || extra.to_ascii_lowercase().contains("auto_increment")
                    || extra.to_ascii_lowercase().contains("generated"),
            })
            .collect(),
    ))
}

/// Takes a named advisory lock, waiting up to `timeout`. Returns false when another session
/// holds it. Names longer than MySQL's 64 characters are shortened with a hash.
pub fn get_lock(conn: &mut Conn, name: &str, timeout: Duration) -> Result<bool, SinkError> {
    let got: Option<Option<i64>> = conn.exec_first(
        "SELECT GET_LOCK(?, ?)",
        (lock_name(name), timeout.as_secs()),
    )?;
    Ok(got.flatten() == Some(1))
}

/// Releases a lock taken with [`get_lock`].
pub fn release_lock(conn: &mut Conn, name: &str) -> Result<(), SinkError> {
    conn.exec_drop("SELECT RELEASE_LOCK(?)", (lock_name(name),))?;
    Ok(())
}

fn lock_name(name: &str) -> String {
    if name.len() <= 64 {
        return name.to_string();
    }
    let h = crate::canon::fnv1a(name.as_bytes());
    // At most 40 bytes of the name, cut at a character boundary.
    let cut = (0..=40)
        .rev()
        .find(|i| name.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}:{h:016x}", &name[..cut])
}

/// The server's `max_allowed_packet` in bytes.
pub fn max_allowed_packet(conn: &mut Conn) -> Result<usize, SinkError> {
    let v: Option<u64> = conn.query_first("SELECT @@max_allowed_packet")?;
    Ok(v.unwrap_or(4 << 20) as usize)
}

/// The database the connection uses.
pub fn current_database(conn: &mut Conn) -> Result<String, SinkError> {
    let v: Option<Option<String>> = conn.query_first("SELECT DATABASE()")?;
    v.flatten()
        .ok_or_else(|| SinkError::Other("the MySQL URL names no database".into()))
}

pub fn to_mysql(v: SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::NULL,
        SqlValue::Int(i) => Value::Int(i),
        SqlValue::Double(f) => Value::Double(f),
        SqlValue::Text(s) => Value::Bytes(s.into_bytes()),
        SqlValue::Bytes(b) => Value::Bytes(b),
    }
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::Bytes(b) => b.len() + 9,
        _ => 9,
    }
}

/// A failed batch: the MySQL error and, where MySQL names it ("at row N"), the index of the
/// offending row within the rows given to [`BatchInserter::push`].
#[derive(Debug)]
pub struct InsertError {
    pub error: SinkError,
    pub row: Option<usize>,
    /// The column MySQL names ("for column 'x'"), if any.
    pub column: Option<String>,
}

/// Multi-row `INSERT` (or `INSERT … ON DUPLICATE KEY UPDATE`) with bound values, flushed when
/// the next row would exceed the placeholder limit or a share of `max_allowed_packet`.
/// Memory stays bounded by one batch.
pub struct BatchInserter {
    head: String,
    tail: String,
    row_sql: String,
    columns: usize,
    max_rows: usize,
    max_bytes: usize,
    rows: Vec<Value>,
    bytes: usize,
    /// Index (over all rows pushed) of the first row in the current batch.
    first_row: usize,
    full_stmt: Option<mysql::Statement>,
}

impl BatchInserter {
    /// `upsert` adds `ON DUPLICATE KEY UPDATE` of every column.
    pub fn new(
        table: &str,
        columns: &[String],
        max_allowed_packet: usize,
        upsert: bool,
    ) -> BatchInserter {
        let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
        let head = format!(
            "INSERT INTO {} ({}) VALUES ",
            quote_ident(table),
            cols.join(", ")
        );
        let tail = if upsert {
            // VALUES() is deprecated in MySQL 8.0.20+ but still works there and is the only
            // spelling MariaDB knows; the alias syntax is MySQL-only.
            let sets: Vec<String> = cols.iter().map(|c| format!("{c} = VALUES({c})")).collect();
            format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", "))
        } else {
            String::new()
        };
        let row_sql = format!("({})", vec!["?"; columns.len()].join(", "));
        let n = columns.len().max(1);
        BatchInserter {
            head,
            tail,
            row_sql,
            columns: n,
            max_rows: (65_535 / n).min(10_000),
            max_bytes: (max_allowed_packet / 2).max(64 << 10),
            rows: Vec::new(),
            bytes: 0,
            first_row: 0,
            full_stmt: None,
        }
    }

    /// Adds one row; may flush a full batch first. Returns rows written by a flush.
    pub fn push<Q: Queryable>(
        &mut self,
        conn: &mut Q,
        row: Vec<Value>,
    ) -> Result<usize, InsertError> {
        let size: usize = row.iter().map(value_size).sum();
        let mut written = 0;
        let n_rows = self.rows.len() / self.columns;
        if n_rows > 0 && (n_rows >= self.max_rows || self.bytes + size > self.max_bytes) {
            written = self.flush(conn)?;
        }
        self.rows.extend(row);
        self.bytes += size;
        Ok(written)
    }

    /// Writes the rows buffered so far. Returns how many.
    pub fn flush<Q: Queryable>(&mut self, conn: &mut Q) -> Result<usize, InsertError> {
        let n = self.rows.len() / self.columns;
        if n == 0 {
            return Ok(0);
        }
        let params = std::mem::take(&mut self.rows);
        let first = self.first_row;
        self.first_row += n;
        self.bytes = 0;
        let wrap = |e: mysql::Error| {
            let error = SinkError::from(e);
            let (row, column) = locate(&error);
            InsertError {
                error,
                row: row.map(|r| first + r.saturating_sub(1)),
                column,
            }
        };
        let stmt = if n == self.max_rows {
            match &self.full_stmt {
                Some(s) => s.clone(),
                None => {
                    let s = conn.prep(self.sql(n)).map_err(wrap)?;
                    self.full_stmt = Some(s.clone());
                    s
                }
            }
        } else {
            conn.prep(self.sql(n)).map_err(wrap)?
        };
        conn.exec_drop(&stmt, params).map_err(wrap)?;
        if n != self.max_rows {
            let _ = conn.close(stmt);
        }
        Ok(n)
    }

    fn sql(&self, n: usize) -> String {
        let mut s =
            String::with_capacity(self.head.len() + n * (self.row_sql.len() + 1) + self.tail.len());
        s.push_str(&self.head);
        for i in 0..n {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&self.row_sql);
        }
        s.push_str(&self.tail);
        s
    }
}

/// Extracts "at row N" and "column 'x'" from a MySQL error or warning message.
pub fn locate(e: &SinkError) -> (Option<usize>, Option<String>) {
    let SinkError::Server { message, .. } = e else {
        return (None, None);
    };
    let row = message
        .rsplit_once("at row ")
        .and_then(|(_, r)| r.trim().parse::<usize>().ok());
    let column = message
        .split_once("column '")
        .or_else(|| message.split_once("Column '"))
        .and_then(|(_, rest)| rest.split_once('\'').map(|(c, _)| c.to_string()));
    (row, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_errors_are_classified() {
        let s = |code| SinkError::Server {
            code,
            message: String::new(),
        };
        assert!(s(1213).transient());
        assert!(s(1205).transient());
        assert!(s(2006).transient());
        assert!(!s(1406).transient());
        assert!(!s(1048).transient());
    }

    #[test]
    fn error_location_is_parsed() {
        let e = SinkError::Server {
            code: 1406,
            message: "Data too long for column 'name' at row 17".into(),
        };
        assert_eq!(locate(&e), (Some(17), Some("name".into())));
        let e = SinkError::Server {
            code: 1048,
            message: "Column 'id' cannot be null".into(),
        };
        assert_eq!(locate(&e), (None, Some("id".into())));
    }

    #[test]
    fn long_lock_names_are_shortened_stably() {
        let long = "x".repeat(100);
        let other = format!("{}y", "x".repeat(99));
        assert!(lock_name(&long).len() <= 64);
        assert_ne!(
            lock_name(&long),
            lock_name(&other),
            "names sharing a prefix keep distinct locks"
        );
        assert_eq!(lock_name("short"), "short");
        // A multi-byte character across the cut does not split (or panic).
        let wide = format!("{}é{}", "x".repeat(39), "z".repeat(60));
        assert!(lock_name(&wide).len() <= 64);
        assert!(lock_name(&wide).starts_with(&"x".repeat(39)));
    }
}
