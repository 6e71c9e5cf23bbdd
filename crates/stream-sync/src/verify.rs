//! `verify`: compares every row's values in MySQL with the warehouse, a group of buckets at a
//! time, and lists the mismatches (see `docs/sync.md#stream-sync-commands`): rows missing on
//! either side, differing columns, a stale stored hash.

use std::collections::{BTreeSet, HashMap, HashSet};

use domain::config::TableSpec;
use domain::ident::Ident;
use domain::schema::{Column, MysqlColumn};
use mysql::prelude::Queryable;
use mysql::Conn;

use crate::cycle::Env;
use crate::plan::Digests;
use crate::source::{self, pk_positions, FetchStats, SourceTable};
use crate::{blocking, canon, target, SyncError};

/// Rows of one side by canonical key: the canonical values of their columns, and their hash.
type CanonRows = HashMap<String, (Vec<String>, i64)>;

/// One difference `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub table: String,
    /// The primary key, parts joined by `, ` (empty for table-level problems).
    pub key: String,
    pub problem: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.table, self.problem)
        } else {
            write!(f, "{} key ({}): {}", self.table, self.key, self.problem)
        }
    }
}

/// Compares every row's values (not only the stored hashes, which a change made behind the
/// sync's back leaves alone), a group of buckets at a time. Lists at most `limit` mismatches.
pub async fn verify(
    env: &Env<'_>,
    spec: &TableSpec,
    conn: &mut Conn,
    limit: usize,
) -> Result<Vec<Mismatch>, SyncError> {
    let mut stats = FetchStats::default();
    let src = source_table(env, spec, &mut stats).await?;
    let have = blocking(|| sync_engine::session::table_columns(conn, &spec.target))?;
    if let Some(problem) = schema_problem(&spec.target, &src, have.as_deref()) {
        return Ok(vec![problem]);
    }
    let wh_digests = source::digests(env.warehouse, &src, &mut stats).await?;
    let my_digests = blocking(|| target::digests(conn, &spec.target))?;
    let groups = bucket_groups(&wh_digests, &my_digests);
    let pk_idx = pk_positions(&src);
    let mut out = Vec::new();
    for group in groups.into_iter().filter(|g| !g.is_empty()) {
        let wh_rows = warehouse_rows(env, &spec.target, &src, &pk_idx, &group).await?;
        let my_rows = blocking(|| mysql_rows(conn, &spec.target, &src.columns, &group))?;
        compare_rows(
            &spec.target,
            &src.columns,
            &pk_idx,
            &wh_rows,
            my_rows,
            &mut out,
        );
        if out.len() >= limit {
            out.truncate(limit);
            break;
        }
    }
    Ok(out)
}

/// A mismatch of `table` (`key` empty for a table-level problem).
fn mismatch(table: &str, key: String, problem: String) -> Mismatch {
    Mismatch {
        table: table.to_string(),
        key,
        problem,
    }
}

/// The warehouse table as the sync reads it (`tables.get`).
async fn source_table(
    env: &Env<'_>,
    spec: &TableSpec,
    stats: &mut FetchStats,
) -> Result<SourceTable, SyncError> {
    let (columns, _) = source::describe(
        env.warehouse,
        env.dataset,
        &spec.source,
        &spec.varchar,
        stats,
    )
    .await?;
    SourceTable::new(
        &env.warehouse.project,
        env.dataset,
        spec,
        columns,
        env.settings.buckets,
    )
    .map_err(SyncError::Permanent)
}

/// A table-level mismatch: the MySQL table (its columns `have`) is missing, or its columns are
/// not the warehouse's plus the sync columns.
fn schema_problem(
    table: &Ident,
    src: &SourceTable,
    have: Option<&[MysqlColumn]>,
) -> Option<Mismatch> {
    let Some(have) = have else {
        return Some(mismatch(table, String::new(), "missing in MySQL".into()));
    };
    let drift = domain::schema::schema_drift(table, &src.columns, have);
    if !drift.is_empty() || !have.iter().any(|c| c.name == "_sync_bucket") {
        return Some(mismatch(
            table,
            String::new(),
            format!("schema mismatch: {}", drift.join("; ")),
        ));
    }
    None
}

