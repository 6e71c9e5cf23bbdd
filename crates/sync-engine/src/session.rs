//! MySQL sessions of the sync (both binaries), over the `mysql` crate: sessions in UTC with a
//! strict `sql_mode` and utf8mb4, advisory locks, the state tables, server facts, and MySQL
//! errors with their class under the fault policy (`domain::fault`).

use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder};

use domain::fault::{self, ErrorClass};
use domain::schema::MysqlColumn;

/// Statements every sync session starts with.
pub const SESSION_INIT: [&str; 3] = [
    "SET NAMES utf8mb4",
    "SET time_zone = '+00:00'",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'",
];

/// Errors of the MySQL sink.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    #[error("MySQL URL is invalid: {0}")]
    Url(String),
    #[error("MySQL error {code}: {message}")]
    Server { code: u16, message: String },
    #[error("MySQL connection failed: {0}")]
    Io(String),
    #[error("MySQL: {0}")]
    Other(String),
    /// A throttle pause outlasted its limit (`throttle::Throttle::wait`).
    #[error("MySQL is over a throttle threshold: {0}")]
    Throttled(String),
    /// A throttle pause reached the run's deadline (`throttle::Throttle::until`): the work
    /// was not done and waits for the next run.
    #[error("the run's deadline came while pausing to protect MySQL: {0}")]
    PastDeadline(String),
}

impl MysqlError {
    /// The error's class: server errors by number ([`fault::mysql_error`]), a broken
    /// connection is transient, anything else (a bad URL, a driver error) permanent.
    pub fn class(&self) -> ErrorClass {
        match self {
            MysqlError::Server { code, .. } => fault::mysql_error(*code),
            MysqlError::Io(_) | MysqlError::Throttled(_) | MysqlError::PastDeadline(_) => {
                ErrorClass::Transient
            }
            MysqlError::Url(_) | MysqlError::Other(_) => ErrorClass::Permanent,
        }
    }

    /// Shorthand for `class().is_transient()`.
    pub fn transient(&self) -> bool {
        self.class().is_transient()
    }
}

impl From<mysql::Error> for MysqlError {
    fn from(e: mysql::Error) -> Self {
        match e {
            mysql::Error::MySqlError(m) => MysqlError::Server {
                code: m.code,
                message: m.message,
            },
            mysql::Error::IoError(io) => MysqlError::Io(io.to_string()),
            mysql::Error::CodecError(c) => MysqlError::Io(c.to_string()),
            mysql::Error::DriverError(d) => {
                let s = d.to_string();
                if s.contains("connect") || s.contains("Connection") {
                    MysqlError::Io(s)
                } else {
                    MysqlError::Other(s)
                }
            }
            mysql::Error::UrlError(u) => MysqlError::Url(u.to_string()),
            other => MysqlError::Other(other.to_string()),
        }
    }
}

/// Opens a session (UTC, strict, utf8mb4). The URL is never logged.
pub fn connect(url: &str) -> Result<Conn, MysqlError> {
    let opts = Opts::from_url(url).map_err(|e| MysqlError::Url(e.to_string()))?;
    let opts = OptsBuilder::from_opts(opts)
        .init(SESSION_INIT.to_vec())
        .tcp_connect_timeout(Some(Duration::from_secs(5)))
        .stmt_cache_size(Some(64));
    Ok(Conn::new(opts)?)
}

/// Creates the sync's state tables when missing, from the migration's own SQL (one source
/// for that DDL: `migrations::sync_state_statements`), so the sync also runs in a database
/// where the API's migrations never ran.
pub fn ensure_state_tables(conn: &mut Conn) -> Result<(), MysqlError> {
    for stmt in migrations::sync_state_statements() {
        conn.query_drop(stmt)?;
    }
    Ok(())
}

/// One row of `sync_runs`: what a run of either sync did to one table and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord<'a> {
    pub run_id: &'a str,
    pub target_table: &'a str,
    /// `partition` or `stream`.
    pub engine: &'a str,
    /// `YYYY-MM-DD HH:MM:SS.ffffff` UTC; `None`: now.
    pub started_at: Option<String>,
    /// `ok` or `failed`.
    pub status: &'a str,
    pub rows_loaded: u64,
    pub rows_deleted: u64,
    pub error: Option<&'a str>,
    /// A later record of the same run and table adds its rows to the first's (partition-sync
    /// records each batch, and each exchanged partition, of a run) instead of replacing them.
    pub accumulate: bool,
}

