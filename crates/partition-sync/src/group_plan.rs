//! Step 2 of a group (`docs/architecture.md#partition-sync-sequence`): for each table, ask
//! the warehouse what changed (`docs/sync.md#change-detection`), compare it with the recorded
//! state ([`crate::plan`]), apply `resync`'s forced partitions and the cap on vanished
//! partitions (`docs/sync.md#vanished-partitions`), and report the plan.

use std::collections::BTreeMap;

use domain::config::{Group, TableSpec};

use crate::plan::{self, Plan, SourcePartition, SyncedPartition};
use crate::runner::{Context, Force, GroupError, Options, PlannedPartition};
use crate::source::{self, PartitionedSource};

/// What changed in a group's tables, and each planned table's lag.
pub(crate) struct GroupPlan {
    pub(crate) tables: Vec<(PartitionedSource, Plan)>,
    pub(crate) lag: BTreeMap<String, f64>,
}

/// Step 2: asks the warehouse what changed in each table of the group and plans it. A table
/// filtered out by --table still joins the group's transaction, with nothing to do.
pub(crate) async fn plan_group(
    ctx: &Context,
    group: &Group,
    opts: &Options,
    state: &BTreeMap<String, Vec<SyncedPartition>>,
    bytes: &mut u64,
) -> Result<GroupPlan, GroupError> {
    let mut tables: Vec<(PartitionedSource, Plan)> = Vec::new();
    let now_micros = chrono::Utc::now().timestamp_micros();
    let mut lag = BTreeMap::new();
    for spec in &group.tables {
        let table = source::describe(&ctx.warehouse, ctx.dataset(), spec).await?;
        let plan = if table_selected(spec, opts) {
            let plan = plan_table(ctx, spec, opts, &table, state, bytes).await?;
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
    Ok(GroupPlan { tables, lag })
}

/// Detects the table's partitions and compares them with its recorded state
/// (`docs/sync.md#change-detection`).
async fn plan_table(
    ctx: &Context,
    spec: &TableSpec,
    opts: &Options,
    table: &PartitionedSource,
    state: &BTreeMap<String, Vec<SyncedPartition>>,
    bytes: &mut u64,
) -> Result<Plan, GroupError> {
    let how = spec
        .change_detection
        .unwrap_or(ctx.config.warehouse.change_detection);
    let (parts, b) = source::detect(&ctx.warehouse, ctx.dataset(), table, how).await?;
    *bytes += b;
    let forced = forced_partitions(spec, opts, &parts);
    let synced = state.get(spec.target.as_str()).cloned().unwrap_or_default();
    Ok(plan::plan(
        &parts,
        &synced,
        &forced,
        table.scheme.ingestion_time,
    ))
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
