//! `stream-sync`: parses the command line, sets up logging, signals and the metrics server, and
//! hands over to [`stream_sync::runner::Runner`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use domain::config::SyncConfig;
use stream_sync::runner::{Mode, Runner, TableOutcome};

/// Keeps MySQL tables equal to warehouse (BigQuery) tables, continuously.
///
/// For every `mode = "stream"` table of the config, each cycle compares per-bucket row counts
/// and XORs of row fingerprints in the warehouse and in MySQL (`_sync_bucket`, `_sync_hash`
/// columns), finds the changed rows of the buckets that differ (an invertible Bloom lookup
/// table of row hashes, so the cost follows the number of changes, not the table's size; a
/// key scan when the change is too large for it), fetches full rows only for new and changed
/// keys, and applies them as batched upserts and deletes, one transaction per batch. A cycle
/// that would delete more than `stream_sync.max_delete_fraction` of a table stops instead.
#[derive(Parser)]
#[command(name = "stream-sync", version, about, long_about)]
struct Cli {
    /// The sync config (TOML, shared with partition-sync).
    #[arg(long, env = "SYNC_CONFIG", global = true, default_value = "sync.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sync the stream tables: a cycle per table every `stream_sync.interval_secs` until
    /// SIGTERM (which finishes the current batch), or once with --once. Serves /metrics and
    /// /healthz on `metrics.listen` (not with --once, which must not take the daemon's port).
    Run {
        /// One cycle per table, then exit (non-zero if a table failed).
        #[arg(long)]
        once: bool,
        /// Only this table (target or source name).
        #[arg(long)]
        table: Option<String>,
        /// Let a cycle delete any share of a table, even all of it.
        #[arg(long)]
        allow_mass_delete: bool,
        /// Cursor-mode and change-history tables: run the full bucket diff every N cycles
        /// (default: `stream_sync.full_diff_every`, 10).
        #[arg(long)]
        full_diff_every: Option<u64>,
        /// --once: attempts per table for transient errors.
        #[arg(long, default_value_t = 10)]
        max_attempts: u32,
        /// With `stream_sync.shards` > 1: this process's shard, 0-based; it syncs the tables
        /// whose name hashes to it. Default: the ordinal of the StatefulSet pod this runs in
        /// (the number ending POD_NAME or HOSTNAME, e.g. stream-sync-2).
        #[arg(long, env = "SYNC_SHARD_INDEX")]
        shard_index: Option<u64>,
    },
    /// Rewrites every row of one table from the warehouse (each upsert a batch transaction,
    /// the table stays readable), then deletes rows whose keys the warehouse no longer has.
    /// Needed after nothing: a changed `buckets` or a table filled by something else is
    /// rewritten by itself at the first cycle; use it to repair what `verify` reports.
    Resync {
        /// The table (target or source name).
        #[arg(long)]
        table: String,
        /// Let the cycle delete any share of the table, even all of it.
        #[arg(long)]
        allow_mass_delete: bool,
    },
    /// Per table: whether warehouse and MySQL agree (bucket digests), row counts, last write.
    Status {
        /// Only this table (target or source name); default: every stream table.
        #[arg(long)]
        table: Option<String>,
    },
    /// Compares every row's values in MySQL with the warehouse; exit 1 and list mismatches.
    Verify {
        /// Only this table (target or source name); default: every stream table.
        #[arg(long)]
        table: Option<String>,
        /// Most mismatches listed per table.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    sync_engine::telemetry::init();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stream-sync failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = SyncConfig::load(&cli.config)?;
    let url = config.mysql_url()?;
    let mut settings = Runner::settings_from(&config);
    match cli.command {
        Command::Run {
            once,
            table,
            allow_mass_delete,
            full_diff_every,
            max_attempts,
            shard_index,
        } => {
            settings.allow_mass_delete = allow_mass_delete;
            if let Some(n) = full_diff_every {
                settings.full_diff_every = n.max(1);
            }
            // Only the daemon shards (status, verify and resync see every table); a table named
            // with --table is synced whichever shard owns it.
            if table.is_none() {
                let shards = config.stream_sync.shards;
                settings.shard = (shard_index_of(shard_index, shards)?, shards);
            }
            let runner = Runner::new(&config, url, settings, table.as_deref()).await?;
            run_tables(&config, runner, once, max_attempts).await
        }
        Command::Resync {
            table,
            allow_mass_delete,
        } => {
            settings.allow_mass_delete = allow_mass_delete;
            let runner = Runner::new(&config, url, settings, Some(&table)).await?;
            resync(runner).await
        }
        Command::Status { table } => {
            let mut runner = Runner::new(&config, url, settings, table.as_deref()).await?;
            for line in runner.status().await? {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { table, limit } => {
            let runner = Runner::new(&config, url, settings, table.as_deref()).await?;
            verify(runner, limit).await
        }
    }
}

/// This process's shard: `--shard-index`, else the ordinal of its StatefulSet pod.
fn shard_index_of(given: Option<u64>, shards: u64) -> anyhow::Result<u64> {
    if shards <= 1 {
        return Ok(0);
    }
    let index = match given {
        Some(i) => i,
        None => ["POD_NAME", "HOSTNAME"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .find_map(|name| domain::shard::pod_ordinal(&name))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "stream_sync.shards is {shards}: give --shard-index (SYNC_SHARD_INDEX) or run \
                     in a StatefulSet pod whose POD_NAME or HOSTNAME ends with its ordinal"
                )
            })?,
    };
    anyhow::ensure!(
        index < shards,
        "shard index {index} is not below stream_sync.shards ({shards}): the StatefulSet's \
         replicas and stream_sync.shards must agree"
    );
    Ok(index)
}

/// `run`: the daemon (with the metrics server), or one cycle per table with `--once`.
async fn run_tables(
    config: &SyncConfig,
    mut runner: Runner,
    once: bool,
    max_attempts: u32,
) -> anyhow::Result<ExitCode> {
    let flag = runner.shutdown_flag();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing the current batch");
        flag.store(true, Ordering::SeqCst);
    });
    // --once is a one-off (an operator in the pod, a test): it must not take the
    // daemon's metrics port; its summary goes to stdout/stderr instead.
    if let Some(addr) = config.metrics.listen.as_ref().filter(|_| !once) {
        let (server, bound) =
            stream_sync::http::serve(addr, runner.metrics.clone(), runner.health.clone())
                .with_context(|| format!("Failed to listen on {addr}"))?;
        tracing::info!(listen = %bound, "serving /metrics and /healthz");
        tokio::spawn(server);
    }
    let mode = if once {
        Mode::Once { max_attempts }
    } else {
        Mode::Forever {
            interval: Duration::from_secs(config.stream_sync.interval_secs),
        }
    };
    let outcomes = runner.run(mode).await;
    Ok(run_exit_code(once, &outcomes))
}

