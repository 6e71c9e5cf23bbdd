//! The pure middle of a cycle: which buckets differ, which rows to fetch, upsert and delete,
//! and whether the mass-delete guard lets the cycle go on. No I/O here.

use std::collections::{BTreeMap, HashMap};

/// `COUNT(*)` and `BIT_XOR(hash)` of one bucket. The XOR is kept as the 64 raw bits: the
/// warehouse answers a signed INT64, MySQL's `BIT_XOR` an unsigned BIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketDigest {
    pub count: u64,
    pub xor: u64,
}

/// Digests by bucket number; empty buckets are absent.
pub type Digests = BTreeMap<u16, BucketDigest>;

/// Buckets whose count or XOR differ (a bucket missing on one side counts as empty). Counts
/// are compared too, as two identical rows cancel under XOR.
pub fn differing_buckets(warehouse: &Digests, mysql: &Digests) -> Vec<u16> {
    warehouse
        .keys()
        .chain(mysql.keys())
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|b| {
            warehouse.get(b).copied().unwrap_or_default()
                != mysql.get(b).copied().unwrap_or_default()
        })
        .collect()
}

/// Total rows over all buckets.
pub fn total_rows(d: &Digests) -> u64 {
    d.values().map(|x| x.count).sum()
}

/// XOR over all buckets: the whole table's digest.
pub fn table_digest(d: &Digests) -> BucketDigest {
    d.values()
        .fold(BucketDigest::default(), |acc, x| BucketDigest {
            count: acc.count + x.count,
            xor: acc.xor ^ x.xor,
        })
}

/// Differing buckets by what each side holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketSplit {
    /// Empty in MySQL: every warehouse row is an insert, no key diff needed.
    pub fresh: Vec<u16>,
    /// Empty in the warehouse: every MySQL row goes.
    pub gone: Vec<u16>,
    /// Rows on both sides: diffed by key.
    pub mixed: Vec<u16>,
}

/// Sorts differing buckets by which side is empty.
pub fn split_buckets(differing: &[u16], warehouse: &Digests, mysql: &Digests) -> BucketSplit {
    let mut out = BucketSplit::default();
    for b in differing {
        let w = warehouse.get(b).map_or(0, |d| d.count);
        let m = mysql.get(b).map_or(0, |d| d.count);
        match (w, m) {
            (_, 0) => out.fresh.push(*b),
            (0, _) => out.gone.push(*b),
            _ => out.mixed.push(*b),
        }
    }
    out
}

/// One row of a differing bucket as seen on one side: its canonical primary key (see
/// `canon`) and its row hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHash {
    pub key: String,
    pub hash: i64,
}

/// A MySQL row that must go: its key (as read from MySQL) and the hash it must still have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleRow {
    pub key: String,
    pub hash: i64,
}

/// What one cycle changes in the differing buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowPlan {
    /// Warehouse row hashes whose full rows must be fetched and upserted.
    pub fetch: Vec<i64>,
    pub inserts: usize,
    pub updates: usize,
    /// MySQL rows whose key is gone from the warehouse.
    pub deletes: Vec<StaleRow>,
}

/// Errors in the warehouse's data that no retry fixes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the warehouse has {count} rows with primary key {key}: the key is not unique")]
    DuplicateKey { key: String, count: usize },
}

/// Diffs `(key, hash)` of the differing buckets of both sides. A key present on both sides
/// with different hashes is an update; only in the warehouse an insert; only in MySQL a delete.
pub fn plan_rows(warehouse: &[KeyHash], mysql: &[KeyHash]) -> Result<RowPlan, PlanError> {
    let mut wh: HashMap<&str, i64> = HashMap::with_capacity(warehouse.len());
    for r in warehouse {
        if wh.insert(r.key.as_str(), r.hash).is_some() {
            let count = warehouse.iter().filter(|x| x.key == r.key).count();
            return Err(PlanError::DuplicateKey {
                key: r.key.clone(),
                count,
            });
        }
    }
    let my: HashMap<&str, i64> = mysql.iter().map(|r| (r.key.as_str(), r.hash)).collect();
    let mut plan = RowPlan::default();
    for r in warehouse {
        match my.get(r.key.as_str()) {
            Some(h) if *h == r.hash => {}
            Some(_) => {
                plan.updates += 1;
                plan.fetch.push(r.hash);
            }
            None => {
                plan.inserts += 1;
                plan.fetch.push(r.hash);
            }
        }
    }
    for r in mysql {
        if !wh.contains_key(r.key.as_str()) {
            plan.deletes.push(StaleRow {
                key: r.key.clone(),
                hash: r.hash,
            });
        }
    }
    plan.fetch.sort_unstable();
    plan.fetch.dedup();
    Ok(plan)
}

/// Why the mass-delete guard stopped a cycle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuardStop {
    #[error("the warehouse returned 0 rows for a table with {mysql_rows} rows in MySQL; refusing to empty it (allow_mass_delete overrides)")]
    EmptySource { mysql_rows: u64 },
    #[error("the cycle would delete {deletes} of {mysql_rows} rows ({share:.1}% > {max:.1}%); refusing (allow_mass_delete overrides)")]
    TooManyDeletes {
        deletes: u64,
        mysql_rows: u64,
        share: f64,
        max: f64,
    },
}

