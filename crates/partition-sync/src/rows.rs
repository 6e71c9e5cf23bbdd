//! One exported row on its way into MySQL: converted to the target's column values, each value
//! checked (a value MySQL would reject fails the load, naming the row's primary key, as
//! `docs/sync.md#load` describes), and the key of a row MySQL rejected re-read from the files.

use std::sync::Arc;

use object_store::path::Path;
use object_store::ObjectStore;

use domain::schema::convert;

use crate::load::LoadError;
use crate::readers::RowReader;
use crate::source::PartitionedSource;

/// Converts one exported row into the row's MySQL values, checking each.
pub(crate) fn decode(
    table: &PartitionedSource,
    pid: &str,
    obj: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<domain::schema::SqlValue>, LoadError> {
    let target = &table.spec.target;
    let mut row = Vec::with_capacity(table.columns.len());
    for col in &table.columns {
        let v = obj
            .get(col.name.as_str())
            .unwrap_or(&serde_json::Value::Null);
        let value = convert(col, v).map_err(|message| LoadError::BadRow {
            table: target.to_string(),
            partition: pid.to_string(),
            key: key_of(table, obj),
            column: col.name.to_string(),
            message,
        })?;
        row.push(value);
    }
    Ok(row)
}

/// The key of the `n`-th (1-based) row of a partition's files, re-read for an error message.
pub(crate) fn key_at(
    store: &Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    table: &PartitionedSource,
    files: &[Path],
    n: usize,
) -> Option<String> {
    let mut i = 0;
    for file in files {
        let mut rows = RowReader::open(store, file, rt).ok()?;
        while let Some(obj) = rows.next_row(rt).ok()? {
            i += 1;
            if i == n {
                return Some(key_of(table, &obj));
            }
        }
    }
    None
}

/// The primary key of an exported row, for messages: `recipe_id=7, day=2026-01-01`.
fn key_of(table: &PartitionedSource, obj: &serde_json::Map<String, serde_json::Value>) -> String {
    if table.spec.primary_key.is_empty() {
        return "(no primary key configured)".into();
    }
    table
        .spec
        .primary_key
        .iter()
        .map(|k| match obj.get(k.as_str()) {
            Some(serde_json::Value::String(s)) => format!("{k}={s}"),
            Some(v) => format!("{k}={v}"),
            None => format!("{k}=NULL"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
