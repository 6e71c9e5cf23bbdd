//! Partitions: how a warehouse table is partitioned, the id of each partition (as
//! `INFORMATION_SCHEMA.PARTITIONS` spells it: `20260101`, `2026010112`, `202601`, `2026`,
//! `__NULL__`, `__UNPARTITIONED__`), and the filters that select one partition in the
//! warehouse (for export and fingerprints) and in MySQL (for the delete). Pure functions.
//! See `docs/sync.md#partition-ids`.

use chrono::{NaiveDate, NaiveDateTime};

use domain::ident::Ident;
use domain::schema::BqType;

/// Partition id of rows whose partition column is NULL.
pub const NULL_PARTITION: &str = "__NULL__";
/// Partition id of the streaming buffer: not yet in a partition, so it waits.
pub const UNPARTITIONED: &str = "__UNPARTITIONED__";
/// The first day BigQuery partitions by; earlier values are `__UNPARTITIONED__`.
pub const FIRST_PARTITIONABLE_DAY: &str = "1960-01-01";
/// The day after the last one BigQuery partitions by (2159-12-31).
pub const END_PARTITIONABLE_DAY: &str = "2160-01-01";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
    Month,
    Year,
}

impl Granularity {
    pub fn parse(s: &str) -> Result<Granularity, String> {
        match s.to_ascii_uppercase().as_str() {
            "HOUR" => Ok(Granularity::Hour),
            "DAY" => Ok(Granularity::Day),
            "MONTH" => Ok(Granularity::Month),
            "YEAR" => Ok(Granularity::Year),
            other => Err(format!("unsupported partitioning type {other}")),
        }
    }
}

/// How a table is partitioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheme {
    /// Warehouse expression of the partition value: a quoted column, or `_PARTITIONTIME`.
    pub source_column: String,
    /// The MySQL column holding the partition value (ingestion-time tables get a real
    /// column `partition_date` or `partition_time`).
    pub target_column: Ident,
    /// DATE, DATETIME or TIMESTAMP.
    pub column_type: BqType,
    pub granularity: Granularity,
    /// Ingestion-time partitioning (`_PARTITIONDATE` / `_PARTITIONTIME`).
    pub ingestion_time: bool,
}

impl Scheme {
    /// The scheme for a configured `partition_column` and the warehouse's partitioning.
    /// `column_type` is the column's type for column-partitioned tables (ignored otherwise).
    pub fn new(
        partition_column: &Ident,
        column_type: Option<BqType>,
        granularity: Granularity,
    ) -> Result<Scheme, String> {
        match partition_column.to_ascii_uppercase().as_str() {
            "_PARTITIONDATE" => Ok(Scheme {
                source_column: "_PARTITIONDATE".into(),
                target_column: Ident::parse("partition_date").map_err(|e| e.to_string())?,
                column_type: BqType::Date,
                granularity,
                ingestion_time: true,
            }),
            "_PARTITIONTIME" => Ok(Scheme {
                source_column: "_PARTITIONTIME".into(),
                target_column: Ident::parse("partition_time").map_err(|e| e.to_string())?,
                column_type: BqType::Timestamp,
                granularity,
                ingestion_time: true,
            }),
            _ => {
                let t = column_type.ok_or_else(|| {
                    format!("partition column `{partition_column}` is not in the warehouse table")
                })?;
                if !matches!(t, BqType::Date | BqType::Datetime | BqType::Timestamp) {
                    return Err(format!(
                        "partition column `{partition_column}` has type {t:?}; only DATE, DATETIME and TIMESTAMP partitioning is supported"
                    ));
                }
                if t == BqType::Date && granularity == Granularity::Hour {
                    return Err(format!(
                        "partition column `{partition_column}` is a DATE but partitioned by HOUR"
                    ));
                }
                Ok(Scheme {
                    source_column: partition_column.quoted().to_string(),
                    target_column: partition_column.clone(),
                    column_type: t,
                    granularity,
                    ingestion_time: false,
                })
            }
        }
    }

    fn source_expr(&self) -> String {
        self.source_column.clone()
    }

