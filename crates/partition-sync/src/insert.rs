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
use crate::readers::RowReader;
use crate::rows::{decode, key_at};

/// The multi-row INSERT path. Returns the rows loaded.
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_rows(
    tx: &mut mysql::Transaction<'_>,
    store: &Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    work: &TableWork,
    load: &PartitionLoad,
    names: &[String],
    max_packet: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<u64, LoadError> {
    let target = &work.table.spec.target;
    let pid = &load.partition.id;
    let mut inserter = BatchInserter::new(target, names, max_packet, false);
    let mut loaded = 0u64;
    // A MySQL error names the row ("at row N" of a batch); its key is re-read from the files.
    let named = |e: batch::InsertError| -> LoadError {
        let key = e
            .row
            .and_then(|r| key_at(store, rt, &work.table, &load.files, r + 1));
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
    for file in &load.files {
        let mut rows =
            RowReader::open(store, file, rt).map_err(|m| staging_err(target, pid, file, m))?;
        while let Some(obj) = rows
            .next_row(rt)
            .map_err(|m| staging_err(target, pid, file, m))?
        {
            let values = decode(&work.table, pid, &obj)?;
            let row: Vec<Value> = values.into_iter().map(values::to_mysql).collect();
            let written = inserter.push(tx, row).map_err(named)?;
            loaded += 1;
            if written > 0 {
                progress(Progress::Rows(written as u64));
            }
        }
    }
    let written = inserter.flush(tx).map_err(named)?;
    progress(Progress::Rows(written as u64));
    Ok(loaded)
}
