//! One table's cycle (DESIGN 5.3): (0) skip at no cost when nothing changed and the metadata
//! can be trusted; (1) bucket digests on both sides; (2) the changed rows of the differing
//! buckets, from an IBLT of row hashes ([`crate::iblt`]) or, when that can't be used, from
//! `(key, hash)` of those buckets diffed; (3) full rows fetched only for new and changed keys;
//! (4) upserts then deletes in batched transactions. Also the cursor-mode cycle and `verify`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use domain::config::TableSpec;
use domain::ident::quote as quote_ident;
use domain::schema::Column;
use mysql::prelude::Queryable;
use mysql::Conn;
use sync_engine::warehouse::Warehouse;

use crate::plan::{self, BucketDigest};
use crate::source::{self, FetchStats, SourceMeta, SourceTable};
use crate::{blocking, canon, iblt, target, SyncError};

/// Tunables of every table's cycle.
#[derive(Debug, Clone)]
pub struct Settings {
    pub buckets: u32,
    pub max_delete_fraction: f64,
    pub batch_rows: usize,
    /// Let a cycle delete any share of a table (the guard is off).
    pub allow_mass_delete: bool,
    /// Trust `last_modified_time` for the no-cost skip (false with `change_detection =
    /// "fingerprint"`, e.g. against the emulator).
    pub trust_metadata: bool,
    /// In cursor mode, run the full bucket diff every N cycles (and on the first).
    pub full_diff_every: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            buckets: 1024,
            max_delete_fraction: 0.1,
            batch_rows: 5000,
            allow_mass_delete: false,
            trust_metadata: false,
            full_diff_every: 10,
        }
    }
}

/// What the cycle works with.
pub struct Env<'a> {
    pub warehouse: &'a Warehouse,
    pub dataset: &'a str,
    pub settings: &'a Settings,
    pub shutdown: &'a AtomicBool,
}

/// What a table remembers between cycles (in memory only: a restart costs one full digest).
#[derive(Debug, Clone)]
pub struct TableState {
    pub spec: TableSpec,
    source: Option<SourceTable>,
    /// Warehouse metadata and MySQL digest after the last converged cycle.
    last_meta: Option<SourceMeta>,
    last_digest: Option<BucketDigest>,
    pub cycles: u64,
    /// Per-table override of [`Settings::trust_metadata`].
    pub trust_metadata: Option<bool>,
    /// Rewrite every row (bucket and hash included) at the next cycle: `resync`, a changed
    /// bucket count, or a table stream-sync did not fill.
    pub rewrite: bool,
    /// The server's `max_allowed_packet`, read once per MySQL session (see [`Self::new_session`]).
    max_packet: Option<usize>,
}

impl TableState {
    pub fn new(spec: TableSpec) -> TableState {
        TableState {
            spec,
            source: None,
            last_meta: None,
            last_digest: None,
            cycles: 0,
            trust_metadata: None,
            rewrite: false,
            max_packet: None,
        }
    }

    /// Forgets what was read from the previous MySQL session.
    pub fn new_session(&mut self) {
        self.max_packet = None;
    }

    /// `max_allowed_packet` of the session's server, read on first use.
    fn max_packet(&mut self, conn: &mut Conn) -> Result<usize, SyncError> {
        if let Some(n) = self.max_packet {
            return Ok(n);
        }
        let n = blocking(|| sync_engine::session::max_allowed_packet(conn))?;
        self.max_packet = Some(n);
        Ok(n)
    }
}

/// What one cycle did.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    pub table: String,
    /// Skipped at no cost (metadata and MySQL digest unchanged).
    pub skipped: bool,
    /// A cursor-mode cycle (no bucket diff).
    pub cursor: bool,
    pub fetch: FetchStats,
    pub buckets_differing: u64,
    pub inserts: u64,
    pub updates: u64,
    /// Rows written by upserts (inserts + updates, or cursor rows).
    pub upserted: u64,
    pub deleted: u64,
    /// Rows in the warehouse and in MySQL (before the cycle), from the digests.
    pub warehouse_rows: u64,
    pub mysql_rows: u64,
    pub duration: Duration,
}

impl CycleReport {
    /// Rows written to MySQL.
    pub fn rows_written(&self) -> u64 {
        self.upserted + self.deleted
    }
}

