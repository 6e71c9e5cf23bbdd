//! partition-sync: the batch job (a Kubernetes CronJob). See `partition-sync --help`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use domain::config::SyncConfig;
use partition_sync::load::Progress;
use partition_sync::runner::{self, Context, Force, Options, RunSummary};
use partition_sync::{commands, push};

/// Keeps partitioned warehouse tables in sync with MySQL.
///
/// Finds the warehouse partitions modified since they were last synced, exports each to the
/// staging bucket and loads each group of tables into MySQL in one transaction: delete the
/// partitions' rows, bulk-insert, record the partitions' watermarks. Idempotent; a missed run
/// catches up by itself. The MySQL DSN comes from the environment variable named by
/// `mysql.url_env` in the config (default SYNC_MYSQL_URL).
///
/// Exit codes: 0 success, 1 a group failed (or `verify` found mismatches), 2 bad usage or config.
#[derive(Parser, Debug)]
#[command(name = "partition-sync", version, about, long_about)]
struct Cli {
    /// The sync configuration (TOML).
    #[arg(
        long,
        short,
        env = "SYNC_CONFIG",
        global = true,
        default_value = "sync.toml"
    )]
    config: PathBuf,
    /// Output: `text` (default on a terminal) or `json` (one line, default otherwise).
    #[arg(long, global = true)]
    output: Option<OutputFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

