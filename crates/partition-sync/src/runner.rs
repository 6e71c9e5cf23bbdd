//! Orchestration of a run: per group (`docs/sync.md#groups`), take the advisory lock, read the
//! state, ask the warehouse what changed, export the changed partitions, load them in one
//! transaction, clean the staging prefix (`docs/architecture.md#partition-sync-sequence`). A
//! failing group is reported and the others go on (`docs/architecture.md#error-handling`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use object_store::path::Path;
use object_store::ObjectStore;

use domain::config::{Group, SyncConfig};
use sync_engine::session::{self, MysqlError};
use sync_engine::throttle::{Throttle, ThrottleObserver, ThrottleTally};
use sync_engine::warehouse::Warehouse;

use crate::batches::{self, write_cursors, BatchRun};
use crate::dry_run;
use crate::group_plan::{plan_group, plan_report, GroupPlan};
use crate::load::{LoadError, Progress, TableLoadSummary};
use crate::plan::SyncedPartition;
use crate::source::SourceError;
use crate::state::{read_history, read_state};
use domain::history::HistoryCursor;

/// The progress callback of a run.
pub(crate) type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

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
    /// The longest batch of this process so far: no batch starts when one as long would end
    /// after the run's deadline (`docs/sync.md#batches`), whichever group it belongs to.
    pub(crate) longest_batch: std::sync::Mutex<Duration>,
    /// What the throttles of this process saw (`docs/sync.md#throttling`).
    pub throttle_tally: Arc<ThrottleTally>,
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
            longest_batch: std::sync::Mutex::new(Duration::ZERO),
            throttle_tally: Arc::new(ThrottleTally::default()),
        })
    }

    pub(crate) fn dataset(&self) -> &str {
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
    /// Stop starting batches this many seconds after the run began (default:
    /// `partition_sync.max_run_secs`).
    pub max_run_secs: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedPartition {
    pub table: String,
    pub partition: String,
    /// Warehouse rows the load would insert (0 for a delete).
    pub rows: i64,
    pub action: String,
    pub reason: String,
    /// `--dry-run`: the bytes the partition's export would process (a BigQuery dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_bytes: Option<u64>,
    /// `--dry-run`: the MySQL rows of the partition today, which the load or delete replaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mysql_rows: Option<u64>,
    /// `--dry-run`, loads: how the partition would be replaced, `exchange` (a shadow table
    /// swapped in) or `transaction` (DELETE + load in the batch's transaction).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace: Option<&'static str>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupReport {
    pub group: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
    pub tables: Vec<TableLoadSummary>,
    pub plan: Vec<PlannedPartition>,
    /// Lag per table: seconds since the oldest unsynced modification (metadata detection).
    #[serde(skip)]
    pub lag_seconds: BTreeMap<String, f64>,
    /// Every target table of the group.
    #[serde(skip)]
    pub targets: Vec<String>,
    /// Per table: planned partitions left for a later run (`--max-run-secs` came).
    pub partitions_pending: BTreeMap<String, usize>,
    /// Per table: loaded partitions whose MySQL rows differed from the warehouse's after
    /// commit (a `drift` failure).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub drift_partitions: BTreeMap<String, usize>,
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
    /// Planned partitions left for a later run (status `partial` groups).
    pub partitions_pending: usize,
    /// Seconds the run paused to protect MySQL, by reason (`threads_running`,
    /// `replica_lag`; `docs/sync.md#throttling`).
    pub throttled_seconds: BTreeMap<String, f64>,
    /// The highest lag read on each configured replica during the run.
    pub replica_lag_max_seconds: BTreeMap<String, f64>,
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
    /// After commit, these partitions' rows in MySQL differ from the warehouse's; their
    /// watermarks were forgotten, so the next run reloads them.
    #[error("drift after load: {}", describe_drift(.0))]
    Drift(Vec<crate::verify::PartitionMismatch>),
    #[error("{0}")]
    Other(String),
}

impl GroupError {
    /// A MySQL failure that may pass: worth running the group again.
    pub fn mysql_transient(&self) -> bool {
        matches!(self, GroupError::Load(l) if l.transient())
    }

    /// The run's deadline came while a load paused to protect MySQL: the batch rolled back
    /// and waits for the next run (`docs/sync.md#batches`).
    pub fn past_deadline(&self) -> bool {
        matches!(
            self,
            GroupError::Load(LoadError::Sink {
                source: MysqlError::PastDeadline(_),
                ..
            })
        )
    }

    pub fn kind(&self) -> &'static str {
        match self {
            GroupError::Locked(_) => "locked",
            GroupError::Source(_) => "warehouse",
            GroupError::Load(l) => l.kind(),
            GroupError::MassDelete { .. } => "mass_delete",
            GroupError::Staging(_) => "staging",
            GroupError::Drift(_) => "drift",
            GroupError::Other(_) => "internal",
        }
    }
}

