//! The daemon around the cycles: one MySQL session per table (holding the table's advisory
//! lock), due times per table, retries of transient errors with capped exponential backoff and
//! jitter, permanent errors that stop only their table, SIGTERM between batches, status for
//! `/healthz` and the `status` command, and the run history in `sync_runs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use domain::config::{SyncConfig, TableSpec};
use mysql::Conn;
use sync_engine::session::{self, connect, ensure_state_tables, get_lock, MysqlError, RunRecord};
use sync_engine::throttle::Throttle;
use sync_engine::warehouse::Warehouse;

use crate::cycle::{self, CycleReport, CycleSettings, Env, TableState};
use crate::metrics::Metrics;
use crate::verify::{self, Mismatch};
use domain::fault::PERMANENT_RECHECK;

use crate::{blocking, plan, source, target, ErrorKind, SyncError};

/// Per-table state shown by `/healthz`.
pub type Health = Arc<Mutex<BTreeMap<String, String>>>;

/// How long to run.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// One successful cycle per table (transient errors retried up to `max_attempts`).
    Once { max_attempts: u32 },
    /// Until shutdown, a cycle per table every `interval`.
    Forever { interval: Duration },
}

/// How a table's run ended (`Mode::Once`) or its last cycle (`Mode::Forever`).
#[derive(Debug)]
pub struct TableOutcome {
    pub table: String,
    pub report: CycleReport,
    pub error: Option<(ErrorKind, String)>,
}

struct TableRun {
    state: TableState,
    conn: Option<Conn>,
    attempt: u32,
    due: Instant,
    done: bool,
    /// Stopped by a permanent error; the daemon re-checks it after `Runner::permanent_recheck`.
    parked: bool,
    last: Option<TableOutcome>,
}

/// Runs the stream tables of one config.
pub struct Runner {
    warehouse: Warehouse,
    dataset: String,
    settings: CycleSettings,
    mysql_url: String,
    tables: Vec<TableRun>,
    pub metrics: Metrics,
    pub health: Health,
    shutdown: Arc<AtomicBool>,
    /// How long a parked table waits before its re-check ([`PERMANENT_RECHECK`]).
    permanent_recheck: Duration,
    /// Protects MySQL between write batches; connects on its first check.
    throttle: Arc<Throttle>,
}

impl Runner {
    /// Builds the warehouse client and the table list (`only`: one target). Connects nowhere
    /// yet: an unreachable MySQL is a transient error of the first cycle.
    pub async fn new(
        config: &SyncConfig,
        mysql_url: String,
        settings: CycleSettings,
        only: Option<&str>,
    ) -> anyhow::Result<Runner> {
        let warehouse = Warehouse::from_config(&config.warehouse)
            .await
            .context("Failed to build the BigQuery client")?;
        let specs: Vec<TableSpec> = config
            .stream_tables()
            .into_iter()
            .filter(|t| only.is_none_or(|o| *o == t.target || *o == t.source))
            // A table named explicitly is synced whichever shard owns it.
            .filter(|t| {
                let (index, count) = settings.shard;
                only.is_some() || domain::shard::owns(&t.target, index, count)
            })
            .collect();
        if settings.shard.1 > 1 && only.is_none() {
            let names: Vec<&str> = specs.iter().map(|t| t.target.as_str()).collect();
            tracing::info!(
                shard = settings.shard.0,
                shards = settings.shard.1,
                tables = ?names,
                "this shard's tables"
            );
        }
        if let Some(o) = only {
            anyhow::ensure!(
                !specs.is_empty(),
                "no table with mode = \"stream\" and target or source `{o}` in the config"
            );
        }
        let metrics = Metrics::new().context("Failed to register metrics")?;
        let throttle = Arc::new(
            Throttle::lazy(&config.throttle, &mysql_url, Arc::new(metrics.clone()))
                .context("Failed to read the DSN of a replica the throttle watches")?,
        );
        let health: Health = Arc::default();
        let now = Instant::now();
        let tables = specs
            .into_iter()
            .map(|spec| {
                metrics.set_up(&spec.target, true);
                if let Ok(mut h) = health.lock() {
                    h.insert(spec.target.to_string(), "starting".into());
                }
                let mut state = TableState::new(spec.clone());
                state.change_detection = spec.change_detection;
                TableRun {
                    state,
                    conn: None,
                    attempt: 0,
                    due: now,
                    done: false,
                    parked: false,
                    last: None,
                }
            })
            .collect();
        Ok(Runner {
            warehouse,
            dataset: config.warehouse.dataset.to_string(),
            settings,
            mysql_url,
            tables,
            metrics,
            health,
            shutdown: Arc::new(AtomicBool::new(false)),
            permanent_recheck: PERMANENT_RECHECK,
            throttle,
        })
    }

