//! Prometheus metrics of stream-sync (see `docs/sync.md#stream-sync-metrics`), prefix
//! `stream_sync_`. Labels stay bounded: the configured table names and fixed kinds. Updated once
//! per cycle.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::cycle::CycleReport;

/// The metrics, in their own registry (one per runner, so tests don't share them).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    last_success: GaugeVec,
    lag: GaugeVec,
    cycle_duration: HistogramVec,
    cycles: IntCounterVec,
    rows_applied: IntCounterVec,
    rows_loaded: IntCounterVec,
    rows_deleted: IntCounterVec,
    rows_fetched: IntCounterVec,
    buckets_differing: IntGaugeVec,
    errors: IntCounterVec,
    bytes: IntCounterVec,
    table_up: IntGaugeVec,
    throttled: prometheus::CounterVec,
    replica_lag: GaugeVec,
}

/// Builds metric family `n` (its full name, so it can be found by grep) with its help text and registers it in `registry`.
fn family<M>(
    registry: &Registry,
    n: &str,
    help: &str,
    build: impl FnOnce(Opts) -> Result<M, prometheus::Error>,
) -> Result<M, prometheus::Error>
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let m = build(Opts::new(n, help))?;
    registry.register(Box::new(m.clone()))?;
    Ok(m)
}

