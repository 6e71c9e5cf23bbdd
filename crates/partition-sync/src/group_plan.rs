//! Step 2 of a group (`docs/architecture.md#partition-sync-sequence`): for each table, ask
//! the warehouse what changed (`docs/sync.md#change-detection`), compare it with the recorded
//! state ([`crate::plan`]), apply `resync`'s forced partitions and the cap on vanished
//! partitions (`docs/sync.md#vanished-partitions`), and report the plan.

use std::collections::BTreeMap;

use domain::config::{ChangeDetection, Group, TableSpec};
use domain::history::HistoryCursor;

use crate::plan::{self, Plan, SourcePartition, SyncedPartition};
use crate::runner::{Context, Force, GroupError, Options, PlannedPartition};
use crate::source::{self, PartitionedSource};

/// What changed in a group's tables, each planned table's lag, and the change-history
/// cursors to record once the group committed.
pub(crate) struct GroupPlan {
    pub(crate) tables: Vec<(PartitionedSource, Plan)>,
    pub(crate) lag: BTreeMap<String, f64>,
    pub(crate) history: Vec<(String, HistoryCursor)>,
}

/// Step 2: asks the warehouse what changed in each table of the group and plans it. A table
/// filtered out by --table still joins the group's transaction, with nothing to do.
pub(crate) async fn plan_group(
    ctx: &Context,
    group: &Group,
    opts: &Options,
    state: &BTreeMap<String, Vec<SyncedPartition>>,
    history: &BTreeMap<String, HistoryCursor>,
    bytes: &mut u64,
) -> Result<GroupPlan, GroupError> {
    let mut tables: Vec<(PartitionedSource, Plan)> = Vec::new();
    let now_micros = chrono::Utc::now().timestamp_micros();
    let mut lag = BTreeMap::new();
    let mut cursors = Vec::new();
    for spec in &group.tables {
        let table = source::describe(&ctx.warehouse, ctx.dataset(), spec).await?;
        let plan = if table_selected(spec, opts) {
            let cursor = history.get(spec.target.as_str()).copied();
            let (plan, next) = plan_table(ctx, spec, opts, &table, state, cursor, bytes).await?;
            cursors.extend(next.map(|c| (spec.target.to_string(), c)));
            lag.insert(
                spec.target.to_string(),
                plan.lag_seconds(now_micros).unwrap_or(0.0),
            );
            plan
        } else {
            Plan::default()
        };
        check_vanished(ctx, spec, opts, &plan)?;
        tables.push((table, plan));
    }
    Ok(GroupPlan {
        tables,
        lag,
        history: cursors,
    })
}