/// Records a run in `sync_runs` (finished now); a second record of the same run and table
/// replaces the first, or adds its rows with `accumulate`. The one place that writes
/// `sync_runs`.
pub fn record_run<Q: Queryable>(conn: &mut Q, r: &RunRecord<'_>) -> Result<(), MysqlError> {
    let rows = if r.accumulate {
        "rows_loaded = rows_loaded + VALUES(rows_loaded), rows_deleted = rows_deleted + VALUES(rows_deleted)"
    } else {
        "rows_loaded = VALUES(rows_loaded), rows_deleted = VALUES(rows_deleted)"
    };
    conn.exec_drop(
        format!(
            "INSERT INTO sync_runs (run_id, target_table, engine, started_at, finished_at, status, rows_loaded, rows_deleted, error) \
             VALUES (?, ?, ?, COALESCE(?, UTC_TIMESTAMP(6)), UTC_TIMESTAMP(6), ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE finished_at = VALUES(finished_at), status = VALUES(status), \
             {rows}, error = VALUES(error)"
        ),
        (
            r.run_id,
            r.target_table,
            r.engine,
            r.started_at.as_deref(),
            r.status,
            r.rows_loaded,
            r.rows_deleted,
            r.error,
        ),
    )?;
    Ok(())
}

/// The latest run of `table` (by any engine when `engine` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRun {
    /// RFC 3339 UTC.
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub rows_loaded: i64,
    pub rows_deleted: i64,
}

/// Reads the latest `sync_runs` row of `table`.
pub fn last_run(
    conn: &mut Conn,
    table: &str,
    engine: Option<&str>,
) -> Result<Option<LastRun>, MysqlError> {
    let row: Option<(String, Option<String>, String, i64, i64)> = conn.exec_first(
        "SELECT DATE_FORMAT(started_at, '%Y-%m-%dT%H:%i:%sZ'), DATE_FORMAT(finished_at, '%Y-%m-%dT%H:%i:%sZ'), \
         status, rows_loaded, rows_deleted FROM sync_runs \
         WHERE target_table = ? AND (? IS NULL OR engine = ?) ORDER BY started_at DESC LIMIT 1",
        (table, engine, engine),
    )?;
    Ok(row.map(
        |(started_at, finished_at, status, rows_loaded, rows_deleted)| LastRun {
            started_at,
            finished_at,
            status,
            rows_loaded,
            rows_deleted,
        },
    ))
}

/// Columns of `table` in the current database, or `None` when it does not exist.
pub fn table_columns(conn: &mut Conn, table: &str) -> Result<Option<Vec<MysqlColumn>>, MysqlError> {
    type Row = (
        String,
        String,
        String,
        Option<String>,
        String,
        Option<String>,
    );
    let rows: Vec<Row> = conn.exec(
        "SELECT COLUMN_NAME, DATA_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, COLLATION_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (table,),
    )?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .map(
                |(name, data_type, nullable, default, extra, collation)| MysqlColumn {
                    name,
                    data_type,
                    nullable: nullable == "YES",
                    has_default: default.is_some()
                        || extra.to_ascii_lowercase().contains("auto_increment")
                        || extra.to_ascii_lowercase().contains("generated"),
                    collation,
                },
            )
            .collect(),
    ))
}

/// The server's exact (binary, NO PAD) utf8mb4 collation for the string columns the syncs
/// create (`domain::schema::EXACT_COLLATIONS`): `utf8mb4_nopad_bin` on MariaDB,
/// `utf8mb4_0900_bin` on MySQL 8.
pub fn exact_collation(conn: &mut Conn) -> Result<String, MysqlError> {
    let names = domain::schema::EXACT_COLLATIONS;
    let found: Vec<String> = conn.exec(
        "SELECT COLLATION_NAME FROM information_schema.COLLATIONS WHERE COLLATION_NAME IN (?, ?)",
        (names[0], names[1]),
    )?;
    names
        .iter()
        .find(|n| found.iter().any(|f| f == *n))
        .map(|n| n.to_string())
        .ok_or_else(|| {
            MysqlError::Other(
                "the server has no binary NO PAD utf8mb4 collation (MariaDB 10.2+ or MySQL 8.0.17+ needed)".into(),
            )
        })
}

