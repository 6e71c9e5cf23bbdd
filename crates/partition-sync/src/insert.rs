//! The batched multi-row `INSERT` path of a partition's rows, used when `LOAD DATA LOCAL
//! INFILE` can't be (`docs/sync.md#load`): bound values, a statement flushed before it would
//! outgrow `max_allowed_packet`, and an error naming "row N" traced back to that row's key.

use std::sync::Arc;

use mysql::Value;
use object_store::ObjectStore;

use sync_engine::batch;
use sync_engine::batch::BatchInserter;
use sync_engine::values;

use crate::load::{staging_err, LoadError, PartitionLoad, Progress, TableWork};
use crate::readers::Chunk;
use crate::rows::{decode, key_at};

/// The multi-row INSERT path of one chunk of a partition's rows. Returns the rows loaded.
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_chunk(
    tx: &mut mysql::Transaction<'_>,
    store: &Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    (work, load): (&TableWork, &PartitionLoad),
    max_packet: usize,
    chunk: &Chunk<'_>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<u64, LoadError> {
    let target = &work.table.spec.target;
    let pid = &load.partition.id;
    let names: Vec<String> = work
        .table
        .columns
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    let mut inserter = BatchInserter::new(chunk.into, &names, max_packet, false);
    let offset = chunk.offset as usize;
    let mut loaded = 0u64;
    // A MySQL error names the row ("at row N" of a batch); its key is re-read from the files.
    let named = |e: batch::InsertError| -> LoadError {
        let key = e
            .row
            .and_then(|r| key_at(store, rt, &work.table, &load.files, offset + r + 1));
        match (key, e.column) {
            (Some(key), Some(column)) => LoadError::BadRow {
                table: target.to_string(),
                partition: pid.clone(),
                key,
                column,
                message: e.error.to_string(),
            },
            _ => LoadError::Sink {
                context: format!("table {target}, partition {pid}: INSERT"),
                source: e.error,
            },
        }
    };
    let mut cursor = chunk
        .rows
        .lock()
        .map_err(|_| staging_err(target, pid, &Default::default(), "row cursor lock poisoned"))?;
    while chunk.limit.is_none_or(|l| loaded < l) {
        let Some(obj) = cursor
            .next_row(rt)
            .map_err(|(file, m)| staging_err(target, pid, &file, m))?
        else {
            break;
        };
        let values = decode(&work.table, pid, &obj)?;
        let row: Vec<Value> = values.into_iter().map(values::to_mysql).collect();
        let written = inserter.push(tx, row).map_err(named)?;
        loaded += 1;
        if written > 0 {
            progress(Progress::Rows(written as u64));
        }
    }
    let written = inserter.flush(tx).map_err(named)?;
    progress(Progress::Rows(written as u64));
    Ok(loaded)
}