    /// Makes the next cycle of every table of this runner rewrite all its rows (`resync`).
    pub fn request_rewrite(&mut self) {
        for t in &mut self.tables {
            t.state.rewrite = true;
        }
    }

    /// Tests: moves every table's change-history cursor `by` into the past, as if its last
    /// full diff had run that long ago (pairs with the emulator's `/_emulator/age`, which moves
    /// a table's history back; BigQuery only answers `CHANGES` 10 minutes behind).
    #[doc(hidden)]
    pub fn age_history(&mut self, by: std::time::Duration) {
        for t in &mut self.tables {
            if let Some(cursor) = t.state.history.as_mut() {
                cursor.age(by);
            }
        }
    }

    /// Cycle settings from the config's `[stream_sync]` and `[warehouse]` sections.
    pub fn settings_from(config: &SyncConfig) -> CycleSettings {
        CycleSettings {
            buckets: config.stream_sync.buckets,
            max_delete_fraction: config.stream_sync.max_delete_fraction,
            batch_rows: config.stream_sync.batch_rows,
            full_diff_every: config.stream_sync.full_diff_every.max(1),
            change_detection: config.warehouse.change_detection,
            ..CycleSettings::default()
        }
    }

    /// Set it to stop after the current batch.
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }

    /// Shortens the re-check of tables stopped by a permanent error (tests).
    pub fn set_permanent_recheck(&mut self, after: Duration) {
        self.permanent_recheck = after;
    }

    /// The warehouse adapter, e.g. to raise its query timeout (the benchmark).
    pub fn warehouse_mut(&mut self) -> &mut Warehouse {
        &mut self.warehouse
    }

    /// Runs cycles per `mode`; returns each table's last outcome.
    pub async fn run(&mut self, mode: Mode) -> Vec<TableOutcome> {
        for t in &mut self.tables {
            t.done = false;
            t.parked = false;
            t.attempt = 0;
            t.due = Instant::now();
        }
        loop {
            if self.shutdown.load(Ordering::SeqCst) {
                break;
            }
            // Every due table at once, each in its own task with its own MySQL session: a
            // slow table does not hold the others back.
            let now = Instant::now();
            let due: Vec<usize> = (0..self.tables.len())
                .filter(|&i| !self.tables[i].done && self.tables[i].due <= now)
                .collect();
            let mut stop = false;
            for (i, outcome) in self.attempt_all(&due).await {
                if self.settle(i, outcome, mode) {
                    stop = true;
                }
            }
            if stop {
                break;
            }
            // Every table finished (--once), or every table stopped on a permanent error: a
            // daemon with nothing left to sync exits (non-zero) rather than idling.
            if self.tables.iter().all(|t| t.done || t.parked) {
                break;
            }
            sleep_until(self.next_due(), &self.shutdown).await;
        }
        self.tables
            .iter_mut()
            .filter_map(|t| t.last.take())
            .collect()
    }

    /// Takes table `i`'s outcome: its retries, next due time, `/healthz` state and
    /// `table_up`. True on shutdown (the outcome is kept, nothing else changes).
    fn settle(&mut self, i: usize, outcome: TableOutcome, mode: Mode) -> bool {
        let t = &mut self.tables[i];
        let table = t.state.spec.target.clone();
        let (health, next) = match &outcome.error {
            None => {
                t.attempt = 0;
                if std::mem::take(&mut t.parked) {
                    self.metrics.set_up(&table, true);
                }
                if matches!(mode, Mode::Once { .. }) {
                    t.done = true;
                }
                ("ok".to_string(), interval(mode))
            }
            Some((ErrorKind::Transient, e)) => {
                t.attempt += 1;
                if let Mode::Once { max_attempts } = mode {
                    t.done = t.attempt >= max_attempts;
                }
                let delay = sync_engine::retry::backoff(t.attempt);
                tracing::warn!(table.name = %table, attempt = t.attempt, delay_ms = delay.as_millis() as u64, error = %e, "transient error; retrying");
                (format!("retrying: {e}"), delay)
            }
            Some((ErrorKind::Permanent, e)) => {
                tracing::error!(table.name = %table, error = %e, recheck_after_s = self.permanent_recheck.as_secs(), "permanent error: this table stops, the others go on");
                // --once gives up; the daemon parks the table and re-checks it on a
                // long backoff (a fixed permission or schema heals it, no restart).
                t.done = matches!(mode, Mode::Once { .. });
                t.parked = true;
                self.metrics.set_up(&table, false);
                (format!("stopped: {e}"), self.permanent_recheck)
            }
            Some((ErrorKind::Cycle, e)) => {
                tracing::error!(table.name = %table, error = %e, "cycle refused; trying again next interval");
                if matches!(mode, Mode::Once { .. }) {
                    t.done = true;
                }
                (format!("failing: {e}"), interval(mode))
            }
            Some((ErrorKind::Shutdown, _)) => {
                t.last = Some(outcome);
                return true;
            }
        };
        t.due = Instant::now() + next;
        t.last = Some(outcome);
        if let Ok(mut h) = self.health.lock() {
            h.insert(table.to_string(), health);
        }
        false
    }

    /// When the next table that is not done is due (now if none is).
    fn next_due(&self) -> Instant {
        self.tables
            .iter()
            .filter(|t| !t.done)
            .map(|t| t.due)
            .min()
            .unwrap_or_else(Instant::now)
    }

    /// Runs one cycle of each table in `due`, concurrently (a task per table); returns the
    /// outcomes by table index.
    async fn attempt_all(&mut self, due: &[usize]) -> Vec<(usize, TableOutcome)> {
        let shared = Arc::new(Shared {
            warehouse: self.warehouse.clone(),
            dataset: self.dataset.clone(),
            settings: self.settings.clone(),
            mysql_url: self.mysql_url.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            throttle: self.throttle.clone(),
        });
        let mut slots: Vec<Option<TableRun>> = std::mem::take(&mut self.tables)
            .into_iter()
            .map(Some)
            .collect();
        let mut tasks = Vec::with_capacity(due.len());
        for &i in due {
            if let Some(mut t) = slots.get_mut(i).and_then(Option::take) {
                let shared = shared.clone();
                tasks.push(tokio::spawn(async move {
                    let outcome = attempt_table(&shared, &mut t).await;
                    (i, t, outcome)
                }));
            }
        }
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            match task.await {
                Ok((i, t, outcome)) => {
                    slots[i] = Some(t);
                    out.push((i, outcome));
                }
                // A panic in a table's task is a bug: surface it as before, not as a lost table.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        self.tables = slots.into_iter().flatten().collect();
        out
    }
}

