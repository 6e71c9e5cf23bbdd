//! Applying a cycle's rows to MySQL in batched transactions (see `docs/sync.md#apply`): rows
//! streamed from the warehouse, or already fetched, are upserted `batch_rows` per transaction,
//! then stale rows are deleted `batch_rows` per transaction. Shutdown is honoured between
//! batches (the current one commits).

use domain::ident::Ident;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use mysql::Conn;

use crate::cycle::{CycleReport, Env};
use crate::plan::{self, StaleRow};
use crate::source::{pk_positions, SourceTable};
use crate::{blocking, target, SyncError};

/// Upserts rows in transactions of `batch_rows`; after each full batch, stops on shutdown.
struct Upserter<'a> {
    table: &'a Ident,
    columns: Vec<String>,
    max_packet: usize,
    batch: usize,
    shutdown: &'a AtomicBool,
    throttle: &'a sync_engine::throttle::Throttle,
    pending: Vec<Vec<mysql::Value>>,
    /// Rows written by the batches committed so far.
    upserted: u64,
}

impl<'a> Upserter<'a> {
    fn new(
        env: &'a Env<'_>,
        src: &SourceTable,
        table: &'a Ident,
        max_packet: usize,
    ) -> Upserter<'a> {
        let batch = env.settings.batch_rows.max(1);
        Upserter {
            table,
            columns: target::write_columns(&src.columns),
            max_packet,
            batch,
            shutdown: env.shutdown,
            throttle: env.throttle,
            pending: Vec::with_capacity(batch.min(10_000)),
            upserted: 0,
        }
    }

    fn push(&mut self, conn: &mut Conn, row: Vec<mysql::Value>) -> Result<(), SyncError> {
        self.pending.push(row);
        if self.pending.len() >= self.batch {
            self.flush(conn)?;
            if self.shutdown.load(Ordering::SeqCst) {
                return Err(SyncError::Shutdown);
            }
        }
        Ok(())
    }

    fn flush(&mut self, conn: &mut Conn) -> Result<(), SyncError> {
        let rows = std::mem::take(&mut self.pending);
        if rows.is_empty() {
            return Ok(());
        }
        blocking(|| self.throttle.wait(conn))?;
        self.upserted += blocking(|| {
            target::upsert_batch(conn, self.table, &self.columns, self.max_packet, rows)
        })? as u64;
        Ok(())
    }

    /// Writes what is left; returns the rows written since the last read of `upserted`.
    fn finish(mut self, conn: &mut Conn) -> Result<u64, SyncError> {
        let before = self.upserted;
        self.flush(conn)?;
        Ok(self.upserted - before)
    }
}

/// Streams the rows of `sql` into upsert transactions of `batch_rows`; with `only`, rows whose
/// hash is not in it are skipped. Stops after the current batch on shutdown.
pub(crate) async fn fetch_and_apply(
    env: &Env<'_>,
    src: &SourceTable,
    conn: &mut Conn,
    max_packet: usize,
    sql: &str,
    only: Option<&HashSet<i64>>,
    report: &mut CycleReport,
) -> Result<(), SyncError> {
    let pk_idx = pk_positions(src);
    let table = src.target.clone();
    let mut up = Upserter::new(env, src, &table, max_packet);
    let mut fetched = 0u64;
    let hash_at = src.columns.len() + 1;
    report.fetch.queries += 1;
    let result = env
        .warehouse
        .query_pages(sql, |page| {
            fetched += page.rows.len() as u64;
            for cells in page.rows {
                let wanted = |hash: i64| only.is_none_or(|s| s.contains(&hash));
                let raw_hash = cells
                    .get(hash_at)
                    .and_then(sync_engine::warehouse::cell_i64);
                match target::convert_row(up.table, &src.columns, &pk_idx, cells) {
                    Ok((values, hash)) if wanted(hash) => up.push(conn, values)?,
                    Ok(_) => {}
                    // A value MySQL can't take fails its row, not the cycle (the row keeps
                    // its old version in MySQL; docs/sync.md#apply).
                    Err(SyncError::BadRow(m)) if raw_hash.is_none_or(wanted) => {
                        report.note_bad_row(m)
                    }
                    Err(SyncError::BadRow(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok::<(), SyncError>(())
        })
        .await;
    report.fetch.full_rows += fetched;
    report.upserted += up.upserted;
    report.fetch.bytes_processed += result?;
    report.upserted += up.finish(conn)?;
    Ok(())
}

/// Upserts every row of `buckets`, 4,096 buckets per query.
pub(crate) async fn upsert_buckets(
    env: &Env<'_>,
    src: &SourceTable,
    conn: &mut Conn,
    max_packet: usize,
    buckets: &[u16],
    report: &mut CycleReport,
) -> Result<(), SyncError> {
    for chunk in buckets.chunks(4096) {
        let sql = src.rows_sql(chunk, None);
        fetch_and_apply(env, src, conn, max_packet, &sql, None, report).await?;
    }
    Ok(())
}

/// Upserts rows already fetched (MySQL values, bucket and hash last).
pub(crate) fn upsert_rows(
    env: &Env<'_>,
    src: &SourceTable,
    conn: &mut Conn,
    table: &Ident,
    max_packet: usize,
    rows: Vec<Vec<mysql::Value>>,
    report: &mut CycleReport,
) -> Result<(), SyncError> {
    let mut up = Upserter::new(env, src, table, max_packet);
    let pushed = rows.into_iter().try_for_each(|row| up.push(conn, row));
    report.upserted += up.upserted;
    pushed?;
    report.upserted += up.finish(conn)?;
    Ok(())
}

/// Upserts the rows with the hashes in `fetch` from the `mixed` buckets: fetched by that list
/// while it is short enough for the SQL (see [`plan::fetch_by_hash`]), else every row of those
/// buckets read and the others skipped.
pub(crate) async fn upsert_planned(
    env: &Env<'_>,
    src: &SourceTable,
    conn: &mut Conn,
    max_packet: usize,
    mixed: &[u16],
    fetch: &[i64],
    report: &mut CycleReport,
) -> Result<(), SyncError> {
    if fetch.is_empty() {
        return Ok(());
    }
    if plan::fetch_by_hash(fetch.len()) {
        let sql = src.rows_sql(mixed, Some(fetch));
        fetch_and_apply(env, src, conn, max_packet, &sql, None, report).await?;
    } else {
        let wanted: HashSet<i64> = fetch.iter().copied().collect();
        for chunk in mixed.chunks(4096) {
            let sql = src.rows_sql(chunk, None);
            fetch_and_apply(env, src, conn, max_packet, &sql, Some(&wanted), report).await?;
        }
    }
    Ok(())
}

/// Deletes `deletes` in transactions of `batch_rows`, each row only while it still has its
/// planned hash (`raw_keys`: the key values MySQL returned). Stops after the current batch on
/// shutdown.
pub(crate) fn delete_rows(
    env: &Env<'_>,
    src: &SourceTable,
    conn: &mut Conn,
    table: &Ident,
    deletes: &[StaleRow],
    raw_keys: &HashMap<String, Vec<mysql::Value>>,
    report: &mut CycleReport,
) -> Result<(), SyncError> {
    for batch in deletes.chunks(env.settings.batch_rows.max(1)) {
        blocking(|| env.throttle.wait(conn))?;
        report.deleted +=
            blocking(|| target::delete_batch(conn, table, &src.primary_key, batch, raw_keys))?
                as u64;
        if env.shutdown.load(Ordering::SeqCst) {
            return Err(SyncError::Shutdown);
        }
    }
    Ok(())
}
