//! DDL of the target tables, run before a group's transaction because DDL commits implicitly in
//! MySQL (`docs/sync.md#load`): a missing target is created from the warehouse schema, an
//! existing one is checked against it and its columns' limits adopted, and a target partitioned
//! in MySQL gets a partition for each new range (`docs/sync.md#mysql_partitioning`).

use mysql::prelude::Queryable;
use mysql::Conn;

use domain::ident::quote as quote_ident;
use domain::schema::{create_table_sql, key_collation_problems, schema_drift};
use sync_engine::session;

use crate::exchange::bound_text;
use crate::load::{my_err, sink_err, LoadError, TableWork};
use crate::source::PartitionedSource;

/// Makes every target of a group ready for its transaction: created or checked, and (with
/// `mysql_partitioning`) given the partitions the load needs.
pub(crate) fn prepare_targets(
    conn: &mut Conn,
    work: &mut [TableWork],
    ddl_lock_wait_secs: u64,
) -> Result<(), LoadError> {
    // DDL waits for a table's metadata lock at most this long (docs/sync.md#load); the
    // session's usual limit is back for the load.
    conn.query_drop(format!(
        "SET SESSION lock_wait_timeout = {}",
        ddl_lock_wait_secs.max(1)
    ))
    .map_err(my_err("setting lock_wait_timeout for DDL"))?;
    let prepared = prepare_each(conn, work);
    conn.query_drop("SET SESSION lock_wait_timeout = DEFAULT")
        .map_err(my_err("resetting lock_wait_timeout"))?;
    prepared
}

fn prepare_each(conn: &mut Conn, work: &mut [TableWork]) -> Result<(), LoadError> {
    for w in work.iter_mut() {
        ensure_target(conn, &mut w.table)?;
        if w.table.spec.mysql_partitioning {
            let ids: Vec<String> = w.loads.iter().map(|l| l.partition.id.clone()).collect();
            ensure_mysql_partitions(conn, &w.table, &ids)?;
        }
    }
    Ok(())
}

/// Creates the target when missing (with the partition column indexed); otherwise checks that
/// its columns can hold the warehouse's. Returns whether it was created. DDL commits
/// implicitly in MySQL, so this runs before the group's transaction.
/// For an existing target, the columns' own limits (NOT NULL, VARCHAR length) are adopted so
/// that a value MySQL would reject is caught while decoding, naming its row.
pub fn ensure_target(conn: &mut Conn, table: &mut PartitionedSource) -> Result<bool, LoadError> {
    let target = table.spec.target.clone();
    match session::table_columns(conn, &target)
        .map_err(sink_err(format!("table {target}: reading its columns")))?
    {
        Some(have) => {
            let have = upgrade_key_collations(conn, table, have)?;
            let mut problems = schema_drift(&target, &table.columns, &have);
            problems.extend(key_collation_problems(
                &target,
                &table.spec.primary_key,
                &have,
            ));
            if !problems.is_empty() {
                return Err(LoadError::SchemaDrift {
                    table: target.to_string(),
                    problems,
                });
            }
            adopt_column_limits(conn, table)?;
            Ok(false)
        }
        None => {
            create_target(conn, table)?;
            Ok(true)
        }
    }
}

/// A target this sync loaded before (it has watermarks) whose string keys still have the
/// padding collation earlier versions created gets the exact one, once. Returns the columns
/// as they are now.
fn upgrade_key_collations(
    conn: &mut Conn,
    table: &PartitionedSource,
    have: Vec<domain::schema::MysqlColumn>,
) -> Result<Vec<domain::schema::MysqlColumn>, LoadError> {
    let target = table.spec.target.clone();
    let padded = domain::schema::padded_key_columns(&table.spec.primary_key, &have);
    if padded.is_empty() {
        return Ok(have);
    }
    let owned: Option<i64> = conn
        .exec_first(
            "SELECT 1 FROM sync_partitions WHERE target_table = ? LIMIT 1",
            (target.as_str(),),
        )
        .map_err(my_err(format!("table {target}: reading its watermarks")))?;
    if owned.is_none() {
        return Ok(have);
    }
    let collation = session::exact_collation(conn).map_err(sink_err(format!(
        "table {target}: choosing the string collation"
    )))?;
    tracing::warn!(table.name = %target, columns = ?padded, collation = %collation, "converting key columns to an exact collation (one-time; rebuilds the table)");
    session::convert_collation(conn, &target, &padded, &collation).map_err(sink_err(format!(
        "table {target}: converting key collations"
    )))?;
    Ok(session::table_columns(conn, &target)
        .map_err(sink_err(format!("table {target}: reading its columns")))?
        .unwrap_or_default())
}

