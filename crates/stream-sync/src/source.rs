//! The warehouse side of a stream table: its schema, the SQL of each step (pure builders) and
//! the queries, counted in [`FetchStats`] so tests and the benchmark can see what was read.

use domain::config::TableSpec;
use domain::ident::Ident;
use domain::schema::{BqType, Column};
use sync_engine::warehouse::{Warehouse, WarehouseError};

use crate::plan::{BucketDigest, Digests, KeyHash};
use crate::SyncError;

/// What one cycle read from the warehouse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Queries sent (each `jobs.query`, whatever its paging).
    pub queries: u64,
    /// Metadata requests (`tables.get`).
    pub metadata_calls: u64,
    /// Bucket digest rows read.
    pub digest_rows: u64,
    /// `(key, hash)` rows read for differing buckets.
    pub key_rows: u64,
    /// IBLT cells read for differing buckets (see `iblt`).
    pub cell_rows: u64,
    /// Full table rows read.
    pub full_rows: u64,
    pub bytes_processed: u64,
}

/// A warehouse table as the sync reads it.
#[derive(Debug, Clone)]
pub struct SourceTable {
    /// `` `project.dataset.table` ``
    pub path: String,
    /// The cycle's snapshot (microseconds): every query reads the table `FOR SYSTEM_TIME AS
    /// OF` it, so digests, IBLT, keys and rows agree (docs/sync.md#cycle). `None`: live.
    pub snapshot_micros: Option<i64>,
    /// The MySQL table it syncs into.
    pub target: Ident,
    pub columns: Vec<Column>,
    pub primary_key: Vec<Column>,
    pub buckets: u32,
}

/// Warehouse metadata used for the no-cost skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMeta {
    pub last_modified: Option<String>,
    pub num_rows: Option<String>,
}

impl SourceTable {
    /// Builds the table from a warehouse schema; fails (permanently) when a key column is
    /// missing or a type is unsupported.
    pub fn new(
        project: &str,
        dataset: &str,
        spec: &TableSpec,
        columns: Vec<Column>,
        buckets: u32,
    ) -> Result<SourceTable, String> {
        let mut primary_key = Vec::new();
        for k in &spec.primary_key {
            let c = columns.iter().find(|c| &c.name == k).ok_or_else(|| {
                format!(
                    "primary key column `{k}` is not in warehouse table {}",
                    spec.source
                )
            })?;
            primary_key.push(c.clone());
        }
        if let Some(cursor) = &spec.cursor_column {
            let c = columns
                .iter()
                .find(|c| &c.name == cursor)
                .ok_or_else(|| format!("cursor_column `{cursor}` is not in the warehouse table"))?;
            if !matches!(
                c.bq,
                BqType::Int64 | BqType::Timestamp | BqType::Datetime | BqType::Date
            ) {
                return Err(format!(
                    "cursor_column `{cursor}` has type {:?}; INT64, TIMESTAMP, DATETIME or DATE needed",
                    c.bq
                ));
            }
        }
        Ok(SourceTable {
            path: format!("`{project}.{dataset}.{}`", spec.source),
            snapshot_micros: None,
            target: spec.target.clone(),
            columns,
            primary_key,
            buckets,
        })
    }

    /// The table as the cycle's queries read it, aliased `t`: at the snapshot when there is one.
    fn table_ref(&self) -> String {
        match self.snapshot_micros {
            Some(at) => format!(
                "{} AS t FOR SYSTEM_TIME AS OF TIMESTAMP_MICROS({at})",
                self.path
            ),
            None => format!("{} AS t", self.path),
        }
    }

    /// `_sync_bucket` and `_sync_hash` (plus the key columns when `pk`) from an inner query
    /// over the table. The hash is the fingerprint of the whole row (key included); the
    /// bucket the key's fingerprint modulo B, made non-negative without `ABS` (which
    /// overflows on INT64_MIN). Only key columns: the emulator can't group over a subquery
    /// that carries STRUCT columns.
    fn hashed_keys(&self, pk: bool) -> String {
        let mut cols = String::new();
        if pk {
            for c in &self.primary_key {
                cols.push_str(&format!("t.{}, ", c.name.quoted()));
            }
        }
        self.hashed_with(&cols)
    }

