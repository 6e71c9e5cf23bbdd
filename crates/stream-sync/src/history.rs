//! Change-history mode (`change_detection = "changes"`, docs/sync.md#change-history): between
//! full bucket diffs, a cycle reads only the rows BigQuery's change history (`CHANGES(TABLE …)`)
//! lists since the previous window and applies the last change of each key. The full diff
//! still runs on the first cycle and every `full_diff_every`-th: it catches what the history
//! cannot show (changes newer than its 10-minute delay, a gap beyond the time-travel window).
//! The windows' rules are [`domain::history`]'s.

use std::collections::HashMap;

use mysql::Conn;
use serde_json::Value as Json;

use domain::history::HistoryCursor;

use crate::cycle::{CycleReport, Env, TableState};
use crate::plan;
use crate::source::{pk_positions, SourceTable};
use crate::{apply, blocking, target, SyncError};

/// The cursor, when this cycle is a history cycle: change-history mode, a full diff already
/// done, and not a full-diff cycle.
pub(crate) fn due(env: &Env<'_>, state: &TableState) -> Option<HistoryCursor> {
    if state.change_detection(env.settings) != domain::config::ChangeDetection::Changes {
        return None;
    }
    let cursor = state.history?;
    let every = env.settings.full_diff_every.max(1);
    (state.cycles % every != 0 && !state.full_diff_due).then_some(cursor)
}

/// One history window applied; returns the cursor after it. Nothing to read yet (the window
/// has not settled) is a skipped cycle.
pub(crate) async fn history_cycle(
    env: &Env<'_>,
    src: &SourceTable,
    conn: &mut Conn,
    max_packet: usize,
    cursor: HistoryCursor,
    report: &mut CycleReport,
) -> Result<HistoryCursor, SyncError> {
    let now = chrono::Utc::now().timestamp_micros();
    let Some((from, to)) = cursor.window(now) else {
        report.skipped = true;
        return Ok(cursor);
    };
    report.history = Some((from, to));
    report.fetch.queries += 1;
    let page = env.warehouse.query_all(&src.changes_sql(from, to)).await?;
    report.fetch.full_rows += page.rows.len() as u64;
    report.fetch.bytes_processed += page.bytes_processed;
    let last = last_change_per_key(src, page.rows)?;
    let digest = blocking(|| target::table_digest(conn, &src.target))?;
    report.mysql_rows = digest.count;
    plan::guard(
        last.deletes.len() as u64,
        digest.count,
        digest.count.saturating_sub(last.deletes.len() as u64),
        env.settings.max_delete_fraction,
        env.settings.allow_mass_delete,
    )?;
    report.inserts = last.inserts;
    report.updates = last.updates;
    apply::upsert_rows(
        env,
        src,
        conn,
        &src.target,
        max_packet,
        last.upserts,
        report,
    )?;
    // Batch by batch like every other write: throttled, and stopping on shutdown.
    for batch in last.deletes.chunks(env.settings.batch_rows.max(1)) {
        blocking(|| env.throttle.wait(conn))?;
        report.deleted +=
            blocking(|| target::delete_keys(conn, &src.target, &src.primary_key, batch))? as u64;
        if env.shutdown.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SyncError::Shutdown);
        }
    }
    Ok(cursor.after(to))
}

/// The last change of each key in a window.
#[derive(Debug, Default)]
struct LastChanges {
    /// MySQL values (bucket and hash last) of keys whose last change inserted or updated.
    upserts: Vec<Vec<mysql::Value>>,
    /// Keys (MySQL values) whose last change deleted them. Deleted whatever version MySQL
    /// holds: between full diffs it can hold no version newer than the window's (a key
    /// updated then deleted in one window still has its version from before).
    deletes: Vec<Vec<mysql::Value>>,
    inserts: u64,
    updates: u64,
}

/// Keeps each key's last change (rows come oldest first; an update is a DELETE of the old
/// version and an UPDATE or INSERT of the new one at the same instant, the new one wins).
fn last_change_per_key(
    src: &SourceTable,
    rows: Vec<Vec<Option<Json>>>,
) -> Result<LastChanges, SyncError> {
    let n = src.columns.len();
    let pk_idx = pk_positions(src);
    // Per key: the change's instant, whether it deleted, its type, the row.
    type Change = (i64, bool, String, Vec<Option<Json>>);
    let mut latest: HashMap<String, Change> = HashMap::new();
    for mut cells in rows {
        let ts = cells
            .get(n + 3)
            .and_then(sync_engine::warehouse::cell_i64)
            .unwrap_or(0);
        let kind = cells
            .get(n + 2)
            .and_then(sync_engine::warehouse::cell_str)
            .unwrap_or_default();
        cells.truncate(n + 2);
        let deleted = kind.eq_ignore_ascii_case("DELETE");
        let key = serde_json::to_string(&pk_idx.iter().map(|i| &cells[*i]).collect::<Vec<_>>())
            .unwrap_or_default();
        let newer = latest
            .get(&key)
            .is_none_or(|(t, was_deleted, _, _)| (ts, !deleted) >= (*t, !*was_deleted));
        if newer {
            latest.insert(key, (ts, deleted, kind, cells));
        }
    }
    let mut out = LastChanges::default();
    for (_, deleted, kind, cells) in latest.into_values() {
        let (values, _) = target::convert_row(&src.target, &src.columns, &pk_idx, cells)?;
        if deleted {
            out.deletes
                .push(pk_idx.iter().map(|i| values[*i].clone()).collect());
        } else {
            if kind.eq_ignore_ascii_case("INSERT") {
                out.inserts += 1;
            } else {
                out.updates += 1;
            }
            out.upserts.push(values);
        }
    }
    Ok(out)
}