/// Adopts an existing target's NOT NULL and VARCHAR/CHAR lengths into the table's columns.
fn adopt_column_limits(conn: &mut Conn, table: &mut PartitionedSource) -> Result<(), LoadError> {
    let target = table.spec.target.clone();
    let limits: Vec<(String, String, String, Option<u64>)> = conn
        .exec(
            "SELECT COLUMN_NAME, IS_NULLABLE, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (target.as_str(),),
        )
        .map_err(my_err(format!("table {target}: reading its columns")))?;
    for (name, nullable, data_type, max_chars) in limits {
        if let Some(col) = table
            .columns
            .iter_mut()
            .find(|c| c.name.eq_ignore_ascii_case(&name))
        {
            col.required |= nullable == "NO";
            if matches!(data_type.as_str(), "varchar" | "char") {
                col.varchar = max_chars.map(|n| n.min(u64::from(u32::MAX)) as u32);
            }
        }
    }
    Ok(())
}

/// `CREATE TABLE` for a missing target, from the warehouse schema; with `mysql_partitioning`,
/// partitioned by `RANGE COLUMNS` on the partition column.
fn create_target(conn: &mut Conn, table: &PartitionedSource) -> Result<(), LoadError> {
    let target = table.spec.target.clone();
    let collation = session::exact_collation(conn).map_err(sink_err(format!(
        "table {target}: choosing the string collation"
    )))?;
    let mut ddl = create_table_sql(
        &target,
        &table.columns,
        &table.spec.primary_key,
        Some(&table.scheme.target_column),
        &collation,
    )
    .map_err(|message| LoadError::Create {
        table: target.to_string(),
        message,
    })?;
    if table.spec.mysql_partitioning {
        // A first partition below any real value holds NULL partition keys; the
        // warehouse's partitions are added by `ensure_mysql_partitions`.
        let floor = floor_bound(table);
        ddl.push_str(&format!(
            " PARTITION BY RANGE COLUMNS({}) (PARTITION {FLOOR_PARTITION} VALUES LESS THAN ('{floor}'))",
            table.scheme.target_column.quoted()
        ));
    }
    conn.query_drop(ddl)
        .map_err(my_err(format!("table {target}: CREATE TABLE")))?;
    tracing::info!(table.name = %target, "created target table from the warehouse schema");
    Ok(())
}

/// The first partition of a target the sync creates partitioned in MySQL.
pub const FLOOR_PARTITION: &str = "p_floor";

/// The bound of `p_floor`, the first partition of a target the sync creates partitioned in
/// MySQL (below any real value: it holds NULL partition keys), as MySQL prints it.
pub fn floor_bound(table: &PartitionedSource) -> &'static str {
    if table.scheme.column_type == domain::schema::BqType::Date {
        "1000-01-01"
    } else {
        "1000-01-01 00:00:00"
    }
}

/// For a target partitioned in MySQL (`RANGE COLUMNS` on the partition column), adds a
/// partition for every warehouse partition about to load whose range ends above the highest
/// existing bound (and one for the gap before it, if any), and for `__UNPARTITIONED__` (dates
/// from 2160 on) a last partition `p_beyond` up to `MAXVALUE`; once that exists, new
/// partitions are split off it (`REORGANIZE`, which moves only its few far-future rows).
/// One DDL statement. Returns the partitions added.
pub fn ensure_mysql_partitions(
    conn: &mut Conn,
    table: &PartitionedSource,
    partitions: &[String],
) -> Result<usize, LoadError> {
    let target = &table.spec.target;
    let existing = crate::exchange::mysql_partitions(conn, target)?;
    if existing.is_empty() {
        // Not partitioned in MySQL (created before the option was set): leave it.
        return Ok(0);
    }
    let (ranges, beyond) = wanted_ranges(table, partitions)?;
    let Some((ddl, added)) = partitions_ddl(&existing, ranges, beyond) else {
        return Ok(0);
    };
    conn.query_drop(format!("ALTER TABLE {} {ddl}", target.quoted()))
        .map_err(my_err(format!(
            "table {target}: adding {added} MySQL partitions"
        )))?;
    Ok(added)
}

/// A warehouse partition's range in MySQL terms: id, start, end (bounds as MySQL prints them).
pub type Range = (String, String, String);

