//! Steps 3 and 4 of a group, batch by batch (`docs/sync.md#batches`): the group's plan is cut
//! into batches bounded by partitions and rows, oldest first ([`plan::batches`]); each batch is
//! exported and loaded in its own transaction with its watermarks. No batch starts once the
//! run's deadline is near (`--max-run-secs`): what is left is reported pending and the next
//! run continues. The group's advisory lock is held across the batches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use domain::history::HistoryCursor;
use sync_engine::session;
use sync_engine::throttle::Throttle;

use crate::export::{clean_staging, export_group};
use crate::load::{self, LoadError, TableLoadSummary, TableWork};
use crate::plan::{self, Plan};
use crate::runner::{blocking_err, Context, GroupError, ProgressFn};
use crate::source::PartitionedSource;
use crate::state::write_history;
use crate::target_ddl::prepare_targets;
use crate::verify::{self, PartitionMismatch};

/// What every batch of a run shares.
pub(crate) struct BatchRun<'a> {
    pub(crate) ctx: &'a Context,
    pub(crate) run_id: &'a str,
    pub(crate) progress: &'a ProgressFn,
    /// No batch starts when it would likely end after this.
    pub(crate) deadline: Instant,
    /// Waited on between chunks and before each batch's transaction.
    pub(crate) throttle: Arc<Throttle>,
}

/// What the batches of a group did.
pub(crate) struct BatchesDone {
    pub(crate) outcomes: Vec<TableLoadSummary>,
    /// Per table: partitions planned but left for a later run (the deadline came).
    pub(crate) pending: BTreeMap<String, usize>,
    /// The bad rows that failed their partitions (each left as it was, the rest of its batch
    /// loaded without it); the group fails with them.
    pub(crate) bad: Vec<LoadError>,
}

/// Runs the group's batches in order until done or the deadline is near; then records the
/// change-history cursors (only when every batch ran) and releases the group's lock.
pub(crate) async fn run_batches(
    run: &BatchRun<'_>,
    tables: Vec<(PartitionedSource, Plan)>,
    (conn, lock): (mysql::Conn, String),
    cursors: Vec<(String, HistoryCursor)>,
    bytes: &mut u64,
) -> Result<BatchesDone, GroupError> {
    let settings = &run.ctx.config.partition_sync;
    let (sources, plans): (Vec<_>, Vec<_>) = tables.into_iter().unzip();
    let batches = plan::batches(
        &plans,
        settings.max_batch_partitions,
        settings.max_batch_rows,
    );
    let mut conn = conn;
    let mut outcomes: Vec<TableLoadSummary> = Vec::new();
    let mut bad: Vec<LoadError> = Vec::new();
    let mut left = batches.len();
    for batch in &batches {
        // As long as the longest batch so far (of any group of this run) must still fit.
        let longest = *run
            .ctx
            .longest_batch
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if Instant::now() + longest > run.deadline {
            tracing::warn!(
                batches_left = left,
                "the run's deadline is near: the rest of the group waits for the next run"
            );
            break;
        }
        let started = Instant::now();
        let tables: Vec<_> = sources.iter().cloned().zip(batch.iter().cloned()).collect();
        // The staging files are cleaned whether the export and load succeeded or not.
        let loaded = export_and_load(run, tables, conn, bytes).await;
        clean_staging(run.ctx, run.run_id).await;
        let done = match loaded {
            Err((e, left_out)) if e.past_deadline() => {
                bad.extend(left_out);
                // The batch rolled back (an exchange's shadow is dropped); the group's lock
                // went with its session. It and the rest wait for the next run.
                tracing::warn!(
                    error = %e,
                    batches_left = left,
                    "the run's deadline came while pausing to protect MySQL: the rest of the group waits for the next run"
                );
                let pending = pending_per_table(&sources, &batches[batches.len() - left..]);
                return Ok(BatchesDone {
                    outcomes,
                    pending,
                    bad,
                });
            }
            Err((e, _)) => return Err(e),
            Ok(done) => done,
        };
        let (next, done, left_out) = (done.conn, done.outcomes, done.bad);
        conn = next;
        merge(&mut outcomes, done);
        // What the batch loaded: without the partitions its bad rows failed.
        let bad_ids: Vec<&str> = left_out.iter().filter_map(bad_partition).collect();
        let loaded: Vec<Plan> = batch
            .iter()
            .map(|p| Plan {
                loads: p
                    .loads
                    .iter()
                    .filter(|l| !bad_ids.contains(&l.partition.id.as_str()))
                    .cloned()
                    .collect(),
                ..p.clone()
            })
            .collect();
        bad.extend(left_out);
        if settings.verify_after_load {
            let (next, drift) = check_drift(run, &sources, &loaded, conn).await?;
            conn = next;
            if !drift.is_empty() {
                return Err(GroupError::Drift(drift));
            }
        }
        {
            let mut longest = run
                .ctx
                .longest_batch
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *longest = (*longest).max(started.elapsed());
        }
        left -= 1;
    }
    let pending = pending_per_table(&sources, &batches[batches.len() - left..]);
    // The change-history window is done only when all of it loaded (a partition failed by a
    // bad row must be named again next run).
    let record = if left == 0 && bad.is_empty() {
        cursors
    } else {
        Vec::new()
    };
    tokio::task::spawn_blocking(move || {
        let written = write_cursors(&mut conn, &record);
        let _ = session::release_lock(&mut conn, &lock);
        written
    })
    .await
    .map_err(blocking_err)??;
    Ok(BatchesDone {
        outcomes,
        pending,
        bad,
    })
}

