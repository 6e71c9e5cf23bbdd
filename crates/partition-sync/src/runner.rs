//! Orchestration of a run: per group, take the advisory lock, read the state, ask the
//! warehouse what changed, export the changed partitions, load them in one transaction, clean
//! the staging prefix. A failing group is reported and the others go on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use mysql::prelude::Queryable;
use object_store::path::Path;
use object_store::ObjectStore;

use domain::config::{Group, SyncConfig, TableSpec};
use sync_engine::session;
use sync_engine::warehouse::Warehouse;

use crate::load::{self, LoadError, PartitionLoad, Progress, TableOutcome, TableWork};
use crate::plan::{self, Plan, SyncedPartition};
use crate::source::{self, SourceError, SourceTable};

/// Everything a run needs, built once from the config.
pub struct Context {
    pub config: SyncConfig,
    pub mysql_url: String,
    pub warehouse: Warehouse,
    /// Where the warehouse exports to (`gs://bucket/prefix`).
    pub export_uri: String,
    /// Where the exports are read from, and the path inside it matching `export_uri`.
    pub store: Arc<dyn ObjectStore>,
    pub store_prefix: Path,
    pub format: domain::config::StagingFormat,
}

impl Context {
    pub async fn new(config: SyncConfig) -> anyhow::Result<Context> {
        let mysql_url = config.mysql_url()?;
        let warehouse = Warehouse::from_config(&config.warehouse)
            .await
            .context("building the BigQuery client")?;
        let staging = match (&config.staging, config.groups().is_empty()) {
            (Some(s), _) => s.clone(),
            // Nothing to export (a config for stream-sync only): a scratch directory will do.
            (None, true) => domain::config::StagingConfig {
                uri: "gs://unused/partition-sync".into(),
                format: domain::config::StagingFormat::Json,
                endpoint: None,
                local_root: Some(std::env::temp_dir().display().to_string()),
                keep_files: false,
            },
            (None, false) => anyhow::bail!(
                "config has no [staging] section: partition-sync exports partitions through it"
            ),
        };
        let export_uri = staging.uri.trim_end_matches('/').to_string();
        let rest = export_uri
            .strip_prefix("gs://")
            .context("staging.uri must be gs://bucket/prefix")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let (store, store_prefix) = match &staging.local_root {
            Some(root) => {
                let s = sync_engine::staging::open(
                    &format!("{}/{bucket}", root.trim_end_matches('/')),
                    None,
                )?;
                (s.store, Path::from(prefix))
            }
            None => {
                let s = sync_engine::staging::open(&export_uri, staging.endpoint.as_deref())?;
                (s.store, s.prefix)
            }
        };
        Ok(Context {
            config,
            mysql_url,
            warehouse,
            export_uri,
            store,
            store_prefix,
            format: staging.format,
        })
    }

    fn dataset(&self) -> &str {
        &self.config.warehouse.dataset
    }
}

/// Which partitions `resync` forces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Force {
    All,
    Partitions(Vec<String>),
}

/// Options of `run` (and `resync`).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub group: Option<String>,
    pub table: Option<String>,
    pub dry_run: bool,
    /// Allow removing more vanished partitions than the configured cap.
    pub allow_mass_delete: bool,
    /// Forced reloads for one table.
    pub force: Option<(String, Force)>,
    /// Indexed-Job sharding: (index, count).
    pub shard: Option<(u64, u64)>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedPartition {
    pub table: String,
    pub partition: String,
    pub rows: i64,
    pub action: String,
    pub reason: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupReport {
    pub group: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
    pub tables: Vec<TableOutcome>,
    pub plan: Vec<PlannedPartition>,
    /// Lag per table: seconds since the oldest unsynced modification (metadata detection).
    #[serde(skip)]
    pub lag_seconds: BTreeMap<String, f64>,
    /// Every target table of the group.
    #[serde(skip)]
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub ok: bool,
    pub dry_run: bool,
    pub duration_ms: u64,
    pub warehouse_bytes_processed: u64,
    pub partitions_loaded: usize,
    pub partitions_removed: usize,
    pub rows_loaded: u64,
    pub rows_deleted: u64,
    pub groups: Vec<GroupReport>,
}

/// Errors of one group.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("group {0} is locked by another run")]
    Locked(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("table {table}: {count} partitions vanished from the warehouse ({ids}), more than the cap of {cap}; check the source, then rerun with --allow-mass-delete")]
    MassDelete {
        table: String,
        count: usize,
        cap: usize,
        ids: String,
    },
    #[error("staging: {0}")]
    Staging(String),
    #[error("{0}")]
    Other(String),
}

impl GroupError {
    /// A MySQL failure that may pass: worth running the group again.
    pub fn mysql_transient(&self) -> bool {
        matches!(self, GroupError::Load(l) if l.transient())
    }