    fn hashed_with(&self, columns: &str) -> String {
        let b = self.buckets;
        let key: Vec<String> = self
            .primary_key
            .iter()
            .map(|c| format!("t.{}", c.name.quoted()))
            .collect();
        format!(
            "(SELECT {columns}MOD(MOD(FARM_FINGERPRINT(TO_JSON_STRING(STRUCT({key}))), {b}) + {b}, {b}) AS _sync_bucket, \
             FARM_FINGERPRINT(TO_JSON_STRING(t)) AS _sync_hash FROM {from})",
            key = key.join(", "),
            from = self.table_ref()
        )
    }

    /// Per bucket `COUNT(*)` and `BIT_XOR(hash)`: B rows at most. Grouped in an outer query
    /// because the emulator can't group by an expression over the row.
    pub fn digest_sql(&self) -> String {
        format!(
            "SELECT _sync_bucket, COUNT(*) AS c, BIT_XOR(_sync_hash) AS x FROM {} GROUP BY _sync_bucket",
            self.hashed_keys(false)
        )
    }

    /// `(key, hash)` of the given buckets.
    pub fn keys_sql(&self, buckets: &[u16]) -> String {
        let cols: Vec<String> = self
            .primary_key
            .iter()
            .map(|c| c.export_expr(c.name.quoted()))
            .collect();
        format!(
            "SELECT {}, _sync_hash, _sync_bucket FROM {} WHERE _sync_bucket IN ({}) ORDER BY _sync_bucket",
            cols.join(", "),
            self.hashed_keys(true),
            join_nums(buckets)
        )
    }

    /// The warehouse's IBLT (see [`crate::iblt`]) of the row hashes in `buckets` (`None`: the
    /// whole table), `m` cells per sub-table: `(cell, count, xor, check)` of each non-empty
    /// cell. Cell numbers and the checksum are the same arithmetic as `iblt::cells_of` and
    /// `iblt::check_of`.
    pub fn iblt_sql(&self, buckets: Option<&[u16]>, m: u32) -> String {
        const LOW63: &str = "9223372036854775807";
        let slice = |shift: u32| {
            if shift == 0 {
                "(h & 1048575)".to_string()
            } else {
                format!("(((h & {LOW63}) >> {shift}) & 1048575)")
            }
        };
        // One pass over the rows; each lands in one cell of each sub-table (grouping sets
        // over three cell columns, whose ranges don't overlap).
        format!(
            "SELECT COALESCE(c0, c1, c2) AS cell, COUNT(*) AS c, BIT_XOR(h) AS x, \
             BIT_XOR(((h & {LOW63}) >> 33) * (h & 2147483647) + IF(h < 0, 4611686018427387904, 0)) AS s \
             FROM (SELECT h, MOD({s0}, {m}) AS c0, {m} + MOD({s1}, {m}) AS c1, {m2} + MOD({s2}, {m}) AS c2 \
             FROM {rows}) GROUP BY GROUPING SETS ((c0), (c1), (c2))",
            rows = match buckets {
                Some(list) => format!(
                    "(SELECT {hash} AS h, {bucket} AS b FROM {from}) WHERE b IN ({})",
                    join_nums(list),
                    hash = Self::HASH,
                    bucket = self.bucket_expr(),
                    from = self.table_ref(),
                ),
                None => format!("(SELECT {} AS h FROM {})", Self::HASH, self.table_ref()),
            },
            s0 = slice(0),
            s1 = slice(21),
            s2 = slice(42),
            m2 = 2 * u64::from(m),
        )
    }

    /// Full rows (as [`Self::rows_sql`]) with the given hashes, wherever they are: cheaper
    /// than also filtering by bucket, which costs a second fingerprint per row.
    pub fn rows_by_hash_sql(&self, hashes: &[i64]) -> String {
        format!(
            "SELECT {}, {bucket} AS _sync_bucket, {hash} AS _sync_hash FROM {} WHERE {hash} IN UNNEST([{}])",
            self.select_list(),
            self.table_ref(),
            join_nums(hashes),
            bucket = self.bucket_expr(),
            hash = Self::HASH,
        )
    }