/// The partition a bad row failed, if the error is one.
fn bad_partition(e: &LoadError) -> Option<&str> {
    match e {
        LoadError::BadRow { partition, .. } => Some(partition),
        _ => None,
    }
}

/// What one batch's load did: the group's session back, the outcomes, and the bad rows that
/// failed their partitions (left out of the batch's transaction).
struct BatchLoad {
    conn: mysql::Conn,
    outcomes: Vec<TableLoadSummary>,
    bad: Vec<LoadError>,
}

/// After a batch committed: its loaded partitions' rows in MySQL against the warehouse's
/// (count and content digest, only those partitions; `docs/sync.md#batches`). Partitions that
/// differ lose their watermarks, so the next run reloads them. Returns the session.
async fn check_drift(
    run: &BatchRun<'_>,
    sources: &[PartitionedSource],
    batch: &[Plan],
    conn: mysql::Conn,
) -> Result<(mysql::Conn, Vec<PartitionMismatch>), GroupError> {
    let mut wanted = Vec::new();
    for (i, (source, plan)) in sources.iter().zip(batch).enumerate() {
        let ids: Vec<String> = plan.loads.iter().map(|l| l.partition.id.clone()).collect();
        if ids.is_empty() {
            continue;
        }
        let wh = verify::warehouse_digests(&run.ctx.warehouse, source, Some(&ids))
            .await
            .map_err(|e| {
                GroupError::Other(format!(
                    "table {}: checking the load: {e}",
                    source.spec.target
                ))
            })?;
        wanted.push((i, source.clone(), ids, wh));
    }
    let (mut conn, differ) = tokio::task::spawn_blocking(move || {
        let mut conn = conn;
        let mut differ = Vec::new();
        for (i, source, ids, wh) in wanted {
            let target = source.spec.target.to_string();
            let my = verify::mysql_digests(&mut conn, &source, Some(&ids)).map_err(|e| {
                GroupError::Load(load::my_err(format!("table {target}: checking the load"))(
                    e,
                ))
            })?;
            let found = verify::compare(&target, &wh, &my);
            if !found.is_empty() {
                differ.push((i, found));
            }
        }
        Ok::<_, GroupError>((conn, differ))
    })
    .await
    .map_err(blocking_err)??;
    // Only where something differs: a partition modified in the warehouse since its
    // detection differs for that reason; its watermark is older than the change, so the
    // next run reloads it anyway. What remains is drift.
    let mut drift = Vec::new();
    for (i, found) in differ {
        let moved = changed_since_detection(run, &sources[i], &batch[i]).await?;
        drift.extend(found.into_iter().filter(|m| !moved.contains(&m.partition)));
    }
    if drift.is_empty() {
        return Ok((conn, drift));
    }
    tokio::task::spawn_blocking(move || {
        for m in &drift {
            tracing::error!(table.name = %m.table, partition.id = %m.partition, detail = m.detail, "loaded partition differs from the warehouse; its watermark is forgotten");
            crate::state::delete_partition(&mut conn, &m.table, &m.partition).map_err(|e| {
                GroupError::Load(load::my_err(format!(
                    "table {}: forgetting a watermark",
                    m.table
                ))(e))
            })?;
        }
        Ok((conn, drift))
    })
    .await
    .map_err(blocking_err)?
}

