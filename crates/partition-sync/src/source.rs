//! The warehouse side of a run: a table's schema and partitioning, change detection
//! (metadata or fingerprints), and `EXPORT DATA` of one partition to the staging bucket.

use domain::config::{ChangeDetection, TableSpec};
use domain::schema::Column;
use sync_engine::warehouse::{cell_i64, cell_str};
use sync_engine::warehouse::{Warehouse, WarehouseError};

use crate::partition::{Granularity, Scheme, NULL_PARTITION};
use crate::plan::SourcePartition;

/// Errors reading the warehouse for one table.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("warehouse table {table}: {source}")]
    Warehouse {
        table: String,
        #[source]
        source: WarehouseError,
    },
    #[error("warehouse table {table}: {message}")]
    Schema { table: String, message: String },
}

impl SourceError {
    /// Names `table` on a warehouse error (for `map_err`).
    pub fn warehouse(table: &PartitionedSource) -> impl FnOnce(WarehouseError) -> SourceError {
        let table = table.spec.source.to_string();
        move |source| SourceError::Warehouse { table, source }
    }

    pub fn transient(&self) -> bool {
        matches!(self, SourceError::Warehouse { source, .. } if source.transient())
    }
}

/// What the sync needs to know about a time-partitioned warehouse table.
#[derive(Debug, Clone)]
pub struct PartitionedSource {
    pub spec: TableSpec,
    /// Fully qualified, quoted: `` `project.dataset.table` ``.
    pub qualified: String,
    /// The warehouse's columns (with configured VARCHAR lengths), plus the materialised
    /// partition column of an ingestion-time table, in target column order.
    pub columns: Vec<Column>,
    pub scheme: Scheme,
}

impl PartitionedSource {
    /// Whether `__UNPARTITIONED__` waits instead of loading: in an ingestion-time table it is
    /// the streaming buffer. In a column-partitioned table it holds the dates outside
    /// BigQuery's partitionable range, loaded like any partition (a target partitioned in
    /// MySQL gets a last partition for the far future; docs/sync.md#partition-ids).
    pub fn unpartitioned_waits(&self) -> bool {
        self.scheme.ingestion_time
    }

