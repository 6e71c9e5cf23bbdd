//! Step (2) of a cycle: which rows of the differing buckets changed, and so what to upsert and
//! delete. First from IBLTs of the row hashes (see `docs/sync.md#iblt` and [`crate::iblt`]),
//! whose cost follows the number of changes, not the table's size; when that can't be used,
//! from the key scan: `(key, hash)` of the mixed buckets on both sides, diffed (see
//! `docs/sync.md#key-scan`). Every MySQL row of a bucket the warehouse no longer has is a delete.

use domain::ident::Ident;
use std::collections::{HashMap, HashSet};

use mysql::Conn;

use crate::cycle::{CycleReport, Env};
use crate::plan::{self, BucketSplit, Digests, RowPlan, StaleRow};
use crate::source::{self, pk_positions, FetchStats, SourceTable};
use crate::target::{self, MysqlKeys};
use crate::{blocking, canon, iblt, overlapped, SyncError};

/// What changed in the differing buckets.
pub(crate) struct Changes {
    pub(crate) plan: RowPlan,
    /// The new and changed rows (MySQL values, bucket and hash last) when they were fetched
    /// already (the IBLT path); `None`: the rows of `plan.fetch` are still to be fetched.
    pub(crate) prefetched: Option<Vec<Vec<mysql::Value>>>,
    /// The MySQL key values of the rows to delete, by canonical key.
    pub(crate) raw_keys: HashMap<String, Vec<mysql::Value>>,
}

/// Plans the differing buckets: the mixed ones from IBLTs, or else from the key scan; every
/// MySQL row of a gone bucket (empty in the warehouse) is a delete.
pub(crate) async fn find_changes(
    env: &Env<'_>,
    src: &SourceTable,
    conn: &mut Conn,
    table: &Ident,
    split: &BucketSplit,
    (wh, my): (&Digests, &Digests),
    report: &mut CycleReport,
) -> Result<Changes, SyncError> {
    let found = iblt_plan(env, src, conn, split, (wh, my), report).await?;
    let mut changes = match found {
        Some(found) => Changes {
            plan: found.plan,
            prefetched: Some(found.rows),
            raw_keys: found.raw_keys,
        },
        None => key_scan(env, src, conn, table, split, wh, report).await?,
    };
    // Every MySQL row of a bucket the warehouse no longer has goes.
    let my_gone = blocking(|| target::keys(conn, table, &src.primary_key, &split.gone))?;
    changes
        .plan
        .deletes
        .extend(my_gone.keys.iter().map(|k| StaleRow {
            key: k.key.clone(),
            hash: k.hash,
        }));
    changes.raw_keys.extend(my_gone.raw);
    Ok(changes)
}

/// The key scan (see `docs/sync.md#key-scan`): `(key, hash)` of the mixed buckets from both
/// sides, diffed bucket by bucket as the warehouse's keys stream in (in bucket order), so that
/// memory holds one bucket's keys and the plan (which follows the change), never the table's
/// keys. A duplicate warehouse key fails the cycle; so does a bucket whose warehouse key count
/// is not what the same snapshot's digest says (an empty or partial answer must never turn
/// into deletes). Nothing is written before the whole scan adds up.
async fn key_scan(
    env: &Env<'_>,
    src: &SourceTable,
    conn: &mut Conn,
    table: &Ident,
    split: &BucketSplit,
    wh: &Digests,
    report: &mut CycleReport,
) -> Result<Changes, SyncError> {
    let expected = |b: u16| wh.get(&b).map_or(0, |d| d.count);
    let inconsistent = |b: u16, listed: u64| {
        SyncError::Inconsistent(format!(
            "{table}: the warehouse listed {listed} keys for bucket {b} whose digest counts {} rows \
             (answers from different moments, or a partial answer): nothing deleted, the next cycle retries",
            expected(b)
        ))
    };
    let mut plan = RowPlan::default();
    let mut raw_keys = HashMap::new();
    let mut listed: HashSet<u16> = HashSet::new();
    source::keys_by_bucket(
        env.warehouse,
        src,
        &split.mixed,
        &mut report.fetch,
        |b, wh_keys| {
            if wh_keys.len() as u64 != expected(b) || !listed.insert(b) {
                return Err(inconsistent(b, wh_keys.len() as u64));
            }
            let mut my = blocking(|| target::keys(conn, table, &src.primary_key, &[b]))?;
            let found = plan::plan_rows(&wh_keys, &my.keys)?;
            for d in &found.deletes {
                if let Some(v) = my.raw.remove(&d.key) {
                    raw_keys.insert(d.key.clone(), v);
                }
            }
            plan.fetch.extend(found.fetch);
            plan.inserts += found.inserts;
            plan.updates += found.updates;
            plan.deletes.extend(found.deletes);
            Ok(())
        },
    )
    .await?;
    if let Some(b) = split.mixed.iter().find(|b| !listed.contains(b)) {
        return Err(inconsistent(*b, 0));
    }
    plan.fetch.sort_unstable();
    plan.fetch.dedup();
    Ok(Changes {
        plan,
        prefetched: None,
        raw_keys,
    })
}

