//! Change-history mode (`change_detection = "changes"`, docs/sync.md#change-history): between
//! full bucket diffs, a cycle reads only the rows BigQuery's change history (`CHANGES(TABLE …)`)
//! lists since the previous window and applies the last change of each key. The full diff
//! still runs on the first cycle and every `full_diff_every`-th: it catches what the history
//! cannot show (changes newer than its 10-minute delay, a gap beyond the time-travel window).
//!
//! Windows: BigQuery answers `CHANGES` only for an end at least 10 minutes in the past and at
//! most a day per call. After a full diff that started at `T`, windows resume at `T` minus a
//! skew margin and are applied only once their end is past `T`: an earlier end would bring
//! back row versions the diff already replaced. Applying a window converges every key it
//! touches to its state at the window's end; the rest did not change since.

use std::collections::HashMap;
use std::time::Duration;

use mysql::Conn;
use serde_json::Value as Json;

use crate::cycle::{CycleReport, Env, TableState};
use crate::plan::{self, StaleRow};
use crate::source::{pk_positions, SourceTable};
use crate::{apply, blocking, target, SyncError};

/// How far behind now a window ends: BigQuery's 10 minutes, plus a minute for clock skew.
pub const SETTLE: Duration = Duration::from_secs(11 * 60);
/// The longest window one `CHANGES` call may read.
const MAX_WINDOW_MICROS: i64 = 86_400_000_000;
/// How far before a full diff's start the history resumes (clock skew).
const SKEW_MICROS: i64 = 60_000_000;

/// Where the next history window starts, and the earliest end it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    from_micros: i64,
    not_before_micros: i64,
}

impl HistoryCursor {
    /// After a full diff that started at `started`.
    pub fn after_full_diff(started: chrono::DateTime<chrono::Utc>) -> HistoryCursor {
        let t = started.timestamp_micros();
        HistoryCursor {
            from_micros: t - SKEW_MICROS,
            not_before_micros: t,
        }
    }

    /// The next window `[from, end)` at `now_micros`; `None` while its end would not be past
    /// the last full diff.
    pub fn window(&self, now_micros: i64) -> Option<(i64, i64)> {
        let settled = now_micros - SETTLE.as_micros() as i64;
        let end = settled.min(self.from_micros + MAX_WINDOW_MICROS);
        (end > self.not_before_micros && end > self.from_micros).then_some((self.from_micros, end))
    }

    /// Moves the cursor `by` into the past (tests).
    pub(crate) fn age(&mut self, by: Duration) {
        let micros = by.as_micros() as i64;
        self.from_micros -= micros;
        self.not_before_micros -= micros;
    }

    fn after(&self, end_micros: i64) -> HistoryCursor {
        HistoryCursor {
            from_micros: end_micros,
            not_before_micros: self.not_before_micros,
        }
    }
}

/// The cursor, when this cycle is a history cycle: change-history mode, a full diff already
/// done, and not a full-diff cycle.
pub(crate) fn due(env: &Env<'_>, state: &TableState) -> Option<HistoryCursor> {
    if state.change_detection(env.settings) != domain::config::ChangeDetection::Changes {
        return None;
    }
    let cursor = state.history?;
    let every = env.settings.full_diff_every.max(1);
    (state.cycles % every != 0).then_some(cursor)
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
    apply::delete_rows(
        env,
        src,
        conn,
        &src.target,
        &last.deletes,
        &last.raw_keys,
        report,
    )?;
    Ok(cursor.after(to))
}

/// The last change of each key in a window.
#[derive(Debug, Default)]
struct LastChanges {
    /// MySQL values (bucket and hash last) of keys whose last change inserted or updated.
    upserts: Vec<Vec<mysql::Value>>,
    /// Keys whose last change deleted them, with the hash of the version deleted: MySQL
    /// loses the row only while it still holds that version.
    deletes: Vec<StaleRow>,
    raw_keys: HashMap<String, Vec<mysql::Value>>,
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
    for (key, (_, deleted, kind, cells)) in latest {
        let (values, hash) = target::convert_row(&src.target, &src.columns, &pk_idx, cells)?;
        if deleted {
            out.raw_keys.insert(
                key.clone(),
                pk_idx.iter().map(|i| values[*i].clone()).collect(),
            );
            out.deletes.push(StaleRow { key, hash });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_settle_ten_minutes_behind_and_never_end_before_the_last_full_diff() {
        let t0 = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let cursor = HistoryCursor::after_full_diff(t0);
        let t = t0.timestamp_micros();
        let settle = SETTLE.as_micros() as i64;
        assert_eq!(cursor.window(t), None, "right after the diff");
        assert_eq!(
            cursor.window(t + settle),
            None,
            "the end would be the diff's start"
        );
        assert_eq!(
            cursor.window(t + settle + 5_000_000),
            Some((t - SKEW_MICROS, t + 5_000_000))
        );
        let next = cursor.after(t + 5_000_000);
        assert_eq!(
            next.window(t + settle + 5_000_000),
            None,
            "nothing new settled"
        );
        // After a long pause, one day at most per window.
        let far = t + 3 * MAX_WINDOW_MICROS;
        assert_eq!(
            next.window(far),
            Some((t + 5_000_000, t + 5_000_000 + MAX_WINDOW_MICROS))
        );
    }
}
