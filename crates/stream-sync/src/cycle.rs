//! One table's cycle, as a list of named steps (see `docs/sync.md#cycle` and
//! `docs/architecture.md#stream-sync-cycle`): (0) skip at no cost when nothing changed and the
//! metadata can be trusted; (1) bucket digests on both sides; (2) the changed rows of the
//! differing buckets, from an IBLT of row hashes ([`crate::iblt`]) or, when that can't be used,
//! from `(key, hash)` of those buckets diffed (module `changes`); (3) full rows fetched only for
//! new and changed keys; (4) upserts then deletes in batched transactions (module `apply`). A
//! cursor-mode cycle (module `cursor`) replaces (1) to (4) on most cycles of a table with a
//! cursor column. `verify` is in [`crate::verify`].

use domain::ident::Ident;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use domain::config::{ChangeDetection, TableSpec};
use mysql::Conn;
use sync_engine::warehouse::Warehouse;

use crate::history;
use crate::plan::{self, BucketDigest, BucketSplit, Digests, RowPlan};
use crate::source::{self, FetchStats, SourceMeta, SourceTable};
use crate::{apply, blocking, changes, cursor, overlapped, target, SyncError};
use domain::history::HistoryCursor;

/// Tunables of every table's cycle.
#[derive(Debug, Clone)]
pub struct CycleSettings {
    pub buckets: u32,
    pub max_delete_fraction: f64,
    pub batch_rows: usize,
    /// Let a cycle delete any share of a table (the guard is off).
    pub allow_mass_delete: bool,
    /// `metadata` and `changes` trust `last_modified_time` for the no-cost skip; `changes`
    /// also applies the table's change history between full diffs ([`crate::history`]).
    pub change_detection: ChangeDetection,
    /// In cursor and change-history mode, run the full bucket diff every N cycles (and on
    /// the first).
    pub full_diff_every: u64,
    /// `(index, count)`: this process syncs the tables whose name hashes to `index` of
    /// `count` shards (`docs/sync.md#sharding`; `(0, 1)`: all of them).
    pub shard: (u64, u64),
}

impl Default for CycleSettings {
    fn default() -> Self {
        CycleSettings {
            buckets: 1024,
            max_delete_fraction: 0.1,
            batch_rows: 5000,
            allow_mass_delete: false,
            change_detection: ChangeDetection::Fingerprint,
            full_diff_every: 10,
            shard: (0, 1),
        }
    }
}

/// What the cycle works with.
pub struct Env<'a> {
    pub warehouse: &'a Warehouse,
    pub dataset: &'a str,
    pub settings: &'a CycleSettings,
    pub shutdown: &'a AtomicBool,
    /// Waited on before each write batch (`docs/sync.md#throttling`).
    pub throttle: &'a sync_engine::throttle::Throttle,
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
    /// Per-table override of [`CycleSettings::change_detection`].
    pub change_detection: Option<ChangeDetection>,
    /// Change-history mode: where the next history window starts.
    pub(crate) history: Option<HistoryCursor>,
    /// Rewrite every row (bucket and hash included) at the next cycle: `resync`, a changed
    /// bucket count, or a table stream-sync did not fill.
    pub rewrite: bool,
    /// The next cycle is a full diff whatever its mode: a bad row was left out of this one
    /// (a cursor or history cycle would not see that row again).
    pub(crate) full_diff_due: bool,
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
            change_detection: None,
            history: None,
            rewrite: false,
            full_diff_due: false,
            max_packet: None,
        }
    }

    /// The table's change detection mode.
    pub fn change_detection(&self, settings: &CycleSettings) -> ChangeDetection {
        self.change_detection.unwrap_or(settings.change_detection)
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
    /// A change-history cycle (no bucket diff): the window's start and end, microseconds.
    pub history: Option<(i64, i64)>,
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
    /// Rows MySQL can't take (a value beyond its column), left out of the cycle's writes: how
    /// many, and the first few messages (table, key, column). The rest of the cycle is
    /// applied; the cycle then fails naming them.
    pub bad_rows: u64,
    pub bad_row_messages: Vec<String>,
}

/// How many bad rows a cycle names in its error (it counts them all).
const BAD_ROW_MESSAGES: usize = 5;