/// What [`iblt_plan`] found: the plan, the rows to upsert (MySQL values, bucket and hash
/// last) and the MySQL key values of the rows to delete.
struct IbltFound {
    plan: RowPlan,
    rows: Vec<Vec<mysql::Value>>,
    raw_keys: HashMap<String, Vec<mysql::Value>>,
}

/// Plans the mixed buckets from IBLTs of the row hashes (see [`crate::iblt`]): the warehouse's
/// computed in SQL, MySQL's here from its stored hashes (an index-only read). The rows only
/// the warehouse has are fetched by hash (they are few) and returned for upserting; MySQL
/// rows whose hash is gone and whose key was not rewritten are deletes. `None` (and the
/// caller reads the keys instead) when the difference looks too large for an IBLT to pay
/// off, when it can't be decoded, or when anything does not add up (a duplicate key in the
/// warehouse, a row that changed meanwhile): the key scan handles and reports those.
async fn iblt_plan(
    env: &Env<'_>,
    src: &SourceTable,
    conn: &mut Conn,
    split: &BucketSplit,
    (wh, my): (&Digests, &Digests),
    report: &mut CycleReport,
) -> Result<Option<IbltFound>, SyncError> {
    let table = src.target.clone();
    let size = IbltSize::of(split, wh, my);
    if split.mixed.is_empty() || !size.worth(size.m) {
        return Ok(None);
    }
    let only = size.scope(split, wh);
    let Some(diff) = decode(env, src, conn, &table, only, &size, report).await? else {
        return Ok(None);
    };
    if !size.usable(&diff) {
        return Ok(None);
    }
    // The new and changed rows, by hash, while MySQL looks up the keys of the stale ones.
    let pk_idx = pk_positions(src);
    let (rows, stale) = overlapped(
        rows_by_hash(
            env,
            src,
            &table,
            &pk_idx,
            &diff.warehouse_only,
            &mut report.fetch,
        ),
        || {
            target::keys_with_hashes(
                conn,
                &table,
                &src.primary_key,
                &split.mixed,
                &diff.mysql_only,
            )
        },
    )
    .await;
    let (rows, stale) = (rows?, stale?);
    if stale.keys.len() != diff.mysql_only.len() {
        return Ok(None);
    }
    if rows.len() != diff.warehouse_only.len() {
        return Ok(None);
    }
    let Some(found) = plan_difference(&diff, &rows, &stale) else {
        return Ok(None); // the warehouse has a key twice
    };
    if !new_keys_are_new(conn, &table, src, &pk_idx, &rows, found.updates)? {
        return Ok(None);
    }
    Ok(Some(IbltFound {
        plan: found,
        rows: rows.into_iter().map(|(_, v)| v).collect(),
        raw_keys: stale.raw,
    }))
}

/// The rows of the mixed buckets on each side, and the IBLT size first tried for them.
struct IbltSize {
    /// Cells per sub-table.
    m: u32,
    wh_rows: u64,
    my_rows: u64,
}

impl IbltSize {
    fn of(split: &BucketSplit, wh: &Digests, my: &Digests) -> IbltSize {
        let counts: Vec<(u64, u64)> = split
            .mixed
            .iter()
            .map(|b| {
                (
                    wh.get(b).map_or(0, |d| d.count),
                    my.get(b).map_or(0, |d| d.count),
                )
            })
            .collect();
        IbltSize {
            m: iblt::per_table_for(iblt::expected_difference(counts.iter().copied())),
            wh_rows: counts.iter().map(|(w, _)| *w).sum(),
            my_rows: counts.iter().map(|(_, m)| *m).sum(),
        }
    }