/// Makes sure the source is described and the MySQL target is ready; returns the source
/// metadata for the skip check.
async fn prepare(
    env: &Env<'_>,
    state: &mut TableState,
    conn: &mut Conn,
    stats: &mut FetchStats,
) -> Result<SourceMeta, SyncError> {
    let spec = &state.spec;
    let (columns, meta) = source::describe(
        env.warehouse,
        env.dataset,
        &spec.source,
        &spec.varchar,
        stats,
    )
    .await?;
    let same = state
        .source
        .as_ref()
        .is_some_and(|s| s.columns == columns && s.buckets == env.settings.buckets);
    if !same {
        let src = SourceTable::new(
            &env.warehouse.project,
            env.dataset,
            spec,
            columns,
            env.settings.buckets,
        )
        .map_err(SyncError::Permanent)?;
        blocking(|| target::ensure_table(conn, spec, &src.columns))?;
        // Stored buckets are only right for the bucket count they were computed with.
        let buckets = env.settings.buckets;
        let (marker, empty) = blocking(|| {
            Ok::<_, SyncError>((
                target::bucket_marker(conn, &spec.target)?,
                target::is_empty(conn, &spec.target)?,
            ))
        })?;
        match marker {
            Some(b) if b == buckets => {}
            _ if empty => blocking(|| target::set_bucket_marker(conn, &spec.target, buckets))?,
            Some(b) => {
                tracing::warn!(table.name = %spec.target, from = b, to = buckets, "the bucket count changed: rewriting every row's bucket and hash");
                state.rewrite = true;
            }
            None => {
                tracing::warn!(table.name = %spec.target, "rows stream-sync has not written (no bucket marker): rewriting every row's bucket and hash once");
                state.rewrite = true;
            }
        }
        state.source = Some(src);
        state.last_meta = None;
        state.last_digest = None;
    }
    Ok(meta)
}

/// Runs one cycle of one table. `report` holds what was done so far even when it fails.
pub async fn run_cycle(
    env: &Env<'_>,
    state: &mut TableState,
    conn: &mut Conn,
    report: &mut CycleReport,
) -> Result<(), SyncError> {
    let started = Instant::now();
    report.table = state.spec.target.clone();
    let result = cycle_inner(env, state, conn, report).await;
    report.duration = started.elapsed();
    if result.is_ok() {
        state.cycles += 1;
    }
    result
}

