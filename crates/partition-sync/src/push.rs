//! The metrics a run pushes to the Pushgateway (`docs/sync.md#partition-sync-metrics`): with
//! push-add (POST), one grouping key per table so that a failed table keeps its last success
//! time, and one per run scope (all groups, one shard of an Indexed Job, one `--group` or
//! `--table`) for the run as a whole. The `_total` counters continue the values the
//! Pushgateway holds (read first), so they count across runs like a long-lived process's;
//! runs that write one grouping key never overlap (a table's group lock; one CronJob per
//! scope, which forbids concurrency). The `last_run_` gauges describe the last run alone.

use std::collections::BTreeMap;

use anyhow::Context as _;
use prometheus::{CounterVec, Encoder, GaugeVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::runner::{GroupReport, Options, RunSummary};

/// What the Pushgateway holds of our counters: per grouping key (its labels, sorted), per
/// metric name, per series (its labels but `instance`, sorted) the value.
type Pushed = BTreeMap<Labels, Counters>;

/// Label names and values, sorted.
type Labels = Vec<(String, String)>;

/// Per metric name, per series the value: a grouping key's counters.
type Counters = BTreeMap<String, BTreeMap<Labels, f64>>;

/// Pushes a run's metrics. A Pushgateway whose current values can't be read gets counters
/// that start again from this run (Prometheus reads that as a counter reset).
pub async fn push_metrics(url: &str, summary: &RunSummary, scope: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let base = url.trim_end_matches('/');
    let pushed = match read_pushed(&http, base).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the Pushgateway's counters; they start again from this run");
            Pushed::new()
        }
    };
    let none = Counters::new();
    // The grouping key `job=partition_sync, label=value`: what the Pushgateway holds under
    // it, and where to push.
    let group = |label: &str, value: &str| {
        let key = vec![
            ("job".to_string(), "partition_sync".to_string()),
            (label.to_string(), value.to_string()),
        ];
        let url = format!("{base}/metrics/job/partition_sync/{label}/{value}");
        (pushed.get(&key).unwrap_or(&none), url)
    };
    for g in &summary.groups {
        for t in &g.targets {
            let (before, url) = group("table", t);
            let reg = Registry::new();
            register_table_metrics(&reg, summary, g, t, before)?;
            send(&http, &url, &reg).await?;
        }
    }
    let (before, url) = group("scope", scope);
    let reg = Registry::new();
    register_run_metrics(&reg, summary, before)?;
    send(&http, &url, &reg).await
}

/// The grouping key of a run's own metrics: which groups it ran. Runs of different scopes
/// (the pods of an Indexed Job, CronJobs per group) may overlap; runs of one scope do not.
pub fn run_scope(opts: &Options) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    match (&opts.shard, &opts.group, &opts.table) {
        (_, Some(g), _) => format!("group-{}", clean(g)),
        (_, None, Some(t)) => format!("table-{}", clean(t)),
        (Some((i, n)), None, None) => format!("shard-{i}-of-{n}"),
        (None, None, None) => "all".to_string(),
    }
}

