//! `verify`: is MySQL in sync? Per partition, the warehouse's rows (read through the query
//! API in canonical form) and MySQL's rows are reduced to a row count and an order-independent
//! content digest computed here, with every value normalised the same way on both sides
//! (decimals without trailing zeros, floats by their bits, JSON re-serialised). A partition
//! whose count or digest differs is a mismatch.

use std::collections::BTreeMap;

use mysql::prelude::Queryable;

use domain::canon;
use domain::schema::{convert, Column};
use sync_engine::warehouse::Warehouse;

use crate::partition::{
    Granularity, Scheme, END_PARTITIONABLE_DAY, FIRST_PARTITIONABLE_DAY, NULL_PARTITION,
    UNPARTITIONED,
};
use crate::source::PartitionedSource;

/// Count and digest of one partition's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Digest {
    pub rows: u64,
    pub xor: u64,
    pub sum: u64,
}

impl Digest {
    fn add(&mut self, h: u64) {
        self.rows += 1;
        self.xor ^= h;
        self.sum = self.sum.wrapping_add(h);
    }
}

/// A partition whose rows differ between the warehouse and MySQL.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionMismatch {
    pub table: String,
    pub partition: String,
    pub warehouse_rows: u64,
    pub mysql_rows: u64,
    pub detail: &'static str,
}

fn row_hash(parts: impl Iterator<Item = Vec<u8>>) -> u64 {
    let mut h = canon::FNV_OFFSET;
    for p in parts {
        h = canon::fnv1a_extend(canon::fnv1a_extend(h, &p), b"\x1f");
    }
    // Finalise (splitmix) so that XOR of similar rows does not cancel structure.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The partition id of a canonical partition-column value (`2026-01-01`, `2026-01-01 10:…`).
fn partition_of(scheme: &Scheme, value: &[u8]) -> String {
    if value == canon::NULL.as_bytes() {
        return NULL_PARTITION.to_string();
    }
    // Dates outside BigQuery's partitionable range are its __UNPARTITIONED__ partition
    // (the canonical form starts with the date, so text order is date order).
    if !scheme.ingestion_time {
        let text = String::from_utf8_lossy(value);
        if *text < *FIRST_PARTITIONABLE_DAY || *text >= *END_PARTITIONABLE_DAY {
            return UNPARTITIONED.to_string();
        }
    }
    let digits: String = String::from_utf8_lossy(value)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let n = match scheme.granularity {
        Granularity::Hour => 10,
        Granularity::Day => 8,
        Granularity::Month => 6,
        Granularity::Year => 4,
    };
    digits.chars().take(n).collect()
}

/// Digests of the warehouse's rows per partition: every partition, or only `only`.
pub async fn warehouse_digests(
    wh: &Warehouse,
    table: &PartitionedSource,
    only: Option<&[String]>,
) -> Result<BTreeMap<String, Digest>, String> {
    let filter = match only {
        Some(ids) => {
            let conds: Result<Vec<String>, String> = ids
                .iter()
                .map(|id| table.scheme.warehouse_filter(id).map(|c| format!("({c})")))
                .collect();
            format!(" WHERE {}", conds?.join(" OR "))
        }
        None => String::new(),
    };
    let sql = format!(
        "SELECT {} FROM {}{filter}",
        table.select_list(),
        table.qualified
    );
    let pcol = table
        .columns
        .iter()
        .position(|c| c.name == table.scheme.target_column)
        .ok_or("partition column missing")?;
    let mut out: BTreeMap<String, Digest> = BTreeMap::new();
    let mut err = None;
    // Converted as nullable: verify reports what is there, REQUIRED or not.
    let relaxed: Vec<Column> = table
        .columns
        .iter()
        .map(|col| Column {
            required: false,
            ..col.clone()
        })
        .collect();
    wh.query_pages(&sql, |page| {
        for row in page.rows {
            let mut parts = Vec::with_capacity(table.columns.len());
            for ((col, relaxed), cell) in table.columns.iter().zip(&relaxed).zip(row.iter()) {
                let v = cell.as_ref().unwrap_or(&serde_json::Value::Null);
                match convert(relaxed, v) {
                    Ok(sv) => parts.push(canon::of_sql(col, &sv).into_bytes()),
                    Err(e) => {
                        err.get_or_insert(format!("column {}: {e}", col.name));
                        parts.push(b"\x00E".to_vec());
                    }
                }
            }
            let pid = partition_of(&table.scheme, &parts[pcol]);
            out.entry(pid).or_default().add(row_hash(parts.into_iter()));
        }
        Ok::<(), sync_engine::warehouse::WarehouseError>(())
    })
    .await
    .map_err(|e| e.to_string())?;
    if let Some(e) = err {
        tracing::warn!(table.name = %table.spec.target, error = %e, "warehouse values MySQL could not hold");
    }
    Ok(out)
}

/// Digests of MySQL's rows per partition (text protocol, streamed): every partition, or only
/// `only`.
pub fn mysql_digests(
    conn: &mut mysql::Conn,
    table: &PartitionedSource,
    only: Option<&[String]>,
) -> Result<BTreeMap<String, Digest>, mysql::Error> {
    let cols: Vec<&str> = table.columns.iter().map(|c| c.name.quoted()).collect();
    let pcol = table
        .columns
        .iter()
        .position(|c| c.name == table.scheme.target_column)
        .unwrap_or(0);
    let mut out: BTreeMap<String, Digest> = BTreeMap::new();
    let mut conds = Vec::new();
    let mut params: Vec<String> = Vec::new();
    for id in only.unwrap_or_default() {
        if let Ok((cond, p)) = table.scheme.mysql_filter(id) {
            conds.push(format!("({cond})"));
            params.extend(p);
        }
    }
    let filter = if only.is_some() {
        format!(
            " WHERE {}",
            if conds.is_empty() {
                "FALSE".to_string()
            } else {
                conds.join(" OR ")
            }
        )
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT {} FROM {}{filter}",
        cols.join(", "),
        table.spec.target.quoted()
    );
    let result = conn.exec_iter(sql, params)?;
    for row in result {
        let row = row?;
        let parts: Vec<Vec<u8>> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                sync_engine::values::canonical(c, row.as_ref(i).unwrap_or(&mysql::Value::NULL))
                    .into_bytes()
            })
            .collect();
        let pid = partition_of(&table.scheme, &parts[pcol]);
        out.entry(pid).or_default().add(row_hash(parts.into_iter()));
    }
    Ok(out)
}

