//! `status`, `verify` and the metrics a run pushes; `run` and `resync` are in [`crate::runner`].

use std::collections::BTreeMap;

use anyhow::Context as _;
use prometheus::{Encoder, GaugeVec, IntGaugeVec, Opts, Registry, TextEncoder};

use sync_engine::session;

use crate::plan;
use crate::runner::{selected_groups, Context, GroupReport, Options, RunSummary};
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

/// Pushes a run's metrics to the Pushgateway with push-add (POST), one grouping key per
/// table so that a failed table keeps its last success time
/// (`docs/sync.md#partition-sync-metrics`).
pub async fn push_metrics(url: &str, summary: &RunSummary) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let base = url.trim_end_matches('/');
    for g in &summary.groups {
        let tables = g.targets.clone();
        for t in tables {
            let reg = Registry::new();
            register_table_metrics(&reg, summary, g, &t)?;
            send(
                &http,
                &format!("{base}/metrics/job/partition_sync/table/{t}"),
                &reg,
            )
            .await?;
        }
    }
    let reg = Registry::new();
    register_run_metrics(&reg, summary)?;
    send(&http, &format!("{base}/metrics/job/partition_sync"), &reg).await
}

/// The metrics of one table `t` of group `g`, labelled with the table.
fn register_table_metrics(
    reg: &Registry,
    summary: &RunSummary,
    g: &GroupReport,
    t: &str,
) -> anyhow::Result<()> {
    let gauge = |name: &str, help: &str| -> anyhow::Result<GaugeVec> {
        let v = GaugeVec::new(Opts::new(name, help), &["table"])?;
        reg.register(Box::new(v.clone()))?;
        Ok(v)
    };
    let outcome = g.tables.iter().find(|o| o.table == t);
    if g.status != "failed" && !summary.dry_run {
        gauge(
            "partition_sync_last_success_timestamp_seconds",
            "Unix time of the last successful run for the table",
        )?
        .with_label_values(&[t])
        .set(chrono::Utc::now().timestamp() as f64);
    }
    if let Some(o) = outcome {
        gauge(
            "partition_sync_last_run_partitions_synced",
            "Partitions loaded by the last run",
        )?
        .with_label_values(&[t])
        .set(o.partitions_loaded as f64);
        gauge(
            "partition_sync_last_run_rows_loaded",
            "Rows inserted by the last run",
        )?
        .with_label_values(&[t])
        .set(o.rows_loaded as f64);
        gauge(
            "partition_sync_last_run_rows_deleted",
            "Rows deleted by the last run",
        )?
        .with_label_values(&[t])
        .set(o.rows_deleted as f64);
    }
    if g.status != "failed" && !summary.dry_run {
        gauge(
            "partition_sync_partitions_pending",
            "Changed partitions the last run left for a later one (its time budget ran out)",
        )?
        .with_label_values(&[t])
        .set(g.partitions_pending.get(t).copied().unwrap_or(0) as f64);
    }
    if !summary.dry_run {
        gauge(
            "partition_sync_drift_partitions",
            "Partitions the last run loaded whose MySQL rows then differed from the warehouse's",
        )?
        .with_label_values(&[t])
        .set(g.drift_partitions.get(t).copied().unwrap_or(0) as f64);
    }
    if let Some(lag) = g.lag_seconds.get(t) {
        gauge(
            "partition_sync_lag_seconds",
            "Seconds since the oldest unsynced modification",
        )?
        .with_label_values(&[t])
        .set(*lag);
    }
    let errors = IntGaugeVec::new(
        Opts::new(
            "partition_sync_last_run_errors",
            "Errors of the last run by kind",
        ),
        &["table", "kind"],
    )?;
    reg.register(Box::new(errors.clone()))?;
    errors
        .with_label_values(&[t, g.error_kind.unwrap_or("none")])
        .set(i64::from(g.status == "failed"));
    Ok(())
}

/// The metrics of the run as a whole.
fn register_run_metrics(reg: &Registry, summary: &RunSummary) -> anyhow::Result<()> {
    let d = prometheus::Gauge::new(
        "partition_sync_last_run_duration_seconds",
        "Duration of the last run",
    )?;
    d.set(summary.duration_ms as f64 / 1000.0);
    reg.register(Box::new(d))?;
    let b = prometheus::Gauge::new(
        "partition_sync_last_run_warehouse_processed_bytes",
        "Bytes the last run's warehouse queries processed",
    )?;
    b.set(summary.warehouse_bytes_processed as f64);
    reg.register(Box::new(b))?;
    // Pushed once per run: the run's own total, starting from 0 like a restarted process.
    let throttled = prometheus::CounterVec::new(
        Opts::new(
            "partition_sync_throttled_seconds_total",
            "Seconds the last run paused to protect MySQL, by reason",
        ),
        &["reason"],
    )?;
    for reason in ["threads_running", "replica_lag"] {
        throttled.with_label_values(&[reason]).inc_by(
            summary
                .throttled_seconds
                .get(reason)
                .copied()
                .unwrap_or(0.0),
        );
    }
    reg.register(Box::new(throttled))?;
    let lag = GaugeVec::new(
        Opts::new(
            "partition_sync_replica_lag_max_seconds",
            "Highest lag read on each configured replica during the last run",
        ),
        &["replica"],
    )?;
    for (replica, secs) in &summary.replica_lag_max_seconds {
        lag.with_label_values(&[replica]).set(*secs);
    }
    reg.register(Box::new(lag))?;
    Ok(())
}

async fn send(http: &reqwest::Client, url: &str, reg: &Registry) -> anyhow::Result<()> {
    let mut body = Vec::new();
    TextEncoder::new().encode(&reg.gather(), &mut body)?;
    let resp = http
        .post(url)
        .header("Content-Type", "text/plain; version=0.0.4")
        .body(body)
        .send()
        .await
        .with_context(|| format!("pushing metrics to {url}"))?;
    if !resp.status().is_success() {
        anyhow::bail!("Pushgateway {url} answered {}", resp.status());
    }
    Ok(())
}