/// What a table's task needs besides the table: cloned per batch of cycles.
struct Shared {
    warehouse: Warehouse,
    dataset: String,
    settings: CycleSettings,
    mysql_url: String,
    metrics: Metrics,
    shutdown: Arc<AtomicBool>,
    throttle: Arc<Throttle>,
}

/// One cycle of one table, connecting first when needed; records metrics, logs and history.
async fn attempt_table(shared: &Shared, t: &mut TableRun) -> TableOutcome {
    let env = Env {
        warehouse: &shared.warehouse,
        dataset: &shared.dataset,
        settings: &shared.settings,
        shutdown: &shared.shutdown,
        throttle: &shared.throttle,
    };
    let mut report = CycleReport {
        table: t.state.spec.target.to_string(),
        ..CycleReport::default()
    };
    let started = chrono::Utc::now();
    let result = async {
        if t.conn.is_none() {
            t.conn = Some(blocking(|| open_session(&shared.mysql_url, &t.state.spec))?);
        }
        let Some(conn) = t.conn.as_mut() else {
            return Err(SyncError::Permanent("no MySQL session".into()));
        };
        cycle::run_cycle(&env, &mut t.state, conn, &mut report).await
    }
    .await;
    let error = result.err().map(|e| (e.kind(), e.to_string()));
    if let Some((kind, _)) = &error {
        if *kind != ErrorKind::Cycle {
            t.conn = None; // a fresh session next time
            t.state.new_session();
        }
    }
    shared
        .metrics
        .record(&report, error.as_ref().map(|(k, _)| k.label()));
    let f = &report.fetch;
    match &error {
        None => tracing::info!(
            table.name = %report.table,
            skipped = report.skipped,
            cursor = report.cursor,
            buckets_differing = report.buckets_differing,
            rows_inserted = report.inserts,
            rows_updated = report.updates,
            rows_upserted = report.upserted,
            rows_deleted = report.deleted,
            warehouse_queries = f.queries,
            warehouse_digest_rows = f.digest_rows,
            warehouse_iblt_cells = f.cell_rows,
            warehouse_key_rows = f.key_rows,
            warehouse_full_rows = f.full_rows,
            duration_ms = report.duration.as_millis() as u64,
            "cycle done"
        ),
        Some((kind, e)) => {
            tracing::debug!(table.name = %report.table, kind = kind.label(), error = %e, "cycle failed")
        }
    }
    // History: only cycles that wrote or failed for good, so an idle table writes nothing.
    let worth_recording = match &error {
        None => report.rows_written() > 0,
        Some((kind, _)) => matches!(kind, ErrorKind::Permanent | ErrorKind::Cycle),
    };
    if worth_recording {
        if let Some(conn) = t.conn.as_mut() {
            let msg = error.as_ref().map(|(_, e)| e.as_str());
            if let Err(e) = blocking(|| record_run(conn, &report, started, msg)) {
                tracing::warn!(table.name = %report.table, error = %e, "could not record the run in sync_runs");
            }
        }
    }
    TableOutcome {
        table: report.table.clone(),
        report,
        error,
    }
}