    /// The bucket and hash expressions over the row alias `t`.
    fn bucket_expr(&self) -> String {
        let b = self.buckets;
        let key: Vec<String> = self
            .primary_key
            .iter()
            .map(|c| format!("t.{}", c.name.quoted()))
            .collect();
        format!(
            "MOD(MOD(FARM_FINGERPRINT(TO_JSON_STRING(STRUCT({}))), {b}) + {b}, {b})",
            key.join(", ")
        )
    }

    const HASH: &'static str = "FARM_FINGERPRINT(TO_JSON_STRING(t))";

    /// Full rows (canonical export form) plus bucket and hash, of the given buckets, limited to
    /// the given hashes when `hashes` is some. One flat SELECT that repeats the expressions in
    /// WHERE: the emulator loses STRUCT columns passed through a `t.*` subquery.
    pub fn rows_sql(&self, buckets: &[u16], hashes: Option<&[i64]>) -> String {
        let mut sql = format!(
            "SELECT {}, {bucket} AS _sync_bucket, {hash} AS _sync_hash FROM {} WHERE {bucket} IN ({})",
            self.select_list(),
            self.table_ref(),
            join_nums(buckets),
            bucket = self.bucket_expr(),
            hash = Self::HASH,
        );
        if let Some(h) = hashes {
            sql.push_str(&format!(
                " AND {} IN UNNEST([{}])",
                Self::HASH,
                join_nums(h)
            ));
        }
        sql
    }

    /// Every row (canonical export form) with its bucket and hash: a full rewrite.
    pub fn all_rows_sql(&self) -> String {
        format!(
            "SELECT {}, {} AS _sync_bucket, {} AS _sync_hash FROM {}",
            self.select_list(),
            self.bucket_expr(),
            Self::HASH,
            self.table_ref()
        )
    }

    /// Full rows from a cursor watermark on (`None`: every row with a non-NULL cursor), with an
    /// overlap: rows committed after the last cycle with the watermark's own value (or, for a
    /// time, up to 5 minutes earlier: clocks and commit order differ) are read again rather
    /// than missed until the next full diff. Re-reading costs a few idempotent upserts.
    pub fn cursor_sql(&self, cursor: &Column, after: Option<&str>) -> String {
        let c = format!("t.{}", cursor.name.quoted());
        let filter = match after {
            Some(lit) => match cursor.bq {
                BqType::Int64 => format!("{c} >= {lit}"),
                BqType::Date => format!("{c} >= DATE_SUB({lit}, INTERVAL 1 DAY)"),
                BqType::Datetime => format!("{c} >= DATETIME_SUB({lit}, INTERVAL 300 SECOND)"),
                _ => format!("{c} >= TIMESTAMP_SUB({lit}, INTERVAL 300 SECOND)"),
            },
            None => format!("{c} IS NOT NULL"),
        };
        format!(
            "SELECT {}, {} AS _sync_bucket, {} AS _sync_hash FROM {} WHERE {filter}",
            self.select_list(),
            self.bucket_expr(),
            Self::HASH,
            self.table_ref()
        )
    }

    /// The table's change history between two instants (microseconds, end exclusive): full
    /// rows with bucket and hash (the hash of the row without the change columns, as the
    /// table's own rows hash), then `_CHANGE_TYPE` and `_CHANGE_TIMESTAMP` in microseconds,
    /// oldest first (docs/sync.md#change-history).
    pub fn changes_sql(&self, from_micros: i64, to_micros: i64) -> String {
        let row: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("t.{q} AS {q}", q = c.name.quoted()))
            .collect();
        format!(
            "SELECT {}, {} AS _sync_bucket, FARM_FINGERPRINT(TO_JSON_STRING(STRUCT({}))) AS _sync_hash, \
             t._CHANGE_TYPE AS _change_type, UNIX_MICROS(t._CHANGE_TIMESTAMP) AS _change_ts \
             FROM CHANGES(TABLE {}, TIMESTAMP_MICROS({from_micros}), TIMESTAMP_MICROS({to_micros})) AS t \
             ORDER BY _change_ts",
            self.select_list(),
            self.bucket_expr(),
            row.join(", "),
            self.path
        )
    }

    /// Full rows of the given buckets, for `verify`.
    pub fn verify_sql(&self, buckets: &[u16]) -> String {
        self.rows_sql(buckets, None)
    }

    fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.export_expr(&format!("t.{}", c.name.quoted())))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Positions of the primary key columns among the source columns.