/// Partitions whose count or digest differ.
pub fn compare(
    table: &str,
    warehouse: &BTreeMap<String, Digest>,
    mysql: &BTreeMap<String, Digest>,
) -> Vec<PartitionMismatch> {
    let mut ids: Vec<&String> = warehouse.keys().chain(mysql.keys()).collect();
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .filter_map(|id| {
            let w = warehouse.get(id).copied().unwrap_or_default();
            let m = mysql.get(id).copied().unwrap_or_default();
            let detail = if w == m {
                return None;
            } else if w.rows == 0 {
                "only in MySQL"
            } else if m.rows == 0 {
                "missing in MySQL"
            } else if w.rows != m.rows {
                "row counts differ"
            } else {
                "contents differ"
            };
            Some(PartitionMismatch {
                table: table.to_string(),
                partition: id.clone(),
                warehouse_rows: w.rows,
                mysql_rows: m.rows,
                detail,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::schema::BqType;

    #[test]
    fn a_changed_row_is_a_mismatch() {
        let mut a = BTreeMap::new();
        let mut d = Digest::default();
        d.add(row_hash([b"1".to_vec(), b"x".to_vec()].into_iter()));
        a.insert("20260101".to_string(), d);
        let mut b = BTreeMap::new();
        let mut e = Digest::default();
        e.add(row_hash([b"1".to_vec(), b"y".to_vec()].into_iter()));
        b.insert("20260101".to_string(), e);
        assert!(compare("t", &a, &a).is_empty());
        let m = compare("t", &a, &b);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].detail, "contents differ");
        assert_eq!(
            compare("t", &a, &BTreeMap::new())[0].detail,
            "missing in MySQL"
        );
    }

    #[test]
    fn partition_ids_come_from_the_partition_value() {
        let s = Scheme::new(
            &domain::ident::Ident::parse("d").unwrap(),
            Some(BqType::Date),
            Granularity::Day,
        )
        .unwrap();
        assert_eq!(partition_of(&s, b"2026-01-02"), "20260102");
        assert_eq!(partition_of(&s, canon::NULL.as_bytes()), NULL_PARTITION);
        let h = Scheme::new(
            &domain::ident::Ident::parse("t").unwrap(),
            Some(BqType::Timestamp),
            Granularity::Hour,
        )
        .unwrap();
        assert_eq!(
            partition_of(&h, b"2026-01-02 13:04:05.000000"),
            "2026010213"
        );
    }
}