    /// An IBLT pays off while its cells are well below the rows a key scan would read.
    fn worth(&self, m: u32) -> bool {
        u64::from(m) * iblt::K as u64 * 4 <= self.wh_rows
    }

    /// The buckets the IBLTs cover (`None`: the whole table). Restricted to the differing
    /// buckets where that leaves out most rows. Otherwise over the whole table: filtering by
    /// bucket costs the warehouse a second fingerprint per row, and rows outside the differing
    /// buckets are the same on both sides, so they cancel out of the difference anyway (unless
    /// a bucket is empty on one side: those are handled apart).
    fn scope<'s>(&self, split: &'s BucketSplit, wh: &Digests) -> Option<&'s [u16]> {
        let whole = self.wh_rows * 2 >= plan::total_rows(wh)
            && split.fresh.is_empty()
            && split.gone.is_empty();
        (!whole).then_some(split.mixed.as_slice())
    }

    /// Whether the decoded difference can be used: the row counts add up, and the hashes of
    /// each side are few enough to be fetched by hash.
    fn usable(&self, diff: &iblt::Difference) -> bool {
        self.my_rows + diff.warehouse_only.len() as u64
            == self.wh_rows + diff.mysql_only.len() as u64
            && plan::fetch_by_hash(diff.warehouse_only.len())
            && plan::fetch_by_hash(diff.mysql_only.len())
    }
}

/// Builds both IBLTs, the warehouse's in SQL while MySQL reads its stored hashes (an index-only
/// read), and decodes their difference. `None` (logged) when the key scan must do instead.
async fn decode(
    env: &Env<'_>,
    src: &SourceTable,
    conn: &mut Conn,
    table: &Ident,
    only: Option<&[u16]>,
    size: &IbltSize,
    report: &mut CycleReport,
) -> Result<Option<iblt::Difference>, SyncError> {
    let mut m = size.m;
    let (first, mysql) = overlapped(
        source::iblt(env.warehouse, src, only, m, &mut report.fetch),
        || target::hash_iblt(conn, table, only, m),
    )
    .await;
    let mut mysql = mysql?;
    let mut answer = first;
    // The counts only bound the difference from below (several changes in one bucket look
    // like one): a table that can't be decoded is tried once more at 4x the size, while that
    // still reads far fewer rows than the key scan.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let Some(warehouse) = warehouse_iblt(answer, table)? else {
            return Ok(None);
        };
        match warehouse.difference(&mysql) {
            Ok(d) => return Ok(Some(d)),
            Err(e)
                if attempts < 2
                    && m.saturating_mul(4) <= iblt::MAX_PER_TABLE
                    && size.worth(m.saturating_mul(4)) =>
            {
                tracing::info!(table = %table, error = %e, "IBLT not decoded; once more at 4x the size");
                m = m.saturating_mul(4);
                // MySQL's side is read again rather than kept: memory follows the IBLT.
                let (again, my) = overlapped(
                    source::iblt(env.warehouse, src, only, m, &mut report.fetch),
                    || target::hash_iblt(conn, table, only, m),
                )
                .await;
                answer = again;
                mysql = my?;
            }
            Err(e) => {
                tracing::info!(table = %table, error = %e, "IBLT not decoded; reading the keys of the differing buckets");
                return Ok(None);
            }
        }
    }
}

