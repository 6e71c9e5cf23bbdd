//! The plan of a run for one table: which partitions to load and why, which vanished, which
//! wait. Compares what the warehouse reports now with the state recorded in MySQL at the last
//! successful load. Pure.

use std::collections::BTreeMap;

use crate::partition::{order_key, sort_ids, UNPARTITIONED};

/// A partition as the warehouse reports it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePartition {
    pub id: String,
    pub rows: i64,
    /// `last_modified_time` in microseconds (metadata detection).
    pub modified_micros: Option<i64>,
    /// `BIT_XOR(FARM_FINGERPRINT(TO_JSON_STRING(t)))` (fingerprint detection).
    pub fingerprint: Option<i64>,
}

/// A partition's state row in MySQL (`sync_partitions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedPartition {
    pub id: String,
    pub rows: i64,
    pub modified_micros: Option<i64>,
    pub fingerprint: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Never synced.
    New,
    /// Row count differs.
    RowCount,
    /// Modified after the last sync (metadata).
    Modified,
    /// Content fingerprint differs.
    Fingerprint,
    /// Asked for by `resync`.
    Forced,
    /// Named by the table's change history (`change_detection = "changes"`).
    History,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::New => "new",
            Reason::RowCount => "row count changed",
            Reason::Modified => "modified since last sync",
            Reason::Fingerprint => "content fingerprint changed",
            Reason::Forced => "resync requested",
            Reason::History => "named by the change history",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    pub partition: SourcePartition,
    pub reason: Reason,
    /// The rows MySQL holds for it, as recorded when it was last synced (`None`: no watermark).
    pub synced_rows: Option<u64>,
}

/// What one run does to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Partitions to (re)load, oldest first.
    pub loads: Vec<Load>,
    /// Partitions synced before that the warehouse no longer has: their rows are deleted.
    pub vanished: Vec<String>,
    /// Partitions that exist but wait (the streaming buffer).
    pub waiting: Vec<String>,
    /// Partitions in sync.
    pub unchanged: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.loads.is_empty() && self.vanished.is_empty()
    }

    /// Seconds from the oldest modification still to load until `now_micros`; `None` when
    /// nothing pending reports a modification time (fingerprint detection, or in sync).
    pub fn lag_seconds(&self, now_micros: i64) -> Option<f64> {
        let oldest = self
            .loads
            .iter()
            .filter_map(|l| l.partition.modified_micros)
            .min()?;
        Some((now_micros - oldest).max(0) as f64 / 1e6)
    }
}

/// Compares the warehouse with the recorded state. A partition is loaded when it is new, its
/// row count differs, or (depending on what the warehouse reports) it was modified after the
/// recorded modification time or its fingerprint differs. `forced` partitions are loaded
/// whatever their state. Empty partitions that were never synced are skipped.
/// `buffered`: the table is ingestion-time partitioned, so `__UNPARTITIONED__` is its streaming
/// buffer, which waits (in a column-partitioned table it holds the rows dated outside BigQuery's
/// partitionable range, loaded like any partition).
pub fn plan(
    source: &[SourcePartition],
    synced: &[SyncedPartition],
    forced: &[String],
    buffered: bool,
) -> Plan {
    let state: BTreeMap<&str, &SyncedPartition> =
        synced.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut out = Plan::default();
    let mut seen = std::collections::BTreeSet::new();
    let mut sorted: Vec<&SourcePartition> = source.iter().collect();
    sorted.sort_by(|a, b| order_key(&a.id).cmp(&order_key(&b.id)));
    for p in sorted {
        if buffered && p.id == UNPARTITIONED {
            out.waiting.push(p.id.clone());
            continue;
        }
        seen.insert(p.id.as_str());
        let reason = match state.get(p.id.as_str()) {
            _ if forced.contains(&p.id) => Some(Reason::Forced),
            None if p.rows == 0 => None,
            None => Some(Reason::New),
            Some(s) if s.rows != p.rows => Some(Reason::RowCount),
            Some(s) => match (
                p.fingerprint,
                s.fingerprint,
                p.modified_micros,
                s.modified_micros,
            ) {
                (Some(now), Some(then), _, _) if now != then => Some(Reason::Fingerprint),
                (Some(_), None, _, _) => Some(Reason::Fingerprint),
                (None, _, Some(now), Some(then)) if now > then => Some(Reason::Modified),
                (None, _, Some(_), None) => Some(Reason::Modified),
                _ => None,
            },
        };
        match reason {
            Some(reason) => out.loads.push(Load {
                partition: p.clone(),
                reason,
                synced_rows: state
                    .get(p.id.as_str())
                    .and_then(|s| u64::try_from(s.rows).ok()),
            }),
            None => out.unchanged += 1,
        }
    }
    let mut vanished: Vec<String> = synced
        .iter()
        .filter(|s| !seen.contains(s.id.as_str()))
        .map(|s| s.id.clone())
        .collect();
    sort_ids(&mut vanished);
    out.vanished = vanished;
    out
}