/// Converts `columns` of `table` to `collation`, keeping each column's type and nullability
/// (`ALTER TABLE … MODIFY`, which rebuilds the table): the one-time upgrade of key columns a
/// sync created with a padding collation (docs/sync.md#type-map).
pub fn convert_collation(
    conn: &mut Conn,
    table: &str,
    columns: &[String],
    collation: &str,
) -> Result<(), MysqlError> {
    let mut modify = Vec::new();
    for c in columns {
        let found: Option<(String, String)> = conn.exec_first(
            "SELECT COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?",
            (table, c),
        )?;
        if let Some((column_type, nullable)) = found {
            let null = if nullable == "YES" {
                "NULL"
            } else {
                "NOT NULL"
            };
            modify.push(format!(
                "MODIFY {} {column_type} CHARACTER SET utf8mb4 COLLATE {collation} {null}",
                domain::ident::quote(c)
            ));
        }
    }
    if !modify.is_empty() {
        conn.query_drop(format!(
            "ALTER TABLE {} {}",
            domain::ident::quote(table),
            modify.join(", ")
        ))?;
    }
    Ok(())
}

/// The table's unique keys (PRIMARY and UNIQUE), each with its columns in order.
pub fn unique_keys(conn: &mut Conn, table: &str) -> Result<Vec<(String, Vec<String>)>, MysqlError> {
    // A functional key part (MySQL 8) has no COLUMN_NAME: such a key never matches a list of
    // columns, so it is kept with a placeholder.
    let rows: Vec<(String, Option<String>)> = conn.exec(
        "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
         ORDER BY INDEX_NAME, SEQ_IN_INDEX",
        (table,),
    )?;
    let mut keys: Vec<(String, Vec<String>)> = Vec::new();
    for (index, column) in rows {
        let column = column.unwrap_or_else(|| "(expression)".to_string());
        match keys.last_mut() {
            Some((name, cols)) if *name == index => cols.push(column),
            _ => keys.push((index, vec![column])),
        }
    }
    Ok(keys)
}

/// Takes a named advisory lock, waiting up to `timeout`. Returns false when another session
/// holds it. Names longer than MySQL's 64 characters are shortened with a hash.
pub fn get_lock(conn: &mut Conn, name: &str, timeout: Duration) -> Result<bool, MysqlError> {
    let got: Option<Option<i64>> = conn.exec_first(
        "SELECT GET_LOCK(?, ?)",
        (lock_name(name), timeout.as_secs()),
    )?;
    Ok(got.flatten() == Some(1))
}

/// Releases a lock taken with [`get_lock`].
pub fn release_lock(conn: &mut Conn, name: &str) -> Result<(), MysqlError> {
    conn.exec_drop("SELECT RELEASE_LOCK(?)", (lock_name(name),))?;
    Ok(())
}

fn lock_name(name: &str) -> String {
    if name.len() <= 64 {
        return name.to_string();
    }
    let h = domain::canon::fnv1a(name.as_bytes());
    // At most 40 bytes of the name, cut at a character boundary.
    let cut = (0..=40)
        .rev()
        .find(|i| name.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}:{h:016x}", &name[..cut])
}

/// The server's `max_allowed_packet` in bytes.
pub fn max_allowed_packet(conn: &mut Conn) -> Result<usize, MysqlError> {
    let v: Option<u64> = conn.query_first("SELECT @@max_allowed_packet")?;
    Ok(v.unwrap_or(4 << 20) as usize)
}

/// The database the connection uses.
pub fn current_database(conn: &mut Conn) -> Result<String, MysqlError> {
    let v: Option<Option<String>> = conn.query_first("SELECT DATABASE()")?;
    v.flatten()
        .ok_or_else(|| MysqlError::Other("the MySQL URL names no database".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_errors_are_classified_by_the_fault_policy() {
        let s = |code| MysqlError::Server {
            code,
            message: String::new(),
        };
        assert_eq!(s(1213).class(), ErrorClass::Transient);
        assert_eq!(s(1290).class(), ErrorClass::Transient);
        assert_eq!(s(1406).class(), ErrorClass::Permanent);
        assert_eq!(
            MysqlError::Io("reset".into()).class(),
            ErrorClass::Transient
        );
        assert_eq!(MysqlError::Url("x".into()).class(), ErrorClass::Permanent);
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