/// What loading `partitions` asks of a target partitioned in MySQL: the range `(pid, start,
/// end)` of each dated one, bounds as MySQL prints them, and whether `__UNPARTITIONED__` is
/// among them (it needs [`BEYOND_PARTITION`]). `__NULL__` needs nothing (`p_floor` holds it).
pub fn wanted_ranges(
    table: &PartitionedSource,
    partitions: &[String],
) -> Result<(Vec<Range>, bool), LoadError> {
    let mut ranges = Vec::new();
    let mut beyond = false;
    for pid in partitions {
        match pid.as_str() {
            crate::partition::NULL_PARTITION => {}
            crate::partition::UNPARTITIONED => beyond = true,
            _ => {
                let (start, end) =
                    table
                        .scheme
                        .range(pid)
                        .map_err(|message| LoadError::Create {
                            table: table.spec.target.to_string(),
                            message,
                        })?;
                ranges.push((
                    pid.clone(),
                    bound_text(table, start),
                    bound_text(table, end),
                ));
            }
        }
    }
    Ok((ranges, beyond))
}

/// The partition that holds dates from BigQuery's partitionable range's end on (2160).
pub const BEYOND_PARTITION: &str = "p_beyond";

/// The bound MySQL prints for a last partition without an upper bound.
const MAXVALUE: &str = "MAXVALUE";

/// What a table with partitions `existing` (name, bound without quotes, `MAXVALUE` as is; in
/// order) needs for ranges `(pid, start, end)` and, when `beyond`, the far future: the
/// partitions to add (name, bound) in order, and whether they are split off `p_beyond`.
/// Pure.
pub fn new_partitions(
    existing: &[(String, String)],
    mut ranges: Vec<Range>,
    beyond: bool,
) -> (Vec<(String, String)>, bool) {
    let last_is_max = existing.last().is_some_and(|(_, b)| b == MAXVALUE);
    // A MAXVALUE partition that is not ours may hold any dates: splitting it could move
    // millions of rows. Loads go into it as it is (the one-transaction path).
    let ours_last = existing
        .last()
        .is_some_and(|(n, b)| b == MAXVALUE && n == BEYOND_PARTITION);
    if last_is_max && !ours_last {
        return (Vec::new(), false);
    }
    let mut max = existing
        .iter()
        .map(|(_, b)| b.as_str())
        .filter(|b| *b != MAXVALUE)
        .max()
        .unwrap_or_default()
        .to_string();
    ranges.sort_by(|a, b| a.2.cmp(&b.2));
    let mut new = Vec::new();
    for (pid, start, end) in ranges {
        if end <= max {
            continue;
        }
        // A partition holding exactly the warehouse partition's range can be replaced by
        // exchange (docs/sync.md#exchange): a gap before it gets its own MySQL partition.
        if start > max {
            new.push((format!("pgap_{pid}"), start));
        }
        new.push((format!("p{pid}"), end.clone()));
        max = end;
    }
    if beyond && !ours_last {
        new.push((BEYOND_PARTITION.to_string(), MAXVALUE.to_string()));
    }
    (new, ours_last)
}

/// The partitions the table will have once [`new_partitions`] are in, in order. Pure.
pub fn partitions_after(
    existing: &[(String, String)],
    (new, split): &(Vec<(String, String)>, bool),
) -> Vec<(String, String)> {
    let mut all = existing.to_vec();
    let beyond = split.then(|| all.pop()).flatten();
    all.extend(new.iter().cloned());
    all.extend(beyond);
    all
}

/// The `ALTER TABLE` clause that adds `new` ([`new_partitions`]) and how many partitions it
/// adds; `None`: nothing to add. Pure.
pub fn partitions_ddl(
    existing: &[(String, String)],
    ranges: Vec<Range>,
    beyond: bool,
) -> Option<(String, usize)> {
    let (new, split) = new_partitions(existing, ranges, beyond);
    if new.is_empty() {
        return None;
    }
    let def = |(name, bound): &(String, String)| {
        let bound = if bound == MAXVALUE {
            bound.clone()
        } else {
            format!("'{bound}'")
        };
        format!("PARTITION {} VALUES LESS THAN ({bound})", quote_ident(name))
    };
    let mut defs: Vec<String> = new.iter().map(def).collect();
    if split {
        defs.push(def(&(BEYOND_PARTITION.to_string(), MAXVALUE.to_string())));
        return Some((
            format!(
                "REORGANIZE PARTITION {} INTO ({})",
                quote_ident(BEYOND_PARTITION),
                defs.join(", ")
            ),
            new.len(),
        ));
    }
    Some((format!("ADD PARTITION ({})", defs.join(", ")), new.len()))
}