impl Runner {
    /// Compares every table's rows with the warehouse; returns the mismatches.
    pub async fn verify(&mut self, limit: usize) -> anyhow::Result<Vec<Mismatch>> {
        let env = Env {
            warehouse: &self.warehouse,
            dataset: &self.dataset,
            settings: &self.settings,
            shutdown: &self.shutdown,
            throttle: &self.throttle,
        };
        let mut conn =
            blocking(|| connect(&self.mysql_url)).context("Failed to connect to MySQL")?;
        let mut out = Vec::new();
        for t in &self.tables {
            let found = verify::verify(&env, &t.state.spec, &mut conn, limit)
                .await
                .with_context(|| format!("Failed to verify {}", t.state.spec.target))?;
            out.extend(found);
        }
        Ok(out)
    }

    /// One line per table: MySQL rows, whether the bucket digests agree, the last recorded run.
    pub async fn status(&mut self) -> anyhow::Result<Vec<String>> {
        let mut conn =
            blocking(|| connect(&self.mysql_url)).context("Failed to connect to MySQL")?;
        let mut lines = Vec::new();
        for t in &self.tables {
            let spec = &t.state.spec;
            let mut stats = source::FetchStats::default();
            let line = async {
                let (columns, _) = source::describe(
                    &self.warehouse,
                    &self.dataset,
                    &spec.source,
                    &spec.varchar,
                    &mut stats,
                )
                .await?;
                let src = source::SourceTable::new(
                    &self.warehouse.project,
                    &self.dataset,
                    spec,
                    columns,
                    self.settings.buckets,
                )
                .map_err(SyncError::Permanent)?;
                let exists =
                    blocking(|| sync_engine::session::table_columns(&mut conn, &spec.target))?
                        .is_some_and(|c| c.iter().any(|c| c.name == "_sync_bucket"));
                if !exists {
                    return Ok::<String, SyncError>(format!(
                        "{}: not synced yet (no MySQL table)",
                        spec.target
                    ));
                }
                let wh = source::digests(&self.warehouse, &src, &mut stats).await?;
                let my = blocking(|| target::digests(&mut conn, &spec.target))?;
                let marker = blocking(|| target::bucket_marker(&mut conn, &spec.target))?;
                let differing = plan::differing_buckets(&wh, &my).len();
                let state = match marker {
                    Some(b) if b != self.settings.buckets => format!(
                        "synced with {b} buckets, configured {}: the next cycle rewrites every row",
                        self.settings.buckets
                    ),
                    _ if differing == 0 => "in sync".to_string(),
                    _ => format!("{differing} bucket(s) differ"),
                };
                let last = blocking(|| session::last_run(&mut conn, &spec.target, Some("stream")))
                    .unwrap_or(None);
                let last = match last {
                    Some(run) => format!(
                        "last write {} {} (+{} -{})",
                        run.started_at, run.status, run.rows_loaded, run.rows_deleted
                    ),
                    None => "no recorded writes".into(),
                };
                Ok(format!(
                    "{}: {state}; warehouse {} rows, MySQL {} rows; {last}",
                    spec.target,
                    plan::total_rows(&wh),
                    plan::total_rows(&my)
                ))
            }
            .await;
            lines.push(line.unwrap_or_else(|e| format!("{}: error: {e}", spec.target)));
        }
        Ok(lines)
    }
}