/// `--table`: restricts a report to one table.
#[derive(Args, Debug)]
struct OneTable {
    /// Only this table (target or source name); default: every partitioned table.
    #[arg(long)]
    table: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Sync every changed partition (all groups, or one group or table).
    Run {
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
        /// Only this table (source or target name); its group still loads in one transaction.
        #[arg(long)]
        table: Option<String>,
        /// Print the plan and why, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Remove vanished partitions even beyond `max_vanished_partitions`.
        #[arg(long)]
        allow_mass_delete: bool,
        /// Start no batch that would likely end later than this many seconds after the run
        /// began; what is left waits for the next run (exit 0, reported pending). Default:
        /// `partition_sync.max_run_secs` (2700). Keep it below the CronJob's deadline.
        #[arg(long)]
        max_run_secs: Option<u64>,
    },
    /// Per table: partitions synced and pending, lag, last run.
    Status(OneTable),
    /// Compare warehouse and MySQL per partition (row count and content digest); exit 1 on
    /// any mismatch.
    Verify(OneTable),
    /// Reload partitions of one table whatever their recorded state.
    Resync {
        #[arg(long)]
        table: String,
        /// Partition ids (e.g. 20260101, __NULL__).
        #[arg(long = "partition", num_args = 1.., required_unless_present = "all", conflicts_with = "all")]
        partitions: Vec<String>,
        /// Every partition of the table.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sync_engine::telemetry::init();
    let json = match cli.output {
        Some(OutputFormat::Json) => true,
        Some(OutputFormat::Text) => false,
        None => !std::io::stdout().is_terminal(),
    };
    let config = match SyncConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(dispatch(config, cli.command, json)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn shard() -> Option<(u64, u64)> {
    let index = std::env::var("JOB_COMPLETION_INDEX").ok()?.parse().ok()?;
    let count = std::env::var("JOB_COMPLETION_COUNT").ok()?.parse().ok()?;
    Some((index, count))
}

/// One function per sub-command (`docs/sync.md#partition-sync-commands`).
async fn dispatch(config: SyncConfig, command: Command, json: bool) -> anyhow::Result<ExitCode> {
    let pushgateway = config.metrics.pushgateway.clone();
    let ctx = Context::new(config).await?;
    let opts = Options {
        shard: shard(),
        ..Options::default()
    };
    match command {
        Command::Run {
            group,
            table,
            dry_run,
            allow_mass_delete,
            max_run_secs,
        } => {
            let opts = Options {
                group,
                table,
                dry_run,
                allow_mass_delete,
                max_run_secs,
                ..opts
            };
            run(&ctx, &opts, pushgateway.as_deref(), json).await
        }
        Command::Resync {
            table,
            partitions,
            all,
            dry_run,
        } => {
            let opts = resync_options(opts, table, partitions, all, dry_run)?;
            run(&ctx, &opts, pushgateway.as_deref(), json).await
        }
        Command::Status(OneTable { table }) => status(&ctx, &Options { table, ..opts }, json).await,
        Command::Verify(OneTable { table }) => verify(&ctx, &Options { table, ..opts }, json).await,
    }
}

/// `resync`: a run of one table with the given partitions, or all of them, forced.
fn resync_options(
    opts: Options,
    table: String,
    partitions: Vec<String>,
    all: bool,
    dry_run: bool,
) -> anyhow::Result<Options> {
    for p in &partitions {
        if !partition_sync::partition::plausible_id(p) {
            anyhow::bail!(
                "`{p}` is not a partition id (YYYYMMDD, YYYYMMDDHH, YYYYMM, YYYY or __NULL__)"
            );
        }
    }
    Ok(Options {
        table: Some(table.clone()),
        dry_run,
        force: Some((
            table,
            if all {
                Force::All
            } else {
                Force::Partitions(partitions)
            },
        )),
        ..opts
    })
}

/// `status`: per table, partitions synced and pending, lag, last run.
async fn status(ctx: &Context, opts: &Options, json: bool) -> anyhow::Result<ExitCode> {
    let rows = commands::status(ctx, opts).await?;
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        print_status(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(rows: &[commands::TableStatus]) {
    println!(
        "{:<28} {:<14} {:>7} {:>12} {:>8} {:>9} {:>10}  last run",
        "table", "group", "synced", "rows", "pending", "vanished", "lag"
    );
    for r in rows {
        let lag = r
            .lag_seconds
            .map_or("-".to_string(), |l| format!("{l:.0}s"));
        println!(
            "{:<28} {:<14} {:>7} {:>12} {:>8} {:>9} {:>10}  {} {}",
            r.table,
            r.group,
            r.partitions_synced,
            r.rows_synced,
            r.partitions_pending,
            r.partitions_vanished,
            lag,
            r.last_run.as_deref().unwrap_or("never"),
            r.last_run_status.as_deref().unwrap_or("")
        );
        if let Some(shadow) = &r.interrupted_exchange {
            println!("  {shadow}: left by an interrupted exchange; the next run drops it and redoes that partition");
        }
        if let Some(e) = &r.error {
            println!("  error: {e}");
        }
    }
}

/// `verify`: the partitions that differ between the warehouse and MySQL; exit 1 on any.
async fn verify(ctx: &Context, opts: &Options, json: bool) -> anyhow::Result<ExitCode> {
    let mismatches = commands::verify(ctx, opts).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"in_sync": mismatches.is_empty(), "mismatches": mismatches})
        );
    } else if mismatches.is_empty() {
        println!("in sync");
    } else {
        println!("{} partition(s) differ:", mismatches.len());
        for m in &mismatches {
            println!(
                "  {} {}: {} (warehouse {} rows, MySQL {} rows)",
                m.table, m.partition, m.detail, m.warehouse_rows, m.mysql_rows
            );
        }
    }
    Ok(if mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `run` and `resync`: runs the groups with a progress bar (or log lines), pushes the metrics
/// unless it was a dry run, and prints the summary. Exit 1 when a group failed.
async fn run(
    ctx: &Context,
    opts: &Options,
    pushgateway: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (progress, bar) = progress_bar();
    let summary = runner::run(ctx, opts, progress).await;
    // Clear the bar before printing, so that it can't overwrite the summary.
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let summary = summary?;
    if let Some(url) = pushgateway {
        if !opts.dry_run {
            if let Err(e) = push::push_metrics(url, &summary, &push::run_scope(opts)).await {
                tracing::warn!(error = %format!("{e:#}"), "could not push metrics");
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(if summary.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_summary(summary: &RunSummary) {
    for g in &summary.groups {
        println!("group {}: {}", g.group, g.status);
        // Long plans (a first sync of a long history) are summarised.
        const SHOWN: usize = 12;
        if g.plan.len() > SHOWN {
            println!(
                "  … {} more partitions planned (--output json lists every one)",
                g.plan.len() - SHOWN
            );
        }
        for p in g.plan.iter().rev().take(SHOWN).rev() {
            let estimate = match (p.estimated_bytes, p.mysql_rows) {
                (Some(bytes), Some(mysql)) => {
                    format!(
                        ", replaces {mysql} MySQL rows, export {}",
                        human_bytes(bytes)
                    )
                }
                (None, Some(mysql)) => format!(", replaces {mysql} MySQL rows"),
                _ => String::new(),
            };
            let how = match p.replace {
                Some("exchange") => ", by exchange",
                Some(_) => ", in the batch's transaction",
                None => "",
            };
            println!(
                "  {} {} {} ({} rows{estimate}{how}): {}",
                p.action, p.table, p.partition, p.rows, p.reason
            );
        }
        for t in &g.tables {
            let exchanged = if t.partitions_exchanged > 0 {
                format!(" ({} by exchange)", t.partitions_exchanged)
            } else {
                String::new()
            };
            println!(
                "  {}: {} partitions loaded{exchanged}, {} removed, {} rows loaded, {} rows deleted",
                t.table, t.partitions_loaded, t.partitions_removed, t.rows_loaded, t.rows_deleted
            );
        }
        if let Some(e) = &g.error {
            println!("  error: {e}");
        }
    }
    if summary.dry_run {
        let plan = summary.groups.iter().flat_map(|g| &g.plan);
        let bytes: u64 = plan.clone().filter_map(|p| p.estimated_bytes).sum();
        let inserts: i64 = plan.clone().map(|p| p.rows).sum();
        let deletes: u64 = plan.filter_map(|p| p.mysql_rows).sum();
        println!(
            "dry run: the exports would process {} in BigQuery (plus {} for detection, already spent); MySQL: {inserts} rows inserted, {deletes} rows deleted",
            human_bytes(bytes),
            human_bytes(summary.warehouse_bytes_processed)
        );
    }
    let throttled: f64 = summary.throttled_seconds.values().sum();
    if throttled > 0.0 {
        let why: Vec<String> = summary
            .throttled_seconds
            .iter()
            .map(|(k, v)| format!("{k} {v:.1}s"))
            .collect();
        println!(
            "paused {throttled:.1}s to protect MySQL ({})",
            why.join(", ")
        );
    }
    for (replica, lag) in &summary.replica_lag_max_seconds {
        println!("replica {replica}: highest lag read {lag:.2}s");
    }
    if summary.partitions_pending > 0 {
        println!(
            "{} planned partitions wait for the next run (the run's time budget, --max-run-secs, was spent); they load oldest first",
            summary.partitions_pending
        );
    }
    println!(
        "run {}: {} in {:.1}s — {} partitions, {} rows loaded, {} rows deleted",
        summary.run_id,
        if summary.ok { "ok" } else { "FAILED" },
        summary.duration_ms as f64 / 1000.0,
        summary.partitions_loaded,
        summary.rows_loaded,
        summary.rows_deleted
    );
}

/// `1.5 MB`-style (decimal units, as BigQuery bills).
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A progress bar on a terminal; log lines per partition otherwise.
fn progress_bar() -> (
    Arc<dyn Fn(Progress) + Send + Sync>,
    Option<indicatif::ProgressBar>,
) {
    if !std::io::stderr().is_terminal() {
        let log: Arc<dyn Fn(Progress) + Send + Sync> = Arc::new(|p| match p {
            Progress::PartitionDone {
                table,
                partition,
                rows,
            } => {
                tracing::info!(table.name = %table, partition.id = %partition, rows, "partition loaded (commits with its group)")
            }
            Progress::Exporting {
                table,
                partition,
                done,
                total,
            } => {
                tracing::info!(table.name = %table, partition.id = %partition, done, total, "exporting")
            }
            _ => {}
        });
        return (log, None);
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:40} [{bar:30}] {pos}/{len} rows {per_sec}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let handle = bar.clone();
    let show: Arc<dyn Fn(Progress) + Send + Sync> = Arc::new(move |p| match p {
        Progress::PartitionStarted {
            table,
            partition,
            rows,
        } => {
            bar.set_message(format!("{table} {partition}"));
            bar.inc_length(rows.max(0) as u64);
        }
        Progress::Exporting {
            table,
            partition,
            done,
            total,
        } => {
            bar.set_message(format!("export {done}/{total}: {table} {partition}"));
        }
        Progress::Rows(n) => bar.inc(n),
        Progress::PartitionDone { .. } => {}
    });
    (show, Some(handle))
}