    pub fn kind(&self) -> &'static str {
        match self {
            GroupError::Locked(_) => "locked",
            GroupError::Source(_) => "warehouse",
            GroupError::Load(l) => l.kind(),
            GroupError::MassDelete { .. } => "mass_delete",
            GroupError::Staging(_) => "staging",
            GroupError::Other(_) => "internal",
        }
    }
}

fn blocking_err(e: tokio::task::JoinError) -> GroupError {
    GroupError::Other(format!("worker thread failed: {e}"))
}

/// Groups selected by the options (and the Indexed-Job shard).
pub fn selected_groups(config: &SyncConfig, opts: &Options) -> anyhow::Result<Vec<Group>> {
    let groups = config.groups();
    if let Some(g) = &opts.group {
        if !groups.iter().any(|x| &x.name == g) {
            anyhow::bail!(
                "no group `{g}` in the config (groups: {})",
                groups
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if let Some(t) = &opts.table {
        if !groups
            .iter()
            .any(|x| x.tables.iter().any(|s| &s.target == t || &s.source == t))
        {
            anyhow::bail!("no partition table `{t}` in the config");
        }
    }
    Ok(groups
        .into_iter()
        .filter(|g| opts.group.as_ref().is_none_or(|n| n == &g.name))
        .filter(|g| {
            opts.table
                .as_ref()
                .is_none_or(|t| g.tables.iter().any(|s| &s.target == t || &s.source == t))
        })
        .filter(|g| match opts.shard {
            Some((index, count)) if count > 1 => {
                domain::canon::fnv1a(g.name.as_bytes()) % count == index
            }
            _ => true,
        })
        .collect())
}

/// A short, sortable run id: UTC time plus randomness.
pub fn new_run_id() -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        &uuid[..8]
    )
}

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

/// Runs every selected group. Never fails as a whole: each group's error is in its report.
pub async fn run(
    ctx: &Context,
    opts: &Options,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let run_id = new_run_id();
    let groups = selected_groups(&ctx.config, opts)?;
    let mut reports = Vec::new();
    let mut bytes = 0u64;
    for group in &groups {
        let span = tracing::info_span!("group", group.name = %group.name, run.id = %run_id);
        let _enter = span.enter();
        // A group is atomic and idempotent, so a transient MySQL failure (lost connection,
        // deadlock, lock wait timeout, server restarting) is retried after a pause. Warehouse
        // calls are already retried inside `Warehouse`.
        let mut attempt = 1;
        let result = loop {
            match run_group(ctx, group, opts, &run_id, progress.clone(), &mut bytes).await {
                Err(e) if e.mysql_transient() && attempt < GROUP_ATTEMPTS => {
                    let delay = sync_engine::retry::backoff(attempt + 2);
                    tracing::warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "group failed on a transient MySQL error; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(error = %e, kind = e.kind(), "group failed; MySQL is unchanged for it");
                GroupReport {
                    group: group.name.clone(),
                    status: "failed",
                    error: Some(e.to_string()),
                    error_kind: Some(e.kind()),
                    tables: Vec::new(),
                    plan: Vec::new(),
                    lag_seconds: BTreeMap::new(),
                    targets: group.tables.iter().map(|t| t.target.clone()).collect(),
                }
            }
        };
        reports.push(report);
    }
    let sum = |f: &dyn Fn(&TableOutcome) -> u64| {
        reports
            .iter()
            .flat_map(|g| g.tables.iter())
            .map(f)
            .sum::<u64>()
    };
    Ok(RunSummary {
        ok: reports.iter().all(|g| g.status != "failed"),
        dry_run: opts.dry_run,
        duration_ms: started.elapsed().as_millis() as u64,
        warehouse_bytes_processed: bytes,
        partitions_loaded: sum(&|t| t.partitions_loaded as u64) as usize,
        partitions_removed: sum(&|t| t.partitions_removed as u64) as usize,
        rows_loaded: sum(&|t| t.rows_loaded),
        rows_deleted: sum(&|t| t.rows_deleted),
        groups: reports,
        run_id,
    })
}

fn table_selected(spec: &TableSpec, opts: &Options) -> bool {
    opts.table
        .as_ref()
        .is_none_or(|t| &spec.target == t || &spec.source == t)
}

async fn run_group(
    ctx: &Context,
    group: &Group,
    opts: &Options,
    run_id: &str,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
    bytes: &mut u64,
) -> Result<GroupReport, GroupError> {
    // 1. Lock the group and read its state. The lock lives as long as this connection.
    let url = ctx.mysql_url.clone();
    let group_name = group.name.clone();
    let targets: Vec<String> = group.tables.iter().map(|t| t.target.clone()).collect();
    let timeout = Duration::from_secs(ctx.config.partition_sync.lock_timeout_secs);
    let (mut conn, state, lock) = tokio::task::spawn_blocking(move || -> Result<_, GroupError> {
        let sink_err = |context: &str| {
            let context = context.to_string();
            move |source| GroupError::Load(LoadError::Sink { context, source })
        };
        let mut conn = session::connect(&url).map_err(sink_err("connecting to MySQL"))?;
        let database =
            session::current_database(&mut conn).map_err(sink_err("reading the database name"))?;
        let lock = lock_name(&database, &group_name);
        if !session::get_lock(&mut conn, &lock, timeout)
            .map_err(sink_err("taking the group lock"))?
        {
            return Err(GroupError::Locked(group_name));
        }
        session::ensure_state_tables(&mut conn).map_err(sink_err("creating the state tables"))?;
        let state = read_state(&mut conn, &targets).map_err(sink_err("reading the sync state"))?;
        Ok((conn, state, lock))
    })
    .await
    .map_err(blocking_err)??;

    // 2. Ask the warehouse what changed. A table filtered out by --table still joins the
    // group's transaction, with nothing to do.
    let mut planned: Vec<(SourceTable, Plan)> = Vec::new();
    let now_micros = chrono::Utc::now().timestamp_micros();
    let mut lag = BTreeMap::new();
    for spec in &group.tables {
        let table = source::describe(&ctx.warehouse, ctx.dataset(), spec).await?;
        let plan = if table_selected(spec, opts) {
            let how = spec
                .change_detection
                .unwrap_or(ctx.config.warehouse.change_detection);
            let (parts, b) = source::detect(&ctx.warehouse, ctx.dataset(), &table, how).await?;
            *bytes += b;
            let forced: Vec<String> = match &opts.force {
                Some((t, Force::All)) if t == &spec.target || t == &spec.source => {
                    parts.iter().map(|p| p.id.clone()).collect()
                }
                Some((t, Force::Partitions(ids))) if t == &spec.target || t == &spec.source => {
                    ids.clone()
                }
                _ => Vec::new(),
            };
            let synced = state.get(&spec.target).cloned().unwrap_or_default();
            let plan = plan::plan(&parts, &synced, &forced);
            lag.insert(
                spec.target.clone(),
                plan.lag_seconds(now_micros).unwrap_or(0.0),
            );
            plan
        } else {
            Plan::default()
        };
        let cap = spec
            .max_vanished_partitions
            .unwrap_or(ctx.config.partition_sync.max_vanished_partitions);
        if plan.vanished.len() > cap && !opts.allow_mass_delete {
            return Err(GroupError::MassDelete {
                table: spec.target.clone(),
                count: plan.vanished.len(),
                cap,
                ids: plan.vanished.join(", "),
            });
        }
        planned.push((table, plan));
    }
    let plan_report: Vec<PlannedPartition> = planned
        .iter()
        .flat_map(|(t, p)| {
            p.loads
                .iter()
                .map(|l| PlannedPartition {
                    table: t.spec.target.clone(),
                    partition: l.partition.id.clone(),
                    rows: l.partition.rows,
                    action: "load".into(),
                    reason: l.reason.to_string(),
                })
                .chain(p.vanished.iter().map(|id| PlannedPartition {
                    table: t.spec.target.clone(),
                    partition: id.clone(),
                    rows: 0,
                    action: "delete".into(),
                    reason: "vanished from the warehouse".into(),
                }))
                .collect::<Vec<_>>()
        })
        .collect();
    let nothing = planned.iter().all(|(_, p)| p.is_empty());
    if opts.dry_run || nothing {
        let _ = tokio::task::spawn_blocking(move || session::release_lock(&mut conn, &lock)).await;
        return Ok(GroupReport {
            group: group.name.clone(),
            status: if opts.dry_run { "planned" } else { "unchanged" },
            error: None,
            error_kind: None,
            tables: Vec::new(),
            plan: plan_report,
            lag_seconds: lag,
            targets: group.tables.iter().map(|t| t.target.clone()).collect(),
        });
    }

    // 3. Export the changed partitions, a few at a time (each is a warehouse job), and
    // 4. load the group in one transaction. The staging files are cleaned either way.
    let exported_and_loaded = async {
        let mut work = Vec::new();
        let to_export: usize = planned.iter().map(|(_, p)| p.loads.len()).sum();
        let started = std::sync::atomic::AtomicUsize::new(0);
        for (table, plan) in planned {
            let exports = futures::stream::iter(plan.loads.iter().map(|l| {
                let (table, started, progress) = (&table, &started, &progress);
                async move {
                    let done = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    progress(Progress::Exporting {
                        table: table.spec.target.clone(),
                        partition: l.partition.id.clone(),
                        done,
                        total: to_export,
                    });
                    let rel = format!("{run_id}/{}/{}", table.spec.target, l.partition.id);
                    let uri = format!("{}/{rel}", ctx.export_uri);
                    tracing::debug!(table.name = %table.spec.target, partition.id = %l.partition.id, reason = %l.reason, "exporting");
                    let b = source::export(&ctx.warehouse, table, &l.partition.id, &uri, ctx.format).await?;
                    let prefix = join(&ctx.store_prefix, &rel);
                    let mut files: Vec<Path> = ctx
                        .store
                        .list(Some(&prefix))
                        .map_ok(|m| m.location)
                        .try_collect()
                        .await
                        .map_err(|e| GroupError::Staging(format!("listing {uri}: {e}")))?;
                    files.sort();
                    Ok::<_, GroupError>((b, PartitionLoad { partition: l.partition.clone(), reason: l.reason, files }))
                }
            }))
            .buffered(EXPORT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
            let mut loads = Vec::new();
            for e in exports {
                let (b, load) = e?;
                *bytes += b;
                loads.push(load);
            }
            work.push(TableWork { table, loads, vanished: plan.vanished });
        }

        let store = ctx.store.clone();
        let rt = tokio::runtime::Handle::current();
        let run = run_id.to_string();
        let loader = ctx.config.partition_sync.loader;
        let progress = progress.clone();
        let outcomes = tokio::task::spawn_blocking(move || -> Result<Vec<TableOutcome>, LoadError> {
            let mut work = work;
            for w in &mut work {
                load::ensure_target(&mut conn, &mut w.table)?;
                if w.table.spec.mysql_partitioning {
                    let ids: Vec<String> = w.loads.iter().map(|l| l.partition.id.clone()).collect();
                    load::ensure_mysql_partitions(&mut conn, &w.table, &ids)?;
                }
            }
            let result = load::load_group(&mut conn, &store, &rt, &run, &work, loader, &*progress);
            let _ = session::release_lock(&mut conn, &lock);
            result
        })
        .await
        .map_err(blocking_err)??;
        Ok::<_, GroupError>(outcomes)
    }
    .await;

    // 5. Clean the run's staging prefix (best effort: a lifecycle rule can do it too).
    let keep = ctx.config.staging.as_ref().is_some_and(|s| s.keep_files);
    if !keep {
        let prefix = join(&ctx.store_prefix, run_id);
        let paths: Vec<Path> = ctx
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .unwrap_or_default();
        for p in paths {
            if let Err(e) = ctx.store.delete(&p).await {
                tracing::warn!(error = %e, path = %p, "could not delete a staging file");
            }
        }
    }
    let outcomes = exported_and_loaded?;
    Ok(GroupReport {
        group: group.name.clone(),
        status: "ok",
        error: None,
        error_kind: None,
        tables: outcomes,
        plan: plan_report,
        lag_seconds: lag,
        targets: group.tables.iter().map(|t| t.target.clone()).collect(),
    })
}

/// Attempts of a group that fails on transient MySQL errors.
const GROUP_ATTEMPTS: u32 = 3;

/// Export jobs of one table that run at once.
const EXPORT_CONCURRENCY: usize = 4;

/// The advisory lock of a group: per database, so runs against different databases on one
/// server never wait for each other.
pub fn lock_name(database: &str, group: &str) -> String {
    format!("partition-sync:{database}:{group}")
}

fn join(prefix: &Path, rel: &str) -> Path {
    if prefix.as_ref().is_empty() {
        Path::from(rel)
    } else {
        Path::from(format!("{}/{rel}", prefix.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_job_pods_split_the_groups_between_them() {
        let tables: String = (0..12)
            .map(|i| format!("[[tables]]\nsource='t{i}'\ntarget='t{i}'\nmode='partition'\npartition_column='d'\n"))
            .collect();
        let config = SyncConfig::parse(
            &format!("[mysql]\n[warehouse]\nproject='p'\ndataset='d'\n{tables}"),
            "t",
        )
        .unwrap();
        let names = |shard| -> Vec<String> {
            selected_groups(
                &config,
                &Options {
                    shard,
                    ..Options::default()
                },
            )
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect()
        };
        let all = names(None);
        assert_eq!(all.len(), 12);
        let mut split: Vec<String> = (0..3).flat_map(|i| names(Some((i, 3)))).collect();
        split.sort();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(split, sorted, "every group in exactly one pod");
        assert!(
            (0..3).all(|i| names(Some((i, 3))).len() < 12),
            "no pod takes every group"
        );
        assert_eq!(names(Some((0, 1))), all);
    }
}