    /// BigQuery expression computing a row's partition id (NULL for the NULL partition).
    pub fn partition_id_expr(&self) -> String {
        let fmt = match self.granularity {
            Granularity::Hour => "%Y%m%d%H",
            Granularity::Day => "%Y%m%d",
            Granularity::Month => "%Y%m",
            Granularity::Year => "%Y",
        };
        let c = self.source_expr();
        let id = match self.column_type {
            BqType::Date => format!("FORMAT_DATE('{fmt}', {c})"),
            BqType::Datetime => format!("FORMAT_DATETIME('{fmt}', {c})"),
            _ => format!("FORMAT_TIMESTAMP('{fmt}', {c}, 'UTC')"),
        };
        if self.ingestion_time {
            // Rows still in the streaming buffer have no partition time yet.
            format!("IF({c} IS NULL, '{UNPARTITIONED}', {id})")
        } else {
            let (lo, hi) = self.partitionable_bounds();
            format!("CASE WHEN {c} < {lo} OR {c} >= {hi} THEN '{UNPARTITIONED}' ELSE {id} END")
        }
    }

    /// BigQuery's partitionable range as warehouse literals: values before 1960-01-01 or from
    /// 2160-01-01 on land in `__UNPARTITIONED__` (docs/sync.md#partition-ids).
    fn partitionable_bounds(&self) -> (String, String) {
        let lit = |day: &str| match self.column_type {
            BqType::Date => format!("DATE '{day}'"),
            BqType::Datetime => format!("DATETIME '{day} 00:00:00'"),
            _ => format!("TIMESTAMP '{day} 00:00:00+00'"),
        };
        (lit(FIRST_PARTITIONABLE_DAY), lit(END_PARTITIONABLE_DAY))
    }

    /// The half-open range `[start, end)` a partition id covers.
    pub fn range(&self, id: &str) -> Result<(NaiveDateTime, NaiveDateTime), String> {
        let bad = || format!("`{id}` is not a {:?} partition id", self.granularity);
        let digits = |r: std::ops::Range<usize>| -> Result<u32, String> {
            id.get(r)
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(bad)
        };
        let expected_len = match self.granularity {
            Granularity::Hour => 10,
            Granularity::Day => 8,
            Granularity::Month => 6,
            Granularity::Year => 4,
        };
        if id.len() != expected_len || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let year = digits(0..4)? as i32;
        let month = if expected_len >= 6 { digits(4..6)? } else { 1 };
        let day = if expected_len >= 8 { digits(6..8)? } else { 1 };
        let hour = if expected_len == 10 {
            digits(8..10)?
        } else {
            0
        };
        let date = NaiveDate::from_ymd_opt(year, month, day).ok_or_else(bad)?;
        let start = date.and_hms_opt(hour, 0, 0).ok_or_else(bad)?;
        let end = match self.granularity {
            Granularity::Hour => start + chrono::Duration::hours(1),
            Granularity::Day => start + chrono::Duration::days(1),
            Granularity::Month => {
                let (y, m) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)
                    .ok_or_else(bad)?
                    .and_hms_opt(0, 0, 0)
                    .ok_or_else(bad)?
            }
            Granularity::Year => NaiveDate::from_ymd_opt(year + 1, 1, 1)
                .ok_or_else(bad)?
                .and_hms_opt(0, 0, 0)
                .ok_or_else(bad)?,
        };
        Ok((start, end))
    }

    /// BigQuery `WHERE` condition selecting partition `id`.
    pub fn warehouse_filter(&self, id: &str) -> Result<String, String> {
        let c = self.source_expr();
        if id == NULL_PARTITION {
            return Ok(format!("{c} IS NULL"));
        }
        if id == UNPARTITIONED {
            if self.ingestion_time {
                return Err("the streaming buffer (__UNPARTITIONED__) is loaded once BigQuery assigns its rows a partition".into());
            }
            let (lo, hi) = self.partitionable_bounds();
            return Ok(format!("({c} < {lo} OR {c} >= {hi})"));
        }
        let (start, end) = self.range(id)?;
        let lit = |t: NaiveDateTime| match self.column_type {
            BqType::Date => format!("DATE '{}'", t.format("%Y-%m-%d")),
            BqType::Datetime => format!("DATETIME '{}'", t.format("%Y-%m-%d %H:%M:%S")),
            _ => format!("TIMESTAMP '{}+00'", t.format("%Y-%m-%d %H:%M:%S")),
        };
        Ok(format!("{c} >= {} AND {c} < {}", lit(start), lit(end)))
    }

    /// MySQL `WHERE` condition selecting partition `id` in the target, with its parameters.
    pub fn mysql_filter(&self, id: &str) -> Result<(String, Vec<String>), String> {
        let c = self.target_column.quoted();
        if id == NULL_PARTITION {
            return Ok((format!("{c} IS NULL"), vec![]));
        }
        if id == UNPARTITIONED {
            let day = |d: &str| match self.column_type {
                BqType::Date => d.to_string(),
                _ => format!("{d} 00:00:00"),
            };
            return Ok((
                format!("({c} < ? OR {c} >= ?)"),
                vec![day(FIRST_PARTITIONABLE_DAY), day(END_PARTITIONABLE_DAY)],
            ));
        }
        let (start, end) = self.range(id)?;
        let f = |t: NaiveDateTime| match self.column_type {
            BqType::Date => t.format("%Y-%m-%d").to_string(),
            _ => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        };
        Ok((format!("{c} >= ? AND {c} < ?"), vec![f(start), f(end)]))
    }

    /// The SELECT list expression that materialises an ingestion-time partition value.
    pub fn materialised_column(&self) -> Option<String> {
        if !self.ingestion_time {
            return None;
        }
        Some(match self.column_type {
            BqType::Date => format!("_PARTITIONDATE AS {}", self.target_column.quoted()),
            _ => format!(
                "UNIX_MICROS(_PARTITIONTIME) AS {}",
                self.target_column.quoted()
            ),
        })
    }
}

