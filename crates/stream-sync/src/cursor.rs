//! Cursor mode (see `docs/sync.md#cursor-mode`): on most cycles of a table with a
//! `cursor_column`, only the warehouse rows past MySQL's largest cursor value are upserted. The
//! full bucket diff runs on the first cycle and then every `full_diff_every`-th; it catches
//! deletes and rows whose cursor did not advance.

use mysql::Conn;

use crate::cycle::{CycleReport, Env, TableState};
use crate::source::SourceTable;
use crate::{apply, blocking, target, SyncError};

/// The cursor column when this cycle is a cursor cycle: the table has one, and this is not a
/// full-diff cycle (the first, then every `full_diff_every`-th).
pub(crate) fn due_cursor(env: &Env<'_>, state: &TableState) -> Option<String> {
    let cursor = state.spec.cursor_column.as_ref()?;
    let every = env.settings.full_diff_every.max(1);
    (state.cycles % every != 0 && !state.full_diff_due).then(|| cursor.to_string())
}

/// Cursor mode: rows past MySQL's largest cursor value, upserted.
pub(crate) async fn cursor_cycle(
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
    let watermark = blocking(|| target::cursor_watermark(conn, &src.target, &col))?;
    let sql = src.cursor_sql(&col, watermark.as_deref());
    apply::fetch_and_apply(env, src, conn, max_packet, &sql, None, report).await
}