    /// `SELECT` list exporting every target column in canonical form.
    pub fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| {
                if self.scheme.ingestion_time && c.name == self.scheme.target_column {
                    self.scheme.materialised_column().unwrap_or_default()
                } else {
                    c.export_expr(c.name.quoted())
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The query selecting one partition's rows in canonical form.
    pub fn partition_query(&self, partition: &str) -> Result<String, SourceError> {
        let filter =
            self.scheme
                .warehouse_filter(partition)
                .map_err(|message| SourceError::Schema {
                    table: self.spec.source.to_string(),
                    message,
                })?;
        Ok(format!(
            "SELECT {} FROM {} WHERE {filter}",
            self.select_list(),
            self.qualified
        ))
    }
}

/// Reads the table's schema and partitioning.
pub async fn describe(
    wh: &Warehouse,
    dataset: &str,
    spec: &TableSpec,
) -> Result<PartitionedSource, SourceError> {
    let table = wh
        .get_table(dataset, &spec.source)
        .await
        .map_err(|source| SourceError::Warehouse {
            table: spec.source.to_string(),
            source,
        })?;
    let schema_err = |message: String| SourceError::Schema {
        table: spec.source.to_string(),
        message,
    };
    let mut columns = domain::schema::columns_from_schema(
        &sync_engine::warehouse::fields_of(&table.schema),
        &spec.varchar,
    )
    .map_err(schema_err)?;
    let tp = table.time_partitioning.as_ref().ok_or_else(|| {
        schema_err(
            "is not time-partitioned; use mode = \"stream\" for unpartitioned tables".to_string(),
        )
    })?;
    let granularity = Granularity::parse(&tp.r#type).map_err(schema_err)?;
    let configured = spec
        .partition_column
        .as_ref()
        .ok_or_else(|| schema_err("has no partition_column configured".to_string()))?;
    check_partition_column(tp.field.as_deref(), configured).map_err(schema_err)?;
    let column_type = columns.iter().find(|c| c.name == *configured).map(|c| c.bq);
    let scheme = Scheme::new(configured, column_type, granularity).map_err(schema_err)?;
    if scheme.ingestion_time {
        if columns
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(&scheme.target_column))
        {
            return Err(schema_err(format!(
                "has a column `{}`, the name the ingestion-time partition is stored under",
                scheme.target_column
            )));
        }
        columns.push(Column {
            name: scheme.target_column.clone(),
            bq: scheme.column_type,
            required: true,
            varchar: None,
        });
    }
    for k in &spec.primary_key {
        if !columns.iter().any(|c| &c.name == k) {
            return Err(schema_err(format!(
                "primary key column `{k}` is not in the table"
            )));
        }
    }
    Ok(PartitionedSource {
        spec: spec.clone(),
        qualified: format!("`{}.{}.{}`", wh.project, dataset, spec.source),
        columns,
        scheme,
    })
}

/// Checks that the configured `partition_column` names how the table is partitioned:
/// `field`, the warehouse's partitioning column, or ingestion time when there is none.
fn check_partition_column(field: Option<&str>, configured: &str) -> Result<(), String> {
    let ingestion = configured.eq_ignore_ascii_case("_PARTITIONDATE")
        || configured.eq_ignore_ascii_case("_PARTITIONTIME");
    match (field, ingestion) {
        (Some(field), false) if field != configured => Err(format!(
            "is partitioned by `{field}`, but partition_column is `{configured}`"
        )),
        (Some(field), true) => Err(format!(
            "is partitioned by column `{field}`, not by ingestion time ({configured})"
        )),
        (None, false) => Err(format!(
            "is partitioned by ingestion time: set partition_column to _PARTITIONDATE or _PARTITIONTIME, not `{configured}`"
        )),
        _ => Ok(()),
    }
}

/// The table's partitions as the warehouse reports them now. Returns the partitions and
/// the bytes the queries processed.
pub async fn detect(
    wh: &Warehouse,
    dataset: &str,
    table: &PartitionedSource,
    how: ChangeDetection,
) -> Result<(Vec<SourcePartition>, u64), SourceError> {
    let werr = SourceError::warehouse(table);
    match how {
        // The change history names partitions on top of this listing (`group_plan`).
        ChangeDetection::Metadata | ChangeDetection::Changes => {
            let sql = format!(
                "SELECT partition_id, total_rows, UNIX_MICROS(last_modified_time) FROM `{}.{}.INFORMATION_SCHEMA.PARTITIONS` \
                 WHERE table_name = '{}'",
                wh.project, dataset, table.spec.source
            );
            let page = wh.query_all(&sql).await.map_err(werr)?;
            let parts = page
                .rows
                .iter()
                .filter_map(|r| {
                    Some(SourcePartition {
                        id: cell_str(r.first()?)?,
                        rows: cell_i64(r.get(1)?).unwrap_or(0),
                        modified_micros: cell_i64(r.get(2)?),
                        fingerprint: None,
                    })
                })
                .collect();
            Ok((parts, page.bytes_processed))
        }
        ChangeDetection::Fingerprint => {
            // BIT_XOR alone cancels identical rows in pairs (a table without a primary key
            // can hold duplicates: {a, a} and {b, b} would look alike), so a sum of the
            // hashes (each below 2^31: no overflow below 2^32 rows) goes into the fingerprint.
            let sql = format!(
                "SELECT pid, COUNT(*) AS row_count, BIT_XOR(h) AS fingerprint, SUM(MOD(h, 2147483647)) AS fp_sum FROM (\
                 SELECT {} AS pid, FARM_FINGERPRINT(TO_JSON_STRING(src_row)) AS h FROM {} AS src_row) GROUP BY pid",
                table.scheme.partition_id_expr(),
                table.qualified
            );
            let page = wh.query_all(&sql).await.map_err(werr)?;
            let parts = page
                .rows
                .iter()
                .map(|r| SourcePartition {
                    id: r
                        .first()
                        .and_then(cell_str)
                        .unwrap_or_else(|| NULL_PARTITION.to_string()),
                    rows: r.get(1).and_then(cell_i64).unwrap_or(0),
                    modified_micros: None,
                    fingerprint: Some(fingerprint(
                        r.get(2).and_then(cell_i64).unwrap_or(0),
                        r.get(3).and_then(cell_i64).unwrap_or(0),
                    )),
                })
                .collect();
            Ok((parts, page.bytes_processed))
        }
    }
}

/// The partitions BigQuery's change history names between two instants (microseconds, end
/// exclusive; `docs/sync.md#change-history`), and the bytes the query processed.
pub async fn changed_partitions(
    wh: &Warehouse,
    table: &PartitionedSource,
    from_micros: i64,
    to_micros: i64,
) -> Result<(Vec<String>, u64), SourceError> {
    let sql = format!(
        "SELECT DISTINCT {} AS pid FROM CHANGES(TABLE {}, TIMESTAMP_MICROS({from_micros}), TIMESTAMP_MICROS({to_micros}))",
        table.scheme.partition_id_expr(),
        table.qualified
    );
    let page = wh
        .query_all(&sql)
        .await
        .map_err(SourceError::warehouse(table))?;
    let ids = page
        .rows
        .iter()
        .map(|r| {
            r.first()
                .and_then(cell_str)
                .unwrap_or_else(|| NULL_PARTITION.to_string())
        })
        .collect();
    Ok((ids, page.bytes_processed))
}

/// A partition's fingerprint from the XOR and the sum of its row hashes: the sum spread over
/// all 64 bits (a multiplication by an odd constant, wrapping), XORed in.
pub fn fingerprint(xor: i64, sum: i64) -> i64 {
    xor ^ sum.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64)
}

/// Exports one partition to `uri_prefix/*.json` (newline-delimited JSON) or
/// `uri_prefix/*.parquet`, with `order` in primary-key order (BigQuery keeps a top-level
/// ORDER BY across the files, in file-name order). Returns the bytes the export processed.
pub async fn export(
    wh: &Warehouse,
    table: &PartitionedSource,
    partition: &str,
    uri_prefix: &str,
    (format, order): (domain::config::StagingFormat, domain::config::ExportOrder),
) -> Result<u64, SourceError> {
    let mut query = table.partition_query(partition)?;
    if order == domain::config::ExportOrder::PrimaryKey && !table.spec.primary_key.is_empty() {
        let keys: Vec<&str> = table.spec.primary_key.iter().map(|k| k.quoted()).collect();
        query.push_str(&format!(" ORDER BY {}", keys.join(", ")));
    }
    let (ext, fmt) = match format {
        domain::config::StagingFormat::Json => ("json", "JSON"),
        domain::config::StagingFormat::Parquet => ("parquet", "PARQUET"),
    };
    let sql = format!(
        "EXPORT DATA OPTIONS(uri='{}/*.{ext}', format='{fmt}', overwrite=true) AS {query}",
        uri_prefix.trim_end_matches('/')
    );
    let page = wh
        .query_all(&sql)
        .await
        .map_err(SourceError::warehouse(table))?;
    Ok(page.bytes_processed)
}