async fn cycle_inner(
    env: &Env<'_>,
    state: &mut TableState,
    conn: &mut Conn,
    report: &mut CycleReport,
) -> Result<(), SyncError> {
    let meta = prepare(env, state, conn, &mut report.fetch).await?;
    let Some(src) = state.source.clone() else {
        return Err(SyncError::Permanent("source table not described".into()));
    };
    let target = state.spec.target.clone();

    // A full rewrite first, when asked for or needed: every warehouse row upserted with its
    // bucket and hash; what is left over (keys the warehouse no longer has) goes below.
    let max_packet = state.max_packet(conn)?;
    if state.rewrite {
        fetch_and_apply(
            env,
            &src,
            conn,
            max_packet,
            &src.all_rows_sql(),
            None,
            report,
        )
        .await?;
        let buckets = env.settings.buckets;
        blocking(|| target::set_bucket_marker(conn, &target, buckets))?;
        state.rewrite = false;
        state.last_meta = None;
        tracing::info!(table.name = %target, rows = report.upserted, "rewrote every row");
    }

    // (0) The skip at no cost: the warehouse says nothing changed and MySQL's rows are the
    // ones we left there.
    let trust = state.trust_metadata.unwrap_or(env.settings.trust_metadata);
    if trust && state.last_meta.as_ref() == Some(&meta) {
        let digest = blocking(|| target::table_digest(conn, &target))?;
        if state.last_digest == Some(digest) {
            report.skipped = true;
            report.mysql_rows = digest.count;
            report.warehouse_rows = digest.count;
            return Ok(());
        }
    }

    if let Some(cursor) = state.spec.cursor_column.clone() {
        let every = env.settings.full_diff_every.max(1);
        if state.cycles % every != 0 {
            report.cursor = true;
            state.last_meta = None;
            return cursor_cycle(env, &src, &cursor, conn, max_packet, report).await;
        }
    }

    // (1) Bucket digests on both sides.
    let (wh, my) = overlapped(
        source::digests(env.warehouse, &src, &mut report.fetch),
        || target::digests(conn, &target),
    )
    .await;
    let (wh, my) = (wh?, my?);
    report.warehouse_rows = plan::total_rows(&wh);
    report.mysql_rows = plan::total_rows(&my);
    if report.warehouse_rows == 0 {
        plan::guard(
            report.mysql_rows,
            report.mysql_rows,
            0,
            env.settings.max_delete_fraction,
            env.settings.allow_mass_delete,
        )?;
    }
    let differing = plan::differing_buckets(&wh, &my);
    report.buckets_differing = differing.len() as u64;
    if !differing.is_empty() {
        // (2) Which rows differ: from an IBLT of the row hashes where the difference is small
        // (reads about twice as many cells as rows changed), else from the keys and hashes of
        // the differing buckets (only where MySQL has rows too: a bucket empty in MySQL is all
        // inserts).
        let split = plan::split_buckets(&differing, &wh, &my);
        let found = iblt_plan(env, &src, conn, &split, (&wh, &my), report).await?;
        let (mut row_plan, prefetched, mut raw_keys) = match found {
            Some(found) => (found.plan, Some(found.rows), found.raw_keys),
            None => {
                let my_mixed =
                    blocking(|| target::keys(conn, &target, &src.primary_key, &split.mixed))?;
                let wh_keys =
                    source::keys(env.warehouse, &src, &split.mixed, &mut report.fetch).await?;
                (
                    plan::plan_rows(&wh_keys, &my_mixed.keys)?,
                    None,
                    my_mixed.raw,
                )
            }
        };
        // Every MySQL row of a bucket the warehouse no longer has goes.
        let my_gone = blocking(|| target::keys(conn, &target, &src.primary_key, &split.gone))?;
        row_plan
            .deletes
            .extend(my_gone.keys.iter().map(|k| plan::StaleRow {
                key: k.key.clone(),
                hash: k.hash,
            }));
        raw_keys.extend(my_gone.raw);
        plan::guard(
            row_plan.deletes.len() as u64,
            report.mysql_rows,
            report.warehouse_rows,
            env.settings.max_delete_fraction,
            env.settings.allow_mass_delete,
        )?;
        let fresh_rows: u64 = split
            .fresh
            .iter()
            .filter_map(|b| wh.get(b))
            .map(|d| d.count)
            .sum();
        report.inserts = row_plan.inserts as u64 + fresh_rows;
        report.updates = row_plan.updates as u64;

        // (3) + (4) Full rows of new and changed keys only, upserted batch by batch, then
        // the deletes (after the upserts, so a delete never removes a row just rewritten).
        for chunk in split.fresh.chunks(4096) {
            let sql = src.rows_sql(chunk, None);
            fetch_and_apply(env, &src, conn, max_packet, &sql, None, report).await?;
        }
        if let Some(rows) = prefetched {
            let mut up = Upserter::new(env, &src, &target, max_packet);
            let pushed = rows.into_iter().try_for_each(|row| up.push(conn, row));
            report.upserted += up.upserted;
            pushed?;
            report.upserted += up.finish(conn)?;
        } else if !row_plan.fetch.is_empty() {
            if plan::fetch_by_hash(row_plan.fetch.len()) {
                let sql = src.rows_sql(&split.mixed, Some(&row_plan.fetch));
                fetch_and_apply(env, &src, conn, max_packet, &sql, None, report).await?;
            } else {
                let wanted: HashSet<i64> = row_plan.fetch.iter().copied().collect();
                for chunk in split.mixed.chunks(4096) {
                    let sql = src.rows_sql(chunk, None);
                    fetch_and_apply(env, &src, conn, max_packet, &sql, Some(&wanted), report)
                        .await?;
                }
            }
        }
        for batch in row_plan.deletes.chunks(env.settings.batch_rows.max(1)) {
            report.deleted += blocking(|| {
                target::delete_batch(conn, &target, &src.primary_key, batch, &raw_keys)
            })? as u64;
            if env.shutdown.load(Ordering::SeqCst) {
                return Err(SyncError::Shutdown);
            }
        }
    }
    state.last_meta = Some(meta);
    state.last_digest = Some(plan::table_digest(&wh));
    Ok(())
}

/// What [`iblt_plan`] found: the plan, the rows to upsert (MySQL values, bucket and hash
/// last) and the MySQL key values of the rows to delete.
struct IbltFound {
    plan: plan::RowPlan,
    rows: Vec<Vec<mysql::Value>>,
    raw_keys: HashMap<String, Vec<mysql::Value>>,
}