/// The mass-delete guard: a cycle may not delete more than `max_fraction` of the MySQL
/// table, and a warehouse answer of zero rows for a non-empty table stops it, unless `allow`.
pub fn guard(
    deletes: u64,
    mysql_rows: u64,
    warehouse_rows: u64,
    max_fraction: f64,
    allow: bool,
) -> Result<(), GuardStop> {
    if allow || mysql_rows == 0 {
        return Ok(());
    }
    if warehouse_rows == 0 {
        return Err(GuardStop::EmptySource { mysql_rows });
    }
    let share = deletes as f64 / mysql_rows as f64;
    if share > max_fraction {
        return Err(GuardStop::TooManyDeletes {
            deletes,
            mysql_rows,
            share: share * 100.0,
            max: max_fraction * 100.0,
        });
    }
    Ok(())
}

/// Whether fetching the rows by their hash list is better than fetching whole buckets and
/// filtering here: a long hash list makes a huge SQL text.
pub fn fetch_by_hash(fetch: usize) -> bool {
    fetch <= MAX_HASHES_IN_SQL
}

/// Most hashes put into one `IN UNNEST([...])` list (about 20 bytes each in the SQL text).
pub const MAX_HASHES_IN_SQL: usize = 20_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn d(items: &[(u16, u64, u64)]) -> Digests {
        items
            .iter()
            .map(|(b, c, x)| (*b, BucketDigest { count: *c, xor: *x }))
            .collect()
    }

    fn kh(key: &str, hash: i64) -> KeyHash {
        KeyHash {
            key: key.into(),
            hash,
        }
    }

    #[test]
    fn buckets_differ_by_count_xor_or_presence() {
        let wh = d(&[(1, 2, 7), (2, 1, 5), (3, 2, 0), (5, 1, 1)]);
        let my = d(&[(1, 2, 7), (2, 1, 6), (3, 0, 0), (4, 1, 9)]);
        assert_eq!(differing_buckets(&wh, &my), vec![2, 3, 4, 5]);
        assert!(differing_buckets(&wh, &wh).is_empty());
    }

    #[test]
    fn identical_rows_cancelling_under_xor_still_differ_by_count() {
        // Two rows with the same hash XOR to 0, like an empty bucket.
        let wh = d(&[(9, 2, 0)]);
        let my = Digests::new();
        assert_eq!(differing_buckets(&wh, &my), vec![9]);
    }

    #[test]
    fn rows_are_planned_as_inserts_updates_and_deletes() {
        let wh = vec![kh("1", 10), kh("2", 20), kh("4", 40)];
        let my = vec![kh("1", 10), kh("2", 21), kh("3", 30)];
        let p = plan_rows(&wh, &my).unwrap();
        assert_eq!(p.fetch, vec![20, 40]);
        assert_eq!((p.inserts, p.updates), (1, 1));
        assert_eq!(
            p.deletes,
            vec![StaleRow {
                key: "3".into(),
                hash: 30
            }]
        );
    }

    #[test]
    fn equal_sides_plan_nothing() {
        let rows = vec![kh("a", -1), kh("b", i64::MIN)];
        assert_eq!(plan_rows(&rows, &rows).unwrap(), RowPlan::default());
    }

    #[test]
    fn a_duplicate_warehouse_key_is_an_error_naming_the_key() {
        let e = plan_rows(&[kh("7", 1), kh("7", 2)], &[]).unwrap_err();
        assert_eq!(
            e,
            PlanError::DuplicateKey {
                key: "7".into(),
                count: 2
            }
        );
    }

    #[test]
    fn the_guard_stops_mass_deletes_and_empty_sources() {
        let cases = [
            // deletes, mysql, warehouse, max, allow, ok?
            (10, 100, 90, 0.1, false, true),
            (11, 100, 89, 0.1, false, false),
            (0, 100, 0, 0.1, false, false),
            (100, 100, 0, 0.1, true, true),
            (5, 0, 5, 0.1, false, true),
            (1, 3, 2, 0.5, false, true),
            (0, 0, 0, 0.1, false, true),
        ];
        for (del, my, wh, max, allow, ok) in cases {
            assert_eq!(
                guard(del, my, wh, max, allow).is_ok(),
                ok,
                "{del} {my} {wh} {max} {allow}"
            );
        }
        assert!(matches!(
            guard(0, 5, 0, 0.5, false),
            Err(GuardStop::EmptySource { mysql_rows: 5 })
        ));
    }

    #[test]
    fn buckets_split_by_the_empty_side() {
        let wh = d(&[(1, 2, 7), (2, 1, 5), (3, 4, 4)]);
        let my = d(&[(2, 1, 6), (3, 1, 1), (4, 1, 9)]);
        let s = split_buckets(&differing_buckets(&wh, &my), &wh, &my);
        assert_eq!(
            s,
            BucketSplit {
                fresh: vec![1],
                gone: vec![4],
                mixed: vec![2, 3]
            }
        );
    }

    #[test]
    fn the_table_digest_combines_buckets() {
        let x = d(&[(1, 2, 0b01), (2, 3, 0b11)]);
        assert_eq!(
            table_digest(&x),
            BucketDigest {
                count: 5,
                xor: 0b10
            }
        );
        assert_eq!(total_rows(&x), 5);
    }
}