fn interval(mode: Mode) -> Duration {
    match mode {
        Mode::Once { .. } => Duration::ZERO,
        Mode::Forever { interval } => interval,
    }
}

/// Sleeps until `next`, waking for shutdown.
async fn sleep_until(next: Instant, shutdown: &AtomicBool) {
    while Instant::now() < next && !shutdown.load(Ordering::SeqCst) {
        let left = next.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
}

/// How long a table's session waits for the table's advisory lock: long enough for MySQL to
/// end the session of a killed stream-sync that was between statements.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// A session for one table: UTC/strict/utf8mb4, the state tables present, and the table's
/// advisory lock so two daemons never write one table at once. A lock still held after
/// [`LOCK_WAIT`] is a transient error: retried with backoff (and up to `--max-attempts` with
/// `--once`), as a killed run's session may still be rolling back.
fn open_session(url: &str, spec: &TableSpec) -> Result<Conn, SyncError> {
    let mut conn = connect(url)?;
    ensure_state_tables(&mut conn)?;
    let db = sync_engine::session::current_database(&mut conn)?;
    let lock = format!("stream-sync:{db}.{}", spec.target);
    if !get_lock(&mut conn, &lock, LOCK_WAIT)? {
        return Err(SyncError::Locked(spec.target.to_string()));
    }
    Ok(conn)
}

fn record_run(
    conn: &mut Conn,
    r: &CycleReport,
    started: chrono::DateTime<chrono::Utc>,
    error: Option<&str>,
) -> Result<(), MysqlError> {
    let run_id = format!("stream-{}", started.timestamp_micros());
    session::record_run(
        conn,
        &RunRecord {
            run_id: &run_id,
            target_table: &r.table,
            engine: "stream",
            started_at: Some(started.format("%Y-%m-%d %H:%M:%S%.6f").to_string()),
            status: if error.is_some() { "failed" } else { "ok" },
            rows_loaded: r.upserted,
            rows_deleted: r.deleted,
            error,
            accumulate: false,
        },
    )
}