/// The warehouse's IBLT from its answer, or `None` (logged) when the key scan must do instead.
fn warehouse_iblt(
    answer: Result<Option<iblt::Iblt>, SyncError>,
    table: &Ident,
) -> Result<Option<iblt::Iblt>, SyncError> {
    match answer {
        Ok(Some(t)) => Ok(Some(t)),
        Ok(None) => {
            tracing::warn!(table = %table, "the warehouse's IBLT answer is malformed; reading the keys of the differing buckets");
            Ok(None)
        }
        // A warehouse that does not take the IBLT's SQL (GROUPING SETS, bit arithmetic)
        // must not stop the table: the key scan needs only plain SQL.
        Err(SyncError::Warehouse(e)) if !e.transient() => {
            tracing::warn!(table = %table, error = %e, "the warehouse refused the IBLT query; reading the keys of the differing buckets");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The plan from a decoded difference, its rows fetched (`rows`, by canonical key) and the
/// MySQL keys of its stale hashes: a fetched row is an update where MySQL has a stale row with
/// its key, else an insert; a stale row whose key was not rewritten is a delete. `None` when
/// the warehouse has a key twice.
fn plan_difference(
    diff: &iblt::Difference,
    rows: &[(String, Vec<mysql::Value>)],
    stale: &MysqlKeys,
) -> Option<RowPlan> {
    let stale_keys: HashSet<&str> = stale.keys.iter().map(|k| k.key.as_str()).collect();
    let mut found = RowPlan {
        fetch: diff.warehouse_only.clone(),
        ..RowPlan::default()
    };
    let mut rewritten: HashSet<&str> = HashSet::with_capacity(rows.len());
    for (key, _) in rows {
        if !rewritten.insert(key.as_str()) {
            return None; // the warehouse has this key twice
        }
        if stale_keys.contains(key.as_str()) {
            found.updates += 1;
        } else {
            found.inserts += 1;
        }
    }
    for k in &stale.keys {
        if !rewritten.contains(k.key.as_str()) {
            found.deletes.push(StaleRow {
                key: k.key.clone(),
                hash: k.hash,
            });
        }
    }
    Some(found)
}

/// A key planned as new must be new: one MySQL still holds with a current hash means the
/// warehouse has that key twice. True when MySQL holds exactly `updates` of the keys of `rows`.
fn new_keys_are_new(
    conn: &mut Conn,
    table: &Ident,
    src: &SourceTable,
    pk_idx: &[usize],
    rows: &[(String, Vec<mysql::Value>)],
    updates: usize,
) -> Result<bool, SyncError> {
    let bound: Vec<Vec<mysql::Value>> = rows
        .iter()
        .map(|(_, v)| pk_idx.iter().map(|i| v[*i].clone()).collect())
        .collect();
    let existing = blocking(|| target::count_existing(conn, table, &src.primary_key, &bound))?;
    Ok(existing == updates as u64)
}

/// Fetches the rows with the given hashes: each as its canonical key and its MySQL values.
async fn rows_by_hash(
    env: &Env<'_>,
    src: &SourceTable,
    table: &Ident,
    pk_idx: &[usize],
    hashes: &[i64],
    stats: &mut FetchStats,
) -> Result<Vec<(String, Vec<mysql::Value>)>, SyncError> {
    let mut rows = Vec::with_capacity(hashes.len());
    if hashes.is_empty() {
        return Ok(rows);
    }
    stats.queries += 1;
    let bytes = env
        .warehouse
        .query_pages(&src.rows_by_hash_sql(hashes), |page| {
            stats.full_rows += page.rows.len() as u64;
            for cells in page.rows {
                let key = canonical_key(src, pk_idx, &cells)?;
                match target::convert_row(table, &src.columns, pk_idx, cells) {
                    Ok((values, _)) => rows.push((key, values)),
                    // A row MySQL can't take: left out here, the count check sends the cycle
                    // to the key-scan path, which skips and names it (docs/sync.md#apply).
                    Err(SyncError::BadRow(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok::<(), SyncError>(())
        })
        .await?;
    stats.bytes_processed += bytes;
    Ok(rows)
}

/// The canonical key of an exported warehouse row, as `target::keys` computes MySQL's.
fn canonical_key(
    src: &SourceTable,
    pk_idx: &[usize],
    cells: &[Option<serde_json::Value>],
) -> Result<String, SyncError> {
    let mut parts = Vec::with_capacity(pk_idx.len());
    for (c, i) in src.primary_key.iter().zip(pk_idx) {
        let v = cells
            .get(*i)
            .and_then(Option::as_ref)
            .unwrap_or(&serde_json::Value::Null);
        let sv = domain::schema::convert(c, v)
            .map_err(|e| SyncError::BadRow(format!("key column `{}`: {e}", c.name)))?;
        parts.push(canon::of_sql(c, &sv));
    }
    Ok(canon::key(parts))
}