/// Orders partition ids oldest first (`__NULL__` first, as BigQuery lists it).
pub fn sort_ids(ids: &mut [String]) {
    ids.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
}

/// The sort key of a partition id: `__NULL__` first, then the ids in order.
pub fn order_key(id: &str) -> (bool, &str) {
    (id != NULL_PARTITION, id)
}

/// Whether `id` looks like a partition id at all (used to validate `--partition`).
pub fn plausible_id(id: &str) -> bool {
    id == NULL_PARTITION
        || id == UNPARTITIONED
        || (matches!(id.len(), 4 | 6 | 8 | 10) && id.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day_scheme() -> Scheme {
        Scheme::new(
            &domain::ident::Ident::parse("day").unwrap(),
            Some(BqType::Date),
            Granularity::Day,
        )
        .unwrap()
    }

    #[test]
    fn day_partitions_filter_both_sides() {
        let s = day_scheme();
        assert_eq!(
            s.warehouse_filter("20260131").unwrap(),
            "`day` >= DATE '2026-01-31' AND `day` < DATE '2026-02-01'"
        );
        assert_eq!(
            s.mysql_filter("20260131").unwrap(),
            (
                "`day` >= ? AND `day` < ?".into(),
                vec!["2026-01-31".into(), "2026-02-01".into()]
            )
        );
        assert_eq!(s.warehouse_filter(NULL_PARTITION).unwrap(), "`day` IS NULL");
        assert_eq!(
            s.partition_id_expr(),
            "CASE WHEN `day` < DATE '1960-01-01' OR `day` >= DATE '2160-01-01' \
             THEN '__UNPARTITIONED__' ELSE FORMAT_DATE('%Y%m%d', `day`) END"
        );
    }

    #[test]
    fn out_of_range_dates_are_the_unpartitioned_partition_on_both_sides() {
        let s = day_scheme();
        assert_eq!(
            s.warehouse_filter(UNPARTITIONED).unwrap(),
            "(`day` < DATE '1960-01-01' OR `day` >= DATE '2160-01-01')"
        );
        assert_eq!(
            s.mysql_filter(UNPARTITIONED).unwrap(),
            (
                "(`day` < ? OR `day` >= ?)".into(),
                vec!["1960-01-01".into(), "2160-01-01".into()]
            )
        );
        assert!(plausible_id(UNPARTITIONED));
        // An ingestion-time table's __UNPARTITIONED__ is its streaming buffer: not loadable.
        let ingest = Scheme::new(
            &domain::ident::Ident::parse("_PARTITIONTIME").unwrap(),
            None,
            Granularity::Day,
        )
        .unwrap();
        assert!(ingest.warehouse_filter(UNPARTITIONED).is_err());
        assert!(ingest
            .partition_id_expr()
            .starts_with("IF(_PARTITIONTIME IS NULL, '__UNPARTITIONED__'"));
    }

    #[test]
    fn hour_month_and_year_ranges() {
        let h = Scheme::new(
            &domain::ident::Ident::parse("ts").unwrap(),
            Some(BqType::Timestamp),
            Granularity::Hour,
        )
        .unwrap();
        assert_eq!(
            h.warehouse_filter("2026123123").unwrap(),
            "`ts` >= TIMESTAMP '2026-12-31 23:00:00+00' AND `ts` < TIMESTAMP '2027-01-01 00:00:00+00'"
        );
        let m = Scheme::new(
            &domain::ident::Ident::parse("d").unwrap(),
            Some(BqType::Date),
            Granularity::Month,
        )
        .unwrap();
        assert_eq!(
            m.mysql_filter("202612").unwrap().1,
            vec!["2026-12-01", "2027-01-01"]
        );
        let y = Scheme::new(
            &domain::ident::Ident::parse("dt").unwrap(),
            Some(BqType::Datetime),
            Granularity::Year,
        )
        .unwrap();
        assert_eq!(
            y.mysql_filter("2026").unwrap().1,
            vec!["2026-01-01 00:00:00", "2027-01-01 00:00:00"]
        );
    }

    #[test]
    fn malformed_ids_are_rejected() {
        let s = day_scheme();
        for bad in ["2026013", "20261301", "2026013a", "", "__NONE__"] {
            assert!(s.warehouse_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ingestion_time_tables_get_a_real_column() {
        let s = Scheme::new(
            &domain::ident::Ident::parse("_PARTITIONDATE").unwrap(),
            None,
            Granularity::Day,
        )
        .unwrap();
        assert_eq!(s.target_column, "partition_date");
        assert_eq!(
            s.warehouse_filter("20260101").unwrap(),
            "_PARTITIONDATE >= DATE '2026-01-01' AND _PARTITIONDATE < DATE '2026-01-02'"
        );
        assert_eq!(
            s.materialised_column().unwrap(),
            "_PARTITIONDATE AS `partition_date`"
        );
        let t = Scheme::new(
            &domain::ident::Ident::parse("_PARTITIONTIME").unwrap(),
            None,
            Granularity::Hour,
        )
        .unwrap();
        assert_eq!(t.target_column, "partition_time");
        assert!(t
            .materialised_column()
            .unwrap()
            .starts_with("UNIX_MICROS(_PARTITIONTIME)"));
    }

    #[test]
    fn unsupported_partition_columns_are_errors() {
        assert!(Scheme::new(
            &domain::ident::Ident::parse("n").unwrap(),
            Some(BqType::Int64),
            Granularity::Day
        )
        .is_err());
        assert!(Scheme::new(
            &domain::ident::Ident::parse("d").unwrap(),
            Some(BqType::Date),
            Granularity::Hour
        )
        .is_err());
        assert!(Scheme::new(
            &domain::ident::Ident::parse("missing").unwrap(),
            None,
            Granularity::Day
        )
        .is_err());
    }

    #[test]
    fn ids_sort_oldest_first_with_null_first() {
        let mut ids = vec![
            "20260102".to_string(),
            NULL_PARTITION.to_string(),
            "20260101".to_string(),
        ];
        sort_ids(&mut ids);
        assert_eq!(ids, vec![NULL_PARTITION, "20260101", "20260102"]);
    }
}