impl CycleReport {
    /// Counts a row left out because MySQL can't take it, keeping the first few messages.
    pub(crate) fn note_bad_row(&mut self, message: String) {
        self.bad_rows += 1;
        if self.bad_row_messages.len() < BAD_ROW_MESSAGES {
            self.bad_row_messages.push(message);
        }
    }

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
    report.table = state.spec.target.to_string();
    let mut result = cycle_inner(env, state, conn, report).await;
    report.duration = started.elapsed();
    if result.is_ok() && report.bad_rows > 0 {
        // Not converged: the next cycle diffs in full (no skip, no cursor or history cycle,
        // no history window past it).
        state.last_meta = None;
        state.last_digest = None;
        state.history = None;
        state.full_diff_due = true;
        result = Err(SyncError::BadRow(format!(
            "{} rows left out (the rest of the cycle was applied): {}{}",
            report.bad_rows,
            report.bad_row_messages.join("; "),
            if report.bad_rows as usize > report.bad_row_messages.len() {
                "; …"
            } else {
                ""
            }
        )));
    }
    if result.is_ok() {
        state.cycles += 1;
    }
    result
}

/// The cycle's steps: prepare, a full rewrite when one is due, the skip at no cost, then either
/// a cursor cycle or the full diff; a converged full diff is remembered for the next skip.
async fn cycle_inner(
    env: &Env<'_>,
    state: &mut TableState,
    conn: &mut Conn,
    report: &mut CycleReport,
) -> Result<(), SyncError> {
    let started = chrono::Utc::now();
    let meta = prepare(env, state, conn, &mut report.fetch).await?;
    let Some(mut src) = state.source.clone() else {
        return Err(SyncError::Permanent("source table not described".into()));
    };
    // The snapshot is taken at the table's last modification: only where that time is
    // trusted (with `fingerprint`, writes that don't move it must still be seen: read live).
    if state.change_detection(env.settings).trusts_metadata() {
        src.snapshot_micros = snapshot_at(&meta, started.timestamp_micros());
    }
    let table = state.spec.target.clone();
    let max_packet = state.max_packet(conn)?;
    if state.rewrite {
        rewrite_all(env, state, &src, conn, &table, max_packet, report).await?;
    }
    if skip_unchanged(env, state, &meta, conn, &table, report)? {
        return Ok(());
    }
    if let Some(column) = cursor::due_cursor(env, state) {
        report.cursor = true;
        state.last_meta = None;
        return cursor::cursor_cycle(env, &src, &column, conn, max_packet, report).await;
    }
    if let Some(cursor) = history::due(env, state) {
        match history::history_cycle(env, &src, conn, max_packet, cursor, report).await {
            Ok(next) => {
                state.history = Some(next);
                state.last_meta = None;
                return Ok(());
            }
            // The history can't be read (no `enable_change_history`, a window past the
            // time-travel window): this cycle diffs in full, which also restarts the history.
            Err(SyncError::Warehouse(e)) if !e.transient() => {
                tracing::warn!(table.name = %table, error = %e, "the change history can't be read; running the full bucket diff instead");
                state.history = None;
                report.history = None;
            }
            // Any other failure: the next cycle is a full diff (which restarts the history),
            // so a window that can't be applied never blocks the table.
            Err(e) => {
                state.history = None;
                return Err(e);
            }
        }
    }
    let wh = full_diff(env, &src, conn, &table, max_packet, report).await?;
    state.full_diff_due = false;
    state.last_meta = Some(meta);
    state.last_digest = Some(plan::table_digest(&wh));
    if state.change_detection(env.settings) == ChangeDetection::Changes {
        state.history = Some(HistoryCursor::after_full_diff(started.timestamp_micros()));
    }
    Ok(())
}

/// The cycle's snapshot (docs/sync.md#cycle): just after the table's last modification, on the
/// warehouse's own clock (so no clock skew puts it in the future), which is the table as
/// `tables.get` saw it. A table unchanged for a day is read live: time travel may not reach
/// that far back (its window can be as short as two days), and its rows are the same anyway.
fn snapshot_at(meta: &SourceMeta, now_micros: i64) -> Option<i64> {
    const DAY_MICROS: i64 = 86_400_000_000;
    let modified_ms: i64 = meta.last_modified.as_deref()?.parse().ok()?;
    let at = (modified_ms + 1) * 1000;
    (now_micros - at < DAY_MICROS).then_some(at)
}

/// A full rewrite, when asked for or needed (see `docs/sync.md#bucket-marker`): every warehouse
/// row upserted with its bucket and hash, then the bucket marker. What is left over (keys the
/// warehouse no longer has) goes with the rest of the cycle.
async fn rewrite_all(
    env: &Env<'_>,
    state: &mut TableState,
    src: &SourceTable,
    conn: &mut Conn,
    table: &Ident,
    max_packet: usize,
    report: &mut CycleReport,
) -> Result<(), SyncError> {
    apply::fetch_and_apply(
        env,
        src,
        conn,
        max_packet,
        &src.all_rows_sql(),
        None,
        report,
    )
    .await?;
    if report.bad_rows > 0 {
        // A row left out keeps its bucket and hash of the old count: the marker stays old
        // and the rewrite runs again next cycle (the cycle fails naming the row).
        return Ok(());
    }
    let buckets = env.settings.buckets;
    blocking(|| target::set_bucket_marker(conn, table, buckets))?;
    state.rewrite = false;
    state.last_meta = None;
    tracing::info!(table.name = %table, rows = report.upserted, "rewrote every row");
    Ok(())
}

