//! The SQL of partition-sync's state tables, in one place: `sync_partitions` (one watermark
//! row per synced partition) and `sync_runs` (one row per run and table). The tables themselves
//! are created by `sync_engine::session::ensure_state_tables`. See `docs/sync.md#load` and
//! `docs/architecture.md#partition-sync-sequence`.

use std::collections::BTreeMap;

use mysql::prelude::Queryable;
use mysql::Value;

use domain::history::HistoryCursor;
use sync_engine::session;

use crate::plan::{SourcePartition, SyncedPartition};

/// Reads the state rows of `targets`.
pub fn read_state(
    conn: &mut mysql::Conn,
    targets: &[String],
) -> Result<BTreeMap<String, Vec<SyncedPartition>>, session::MysqlError> {
    let mut out = BTreeMap::new();
    for t in targets {
        let rows: Vec<(String, i64, Option<i64>, Option<i64>)> = conn.exec(
            "SELECT partition_id, row_count, CAST(ROUND(UNIX_TIMESTAMP(source_modified_at) * 1000000) AS SIGNED), fingerprint \
             FROM sync_partitions WHERE target_table = ?",
            (t,),
        )?;
        out.insert(
            t.clone(),
            rows.into_iter()
                .map(|(id, rows, modified_micros, fingerprint)| SyncedPartition {
                    id,
                    rows,
                    modified_micros,
                    fingerprint,
                })
                .collect(),
        );
    }
    Ok(out)
}

/// The change-history cursors of `targets` (`change_detection = "changes"`), where recorded.
pub fn read_history(
    conn: &mut mysql::Conn,
    targets: &[String],
) -> Result<BTreeMap<String, HistoryCursor>, session::MysqlError> {
    let mut out = BTreeMap::new();
    for t in targets {
        let row: Option<(i64, i64)> = conn.exec_first(
            "SELECT from_micros, not_before_micros FROM sync_history WHERE target_table = ?",
            (t,),
        )?;
        if let Some((from, not_before)) = row {
            out.insert(t.clone(), HistoryCursor::from_parts(from, not_before));
        }
    }
    Ok(out)
}

/// Records where `target`'s next change-history window starts (after its group committed).
pub(crate) fn write_history(
    q: &mut impl Queryable,
    target: &str,
    cursor: &HistoryCursor,
) -> Result<(), mysql::Error> {
    let (from, not_before) = cursor.parts();
    q.exec_drop(
        "INSERT INTO sync_history (target_table, from_micros, not_before_micros, updated_at) \
         VALUES (?, ?, ?, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE from_micros = VALUES(from_micros), \
         not_before_micros = VALUES(not_before_micros), updated_at = VALUES(updated_at)",
        (target, from, not_before),
    )
}

/// Records a loaded partition's watermark: the detection-time modification time or
/// fingerprint, and `rows`, the rows actually loaded.
pub(crate) fn upsert_partition(
    q: &mut impl Queryable,
    target: &str,
    p: &SourcePartition,
    rows: u64,
    run_id: &str,
) -> mysql::Result<()> {
    let modified: Value = match p
        .modified_micros
        .and_then(chrono::DateTime::from_timestamp_micros)
    {
        Some(t) => Value::Bytes(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string().into_bytes()),
        None => Value::NULL,
    };
    // The row count recorded is what was loaded: if the partition changed between detection
    // and export, the counts differ and the next run loads it again.
    q.exec_drop(
        "INSERT INTO sync_partitions (target_table, partition_id, source_modified_at, fingerprint, row_count, synced_at, run_id) \
         VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6), ?) ON DUPLICATE KEY UPDATE source_modified_at = VALUES(source_modified_at), \
         fingerprint = VALUES(fingerprint), row_count = VALUES(row_count), synced_at = VALUES(synced_at), run_id = VALUES(run_id)",
        (target, &p.id, modified, p.fingerprint, rows, run_id),
    )
}

/// Removes the state row of a vanished partition (`docs/sync.md#vanished-partitions`).
pub(crate) fn delete_partition(
    q: &mut impl Queryable,
    target: &str,
    partition_id: &str,
) -> mysql::Result<()> {
    q.exec_drop(
        "DELETE FROM sync_partitions WHERE target_table = ? AND partition_id = ?",
        (target, partition_id),
    )
}

/// The partitions of `target` whose watermark run `run_id` wrote, with their row counts.
pub(crate) fn partitions_of_run(
    conn: &mut mysql::Conn,
    target: &str,
    run_id: &str,
) -> mysql::Result<Vec<(String, u64)>> {
    conn.exec(
        "SELECT partition_id, row_count FROM sync_partitions WHERE target_table = ? AND run_id = ?",
        (target, run_id),
    )
}

/// When a partition of `target` was last synced (RFC 3339 UTC), if ever.
pub(crate) fn last_synced_at(
    conn: &mut mysql::Conn,
    target: &str,
) -> mysql::Result<Option<String>> {
    let synced: Option<Option<String>> = conn.exec_first(
        "SELECT DATE_FORMAT(MAX(synced_at), '%Y-%m-%dT%H:%i:%sZ') FROM sync_partitions WHERE target_table = ?",
        (target,),
    )?;
    Ok(synced.flatten())
}
