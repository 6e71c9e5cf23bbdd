//! `run --dry-run`'s estimate of what the run would do (docs/sync.md#partition-sync-commands):
//! per planned partition, the bytes its export would process (a BigQuery dry run of the
//! export's query: nothing runs, nothing is billed) and the MySQL rows it would replace.

use mysql::prelude::Queryable;
use mysql::Conn;

use crate::load::my_err;
use crate::plan::Plan;
use crate::runner::{Context, GroupError, PlannedPartition};
use crate::source::{PartitionedSource, SourceError};

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
    let (conn, counts) = tokio::task::spawn_blocking(move || {
        let mut conn = conn;
        let counts: Result<Vec<Option<u64>>, GroupError> = filters
            .into_iter()
            .map(|f| match f {
                Some((table, cond, params)) => mysql_rows(&mut conn, &table, &cond, params),
                None => Ok(None),
            })
            .collect();
        (conn, counts)
    })
    .await
    .map_err(|e| GroupError::Other(format!("dry run: {e}")))?;
    for (planned, count) in plan.iter_mut().zip(counts?) {
        planned.mysql_rows = count;
    }
    Ok(conn)
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