fn describe_drift(m: &[crate::verify::PartitionMismatch]) -> String {
    m.iter()
        .map(|d| {
            format!(
                "table {}, partition {}: {} (warehouse {} rows, MySQL {})",
                d.table, d.partition, d.detail, d.warehouse_rows, d.mysql_rows
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn blocking_err(e: tokio::task::JoinError) -> GroupError {
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
            Some((index, count)) if count > 1 => domain::shard::owns(&g.name, index, count),
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

/// Runs every selected group. Never fails as a whole: each group's error is in its report.
pub async fn run(
    ctx: &Context,
    opts: &Options,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let max_run = opts
        .max_run_secs
        .unwrap_or(ctx.config.partition_sync.max_run_secs);
    let deadline = started + Duration::from_secs(max_run);
    let run_id = new_run_id();
    let groups = selected_groups(&ctx.config, opts)?;
    ctx.throttle_tally.take();
    // One throttle (and heartbeat) for the whole run, started by the first group with work.
    let throttle = tokio::sync::Mutex::new(None);
    let scope = RunScope {
        run_id: &run_id,
        deadline,
        throttle: &throttle,
    };
    let mut reports = Vec::new();
    let mut bytes = 0u64;
    for group in &groups {
        let span = tracing::info_span!("group", group.name = %group.name, run.id = %run_id);
        let _enter = span.enter();
        let result = run_group_retrying(ctx, group, opts, &scope, &progress, &mut bytes).await;
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(error = %e, kind = e.kind(), "group failed; its failed batch rolled back (batches committed before it stay)");
                failed_report(group, &e)
            }
        };
        reports.push(report);
    }
    let sum = |f: &dyn Fn(&TableLoadSummary) -> u64| {
        reports
            .iter()
            .flat_map(|g| g.tables.iter())
            .map(f)
            .sum::<u64>()
    };
    drop(throttle);
    let (throttled, lag_max) = ctx.throttle_tally.take();
    Ok(RunSummary {
        ok: reports.iter().all(|g| g.status != "failed"),
        dry_run: opts.dry_run,
        duration_ms: started.elapsed().as_millis() as u64,
        warehouse_bytes_processed: bytes,
        partitions_loaded: sum(&|t| t.partitions_loaded as u64) as usize,
        partitions_removed: sum(&|t| t.partitions_removed as u64) as usize,
        rows_loaded: sum(&|t| t.rows_loaded),
        rows_deleted: sum(&|t| t.rows_deleted),
        partitions_pending: reports
            .iter()
            .flat_map(|g| g.partitions_pending.values())
            .sum(),
        throttled_seconds: throttled
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        replica_lag_max_seconds: lag_max,
        groups: reports,
        run_id,
    })
}

/// What every group of a run shares: its id, its deadline, its throttle.
struct RunScope<'a> {
    run_id: &'a str,
    /// No batch starts after it; no throttle pause lasts past it.
    deadline: Instant,
    /// Started by the first group that loads; errors are not kept (the next group tries
    /// again).
    throttle: &'a tokio::sync::Mutex<Option<Arc<Throttle>>>,
}

impl RunScope<'_> {
    /// The run's throttle, started on first use.
    async fn throttle(&self, ctx: &Context) -> Result<Arc<Throttle>, GroupError> {
        let mut slot = self.throttle.lock().await;
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let t = start_throttle(ctx, self.deadline).await?;
        *slot = Some(t.clone());
        Ok(t)
    }

    /// Forgets the throttle: the next group (or retry) starts a fresh one, which reads the
    /// primary's `@@server_id` again (after a failover the heartbeat row is another's).
    async fn restart_throttle(&self) {
        *self.throttle.lock().await = None;
    }
}

/// Starts the throttle the batches wait on (`docs/sync.md#throttling`): with replicas
/// configured, it writes the heartbeat until the run is done (its sessions reconnect after
/// an error, so a group's retry reuses it). No pause lasts past the run's deadline.
async fn start_throttle(ctx: &Context, deadline: Instant) -> Result<Arc<Throttle>, GroupError> {
    let settings = ctx.config.throttle.clone();
    let url = ctx.mysql_url.clone();
    let tally: Arc<dyn ThrottleObserver> = ctx.throttle_tally.clone();
    tokio::task::spawn_blocking(move || {
        Throttle::start(&settings, &url, tally).map(|t| t.until(deadline))
    })
    .await
    .map_err(blocking_err)?
    .map(Arc::new)
    .map_err(|source| {
        GroupError::Load(LoadError::Sink {
            context: "starting the throttle".into(),
            source,
        })
    })
}

/// Runs a group, and again from the start after a transient MySQL failure (lost connection,
/// deadlock, lock wait timeout, server restarting), up to `GROUP_ATTEMPTS` attempts: a group
/// is atomic and idempotent (`docs/sync.md#guarantees`). Warehouse calls are already retried
/// inside `Warehouse`.
async fn run_group_retrying(
    ctx: &Context,
    group: &Group,
    opts: &Options,
    scope: &RunScope<'_>,
    progress: &ProgressFn,
    bytes: &mut u64,
) -> Result<GroupReport, GroupError> {
    let mut attempt = 1;
    loop {
        match run_group(ctx, group, opts, scope, progress.clone(), bytes).await {
            Err(e) if e.mysql_transient() && attempt < GROUP_ATTEMPTS => {
                scope.restart_throttle().await;
                let delay = sync_engine::retry::backoff(attempt + 2);
                tracing::warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "group failed on a transient MySQL error; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// One attempt at a group, as the steps of `docs/architecture.md#partition-sync-sequence`:
/// lock and read the state, plan, export, load, clean the staging prefix.
async fn run_group(
    ctx: &Context,
    group: &Group,
    opts: &Options,
    scope: &RunScope<'_>,
    progress: ProgressFn,
    bytes: &mut u64,
) -> Result<GroupReport, GroupError> {
    let LockedGroup {
        mut conn,
        lock,
        state,
        history,
    } = lock_group(ctx, group).await?;
    let GroupPlan {
        tables,
        lag,
        history: cursors,
    } = plan_group(ctx, group, opts, &state, &history, bytes).await?;
    let mut plan = plan_report(&tables);
    if opts.dry_run || tables.iter().all(|(_, p)| p.is_empty()) {
        if opts.dry_run {
            conn = dry_run::estimate(ctx, &tables, &mut plan, conn).await?;
        }
        let record = !opts.dry_run;
        tokio::task::spawn_blocking(move || {
            let written = if record {
                write_cursors(&mut conn, &cursors)
            } else {
                Ok(())
            };
            let _ = session::release_lock(&mut conn, &lock);
            written
        })
        .await
        .map_err(blocking_err)??;
        let status = if opts.dry_run { "planned" } else { "unchanged" };
        return Ok(group_report(group, status, Vec::new(), plan, lag));
    }
    let run = BatchRun {
        ctx,
        run_id: scope.run_id,
        progress: &progress,
        deadline: scope.deadline,
        throttle: scope.throttle(ctx).await?,
    };
    let done = batches::run_batches(&run, tables, (conn, lock), cursors, bytes).await?;
    let status = if !done.bad.is_empty() {
        "failed"
    } else if done.pending.values().all(|n| *n == 0) {
        "ok"
    } else {
        "partial"
    };
    let mut report = group_report(group, status, done.outcomes, plan, lag);
    report.partitions_pending = done.pending;
    if let Some(first) = done.bad.first() {
        // The group failed (exit 1) with every partition a bad row failed; the rest loaded.
        let all: Vec<String> = done.bad.iter().map(ToString::to_string).collect();
        report.error = Some(all.join("; "));
        report.error_kind = Some(first.kind());
    }
    Ok(report)
}

/// A group's advisory lock, held by the session that took it, and the group's recorded state.
struct LockedGroup {
    conn: mysql::Conn,
    lock: String,
    state: BTreeMap<String, Vec<SyncedPartition>>,
    /// Change-history cursors (`change_detection = "changes"`).
    history: BTreeMap<String, HistoryCursor>,
}

/// Step 1: takes the group's advisory lock and reads the group's state. The lock lives as long
/// as the returned connection.
async fn lock_group(ctx: &Context, group: &Group) -> Result<LockedGroup, GroupError> {
    let url = ctx.mysql_url.clone();
    let group_name = group.name.clone();
    let targets = targets(group);
    let timeout = Duration::from_secs(ctx.config.partition_sync.lock_timeout_secs);
    tokio::task::spawn_blocking(move || -> Result<_, GroupError> {
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
        let history = read_history(&mut conn, &targets)
            .map_err(sink_err("reading the change-history state"))?;
        Ok(LockedGroup {
            conn,
            lock,
            state,
            history,
        })
    })
    .await
    .map_err(blocking_err)?
}

/// Every target table of the group.
fn targets(group: &Group) -> Vec<String> {
    group.tables.iter().map(|t| t.target.to_string()).collect()
}

/// The report of a group that did not fail.
fn group_report(
    group: &Group,
    status: &'static str,
    tables: Vec<TableLoadSummary>,
    plan: Vec<PlannedPartition>,
    lag: BTreeMap<String, f64>,
) -> GroupReport {
    GroupReport {
        group: group.name.clone(),
        status,
        error: None,
        error_kind: None,
        tables,
        plan,
        lag_seconds: lag,
        partitions_pending: BTreeMap::new(),
        drift_partitions: BTreeMap::new(),
        targets: targets(group),
    }
}

/// The report of a group that failed: its failed batch rolled back (earlier batches stay).
fn failed_report(group: &Group, e: &GroupError) -> GroupReport {
    let mut drift_partitions = BTreeMap::new();
    if let GroupError::Drift(mismatches) = e {
        for m in mismatches {
            *drift_partitions.entry(m.table.clone()).or_insert(0) += 1;
        }
    }
    GroupReport {
        group: group.name.clone(),
        status: "failed",
        error: Some(e.to_string()),
        error_kind: Some(e.kind()),
        tables: Vec::new(),
        plan: Vec::new(),
        lag_seconds: BTreeMap::new(),
        partitions_pending: BTreeMap::new(),
        drift_partitions,
        targets: targets(group),
    }
}

/// Attempts of a group that fails on transient MySQL errors.
const GROUP_ATTEMPTS: u32 = 3;

/// The advisory lock of a group: per database, so runs against different databases on one
/// server never wait for each other.
pub fn lock_name(database: &str, group: &str) -> String {
    format!("partition-sync:{database}:{group}")
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
