//! The staging side of a group (`docs/sync.md#export`): each changed partition exported by the
//! warehouse to `STAGING_URI/RUN_ID/TARGET/PARTITION/`, a few at a time, and its files listed
//! in name order for the load; after the load, whatever its outcome, the run's prefix deleted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStore;

use crate::load::{PartitionLoad, Progress, TableWork};
use crate::plan::{self, Plan};
use crate::runner::{Context, GroupError};
use crate::source::{self, PartitionedSource};

/// Export jobs of one table that run at once.
const EXPORT_CONCURRENCY: usize = 4;

/// Exports the planned partitions of every table of a group, table by table, and returns the
/// group's load work. Adds the bytes the exports processed to `bytes`.
pub(crate) async fn export_group(
    ctx: &Context,
    run_id: &str,
    planned: Vec<(PartitionedSource, Plan)>,
    progress: &Arc<dyn Fn(Progress) + Send + Sync>,
    bytes: &mut u64,
) -> Result<Vec<TableWork>, GroupError> {
    let mut work = Vec::new();
    let to_export: usize = planned.iter().map(|(_, p)| p.loads.len()).sum();
    let started = AtomicUsize::new(0);
    for (table, plan) in planned {
        let exports = futures::stream::iter(
            plan.loads
                .iter()
                .map(|l| export_partition(ctx, run_id, &table, l, &started, to_export, progress)),
        )
        .buffered(EXPORT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
        let mut loads = Vec::new();
        for e in exports {
            let (b, load) = e?;
            *bytes += b;
            loads.push(load);
        }
        work.push(TableWork {
            table,
            loads,
            vanished: plan.vanished,
        });
    }
    Ok(work)
}

/// Exports one partition and lists its files. Returns the bytes the export processed and the
/// partition's load.
async fn export_partition(
    ctx: &Context,
    run_id: &str,
    table: &PartitionedSource,
    l: &plan::Load,
    started: &AtomicUsize,
    total: usize,
    progress: &Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<(u64, PartitionLoad), GroupError> {
    let done = started.fetch_add(1, Ordering::Relaxed) + 1;
    progress(Progress::Exporting {
        table: table.spec.target.to_string(),
        partition: l.partition.id.clone(),
        done,
        total,
    });
    let rel = format!("{run_id}/{}/{}", table.spec.target, l.partition.id);
    let uri = format!("{}/{rel}", ctx.export_uri);
    tracing::debug!(table.name = %table.spec.target, partition.id = %l.partition.id, reason = %l.reason, "exporting");
    let b = source::export(
        &ctx.warehouse,
        table,
        &l.partition.id,
        &uri,
        (ctx.format, ctx.config.partition_sync.export_order),
    )
    .await?;
    let prefix = join(&ctx.store_prefix, &rel);
    let mut files = list(&ctx.store, &prefix)
        .await
        .map_err(|e| GroupError::Staging(format!("listing {uri}: {e}")))?;
    files.sort();
    Ok((
        b,
        PartitionLoad {
            partition: l.partition.clone(),
            reason: l.reason,
            files,
            synced_rows: l.synced_rows,
        },
    ))
}

/// Deletes the run's staging prefix (best effort: a lifecycle rule can do it too), unless
/// `staging.keep_files`.
pub(crate) async fn clean_staging(ctx: &Context, run_id: &str) {
    let keep = ctx.config.staging.as_ref().is_some_and(|s| s.keep_files);
    if keep {
        return;
    }
    let prefix = join(&ctx.store_prefix, run_id);
    let paths = list(&ctx.store, &prefix).await.unwrap_or_default();
    for p in paths {
        if let Err(e) = ctx.store.delete(&p).await {
            tracing::warn!(error = %e, path = %p, "could not delete a staging file");
        }
    }
}

/// The objects under `prefix`, in the store's order.
async fn list(store: &Arc<dyn ObjectStore>, prefix: &Path) -> object_store::Result<Vec<Path>> {
    store
        .list(Some(prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await
}

fn join(prefix: &Path, rel: &str) -> Path {
    if prefix.as_ref().is_empty() {
        Path::from(rel)
    } else {
        Path::from(format!("{}/{rel}", prefix.as_ref()))
    }
}