/// Reads the `partition_sync_…_total` series the Pushgateway holds (`GET /api/v1/metrics`).
async fn read_pushed(http: &reqwest::Client, base: &str) -> anyhow::Result<Pushed> {
    let body: serde_json::Value = http
        .get(format!("{base}/api/v1/metrics"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(parse_pushed(&body))
}

/// The counters of a `GET /api/v1/metrics` answer. Pure.
fn parse_pushed(body: &serde_json::Value) -> Pushed {
    let labels = |v: &serde_json::Value| -> Vec<(String, String)> {
        let mut l: Vec<(String, String)> = v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "instance")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        l.sort();
        l
    };
    let mut out = Pushed::new();
    for group in body["data"].as_array().into_iter().flatten() {
        let key = labels(&group["labels"]);
        let metrics = out.entry(key).or_default();
        for (name, family) in group.as_object().into_iter().flatten() {
            if !(name.starts_with("partition_sync_") && name.ends_with("_total")) {
                continue;
            }
            let series = metrics.entry(name.clone()).or_default();
            for m in family["metrics"].as_array().into_iter().flatten() {
                let value = m["value"]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
                series.insert(labels(&m["labels"]), value);
            }
        }
    }
    out
}

/// A counter registered in `reg` that continues `before`'s series of `name` (all of them:
/// push-add replaces every series of a pushed name in the grouping key), plus `add`
/// (label values in `label_names`' order, amount).
fn continued_counter(
    reg: &Registry,
    (name, help): (&str, &str),
    label_names: &[&str],
    before: &Counters,
    add: &[(Vec<&str>, f64)],
) -> anyhow::Result<()> {
    let c = CounterVec::new(Opts::new(name, help), label_names)?;
    for (labels, value) in before.get(name).into_iter().flatten() {
        let values: Vec<&str> = label_names
            .iter()
            .map(|n| {
                labels
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or_default()
            })
            .collect();
        c.with_label_values(&values).inc_by(value.max(0.0));
    }
    for (values, amount) in add {
        c.with_label_values(values).inc_by(amount.max(0.0));
    }
    reg.register(Box::new(c))?;
    Ok(())
}

/// The metrics of one table `t` of group `g`, labelled with the table.
fn register_table_metrics(
    reg: &Registry,
    summary: &RunSummary,
    g: &GroupReport,
    t: &str,
    before: &Counters,
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
    let (partitions, rows_loaded, rows_deleted) = outcome
        .map(|o| (o.partitions_loaded, o.rows_loaded, o.rows_deleted))
        .unwrap_or_default();
    for (name, help, amount) in [
        (
            "partition_sync_partitions_synced_total",
            "Partitions loaded, over all runs",
            partitions as f64,
        ),
        (
            "partition_sync_rows_loaded_total",
            "Rows inserted, over all runs",
            rows_loaded as f64,
        ),
        (
            "partition_sync_rows_deleted_total",
            "Rows deleted, over all runs",
            rows_deleted as f64,
        ),
    ] {
        continued_counter(reg, (name, help), &["table"], before, &[(vec![t], amount)])?;
    }
    let failed = g
        .error_kind
        .filter(|_| g.status == "failed")
        .map(|kind| (vec![t, kind], 1.0));
    continued_counter(
        reg,
        (
            "partition_sync_errors_total",
            "Failed runs of the table's group by kind, over all runs",
        ),
        &["table", "kind"],
        before,
        failed.as_slice(),
    )?;
    Ok(())
}

/// The metrics of the run as a whole.
fn register_run_metrics(
    reg: &Registry,
    summary: &RunSummary,
    before: &Counters,
) -> anyhow::Result<()> {
    let b = prometheus::Gauge::new(
        "partition_sync_last_run_warehouse_processed_bytes",
        "Bytes the last run's warehouse queries processed",
    )?;
    b.set(summary.warehouse_bytes_processed as f64);
    reg.register(Box::new(b))?;
    let d = prometheus::Gauge::new(
        "partition_sync_run_duration_seconds",
        "Duration of the last run",
    )?;
    d.set(summary.duration_ms as f64 / 1000.0);
    reg.register(Box::new(d))?;
    continued_counter(
        reg,
        (
            "partition_sync_warehouse_bytes_processed_total",
            "Bytes the runs' warehouse queries processed, over all runs",
        ),
        &[],
        before,
        &[(vec![], summary.warehouse_bytes_processed as f64)],
    )?;
    let paused: Vec<(Vec<&str>, f64)> = ["threads_running", "replica_lag"]
        .into_iter()
        .map(|reason| {
            let secs = summary
                .throttled_seconds
                .get(reason)
                .copied()
                .unwrap_or(0.0);
            (vec![reason], secs)
        })
        .collect();
    continued_counter(
        reg,
        (
            "partition_sync_throttled_seconds_total",
            "Seconds runs paused to protect MySQL, by reason, over all runs",
        ),
        &["reason"],
        before,
        &paused,
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pushgateways_counters_are_read_per_grouping_key_and_series() {
        let body = serde_json::json!({"status": "success", "data": [
            {"labels": {"job": "partition_sync", "table": "t"},
             "last_push_successful": true,
             "partition_sync_rows_loaded_total": {"type": "COUNTER", "metrics": [
                 {"labels": {"instance": "", "job": "partition_sync", "table": "t"}, "value": "12"}]},
             "partition_sync_errors_total": {"type": "COUNTER", "metrics": [
                 {"labels": {"instance": "", "job": "partition_sync", "kind": "bad_row", "table": "t"}, "value": "2"},
                 {"labels": {"instance": "", "job": "partition_sync", "kind": "mysql", "table": "t"}, "value": "1e0"}]},
             "partition_sync_last_run_rows_loaded": {"type": "GAUGE", "metrics": [
                 {"labels": {"job": "partition_sync", "table": "t"}, "value": "3"}]}},
            {"labels": {"job": "other"},
             "other_total": {"metrics": [{"labels": {}, "value": "5"}]}}
        ]});
        let pushed = parse_pushed(&body);
        let key = vec![
            ("job".to_string(), "partition_sync".to_string()),
            ("table".to_string(), "t".to_string()),
        ];
        let t = &pushed[&key];
        assert_eq!(
            t.len(),
            2,
            "gauges and other jobs' names are not counters of ours"
        );
        let series = |kind: Option<&str>| {
            let mut l = key.clone();
            if let Some(k) = kind {
                l.push(("kind".to_string(), k.to_string()));
            }
            l.sort();
            l
        };
        assert_eq!(t["partition_sync_rows_loaded_total"][&series(None)], 12.0);
        let errors = &t["partition_sync_errors_total"];
        assert_eq!(errors[&series(Some("bad_row"))], 2.0);
        assert_eq!(errors[&series(Some("mysql"))], 1.0);
        assert!(parse_pushed(&serde_json::json!({"status": "error"})).is_empty());
    }

    #[test]
    fn a_runs_scope_names_what_it_covered() {
        let opts = |shard, group: Option<&str>, table: Option<&str>| Options {
            shard,
            group: group.map(String::from),
            table: table.map(String::from),
            ..Options::default()
        };
        assert_eq!(run_scope(&opts(None, None, None)), "all");
        assert_eq!(run_scope(&opts(Some((2, 4)), None, None)), "shard-2-of-4");
        assert_eq!(run_scope(&opts(None, Some("stats"), None)), "group-stats");
        assert_eq!(run_scope(&opts(None, None, Some("a.b/c"))), "table-a_b_c");
    }

    #[test]
    fn a_continued_counter_keeps_every_earlier_series_and_adds_the_runs() {
        let mut before = BTreeMap::new();
        before.insert(
            "partition_sync_errors_total".to_string(),
            BTreeMap::from([(
                vec![
                    ("kind".to_string(), "mysql".to_string()),
                    ("table".to_string(), "t".to_string()),
                ],
                3.0,
            )]),
        );
        let reg = Registry::new();
        continued_counter(
            &reg,
            ("partition_sync_errors_total", "h"),
            &["table", "kind"],
            &before,
            &[(vec!["t", "bad_row"], 1.0)],
        )
        .unwrap();
        let mut text = Vec::new();
        TextEncoder::new().encode(&reg.gather(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("partition_sync_errors_total{kind=\"mysql\",table=\"t\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("partition_sync_errors_total{kind=\"bad_row\",table=\"t\"} 1"),
            "{text}"
        );
    }
}