pub(crate) fn pk_positions(src: &SourceTable) -> Vec<usize> {
    src.primary_key
        .iter()
        .filter_map(|k| src.columns.iter().position(|c| c.name == k.name))
        .collect()
}

fn join_nums<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads the warehouse table's schema and metadata (`tables.get`).
pub async fn describe(
    wh: &Warehouse,
    dataset: &str,
    table: &str,
    varchar: &std::collections::BTreeMap<domain::ident::Ident, u32>,
    stats: &mut FetchStats,
) -> Result<(Vec<Column>, SourceMeta), SyncError> {
    stats.metadata_calls += 1;
    let t = wh.get_table(dataset, table).await.map_err(|e| match &e {
        WarehouseError::Http { code: 404, .. } => {
            SyncError::Permanent(format!("warehouse table {dataset}.{table} does not exist"))
        }
        _ => SyncError::Warehouse(e),
    })?;
    let columns =
        domain::schema::columns_from_schema(&sync_engine::warehouse::fields_of(&t.schema), varchar)
            .map_err(|e| SyncError::Permanent(format!("{table}: {e}")))?;
    Ok((
        columns,
        SourceMeta {
            last_modified: t.last_modified_time,
            num_rows: t.num_rows,
        },
    ))
}

/// Runs the digest query.
pub async fn digests(
    wh: &Warehouse,
    src: &SourceTable,
    stats: &mut FetchStats,
) -> Result<Digests, SyncError> {
    stats.queries += 1;
    let page = wh.query_all(&src.digest_sql()).await?;
    stats.bytes_processed += page.bytes_processed;
    stats.digest_rows += page.rows.len() as u64;
    let mut out = Digests::new();
    for r in &page.rows {
        let (Some(b), Some(c), Some(x)) = (
            r.first().and_then(sync_engine::warehouse::cell_i64),
            r.get(1).and_then(sync_engine::warehouse::cell_i64),
            r.get(2).and_then(sync_engine::warehouse::cell_i64),
        ) else {
            return Err(SyncError::Permanent(
                "warehouse digest row is malformed".into(),
            ));
        };
        let b = u16::try_from(b)
            .map_err(|_| SyncError::Permanent(format!("bucket {b} out of range")))?;
        out.insert(
            b,
            BucketDigest {
                count: c as u64,
                xor: x as u64,
            },
        );
    }
    Ok(out)
}

/// Reads the warehouse's IBLT of the given buckets (`None`: all). `Ok(None)` when its answer
/// can't be read as one (malformed rows, cells out of range): the caller uses the key scan.
pub async fn iblt(
    wh: &Warehouse,
    src: &SourceTable,
    buckets: Option<&[u16]>,
    m: u32,
    stats: &mut FetchStats,
) -> Result<Option<crate::iblt::Iblt>, SyncError> {
    stats.queries += 1;
    let page = wh.query_all(&src.iblt_sql(buckets, m)).await?;
    stats.bytes_processed += page.bytes_processed;
    stats.cell_rows += page.rows.len() as u64;
    let mut cells = Vec::with_capacity(page.rows.len());
    for r in &page.rows {
        let (Some(cell), Some(c), Some(x), Some(s)) = (
            r.first().and_then(sync_engine::warehouse::cell_i64),
            r.get(1).and_then(sync_engine::warehouse::cell_i64),
            r.get(2).and_then(sync_engine::warehouse::cell_i64),
            r.get(3).and_then(sync_engine::warehouse::cell_i64),
        ) else {
            return Ok(None);
        };
        cells.push((cell as u64, c, x as u64, s as u64));
    }
    Ok(crate::iblt::Iblt::from_cells(m, cells).ok())
}