/// Plans the mixed buckets from IBLTs of the row hashes (see [`crate::iblt`]): the warehouse's
/// computed in SQL, MySQL's here from its stored hashes (an index-only read). The rows only
/// the warehouse has are fetched by hash (they are few) and returned for upserting; MySQL
/// rows whose hash is gone and whose key was not rewritten are deletes. `None` (and the
/// caller reads the keys instead) when the difference looks too large for an IBLT to pay
/// off, when it can't be decoded, or when anything does not add up (a duplicate key in the
/// warehouse, a row that changed meanwhile): the key scan handles and reports those.
async fn iblt_plan(
    env: &Env<'_>,
    src: &SourceTable,
    conn: &mut Conn,
    split: &plan::BucketSplit,
    (wh, my): (&plan::Digests, &plan::Digests),
    report: &mut CycleReport,
) -> Result<Option<IbltFound>, SyncError> {
    let table = report.table.clone();
    let counts: Vec<(u64, u64)> = split
        .mixed
        .iter()
        .map(|b| {
            (
                wh.get(b).map_or(0, |d| d.count),
                my.get(b).map_or(0, |d| d.count),
            )
        })
        .collect();
    let mut m = iblt::per_table_for(iblt::expected_difference(counts.iter().copied()));
    let wh_rows: u64 = counts.iter().map(|(w, _)| *w).sum();
    let my_rows: u64 = counts.iter().map(|(_, m)| *m).sum();
    // An IBLT pays off while its cells are well below the rows a key scan would read.
    let worth = |m: u32| u64::from(m) * iblt::K as u64 * 4 <= wh_rows;
    if split.mixed.is_empty() || !worth(m) {
        return Ok(None);
    }
    // Restricted to the differing buckets where that leaves out most rows. Otherwise over the
    // whole table: filtering by bucket costs the warehouse a second fingerprint per row, and
    // rows outside the differing buckets are the same on both sides, so they cancel out of the
    // difference anyway (unless a bucket is empty on one side: those are handled apart).
    let whole =
        wh_rows * 2 >= plan::total_rows(wh) && split.fresh.is_empty() && split.gone.is_empty();
    let only = (!whole).then_some(split.mixed.as_slice());
    let (first, hashes) = overlapped(
        source::iblt(env.warehouse, src, only, m, &mut report.fetch),
        || target::hashes(conn, &table, only),
    )
    .await;
    let hashes = hashes?;
    let mut answer = first;
    // The counts only bound the difference from below (several changes in one bucket look
    // like one): a table that can't be decoded is tried once more at 4x the size, while that
    // still reads far fewer rows than the key scan.
    let mut attempts = 0;
    let diff = loop {
        attempts += 1;
        let warehouse = match answer {
            Ok(Some(t)) => t,
            Ok(None) => {
                tracing::warn!(table = %table, "the warehouse's IBLT answer is malformed; reading the keys of the differing buckets");
                return Ok(None);
            }
            // A warehouse that does not take the IBLT's SQL (GROUPING SETS, bit arithmetic)
            // must not stop the table: the key scan needs only plain SQL.
            Err(SyncError::Warehouse(e)) if !e.transient() => {
                tracing::warn!(table = %table, error = %e, "the warehouse refused the IBLT query; reading the keys of the differing buckets");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut mysql = iblt::Iblt::new(m);
        for h in &hashes {
            mysql.insert(*h);
        }
        match warehouse.difference(&mysql) {
            Ok(d) => break d,
            Err(e)
                if attempts < 2
                    && m.saturating_mul(4) <= iblt::MAX_PER_TABLE
                    && worth(m.saturating_mul(4)) =>
            {
                tracing::info!(table = %table, error = %e, "IBLT not decoded; once more at 4x the size");
                m = m.saturating_mul(4);
                answer = source::iblt(env.warehouse, src, only, m, &mut report.fetch).await;
            }
            Err(e) => {
                tracing::info!(table = %table, error = %e, "IBLT not decoded; reading the keys of the differing buckets");
                return Ok(None);
            }
        }
    };
    if my_rows + diff.warehouse_only.len() as u64 != wh_rows + diff.mysql_only.len() as u64
        || !plan::fetch_by_hash(diff.warehouse_only.len())
        || !plan::fetch_by_hash(diff.mysql_only.len())
    {
        return Ok(None);
    }
    // The new and changed rows, by hash, while MySQL looks up the keys of the stale ones.
    let pk_idx = pk_positions(src);
    let (rows, stale) = overlapped(
        rows_by_hash(
            env,
            src,
            &table,
            &pk_idx,
            &diff.warehouse_only,
            &mut report.fetch,
        ),
        || {
            target::keys_with_hashes(
                conn,
                &table,
                &src.primary_key,
                &split.mixed,
                &diff.mysql_only,
            )
        },
    )
    .await;
    let (rows, stale) = (rows?, stale?);
    if stale.keys.len() != diff.mysql_only.len() {
        return Ok(None);
    }
    if rows.len() != diff.warehouse_only.len() {
        return Ok(None);
    }

    let stale_keys: HashSet<&str> = stale.keys.iter().map(|k| k.key.as_str()).collect();
    let mut found = plan::RowPlan {
        fetch: diff.warehouse_only.clone(),
        ..plan::RowPlan::default()
    };
    let mut rewritten: HashSet<&str> = HashSet::with_capacity(rows.len());
    for (key, _) in &rows {
        if !rewritten.insert(key.as_str()) {
            return Ok(None); // the warehouse has this key twice
        }
        if stale_keys.contains(key.as_str()) {
            found.updates += 1;
        } else {
            found.inserts += 1;
        }
    }
    // A key planned as new must be new: one MySQL still holds with a current hash means the
    // warehouse has that key twice.
    let bound: Vec<Vec<mysql::Value>> = rows
        .iter()
        .map(|(_, v)| pk_idx.iter().map(|i| v[*i].clone()).collect())
        .collect();
    if blocking(|| target::count_existing(conn, &table, &src.primary_key, &bound))?
        != found.updates as u64
    {
        return Ok(None);
    }
    for k in &stale.keys {
        if !rewritten.contains(k.key.as_str()) {
            found.deletes.push(plan::StaleRow {
                key: k.key.clone(),
                hash: k.hash,
            });
        }
    }
    Ok(Some(IbltFound {
        plan: found,
        rows: rows.into_iter().map(|(_, v)| v).collect(),
        raw_keys: stale.raw,
    }))
}

/// Runs the MySQL work `mysql` while the warehouse request `warehouse` is in flight: the
/// request is sent first (one poll), the warehouse computes while MySQL reads, then its
/// answer is awaited.
async fn overlapped<T, R>(warehouse: impl Future<Output = T>, mysql: impl FnOnce() -> R) -> (T, R) {
    let mut warehouse = std::pin::pin!(warehouse);
    let early = std::future::poll_fn(|cx| Poll::Ready(warehouse.as_mut().poll(cx))).await;
    let mine = blocking(mysql);
    let theirs = match early {
        Poll::Ready(t) => t,
        Poll::Pending => warehouse.await,
    };
    (theirs, mine)
}

/// Fetches the rows with the given hashes: each as its canonical key and its MySQL values.
async fn rows_by_hash(
    env: &Env<'_>,
    src: &SourceTable,
    table: &str,
    pk_idx: &[usize],
    hashes: &[i64],
    stats: &mut FetchStats,
) -> Result<Vec<(String, Vec<mysql::Value>)>, SyncError> {
    let mut rows = Vec::with_capacity(hashes.len());
    if hashes.is_empty() {
        return Ok(rows);
    }
    stats.queries += 1;
    let bytes = env
        .warehouse
        .query_pages(&src.rows_by_hash_sql(hashes), |page| {
            stats.full_rows += page.rows.len() as u64;
            for cells in page.rows {
                let key = canonical_key(src, pk_idx, &cells)?;
                let (values, _) = target::convert_row(table, &src.columns, pk_idx, cells)?;
                rows.push((key, values));
            }
            Ok::<(), SyncError>(())
        })
        .await?;
    stats.bytes_processed += bytes;
    Ok(rows)
}

/// Positions of the primary key columns among the source columns.
fn pk_positions(src: &SourceTable) -> Vec<usize> {
    src.primary_key
        .iter()
        .filter_map(|k| src.columns.iter().position(|c| c.name == k.name))
        .collect()
}

/// The canonical key of an exported warehouse row, as `target::keys` computes MySQL's.
fn canonical_key(
    src: &SourceTable,
    pk_idx: &[usize],
    cells: &[Option<serde_json::Value>],
) -> Result<String, SyncError> {
    let mut parts = Vec::with_capacity(pk_idx.len());
    for (c, i) in src.primary_key.iter().zip(pk_idx) {
        let v = cells
            .get(*i)
            .and_then(Option::as_ref)
            .unwrap_or(&serde_json::Value::Null);
        let sv = domain::schema::convert(c, v)
            .map_err(|e| SyncError::BadRow(format!("key column `{}`: {e}", c.name)))?;
        parts.push(canon::of_sql(c, &sv));
    }
    Ok(canon::key(parts))
}

/// Upserts rows in transactions of `batch_rows`; after each full batch, stops on shutdown.
struct Upserter<'a> {
    table: &'a str,
    columns: Vec<String>,
    max_packet: usize,
    batch: usize,
    shutdown: &'a AtomicBool,
    pending: Vec<Vec<mysql::Value>>,
    /// Rows written by the batches committed so far.
    upserted: u64,
}

impl<'a> Upserter<'a> {
    fn new(env: &'a Env<'_>, src: &SourceTable, table: &'a str, max_packet: usize) -> Upserter<'a> {
        let batch = env.settings.batch_rows.max(1);
        Upserter {
            table,
            columns: target::write_columns(&src.columns),
            max_packet,
            batch,
            shutdown: env.shutdown,
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

/// Cursor mode: rows past MySQL's largest cursor value, upserted.
async fn cursor_cycle(
    env: &Env<'_>,
    src: &SourceTable,
    cursor: &str,
    conn: &mut Conn,
    max_packet: usize,
    report: &mut CycleReport,
) -> Result<(), SyncError> {
    let Some(col) = src.columns.iter().find(|c| c.name == cursor).cloned() else {
        return Err(SyncError::Permanent(format!(
            "cursor_column `{cursor}` is not in the warehouse table"
        )));
    };
    let target = report.table.clone();
    let watermark = blocking(|| target::cursor_watermark(conn, &target, &col))?;
    let sql = src.cursor_sql(cursor, watermark.as_deref());
    fetch_and_apply(env, src, conn, max_packet, &sql, None, report).await
}

/// Streams the rows of `sql` into upsert transactions of `batch_rows`; with `only`, rows whose
/// hash is not in it are skipped. Stops after the current batch on shutdown.
async fn fetch_and_apply(
    env: &Env<'_>,
    src: &SourceTable,
    conn: &mut Conn,
    max_packet: usize,
    sql: &str,
    only: Option<&HashSet<i64>>,
    report: &mut CycleReport,
) -> Result<(), SyncError> {
    let pk_idx = pk_positions(src);
    let table = report.table.clone();
    let mut up = Upserter::new(env, src, &table, max_packet);
    let mut fetched = 0u64;
    report.fetch.queries += 1;
    let result = env
        .warehouse
        .query_pages(sql, |page| {
            fetched += page.rows.len() as u64;
            for cells in page.rows {
                let (values, hash) = target::convert_row(up.table, &src.columns, &pk_idx, cells)?;
                if only.is_none_or(|s| s.contains(&hash)) {
                    up.push(conn, values)?;
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

/// One difference `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub table: String,
    /// The primary key, parts joined by `, ` (empty for table-level problems).
    pub key: String,
    pub problem: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.table, self.problem)
        } else {
            write!(f, "{} key ({}): {}", self.table, self.key, self.problem)
        }
    }
}

/// Compares every row's values (not only the stored hashes, which a change made behind the
/// sync's back leaves alone), a group of buckets at a time. Lists at most `limit` mismatches.
pub async fn verify(
    env: &Env<'_>,
    spec: &TableSpec,
    conn: &mut Conn,
    limit: usize,
) -> Result<Vec<Mismatch>, SyncError> {
    let mut stats = FetchStats::default();
    let (columns, _) = source::describe(
        env.warehouse,
        env.dataset,
        &spec.source,
        &spec.varchar,
        &mut stats,
    )
    .await?;
    let src = SourceTable::new(
        &env.warehouse.project,
        env.dataset,
        spec,
        columns,
        env.settings.buckets,
    )
    .map_err(SyncError::Permanent)?;
    let mut out = Vec::new();
    let mismatch = |key: String, problem: String| Mismatch {
        table: spec.target.clone(),
        key,
        problem,
    };
    let have = blocking(|| sync_engine::session::table_columns(conn, &spec.target))?;
    let Some(have) = have else {
        return Ok(vec![mismatch(String::new(), "missing in MySQL".into())]);
    };
    let drift = domain::schema::schema_drift(&spec.target, &src.columns, &have);
    if !drift.is_empty() || !have.iter().any(|c| c.name == "_sync_bucket") {
        return Ok(vec![mismatch(
            String::new(),
            format!("schema mismatch: {}", drift.join("; ")),
        )]);
    }
    let wh_digests = source::digests(env.warehouse, &src, &mut stats).await?;
    let my_digests = blocking(|| target::digests(conn, &spec.target))?;
    // Groups of buckets of roughly 20,000 rows each.
    let mut groups: Vec<Vec<u16>> = vec![Vec::new()];
    let mut in_group = 0u64;
    let all: std::collections::BTreeSet<u16> = wh_digests
        .keys()
        .chain(my_digests.keys())
        .copied()
        .collect();
    for b in all {
        let n = wh_digests
            .get(&b)
            .map(|d| d.count)
            .unwrap_or(0)
            .max(my_digests.get(&b).map(|d| d.count).unwrap_or(0));
        if in_group > 0 && in_group + n > 20_000 {
            groups.push(Vec::new());
            in_group = 0;
        }
        in_group += n;
        if let Some(g) = groups.last_mut() {
            g.push(b);
        }
    }
    let pk_idx: Vec<usize> = src
        .primary_key
        .iter()
        .filter_map(|k| src.columns.iter().position(|c| c.name == k.name))
        .collect();
    for group in groups.into_iter().filter(|g| !g.is_empty()) {
        let page = env.warehouse.query_all(&src.verify_sql(&group)).await?;
        let mut wh_rows: HashMap<String, (Vec<String>, i64)> = HashMap::new();
        for cells in page.rows {
            let (values, hash) = target::convert_row(&spec.target, &src.columns, &pk_idx, cells)?;
            let canon_vals: Vec<String> = src
                .columns
                .iter()
                .zip(&values)
                .map(|(c, v)| sync_engine::values::canonical(c, v))
                .collect();
            let key = canon::key(pk_idx.iter().map(|i| canon_vals[*i].clone()));
            wh_rows.insert(key, (canon_vals, hash));
        }
        let my_rows = blocking(|| mysql_rows(conn, &spec.target, &src.columns, &group))?;
        let mut seen = HashSet::new();
        for (vals, hash) in my_rows {
            let key = canon::key(pk_idx.iter().map(|i| vals[*i].clone()));
            match wh_rows.get(&key) {
                None => out.push(mismatch(
                    canon::display_key(&key),
                    "in MySQL but not in the warehouse".into(),
                )),
                Some((w, h)) => {
                    let cols: Vec<&str> = src
                        .columns
                        .iter()
                        .zip(w.iter().zip(&vals))
                        .filter(|(_, (a, b))| a != b)
                        .map(|(c, _)| c.name.as_str())
                        .collect();
                    if !cols.is_empty() {
                        out.push(mismatch(
                            canon::display_key(&key),
                            format!("values differ in column(s) {}", cols.join(", ")),
                        ));
                    } else if *h != hash {
                        out.push(mismatch(
                            canon::display_key(&key),
                            "stored _sync_hash is stale".into(),
                        ));
                    }
                }
            }
            seen.insert(key);
        }
        for key in wh_rows.keys().filter(|k| !seen.contains(*k)) {
            out.push(mismatch(
                canon::display_key(key),
                "in the warehouse but not in MySQL".into(),
            ));
        }
        if out.len() >= limit {
            out.truncate(limit);
            break;
        }
    }
    Ok(out)
}

/// Rows of `buckets` from MySQL: canonical values of `columns`, and the stored hash.
fn mysql_rows(
    conn: &mut Conn,
    table: &str,
    columns: &[Column],
    buckets: &[u16],
) -> Result<Vec<(Vec<String>, i64)>, SyncError> {
    let cols: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let list: Vec<String> = buckets.iter().map(u16::to_string).collect();
    let sql = format!(
        "SELECT {}, `_sync_hash` FROM {} WHERE `_sync_bucket` IN ({})",
        cols.join(", "),
        quote_ident(table),
        list.join(",")
    );
    let rows: Vec<mysql::Row> = conn.exec(sql, ())?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let v = r.unwrap();
            let vals = columns
                .iter()
                .zip(&v)
                .map(|(c, x)| sync_engine::values::canonical(c, x))
                .collect();
            let hash = v.get(columns.len()).map_or(0, target::hash_of);
            (vals, hash)
        })
        .collect())
}