impl Metrics {
    /// Builds and registers every metric. Fails only on a programming error (duplicate names).
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let table = &["table"];
        Ok(Metrics {
            last_success: family(
                &registry,
                "stream_sync_last_success_timestamp_seconds",
                "Unix time of the table's last successful cycle",
                |o| GaugeVec::new(o, table),
            )?,
            lag: family(
                &registry,
                "stream_sync_lag_seconds",
                "Seconds since the table's last successful cycle",
                |o| GaugeVec::new(o, table),
            )?,
            cycle_duration: family(
                &registry,
                "stream_sync_cycle_duration_seconds",
                "Duration of one cycle",
                |o| {
                    let buckets = vec![
                        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                    ];
                    HistogramVec::new(HistogramOpts::from(o).buckets(buckets), table)
                },
            )?,
            cycles: family(
                &registry,
                "stream_sync_cycles_total",
                "Cycles by outcome (skipped, unchanged, changed, failed)",
                |o| IntCounterVec::new(o, &["table", "outcome"]),
            )?,
            rows_applied: family(
                &registry,
                "stream_sync_rows_applied_total",
                "Rows applied to MySQL by operation (insert, update, upsert, delete)",
                |o| IntCounterVec::new(o, &["table", "op"]),
            )?,
            rows_loaded: family(
                &registry,
                "stream_sync_rows_loaded_total",
                "Rows inserted or updated in MySQL (rows_applied_total's insert, update and upsert)",
                |o| IntCounterVec::new(o, table),
            )?,
            rows_deleted: family(
                &registry,
                "stream_sync_rows_deleted_total",
                "Rows deleted from MySQL (rows_applied_total's delete)",
                |o| IntCounterVec::new(o, table),
            )?,
            rows_fetched: family(
                &registry,
                "stream_sync_warehouse_rows_fetched_total",
                "Rows read from the warehouse by kind (digest, cell, key, row)",
                |o| IntCounterVec::new(o, &["table", "kind"]),
            )?,
            buckets_differing: family(
                &registry,
                "stream_sync_buckets_differing",
                "Buckets that differed in the last full-diff cycle",
                |o| IntGaugeVec::new(o, table),
            )?,
            errors: family(
                &registry,
                "stream_sync_errors_total",
                "Failed cycles by kind (transient, permanent, cycle)",
                |o| IntCounterVec::new(o, &["table", "kind"]),
            )?,
            bytes: family(
                &registry,
                "stream_sync_warehouse_bytes_processed_total",
                "Bytes the warehouse processed for this table's queries",
                |o| IntCounterVec::new(o, table),
            )?,
            table_up: family(
                &registry,
                "stream_sync_table_up",
                "1 while the table syncs, 0 once a permanent error stopped it",
                |o| IntGaugeVec::new(o, table),
            )?,
            throttled: family(
                &registry,
                "stream_sync_throttled_seconds_total",
                "Seconds paused between write batches to protect MySQL, by reason (threads_running, replica_lag)",
                |o| prometheus::CounterVec::new(o, &["reason"]),
            )?,
            replica_lag: family(
                &registry,
                "stream_sync_replica_lag_seconds",
                "Lag of each configured replica as last read (heartbeat or Seconds_Behind_Master)",
                |o| GaugeVec::new(o, &["replica"]),
            )?,
            registry,
        })
    }

    /// Records a finished cycle (successful or not: rows written before a failure count).
    pub fn record(&self, r: &CycleReport, error_kind: Option<&str>) {
        let t = r.table.as_str();
        self.cycle_duration
            .with_label_values(&[t])
            .observe(r.duration.as_secs_f64());
        let outcome = match (error_kind, r.skipped, r.rows_written()) {
            (Some(_), _, _) => "failed",
            (None, true, _) => "skipped",
            (None, false, 0) => "unchanged",
            (None, false, _) => "changed",
        };
        self.cycles.with_label_values(&[t, outcome]).inc();
        let inserted = r.inserts.min(r.upserted);
        let updated = r.upserted - inserted;
        let (ins_op, upd_op) = if r.cursor {
            ("upsert", "upsert")
        } else {
            ("insert", "update")
        };
        self.rows_applied
            .with_label_values(&[t, ins_op])
            .inc_by(inserted);
        self.rows_applied
            .with_label_values(&[t, upd_op])
            .inc_by(updated);
        self.rows_applied
            .with_label_values(&[t, "delete"])
            .inc_by(r.deleted);
        self.rows_loaded.with_label_values(&[t]).inc_by(r.upserted);
        self.rows_deleted.with_label_values(&[t]).inc_by(r.deleted);
        for (kind, n) in [
            ("digest", r.fetch.digest_rows),
            ("cell", r.fetch.cell_rows),
            ("key", r.fetch.key_rows),
            ("row", r.fetch.full_rows),
        ] {
            self.rows_fetched.with_label_values(&[t, kind]).inc_by(n);
        }
        self.bytes
            .with_label_values(&[t])
            .inc_by(r.fetch.bytes_processed);
        match error_kind {
            Some(kind) => self.errors.with_label_values(&[t, kind]).inc(),
            None => {
                if !r.skipped && !r.cursor {
                    self.buckets_differing
                        .with_label_values(&[t])
                        .set(r.buckets_differing as i64);
                }
                let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
                self.last_success.with_label_values(&[t]).set(now);
                self.lag.with_label_values(&[t]).set(0.0);
            }
        }
    }

    /// Marks a table as syncing (1) or stopped (0).
    pub fn set_up(&self, table: &str, up: bool) {
        self.table_up.with_label_values(&[table]).set(i64::from(up));
    }

    /// Refreshes `lag_seconds` from the last success times (called on every scrape).
    pub fn refresh_lag(&self) {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        for mf in self.last_success.collect() {
            for m in mf.get_metric() {
                if let Some(l) = m.get_label().iter().find(|l| l.name() == "table") {
                    let last = m.get_gauge().get_value();
                    self.lag
                        .with_label_values(&[l.value()])
                        .set((now - last).max(0.0));
                }
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        self.refresh_lag();
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

use prometheus::core::Collector as _;

impl sync_engine::throttle::ThrottleObserver for Metrics {
    fn paused(&self, reason: &'static str, secs: f64) {
        self.throttled.with_label_values(&[reason]).inc_by(secs);
    }
    fn replica_lag(&self, replica: &str, secs: f64) {
        self.replica_lag.with_label_values(&[replica]).set(secs);
    }
}
