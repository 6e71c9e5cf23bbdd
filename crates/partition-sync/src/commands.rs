//! `status` and `verify`; `run` and `resync` are in [`crate::runner`], the metrics a run pushes
//! in [`crate::push`].

use std::collections::BTreeMap;

use anyhow::Context as _;

use sync_engine::session;

use crate::plan;
use crate::runner::{selected_groups, Context, Options};
use crate::source;
use crate::state::{last_synced_at, read_state};
use crate::verify::{self, PartitionMismatch};

#[derive(Debug, Clone, serde::Serialize)]
pub struct TableStatus {
    pub table: String,
    pub group: String,
    pub partitions_synced: usize,
    pub rows_synced: i64,
    pub partitions_pending: usize,
    pub partitions_vanished: usize,
    pub last_synced_at: Option<String>,
    pub last_run: Option<String>,
    pub last_run_status: Option<String>,
    /// Seconds since the oldest pending partition was modified (metadata detection only).
    pub lag_seconds: Option<f64>,
    /// The shadow table an interrupted exchange left (`docs/sync.md#exchange`): the next run
    /// of the table drops it and redoes that partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted_exchange: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Per table: partitions synced and pending, lag, last run.
pub async fn status(ctx: &Context, opts: &Options) -> anyhow::Result<Vec<TableStatus>> {
    let url = ctx.mysql_url.clone();
    let groups = selected_groups(&ctx.config, opts)?;
    let targets: Vec<String> = groups
        .iter()
        .flat_map(|g| g.tables.iter().map(|t| t.target.to_string()))
        .collect();
    let t2 = targets.clone();
    type Runs = BTreeMap<String, (Option<String>, Option<String>, Option<String>)>;
    let (state, runs, shadows): (
        BTreeMap<String, Vec<plan::SyncedPartition>>,
        Runs,
        Vec<String>,
    ) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut conn = session::connect(&url).context("connecting to MySQL")?;
        session::ensure_state_tables(&mut conn)?;
        let state = read_state(&mut conn, &t2)?;
        let shadows: Vec<String> = mysql::prelude::Queryable::query(
            &mut conn,
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME LIKE 'sync\\_shadow\\_%'",
        )?;
        let mut runs = BTreeMap::new();
        for t in &t2 {
            let last =
                session::last_run(&mut conn, t, None)?.map(|run| (run.finished_at, run.status));
            let synced = last_synced_at(&mut conn, t)?;
            runs.insert(
                t.clone(),
                (
                    last.as_ref().and_then(|l| l.0.clone()),
                    last.map(|l| l.1),
                    synced,
                ),
            );
        }
        Ok((state, runs, shadows))
    })
    .await??;
    let now = chrono::Utc::now().timestamp_micros();
    let mut out = Vec::new();
    for g in &groups {
        for spec in &g.tables {
            let synced = state.get(spec.target.as_str()).cloned().unwrap_or_default();
            let (last_run, last_status, last_synced) =
                runs.get(spec.target.as_str()).cloned().unwrap_or_default();
            let mut st = TableStatus {
                table: spec.target.to_string(),
                group: g.name.clone(),
                partitions_synced: synced.len(),
                rows_synced: synced.iter().map(|s| s.rows).sum(),
                partitions_pending: 0,
                partitions_vanished: 0,
                last_synced_at: last_synced,
                last_run,
                last_run_status: last_status,
                lag_seconds: None,
                interrupted_exchange: Some(crate::exchange::shadow_name(&spec.target))
                    .filter(|s| shadows.contains(s)),
                error: None,
            };
            let how = spec
                .change_detection
                .unwrap_or(ctx.config.warehouse.change_detection);
            let detected = async {
                let table =
                    source::describe(&ctx.warehouse, &ctx.config.warehouse.dataset, spec).await?;
                let (parts, _) =
                    source::detect(&ctx.warehouse, &ctx.config.warehouse.dataset, &table, how)
                        .await?;
                Ok::<_, source::SourceError>((parts, table.unpartitioned_waits()))
            }
            .await;
            match detected {
                Ok((parts, buffered)) => {
                    let p = plan::plan(&parts, &synced, &[], buffered);
                    st.partitions_pending = p.loads.len();
                    st.partitions_vanished = p.vanished.len();
                    st.lag_seconds = p.lag_seconds(now);
                }
                Err(e) => st.error = Some(e.to_string()),
            }
            out.push(st);
        }
    }
    Ok(out)
}

/// Compares every selected table's partitions between the warehouse and MySQL.
pub async fn verify(ctx: &Context, opts: &Options) -> anyhow::Result<Vec<PartitionMismatch>> {
    let mut mismatches = Vec::new();
    for g in selected_groups(&ctx.config, opts)? {
        for spec in g.tables.iter().filter(|t| {
            opts.table
                .as_ref()
                .is_none_or(|x| x == &t.target || x == &t.source)
        }) {
            let table =
                source::describe(&ctx.warehouse, &ctx.config.warehouse.dataset, spec).await?;
            let wh = verify::warehouse_digests(&ctx.warehouse, &table, None)
                .await
                .map_err(|e| anyhow::anyhow!("table {}: warehouse: {e}", spec.target))?;
            let url = ctx.mysql_url.clone();
            let t = table.clone();
            let my = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let mut conn = session::connect(&url).context("connecting to MySQL")?;
                if session::table_columns(&mut conn, &t.spec.target)?.is_none() {
                    return Ok(BTreeMap::new());
                }
                verify::mysql_digests(&mut conn, &t, None)
                    .with_context(|| format!("table {}: reading MySQL", t.spec.target))
            })
            .await??;
            mismatches.extend(verify::compare(&spec.target, &wh, &my));
        }
    }
    Ok(mismatches)
}