/// The batch's partitions whose `last_modified_time` moved since detection (metadata; none
/// known in fingerprint mode, where detection records no times).
async fn changed_since_detection(
    run: &BatchRun<'_>,
    source: &PartitionedSource,
    plan: &Plan,
) -> Result<Vec<String>, GroupError> {
    if plan
        .loads
        .iter()
        .all(|l| l.partition.modified_micros.is_none())
    {
        return Ok(Vec::new());
    }
    let (now, _) = crate::source::detect(
        &run.ctx.warehouse,
        run.ctx.dataset(),
        source,
        domain::config::ChangeDetection::Metadata,
    )
    .await?;
    Ok(plan
        .loads
        .iter()
        .filter(|l| {
            let current = now
                .iter()
                .find(|p| p.id == l.partition.id)
                .and_then(|p| p.modified_micros);
            matches!((current, l.partition.modified_micros), (Some(c), Some(d)) if c > d)
        })
        .map(|l| l.partition.id.clone())
        .collect())
}

/// Partitions of the batches not run, per table.
fn pending_per_table(sources: &[PartitionedSource], left: &[Vec<Plan>]) -> BTreeMap<String, usize> {
    sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let n = left
                .iter()
                .filter_map(|b| b.get(i))
                .map(|p| p.loads.len())
                .sum();
            (s.spec.target.to_string(), n)
        })
        .collect()
}

/// Adds one batch's outcomes to the group's, per table.
fn merge(all: &mut Vec<TableLoadSummary>, batch: Vec<TableLoadSummary>) {
    for t in batch {
        match all.iter_mut().find(|a| a.table == t.table) {
            Some(a) => {
                a.partitions_loaded += t.partitions_loaded;
                a.partitions_exchanged += t.partitions_exchanged;
                a.partitions_removed += t.partitions_removed;
                a.rows_loaded += t.rows_loaded;
                a.rows_deleted += t.rows_deleted;
            }
            None => all.push(t),
        }
    }
}

/// One batch: exports its partitions (`docs/sync.md#export`), then loads it in one
/// transaction (`docs/sync.md#load`). Returns the locked session for the next batch.
async fn export_and_load(
    run: &BatchRun<'_>,
    tables: Vec<(PartitionedSource, Plan)>,
    conn: mysql::Conn,
    bytes: &mut u64,
) -> Result<BatchLoad, BatchFailed> {
    let work = export_group(run.ctx, run.run_id, tables, run.progress, bytes)
        .await
        .map_err(|e| (e, Vec::new()))?;
    load_exported(run, conn, work).await
}

/// A batch that failed, and the bad rows that had failed their partitions before (reported
/// with it when the run's deadline ended the batch).
type BatchFailed = (GroupError, Vec<LoadError>);

/// Records the change-history cursors of a group whose every batch committed (or that had
/// nothing to load). A crash before this re-reads the same window next run: its partitions
/// load again.
pub(crate) fn write_cursors(
    conn: &mut mysql::Conn,
    cursors: &[(String, HistoryCursor)],
) -> Result<(), GroupError> {
    for (target, cursor) in cursors {
        write_history(conn, target, cursor).map_err(|e| {
            GroupError::Load(load::my_err(format!(
                "table {target}: recording its change-history window"
            ))(e))
        })?;
    }
    Ok(())
}