/// The MySQL partition holding exactly `[start, end)` among `parts` (in order; bounds as
/// MySQL prints them): the one ending at `end` whose predecessor ends at `start`. Pure.
pub fn exact_partition(parts: &[(String, String)], start: &str, end: &str) -> Option<String> {
    let i = parts.iter().position(|(_, b)| b == end)?;
    (i > 0 && parts[i - 1].1 == start).then(|| parts[i].0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, b)| (n.to_string(), b.to_string()))
            .collect()
    }

    fn day(pid: &str, start: &str, end: &str) -> (String, String, String) {
        (pid.into(), start.into(), end.into())
    }

    #[test]
    fn new_ranges_are_added_with_their_gaps_in_one_statement() {
        let existing = parts(&[("p_floor", "1000-01-01")]);
        let ddl = partitions_ddl(
            &existing,
            vec![
                day("20260103", "2026-01-03", "2026-01-04"),
                day("20260101", "2026-01-01", "2026-01-02"),
            ],
            false,
        );
        assert_eq!(
            ddl,
            Some((
                "ADD PARTITION (PARTITION `pgap_20260101` VALUES LESS THAN ('2026-01-01'), \
                 PARTITION `p20260101` VALUES LESS THAN ('2026-01-02'), \
                 PARTITION `pgap_20260103` VALUES LESS THAN ('2026-01-03'), \
                 PARTITION `p20260103` VALUES LESS THAN ('2026-01-04'))"
                    .to_string(),
                4
            ))
        );
        // Ranges already covered add nothing.
        let existing = parts(&[("p_floor", "1000-01-01"), ("p20260101", "2026-01-02")]);
        let old = vec![day("20260101", "2026-01-01", "2026-01-02")];
        assert_eq!(partitions_ddl(&existing, old, false), None);
    }

    #[test]
    fn the_far_future_gets_p_beyond_and_later_ranges_are_split_off_it() {
        let existing = parts(&[("p_floor", "1000-01-01"), ("p20260101", "2026-01-02")]);
        assert_eq!(
            partitions_ddl(&existing, vec![], true),
            Some((
                "ADD PARTITION (PARTITION `p_beyond` VALUES LESS THAN (MAXVALUE))".to_string(),
                1
            ))
        );
        let existing = parts(&[
            ("p_floor", "1000-01-01"),
            ("p20260101", "2026-01-02"),
            ("p_beyond", "MAXVALUE"),
        ]);
        assert_eq!(
            partitions_ddl(
                &existing,
                vec![day("20260102", "2026-01-02", "2026-01-03")],
                true
            ),
            Some((
                "REORGANIZE PARTITION `p_beyond` INTO (PARTITION `p20260102` VALUES LESS THAN \
                 ('2026-01-03'), PARTITION `p_beyond` VALUES LESS THAN (MAXVALUE))"
                    .to_string(),
                1
            ))
        );
        assert_eq!(partitions_ddl(&existing, vec![], true), None);
    }

    #[test]
    fn a_range_is_exact_once_the_partitions_it_needs_are_in() {
        let existing = parts(&[("p_floor", "1000-01-01"), ("p_beyond", "MAXVALUE")]);
        let ranges = vec![
            day("20260101", "2026-01-01", "2026-01-02"),
            day("20260102", "2026-01-02", "2026-01-03"),
        ];
        let after = partitions_after(&existing, &new_partitions(&existing, ranges, true));
        let names: Vec<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "p_floor",
                "pgap_20260101",
                "p20260101",
                "p20260102",
                "p_beyond"
            ]
        );
        assert_eq!(
            exact_partition(&after, "2026-01-02", "2026-01-03").as_deref(),
            Some("p20260102")
        );
        // A range spread over two partitions, or not covered, is not exact.
        assert_eq!(exact_partition(&after, "2025-12-31", "2026-01-02"), None);
        assert_eq!(exact_partition(&after, "2026-01-05", "2026-01-06"), None);
    }

    #[test]
    fn someone_elses_maxvalue_partition_is_left_alone() {
        let existing = parts(&[("p2025", "2026-01-01"), ("pmax", "MAXVALUE")]);
        let new = vec![day("20260105", "2026-01-05", "2026-01-06")];
        assert_eq!(partitions_ddl(&existing, new, true), None);
    }
}
