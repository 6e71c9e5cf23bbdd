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
    let buffered = table.scheme.ingestion_time;
    if how != ChangeDetection::Changes || buffered {
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
        Some((ids, next)) => (history_plan(&parts, &synced, &forced, &ids), Some(next)),
    })
}

/// The plan of a change-history window: exactly the partitions the history names (and any
/// `resync` forces) load; those gone from the warehouse are vanished as usual.
fn history_plan(
    parts: &[SourcePartition],
    synced: &[SyncedPartition],
    forced: &[String],
    named: &[String],
) -> Plan {
    let wanted: Vec<String> = forced.iter().chain(named).cloned().collect();
    let mut plan = plan::plan(parts, synced, &wanted, false);
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
                })
                .chain(p.vanished.iter().map(|id| PlannedPartition {
                    table: t.spec.target.to_string(),
                    partition: id.clone(),
                    rows: 0,
                    action: "delete".into(),
                    reason: "vanished from the warehouse".into(),
                    estimated_bytes: None,
                    mysql_rows: None,
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