/// A group's plans (one per table, in the group's order) split into batches, each loaded in
/// its own transaction with its watermarks (`docs/sync.md#batches`): the partition ids of
/// every table together, oldest first, at most `max_partitions` ids and (beyond its first id)
/// `max_rows` warehouse rows per batch; a table's partitions with one id change together.
/// Vanished partitions go with the first batch. Always at least one batch.
pub fn batches(plans: &[Plan], max_partitions: usize, max_rows: u64) -> Vec<Vec<Plan>> {
    // Each id's warehouse rows over the group's tables, in load order (oldest first).
    let mut rows_of: BTreeMap<(bool, &str), u64> = BTreeMap::new();
    for l in plans.iter().flat_map(|p| &p.loads) {
        *rows_of.entry(order_key(&l.partition.id)).or_default() += l.partition.rows.max(0) as u64;
    }
    // Which batch each id goes in.
    let mut batch_of: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut count, mut ids, mut rows) = (0usize, 0usize, 0u64);
    for ((_, id), r) in rows_of {
        let full = count == 0 || ids >= max_partitions.max(1) || (ids > 0 && rows + r > max_rows);
        if full {
            count += 1;
            (ids, rows) = (0, 0);
        }
        batch_of.insert(id, count - 1);
        ids += 1;
        rows += r;
    }
    let mut out: Vec<Vec<Plan>> = (0..count.max(1))
        .map(|i| {
            plans
                .iter()
                .map(|p| Plan {
                    loads: Vec::new(),
                    vanished: if i == 0 {
                        p.vanished.clone()
                    } else {
                        Vec::new()
                    },
                    waiting: if i == 0 {
                        p.waiting.clone()
                    } else {
                        Vec::new()
                    },
                    unchanged: if i == 0 { p.unchanged } else { 0 },
                })
                .collect()
        })
        .collect();
    for (t, p) in plans.iter().enumerate() {
        for l in &p.loads {
            if let Some(&i) = batch_of.get(l.partition.id.as_str()) {
                out[i][t].loads.push(l.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(id: &str, rows: i64, fp: i64) -> SourcePartition {
        SourcePartition {
            id: id.into(),
            rows,
            modified_micros: None,
            fingerprint: Some(fp),
        }
    }
    fn st(id: &str, rows: i64, fp: i64) -> SyncedPartition {
        SyncedPartition {
            id: id.into(),
            rows,
            modified_micros: None,
            fingerprint: Some(fp),
        }
    }

    #[test]
    fn first_run_loads_everything_oldest_first() {
        let p = plan(
            &[
                src("20260102", 5, 1),
                src("20260101", 3, 2),
                src("__NULL__", 1, 3),
            ],
            &[],
            &[],
            false,
        );
        let ids: Vec<_> = p.loads.iter().map(|l| l.partition.id.as_str()).collect();
        assert_eq!(ids, vec!["__NULL__", "20260101", "20260102"]);
        assert!(p.loads.iter().all(|l| l.reason == Reason::New));
    }

    #[test]
    fn only_changed_partitions_load() {
        let p = plan(
            &[
                src("20260101", 3, 2),
                src("20260102", 5, 9),
                src("20260103", 6, 1),
            ],
            &[
                st("20260101", 3, 2),
                st("20260102", 5, 1),
                st("20260103", 5, 1),
            ],
            &[],
            false,
        );
        let got: Vec<_> = p
            .loads
            .iter()
            .map(|l| (l.partition.id.as_str(), l.reason))
            .collect();
        assert_eq!(
            got,
            vec![
                ("20260102", Reason::Fingerprint),
                ("20260103", Reason::RowCount)
            ]
        );
        assert_eq!(p.unchanged, 1);
    }

    #[test]
    fn nothing_changed_means_an_empty_plan() {
        let p = plan(&[src("20260101", 3, 2)], &[st("20260101", 3, 2)], &[], true);
        assert!(p.is_empty());
    }

    #[test]
    fn vanished_and_unpartitioned_partitions() {
        let source = [src("__UNPARTITIONED__", 7, 0), src("20260102", 1, 1)];
        let state = [st("20260101", 3, 2), st("20260102", 1, 1)];
        let p = plan(&source, &state, &[], true);
        assert_eq!(p.vanished, vec!["20260101"]);
        assert_eq!(
            p.waiting,
            vec!["__UNPARTITIONED__"],
            "an ingestion-time buffer waits"
        );
        assert!(p.loads.is_empty());
        // In a column-partitioned table it holds out-of-range dates: loaded like any partition.
        let p = plan(&source, &state, &[], false);
        assert!(p.waiting.is_empty());
        assert_eq!(p.loads[0].partition.id, "__UNPARTITIONED__");
    }

    #[test]
    fn metadata_detection_uses_modification_time() {
        let s = |m| SourcePartition {
            id: "20260101".into(),
            rows: 3,
            modified_micros: Some(m),
            fingerprint: None,
        };
        let t = SyncedPartition {
            id: "20260101".into(),
            rows: 3,
            modified_micros: Some(100),
            fingerprint: None,
        };
        assert!(plan(&[s(100)], std::slice::from_ref(&t), &[], true).is_empty());
        assert_eq!(
            plan(&[s(101)], &[t], &[], true).loads[0].reason,
            Reason::Modified
        );
    }

    #[test]
    fn lag_is_measured_from_the_oldest_pending_modification() {
        let s = |id: &str, m| SourcePartition {
            id: id.into(),
            rows: 1,
            modified_micros: Some(m),
            fingerprint: None,
        };
        let p = plan(
            &[s("20260101", 4_000_000), s("20260102", 9_000_000)],
            &[],
            &[],
            false,
        );
        assert_eq!(p.lag_seconds(10_000_000), Some(6.0));
        assert_eq!(
            plan(&[src("20260101", 1, 1)], &[], &[], true).lag_seconds(10_000_000),
            None
        );
        assert_eq!(Plan::default().lag_seconds(0), None);
    }

    #[test]
    fn batches_split_oldest_first_by_partitions_and_rows_keeping_a_date_together() {
        let load = |id: &str, rows: i64| Load {
            partition: src(id, rows, 0),
            reason: Reason::New,
            synced_rows: None,
        };
        let a = Plan {
            loads: vec![
                load("20260101", 10),
                load("20260102", 10),
                load("20260103", 10),
            ],
            vanished: vec!["20250101".into()],
            ..Plan::default()
        };
        let b = Plan {
            loads: vec![load("20260102", 5), load("20260104", 100)],
            ..Plan::default()
        };
        let ids = |batch: &[Plan]| -> Vec<Vec<String>> {
            batch
                .iter()
                .map(|p| p.loads.iter().map(|l| l.partition.id.clone()).collect())
                .collect()
        };
        // By partitions: 2 ids per batch; both tables' 20260102 go together.
        let by_count = batches(&[a.clone(), b.clone()], 2, u64::MAX);
        assert_eq!(by_count.len(), 2);
        assert_eq!(
            ids(&by_count[0]),
            vec![vec!["20260101", "20260102"], vec!["20260102"]]
        );
        assert_eq!(ids(&by_count[1]), vec![vec!["20260103"], vec!["20260104"]]);
        assert_eq!(by_count[0][0].vanished, vec!["20250101"]);
        assert!(by_count[1][0].vanished.is_empty());
        // By rows: 25 rows per batch (0101 + 0102 = 25); a batch takes at least one id
        // (20260104 alone has 100 rows).
        let by_rows = batches(&[a, b], 100, 25);
        let firsts: Vec<String> = by_rows
            .iter()
            .map(|batch| {
                batch
                    .iter()
                    .flat_map(|p| &p.loads)
                    .map(|l| l.partition.id.clone())
                    .min()
                    .unwrap()
            })
            .collect();
        assert_eq!(firsts, vec!["20260101", "20260103", "20260104"]);
        // Nothing to load: one empty batch (vanished partitions still go).
        assert_eq!(batches(&[Plan::default()], 10, 10).len(), 1);
    }

    #[test]
    fn a_two_year_hourly_backlog_of_linked_tables_splits_into_ordered_batches() {
        // 17,520 hourly ids in three tables (a group), newest first as a plan may list them.
        let hours: Vec<String> = (0..17_520i64)
            .rev()
            .map(|h| {
                let t = chrono::NaiveDate::from_ymd_opt(2025, 1, 1)
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap()
                    + chrono::Duration::hours(h);
                t.format("%Y%m%d%H").to_string()
            })
            .collect();
        let table = |rows: i64| Plan {
            loads: hours
                .iter()
                .map(|id| Load {
                    partition: src(id, rows, 0),
                    reason: Reason::New,
                    synced_rows: None,
                })
                .collect(),
            ..Plan::default()
        };
        let plans = [table(10), table(20), table(5)];
        let out = batches(&plans, 24, 35 * 12);
        // 35 rows per id over the tables: 12 ids per batch by rows (fewer than 24).
        assert_eq!(out.len(), 17_520 / 12);
        let mut seen = Vec::new();
        for batch in &out {
            let ids: Vec<&str> = batch[0]
                .loads
                .iter()
                .map(|l| l.partition.id.as_str())
                .collect();
            assert_eq!(ids.len(), 12);
            for p in &batch[1..] {
                let same: Vec<&str> = p.loads.iter().map(|l| l.partition.id.as_str()).collect();
                let (mut a, mut b) = (ids.clone(), same);
                a.sort();
                b.sort();
                assert_eq!(a, b, "a batch holds an id in every table of the group");
            }
            seen.extend(ids.iter().map(|s| s.to_string()));
        }
        // Batches go oldest first; within a batch, loads keep the plan's order.
        let firsts: Vec<&str> = out
            .iter()
            .map(|b| {
                b[0].loads
                    .iter()
                    .map(|l| l.partition.id.as_str())
                    .min()
                    .unwrap()
            })
            .collect();
        assert!(firsts.windows(2).all(|w| w[0] < w[1]));
        // Every id once.
        seen.sort();
        let mut all = hours.clone();
        all.sort();
        assert_eq!(seen, all);
    }

    #[test]
    fn forced_partitions_load_even_when_unchanged() {
        let p = plan(
            &[src("20260101", 3, 2)],
            &[st("20260101", 3, 2)],
            &["20260101".into()],
            false,
        );
        assert_eq!(p.loads[0].reason, Reason::Forced);
    }

    #[test]
    fn empty_new_partitions_are_skipped() {
        assert!(plan(&[src("20260101", 0, 0)], &[], &[], true).is_empty());
    }
}