/// Step 4 of a batch, on a blocking thread: creates or checks the targets (DDL, before the
/// transaction), then loads the batch in one transaction. A bad row fails its partition
/// (`docs/sync.md#batches`): the transaction rolls back and the batch loads again without
/// that partition id (in every table of the group), so one bad row does not hold back the
/// rest of the backlog.
async fn load_exported(
    run: &BatchRun<'_>,
    mut conn: mysql::Conn,
    work: Vec<TableWork>,
) -> Result<BatchLoad, BatchFailed> {
    let store = run.ctx.store.clone();
    let deadline = run.deadline;
    let rt = tokio::runtime::Handle::current();
    let run_id = run.run_id.to_string();
    let settings = run.ctx.config.partition_sync.clone();
    let throttle = run.throttle.clone();
    let progress = run.progress.clone();
    let loaded = tokio::task::spawn_blocking(move || -> Result<_, Box<(LoadError, Vec<LoadError>)>> {
        let mut work = work;
        prepare_targets(&mut conn, &mut work, settings.ddl_lock_wait_secs)
            .map_err(|e| Box::new((e, Vec::new())))?;
        let opts = load::LoadOptions {
            loader: settings.loader,
            replace: settings.replace,
            chunk_rows: settings.chunk_rows,
            ddl_lock_wait_secs: settings.ddl_lock_wait_secs,
            throttle: &throttle,
        };
        let mut bad = Vec::new();
        // What failed attempts had already swapped in by exchange (committed).
        let mut carried: Vec<TableLoadSummary> = Vec::new();
        loop {
            match load::load_batch(&mut conn, &store, &rt, &run_id, &work, &opts, &*progress) {
                Ok(outcomes) => {
                    let mut all = carried;
                    merge(&mut all, outcomes);
                    return Ok(BatchLoad {
                        conn,
                        outcomes: all,
                        bad,
                    });
                }
                Err(e) => {
                    let Some(pid) = bad_partition(&e).map(str::to_string) else {
                        return Err(Box::new((e, bad)));
                    };
                    tracing::error!(error = %e, partition.id = %pid, "a bad row fails its partition; the rest of the batch loads without it");
                    bad.push(e);
                    match drop_done(&mut conn, &run_id, &mut work, &pid) {
                        Ok(swapped) => merge(&mut carried, swapped),
                        Err(e) => return Err(Box::new((e, bad))),
                    }
                    if std::time::Instant::now() >= deadline {
                        let past = LoadError::Sink {
                            context: "loading the batch again without its bad partitions".into(),
                            source: sync_engine::session::MysqlError::PastDeadline(
                                "the run's time budget is spent".into(),
                            ),
                        };
                        return Err(Box::new((past, bad)));
                    }
                }
            }
        }
    })
    .await
    .map_err(|e| (blocking_err(e), Vec::new()))?;
    loaded.map_err(|b| {
        let (e, bad) = *b;
        (GroupError::from(e), bad)
    })
}

/// Takes out of `work` the bad row's partition `pid` and the partitions a failed attempt
/// already swapped in by exchange (committed, with this run's watermark); returns the latter
/// as loaded.
fn drop_done(
    conn: &mut mysql::Conn,
    run_id: &str,
    work: &mut [TableWork],
    pid: &str,
) -> Result<Vec<TableLoadSummary>, LoadError> {
    let mut swapped = Vec::new();
    for w in work {
        let target = w.table.spec.target.to_string();
        let done = crate::state::partitions_of_run(conn, &target, run_id).map_err(load::my_err(
            format!("table {target}: reading this run's watermarks"),
        ))?;
        let mut summary = TableLoadSummary {
            table: target,
            ..Default::default()
        };
        w.loads.retain(|l| {
            let Some((_, rows)) = done.iter().find(|(id, _)| *id == l.partition.id) else {
                return l.partition.id != pid;
            };
            summary.partitions_loaded += 1;
            summary.partitions_exchanged += 1;
            summary.rows_loaded += rows;
            summary.rows_deleted += l.synced_rows.unwrap_or(0);
            false
        });
        swapped.push(summary);
    }
    Ok(swapped)
}