/// `(key, hash)` of the warehouse rows in `buckets`, handed to `on_bucket` one bucket at a
/// time, in bucket order, as the pages stream in (the query is `ORDER BY _sync_bucket`): the
/// caller holds one bucket's keys, never all of them (`docs/sync.md#key-scan`). Buckets
/// without rows are not handed over.
pub async fn keys_by_bucket(
    wh: &Warehouse,
    src: &SourceTable,
    buckets: &[u16],
    stats: &mut FetchStats,
    mut on_bucket: impl FnMut(u16, Vec<KeyHash>) -> Result<(), SyncError>,
) -> Result<(), SyncError> {
    let n = src.primary_key.len();
    for chunk in buckets.chunks(4096) {
        stats.queries += 1;
        let mut current: Option<(u16, Vec<KeyHash>)> = None;
        let bytes = wh
            .query_pages(&src.keys_sql(chunk), |page| {
                stats.key_rows += page.rows.len() as u64;
                for r in page.rows {
                    let mut parts = Vec::with_capacity(n);
                    for (c, v) in src.primary_key.iter().zip(&r) {
                        let v = v.as_ref().unwrap_or(&serde_json::Value::Null);
                        let sv = domain::schema::convert(c, v).map_err(|e| {
                            SyncError::BadRow(format!("key column `{}`: {e}", c.name))
                        })?;
                        parts.push(crate::canon::of_sql(c, &sv));
                    }
                    let hash = r
                        .get(n)
                        .and_then(sync_engine::warehouse::cell_i64)
                        .ok_or_else(|| SyncError::BadRow("row hash missing".into()))?;
                    let bucket = r
                        .get(n + 1)
                        .and_then(sync_engine::warehouse::cell_i64)
                        .and_then(|b| u16::try_from(b).ok())
                        .ok_or_else(|| SyncError::BadRow("row bucket missing".into()))?;
                    let key = KeyHash {
                        key: crate::canon::key(parts),
                        hash,
                    };
                    match current.as_mut() {
                        Some((b, keys)) if *b == bucket => keys.push(key),
                        _ => {
                            if let Some((b, keys)) = current.take() {
                                on_bucket(b, keys)?;
                            }
                            current = Some((bucket, vec![key]));
                        }
                    }
                }
                Ok::<(), SyncError>(())
            })
            .await?;
        if let Some((b, keys)) = current.take() {
            on_bucket(b, keys)?;
        }
        stats.bytes_processed += bytes;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::ident::Ident;
    use domain::schema::BqType;

    #[test]
    fn every_query_of_a_cycle_reads_the_snapshot() {
        let col = |n: &str| Column {
            name: Ident::parse(n).unwrap(),
            bq: BqType::Int64,
            required: true,
            varchar: None,
        };
        let mut src = SourceTable {
            path: "`p.d.t`".into(),
            snapshot_micros: Some(1_800_000_000_000_000),
            target: Ident::parse("t").unwrap(),
            columns: vec![col("id"), col("v")],
            primary_key: vec![col("id")],
            buckets: 16,
        };
        let at = "`p.d.t` AS t FOR SYSTEM_TIME AS OF TIMESTAMP_MICROS(1800000000000000)";
        for sql in [
            src.digest_sql(),
            src.keys_sql(&[1, 2]),
            src.rows_sql(&[1], None),
            src.rows_by_hash_sql(&[7]),
            src.all_rows_sql(),
            src.iblt_sql(None, 64),
            src.iblt_sql(Some(&[3]), 64),
            src.cursor_sql(&col("v"), None),
        ] {
            assert!(sql.contains(at), "{sql}");
        }
        src.snapshot_micros = None;
        assert!(!src.digest_sql().contains("SYSTEM_TIME"));
        // The change history is read as it is (CHANGES has its own window).
        assert!(!src.changes_sql(1, 2).contains("SYSTEM_TIME"));
    }
}
