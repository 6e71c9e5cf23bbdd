//! `run --dry-run`'s estimate of what the run would do (docs/sync.md#partition-sync-commands):
//! per planned partition, the bytes its export would process (a BigQuery dry run of the
//! export's query: nothing runs, nothing is billed) and the MySQL rows it would replace.

use mysql::prelude::Queryable;
use mysql::Conn;

use sync_engine::session;

use crate::exchange;
use crate::load::{self, my_err};
use crate::plan::Plan;
use crate::runner::{Context, GroupError, PlannedPartition};
use crate::source::{PartitionedSource, SourceError};
use crate::target_ddl;

/// Fills `estimated_bytes` and `mysql_rows` of every planned partition. Returns the group's
/// connection (the advisory lock lives on it).
pub(crate) async fn estimate(
    ctx: &Context,
    tables: &[(PartitionedSource, Plan)],
    plan: &mut [PlannedPartition],
    conn: Conn,
) -> Result<Conn, GroupError> {
    for planned in plan.iter_mut().filter(|p| p.action == "load") {
        let Some((table, _)) = tables.iter().find(|(t, _)| t.spec.target == planned.table) else {
            continue;
        };
        let sql = table.partition_query(&planned.partition)?;
        let bytes = ctx
            .warehouse
            .dry_run(&sql)
            .await
            .map_err(SourceError::warehouse(table))?;
        planned.estimated_bytes = Some(bytes);
    }
    let filters: Vec<Option<(String, String, Vec<String>)>> = plan
        .iter()
        .map(|p| {
            let (table, _) = tables.iter().find(|(t, _)| t.spec.target == p.table)?;
            let (cond, params) = table.scheme.mysql_filter(&p.partition).ok()?;
            Some((table.spec.target.quoted().to_string(), cond, params))
        })
        .collect();
    // Exchange applies to a group of one `mysql_partitioning` table (docs/sync.md#exchange).
    let exchange_table = match tables {
        [(t, p)]
            if ctx.config.partition_sync.replace == domain::config::Replace::Exchange
                && t.spec.mysql_partitioning =>
        {
            Some((t.clone(), p.clone()))
        }
        _ => None,
    };
    let (conn, counts, exact) = tokio::task::spawn_blocking(move || {
        let mut conn = conn;
        let counts: Result<Vec<Option<u64>>, GroupError> = filters
            .into_iter()
            .map(|f| match f {
                Some((table, cond, params)) => mysql_rows(&mut conn, &table, &cond, params),
                None => Ok(None),
            })
            .collect();
        let exact = match exchange_table {
            Some((t, p)) => exchanged_ids(&mut conn, &t, &p),
            None => Ok(Vec::new()),
        };
        (conn, counts, exact)
    })
    .await
    .map_err(|e| GroupError::Other(format!("dry run: {e}")))?;
    let exact = exact?;
    for (planned, count) in plan.iter_mut().zip(counts?) {
        planned.mysql_rows = count;
        if planned.action == "load" {
            planned.replace = Some(if exact.contains(&planned.partition) {
                "exchange"
            } else {
                "transaction"
            });
        }
    }
    Ok(conn)
}

/// The planned partitions of a `mysql_partitioning` table that would go by exchange: those
/// that are exactly one MySQL partition once the run has added the partitions it needs (a
/// target that does not exist yet would be created with `p_floor` alone).
fn exchanged_ids(
    conn: &mut Conn,
    table: &PartitionedSource,
    plan: &Plan,
) -> Result<Vec<String>, GroupError> {
    let target = &table.spec.target;
    let mut existing = exchange::mysql_partitions(conn, target)?;
    if existing.is_empty() {
        let exists = session::table_columns(conn, target)
            .map_err(load::sink_err(format!(
                "table {target}: reading its columns"
            )))?
            .is_some();
        if exists {
            // Not partitioned in MySQL: every load takes the transaction path.
            return Ok(Vec::new());
        }
        existing.push((
            target_ddl::FLOOR_PARTITION.into(),
            target_ddl::floor_bound(table).into(),
        ));
    }
    let ids: Vec<String> = plan.loads.iter().map(|l| l.partition.id.clone()).collect();
    let (ranges, beyond) = target_ddl::wanted_ranges(table, &ids)?;
    let after = target_ddl::partitions_after(
        &existing,
        &target_ddl::new_partitions(&existing, ranges.clone(), beyond),
    );
    Ok(ranges
        .into_iter()
        .filter(|(_, start, end)| target_ddl::exact_partition(&after, start, end).is_some())
        .map(|(pid, _, _)| pid)
        .collect())
}

/// The MySQL rows in one partition of `table` (quoted); 0 when the table does not exist yet.
fn mysql_rows(
    conn: &mut Conn,
    table: &str,
    cond: &str,
    params: Vec<String>,
) -> Result<Option<u64>, GroupError> {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE {cond}");
    match conn.exec_first::<u64, _, _>(sql, params) {
        Ok(n) => Ok(Some(n.unwrap_or(0))),
        Err(mysql::Error::MySqlError(e)) if e.code == 1146 => Ok(Some(0)),
        Err(e) => Err(my_err(format!("table {table}: counting a partition's rows"))(e).into()),
    }
}