/// Reports the failed tables on stderr. Failure with --once: any failed table. The daemon
/// only returns on SIGTERM (success) or when every table has stopped on a permanent error,
/// which must not look like a clean exit.
fn run_exit_code(once: bool, outcomes: &[TableOutcome]) -> ExitCode {
    let failed: Vec<_> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    for o in &failed {
        if let Some((kind, e)) = &o.error {
            eprintln!("{}: {} error: {e}", o.table, kind.label());
        }
    }
    let all_stopped = !outcomes.is_empty()
        && outcomes
            .iter()
            .all(|o| matches!(o.error, Some((stream_sync::ErrorKind::Permanent, _))));
    if (once && !failed.is_empty()) || all_stopped {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `resync`: one rewriting cycle of the runner's table, with its summary.
async fn resync(mut runner: Runner) -> anyhow::Result<ExitCode> {
    runner.request_rewrite();
    let outcomes = runner.run(Mode::Once { max_attempts: 10 }).await;
    let mut failed = false;
    for o in &outcomes {
        match &o.error {
            Some((kind, e)) => {
                failed = true;
                eprintln!("{}: {} error: {e}", o.table, kind.label());
            }
            None => println!(
                "{}: rewrote {} rows, deleted {}",
                o.table, o.report.upserted, o.report.deleted
            ),
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `verify`: lists the mismatches; failure when there is any.
async fn verify(mut runner: Runner, limit: usize) -> anyhow::Result<ExitCode> {
    let found = runner.verify(limit).await?;
    for m in &found {
        println!("{m}");
    }
    if found.is_empty() {
        println!("all stream tables match the warehouse");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::shard_index_of;

    #[test]
    fn the_shard_index_must_fit_the_shard_count() {
        assert_eq!(shard_index_of(None, 1).unwrap(), 0);
        assert_eq!(shard_index_of(Some(1), 2).unwrap(), 1);
        let e = shard_index_of(Some(2), 2).unwrap_err().to_string();
        assert!(
            e.contains("replicas") && e.contains("stream_sync.shards"),
            "{e}"
        );
    }
}
