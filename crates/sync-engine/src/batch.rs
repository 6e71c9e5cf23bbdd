//! Batched multi-row `INSERT`s (and upserts) with bound values, sized to the server's
//! `max_allowed_packet` and the placeholder limit: the sync's MySQL write path where
//! `LOAD DATA` is not used. A failed batch names the row and column MySQL blamed.

use mysql::prelude::Queryable;
use mysql::Value;

use crate::session::MysqlError;

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
    pub error: MysqlError,
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
        let cols: Vec<String> = columns.iter().map(|c| domain::ident::quote(c)).collect();
        let head = format!(
            "INSERT INTO {} ({}) VALUES ",
            domain::ident::quote(table),
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
            let error = MysqlError::from(e);
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
pub fn locate(e: &MysqlError) -> (Option<usize>, Option<String>) {
    let MysqlError::Server { message, .. } = e else {
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
    fn error_location_is_parsed() {
        let e = MysqlError::Server {
            code: 1406,
            message: "Data too long for column 'name' at row 17".into(),
        };
        assert_eq!(locate(&e), (Some(17), Some("name".into())));
        let e = MysqlError::Server {
            code: 1048,
            message: "Column 'id' cannot be null".into(),
        };
        assert_eq!(locate(&e), (None, Some("id".into())));
    }
}