/// Every bucket of either side, in groups of roughly 20,000 rows each (counting the larger
/// side of each bucket).
fn bucket_groups(wh_digests: &Digests, my_digests: &Digests) -> Vec<Vec<u16>> {
    let mut groups: Vec<Vec<u16>> = vec![Vec::new()];
    let mut in_group = 0u64;
    let all: BTreeSet<u16> = wh_digests
        .keys()
        .chain(my_digests.keys())
        .copied()
        .collect();
    for b in all {
        let n = wh_digests
            .get(&b)
            .map(|d| d.count)
            .unwrap_or(0)
            .max(my_digests.get(&b).map(|d| d.count).unwrap_or(0));
        if in_group > 0 && in_group + n > 20_000 {
            groups.push(Vec::new());
            in_group = 0;
        }
        in_group += n;
        if let Some(g) = groups.last_mut() {
            g.push(b);
        }
    }
    groups
}

/// The warehouse rows of the buckets `group`, as MySQL would hold them, canonical.
async fn warehouse_rows(
    env: &Env<'_>,
    table: &Ident,
    src: &SourceTable,
    pk_idx: &[usize],
    group: &[u16],
) -> Result<CanonRows, SyncError> {
    let page = env.warehouse.query_all(&src.verify_sql(group)).await?;
    let mut wh_rows: CanonRows = HashMap::new();
    for cells in page.rows {
        let (values, hash) = target::convert_row(table, &src.columns, pk_idx, cells)?;
        let canon_vals: Vec<String> = src
            .columns
            .iter()
            .zip(&values)
            .map(|(c, v)| sync_engine::values::canonical(c, v))
            .collect();
        let key = canon::key(pk_idx.iter().map(|i| canon_vals[*i].clone()));
        wh_rows.insert(key, (canon_vals, hash));
    }
    Ok(wh_rows)
}

/// Adds the mismatches of one group of buckets to `out`: rows only one side has, and rows whose
/// values or stored hash differ.
fn compare_rows(
    table: &Ident,
    columns: &[Column],
    pk_idx: &[usize],
    wh_rows: &CanonRows,
    my_rows: Vec<(Vec<String>, i64)>,
    out: &mut Vec<Mismatch>,
) {
    let mut seen = HashSet::new();
    for (vals, hash) in my_rows {
        let key = canon::key(pk_idx.iter().map(|i| vals[*i].clone()));
        match wh_rows.get(&key) {
            None => out.push(mismatch(
                table,
                canon::display_key(&key),
                "in MySQL but not in the warehouse".into(),
            )),
            Some((w, h)) => {
                if let Some(problem) = row_problem(columns, w, *h, &vals, hash) {
                    out.push(mismatch(table, canon::display_key(&key), problem));
                }
            }
        }
        seen.insert(key);
    }
    for key in wh_rows.keys().filter(|k| !seen.contains(*k)) {
        out.push(mismatch(
            table,
            canon::display_key(key),
            "in the warehouse but not in MySQL".into(),
        ));
    }
}

/// What differs in a row both sides have: the columns whose values differ, or else a stale
/// stored hash. `None` when the row is the same.
fn row_problem(
    columns: &[Column],
    wh_vals: &[String],
    wh_hash: i64,
    my_vals: &[String],
    my_hash: i64,
) -> Option<String> {
    let cols: Vec<&str> = columns
        .iter()
        .zip(wh_vals.iter().zip(my_vals))
        .filter(|(_, (a, b))| a != b)
        .map(|(c, _)| c.name.as_str())
        .collect();
    if !cols.is_empty() {
        Some(format!("values differ in column(s) {}", cols.join(", ")))
    } else if wh_hash != my_hash {
        Some("stored _sync_hash is stale".into())
    } else {
        None
    }
}

/// Rows of `buckets` from MySQL: canonical values of `columns`, and the stored hash.
fn mysql_rows(
    conn: &mut Conn,
    table: &Ident,
    columns: &[Column],
    buckets: &[u16],
) -> Result<Vec<(Vec<String>, i64)>, SyncError> {
    let cols: Vec<&str> = columns.iter().map(|c| c.name.quoted()).collect();
    let list: Vec<String> = buckets.iter().map(u16::to_string).collect();
    let sql = format!(
        "SELECT {}, `_sync_hash` FROM {} WHERE `_sync_bucket` IN ({})",
        cols.join(", "),
        table.quoted(),
        list.join(",")
    );
    let rows: Vec<mysql::Row> = conn.exec(sql, ())?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let v = r.unwrap();
            let vals = columns
                .iter()
                .zip(&v)
                .map(|(c, x)| sync_engine::values::canonical(c, x))
                .collect();
            let hash = v.get(columns.len()).map_or(0, target::hash_of);
            (vals, hash)
        })
        .collect())
}