/// (0) The skip at no cost: the warehouse says nothing changed and MySQL's rows are the ones
/// we left there. True (and the report's row counts filled) when the cycle ends here.
fn skip_unchanged(
    env: &Env<'_>,
    state: &TableState,
    meta: &SourceMeta,
    conn: &mut Conn,
    table: &Ident,
    report: &mut CycleReport,
) -> Result<bool, SyncError> {
    let trust = state.change_detection(env.settings).trusts_metadata();
    if trust && state.last_meta.as_ref() == Some(meta) {
        let digest = blocking(|| target::table_digest(conn, table))?;
        if state.last_digest == Some(digest) {
            report.skipped = true;
            report.mysql_rows = digest.count;
            report.warehouse_rows = digest.count;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Steps (1) to (4): bucket digests, the changed rows of the differing buckets, the guard, then
/// upserts and deletes. Returns the warehouse's bucket digests, which MySQL now matches.
async fn full_diff(
    env: &Env<'_>,
    src: &SourceTable,
    conn: &mut Conn,
    table: &Ident,
    max_packet: usize,
    report: &mut CycleReport,
) -> Result<Digests, SyncError> {
    let (wh, my) = bucket_digests(env, src, conn, table, report).await?;
    let differing = plan::differing_buckets(&wh, &my);
    report.buckets_differing = differing.len() as u64;
    if differing.is_empty() {
        return Ok(wh);
    }
    // (2) Which rows differ: from an IBLT of the row hashes where the difference is small
    // (reads about twice as many cells as rows changed), else from the keys and hashes of
    // the differing buckets (only where MySQL has rows too: a bucket empty in MySQL is all
    // inserts).
    let split = plan::split_buckets(&differing, &wh, &my);
    let found = changes::find_changes(env, src, conn, table, &split, (&wh, &my), report).await?;
    guard_and_count(env, &split, &wh, &found.plan, report)?;

    // (3) + (4) Full rows of new and changed keys only, upserted batch by batch, then
    // the deletes (after the upserts, so a delete never removes a row just rewritten).
    apply::upsert_buckets(env, src, conn, max_packet, &split.fresh, report).await?;
    match found.prefetched {
        Some(rows) => apply::upsert_rows(env, src, conn, table, max_packet, rows, report)?,
        None => {
            let fetch = &found.plan.fetch;
            apply::upsert_planned(env, src, conn, max_packet, &split.mixed, fetch, report).await?
        }
    }
    let deletes = &found.plan.deletes;
    apply::delete_rows(env, src, conn, table, deletes, &found.raw_keys, report)?;
    Ok(wh)
}

/// (1) Bucket digests on both sides, the warehouse's computed while MySQL reads its own. An
/// empty warehouse table goes no further unless the mass-delete guard allows it.
async fn bucket_digests(
    env: &Env<'_>,
    src: &SourceTable,
    conn: &mut Conn,
    table: &Ident,
    report: &mut CycleReport,
) -> Result<(Digests, Digests), SyncError> {
    let (wh, my) = overlapped(
        source::digests(env.warehouse, src, &mut report.fetch),
        || target::digests(conn, table),
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
    Ok((wh, my))
}

/// The mass-delete guard on the planned deletes (see `docs/sync.md#mass-delete-guard`), then
/// the report's planned inserts (every warehouse row of a fresh bucket is one) and updates.
fn guard_and_count(
    env: &Env<'_>,
    split: &BucketSplit,
    wh: &Digests,
    row_plan: &RowPlan,
    report: &mut CycleReport,
) -> Result<(), SyncError> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(modified_ms: Option<&str>) -> SourceMeta {
        SourceMeta {
            last_modified: modified_ms.map(str::to_string),
            num_rows: Some("1".into()),
        }
    }

    #[test]
    fn the_snapshot_is_just_after_the_last_modification_on_the_warehouse_clock() {
        let now = 1_800_000_000_000_000;
        let modified_ms = now / 1000 - 60_000; // a minute ago
        assert_eq!(
            snapshot_at(&meta(Some(&modified_ms.to_string())), now),
            Some((modified_ms + 1) * 1000)
        );
        // Unchanged for more than a day: read live (time travel may not reach back).
        let old = now / 1000 - 2 * 86_400_000;
        assert_eq!(snapshot_at(&meta(Some(&old.to_string())), now), None);
        assert_eq!(snapshot_at(&meta(None), now), None);
        assert_eq!(snapshot_at(&meta(Some("not a number")), now), None);
    }
}