/// Detects the table's partitions and compares them with its recorded state
/// (`docs/sync.md#change-detection`).
async fn plan_table(
    ctx: &Context,
    spec: &TableSpec,
    opts: &Options,
    table: &PartitionedSource,
    state: &BTreeMap<String, Vec<SyncedPartition>>,
    cursor: Option<HistoryCursor>,
    bytes: &mut u64,
) -> Result<(Plan, Option<HistoryCursor>), GroupError> {
    let how = spec
        .change_detection
        .unwrap_or(ctx.config.warehouse.change_detection);
    let started = chrono::Utc::now().timestamp_micros();
    let (parts, b) = source::detect(&ctx.warehouse, ctx.dataset(), table, how).await?;
    *bytes += b;
    let forced = forced_partitions(spec, opts, &parts);
    let synced = state.get(spec.target.as_str()).cloned().unwrap_or_default();
    let buffered = table.unpartitioned_waits();
    if how != ChangeDetection::Changes || table.scheme.ingestion_time {
        return Ok((plan::plan(&parts, &synced, &forced, buffered), None));
    }
    let named = match cursor.map(|c| (c, c.window(started))) {
        // No history yet: this listing is the baseline, the history starts here.
        None => None,
        // Not settled yet (BigQuery answers 10 minutes behind): nothing named.
        Some((c, None)) => Some((Vec::new(), c)),
        Some((c, Some((from, to)))) => {
            match source::changed_partitions(&ctx.warehouse, table, from, to).await {
                Ok((ids, b)) => {
                    *bytes += b;
                    Some((ids, c.after(to)))
                }
                Err(e) if !e.transient() => {
                    tracing::warn!(table.name = %spec.target, error = %e, "the change history can't be read; planning from partition metadata and restarting the history");
                    None
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    Ok(match named {
        None => (
            plan::plan(&parts, &synced, &forced, buffered),
            Some(HistoryCursor::after_full_diff(started)),
        ),
        Some((ids, next)) => (
            history_plan(&parts, &synced, &forced, &ids, buffered),
            Some(next),
        ),
    })
}

/// The plan of a change-history window: exactly the partitions the history names (and any
/// `resync` forces) load; those gone from the warehouse are vanished as usual.
fn history_plan(
    parts: &[SourcePartition],
    synced: &[SyncedPartition],
    forced: &[String],
    named: &[String],
    buffered: bool,
) -> Plan {
    // A named partition already loaded since its last modification (an earlier run of the
    // same window that stopped at its time budget) is not loaded again: the window then
    // converges over runs instead of reloading its first batches each time.
    let loaded_since = |id: &String| {
        let now = parts
            .iter()
            .find(|p| &p.id == id)
            .and_then(|p| p.modified_micros);
        let then = synced
            .iter()
            .find(|s| &s.id == id)
            .and_then(|s| s.modified_micros);
        matches!((now, then), (Some(now), Some(then)) if then >= now)
    };
    let named: Vec<String> = named
        .iter()
        .filter(|id| !loaded_since(id))
        .cloned()
        .collect();
    let named = &named;
    let wanted: Vec<String> = forced.iter().chain(named).cloned().collect();
    let mut plan = plan::plan(parts, synced, &wanted, buffered);
    plan.loads.retain(|l| wanted.contains(&l.partition.id));
    for l in &mut plan.loads {
        if named.contains(&l.partition.id) && !forced.contains(&l.partition.id) {
            l.reason = plan::Reason::History;
        }
    }
    plan
}

/// The partitions of the table that `resync` forces.
fn forced_partitions(spec: &TableSpec, opts: &Options, parts: &[SourcePartition]) -> Vec<String> {
    match &opts.force {
        Some((t, Force::All)) if t == &spec.target || t == &spec.source => {
            parts.iter().map(|p| p.id.clone()).collect()
        }
        Some((t, Force::Partitions(ids))) if t == &spec.target || t == &spec.source => ids.clone(),
        _ => Vec::new(),
    }
}

/// Fails the group when more partitions vanished than the table's cap allows, unless
/// --allow-mass-delete (`docs/sync.md#vanished-partitions`).
fn check_vanished(
    ctx: &Context,
    spec: &TableSpec,
    opts: &Options,
    plan: &Plan,
) -> Result<(), GroupError> {
    let cap = spec
        .max_vanished_partitions
        .unwrap_or(ctx.config.partition_sync.max_vanished_partitions);
    if plan.vanished.len() > cap && !opts.allow_mass_delete {
        return Err(GroupError::MassDelete {
            table: spec.target.to_string(),
            count: plan.vanished.len(),
            cap,
            ids: plan.vanished.join(", "),
        });
    }
    Ok(())
}

/// The plan as reported: every partition to load or delete, and why.
pub(crate) fn plan_report(tables: &[(PartitionedSource, Plan)]) -> Vec<PlannedPartition> {
    tables
        .iter()
        .flat_map(|(t, p)| {
            p.loads
                .iter()
                .map(|l| PlannedPartition {
                    table: t.spec.target.to_string(),
                    partition: l.partition.id.clone(),
                    rows: l.partition.rows,
                    action: "load".into(),
                    reason: l.reason.to_string(),
                    estimated_bytes: None,
                    mysql_rows: None,
                    replace: None,
                })
                .chain(p.vanished.iter().map(|id| PlannedPartition {
                    table: t.spec.target.to_string(),
                    partition: id.clone(),
                    rows: 0,
                    action: "delete".into(),
                    reason: "vanished from the warehouse".into(),
                    estimated_bytes: None,
                    mysql_rows: None,
                    replace: None,
                }))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether `--table` (when given) names this table.
fn table_selected(spec: &TableSpec, opts: &Options) -> bool {
    opts.table
        .as_ref()
        .is_none_or(|t| &spec.target == t || &spec.source == t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_window_cut_short_by_the_time_budget_does_not_reload_what_it_loaded() {
        let part = |id: &str, modified| SourcePartition {
            id: id.into(),
            rows: 1,
            modified_micros: Some(modified),
            fingerprint: None,
        };
        let synced = |id: &str, modified| SyncedPartition {
            id: id.into(),
            rows: 1,
            modified_micros: Some(modified),
            fingerprint: None,
        };
        let parts = [part("20260101", 100), part("20260102", 100)];
        // The previous run of this window loaded 20260101 after its last change, not 20260102.
        let state = [synced("20260101", 100), synced("20260102", 50)];
        let named = ["20260101".to_string(), "20260102".to_string()];
        let plan = history_plan(&parts, &state, &[], &named, false);
        let ids: Vec<_> = plan.loads.iter().map(|l| l.partition.id.as_str()).collect();
        assert_eq!(ids, vec!["20260102"]);
        assert_eq!(plan.loads[0].reason, plan::Reason::History);
        // resync still forces it.
        let plan = history_plan(&parts, &state, &["20260101".into()], &named, false);
        assert_eq!(plan.loads.len(), 2);
    }
}
