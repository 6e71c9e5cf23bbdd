//! Replacing a partition without a giant transaction (`docs/sync.md#exchange`): for a target
//! partitioned in MySQL, a changed partition whose range is exactly one MySQL partition is
//! loaded into a shadow table (same definition, not partitioned) in chunks, one transaction
//! each, pausing between chunks while MySQL is busy or a replica lags
//! (`sync_engine::throttle`); then `ALTER TABLE … EXCHANGE PARTITION … WITH TABLE` swaps it
//! in, atomic for readers, and the watermark is recorded right after. The old rows leave with
//! the shadow table (`DROP TABLE`: no DELETE, no undo). A crash anywhere leaves the target
//! either as it was or with the new partition and its old watermark: the next run redoes only
//! that partition. Blocking code: run it on a blocking thread.

use std::sync::{Arc, Mutex};

use mysql::prelude::Queryable;
use mysql::{Conn, TxOpts};

use domain::ident::{quote as quote_ident, Ident};
use sync_engine::throttle::Throttle;

use crate::load::{my_err, sink_err, LoadError, PartitionLoad, Progress, TableWork, Writer};
use crate::readers::{Chunk, RowCursor};
use crate::source::PartitionedSource;
use crate::state;

/// What every exchange of a batch shares.
pub(crate) struct Exchanger<'a> {
    pub(crate) writer: Writer<'a>,
    pub(crate) chunk_rows: u64,
    pub(crate) ddl_lock_wait_secs: u64,
    pub(crate) throttle: &'a Throttle,
    pub(crate) progress: &'a (dyn Fn(Progress) + Sync),
}

/// What one exchange did.
pub(crate) struct Exchanged {
    pub(crate) rows_loaded: u64,
    pub(crate) rows_deleted: u64,
}

/// The shadow table of `target`: `sync_shadow_<target>` (names starting `sync_` are never
/// targets), shortened with a hash of the name when that would pass MySQL's 64 characters.
pub fn shadow_name(target: &str) -> String {
    let name = format!("sync_shadow_{target}");
    if name.chars().count() <= 64 {
        return name;
    }
    let head: String = target.chars().take(40).collect();
    format!(
        "sync_shadow_{head}_{:08x}",
        domain::canon::fnv1a(target.as_bytes()) as u32
    )
}

/// A target's MySQL partitions in order: name and upper bound (`PARTITION_DESCRIPTION` without
/// quotes; `MAXVALUE` as is).
pub(crate) fn mysql_partitions(
    conn: &mut Conn,
    target: &Ident,
) -> Result<Vec<(String, String)>, LoadError> {
    let rows: Vec<(String, Option<String>)> = conn
        .exec(
            "SELECT PARTITION_NAME, PARTITION_DESCRIPTION FROM information_schema.PARTITIONS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND PARTITION_NAME IS NOT NULL \
             ORDER BY PARTITION_ORDINAL_POSITION",
            (target.as_str(),),
        )
        .map_err(my_err(format!(
            "table {target}: reading its MySQL partitions"
        )))?;
    Ok(rows
        .into_iter()
        .map(|(n, d)| (n, d.unwrap_or_default().trim_matches('\'').to_string()))
        .collect())
}

/// The bound as MySQL prints it for the partition column's type.
pub(crate) fn bound_text(table: &PartitionedSource, t: chrono::NaiveDateTime) -> String {
    if table.scheme.column_type == domain::schema::BqType::Date {
        t.format("%Y-%m-%d").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

/// For each load of the table: the MySQL partition holding exactly its range (the previous
/// partition ends where it starts, it ends where it ends), or `None` (not partitioned in
/// MySQL, `__NULL__`, `__UNPARTITIONED__`, a range spread over partitions): those loads take
/// the transaction path.
pub(crate) fn exact_partitions(
    conn: &mut Conn,
    work: &TableWork,
) -> Result<Vec<Option<String>>, LoadError> {
    let parts = mysql_partitions(conn, &work.table.spec.target)?;
    Ok(work
        .loads
        .iter()
        .map(|l| {
            let (start, end) = work.table.scheme.range(&l.partition.id).ok()?;
            let (start, end) = (bound_text(&work.table, start), bound_text(&work.table, end));
            crate::target_ddl::exact_partition(&parts, &start, &end)
        })
        .collect())
}

impl Exchanger<'_> {
    /// Replaces one partition by exchange, records its watermark. On error the target is as
    /// it was (the shadow table is dropped when possible, else by the next run).
    pub(crate) fn replace(
        &self,
        conn: &mut Conn,
        run_id: &str,
        work: &TableWork,
        load: &PartitionLoad,
        mysql_partition: &str,
    ) -> Result<Exchanged, LoadError> {
        let target = &work.table.spec.target;
        let shadow = shadow_name(target);
        let pid = &load.partition.id;
        (self.progress)(Progress::PartitionStarted {
            table: target.to_string(),
            partition: pid.clone(),
            rows: load.partition.rows,
        });
        let swapped = self.load_and_swap(conn, work, load, mysql_partition, &shadow);
        let swapped = match swapped {
            Ok(n) => n,
            Err(e) => {
                let _ = conn.query_drop(format!("DROP TABLE IF EXISTS {}", quote_ident(&shadow)));
                return Err(e);
            }
        };
        state::upsert_partition(conn, target, &load.partition, swapped, run_id).map_err(my_err(
            format!("table {target}, partition {pid}: recording state"),
        ))?;
        // The shadow now holds the partition's old rows: as many as its watermark recorded
        // (the sync owns the table), counted only without one (a COUNT of a cold partition
        // reads all of it from disk).
        let deleted: u64 = match load.synced_rows {
            Some(rows) => rows,
            None => conn
                .query_first(format!("SELECT COUNT(*) FROM {}", quote_ident(&shadow)))
                .map_err(my_err(format!(
                    "table {target}: counting the replaced rows"
                )))?
                .unwrap_or(0),
        };
        conn.query_drop(format!("DROP TABLE {}", quote_ident(&shadow)))
            .map_err(my_err(format!("table {target}: dropping {shadow}")))?;
        (self.progress)(Progress::PartitionDone {
            table: target.to_string(),
            partition: pid.clone(),
            rows: swapped,
        });
        Ok(Exchanged {
            rows_loaded: swapped,
            rows_deleted: deleted,
        })
    }

    /// A fresh shadow table, the partition's rows in chunks, then the swap. Returns the rows
    /// loaded.
    fn load_and_swap(
        &self,
        conn: &mut Conn,
        work: &TableWork,
        load: &PartitionLoad,
        mysql_partition: &str,
        shadow: &str,
    ) -> Result<u64, LoadError> {
        let target = &work.table.spec.target;
        let pid = &load.partition.id;
        let q = quote_ident(shadow);
        // A shadow left by a killed run is dropped first.
        for sql in [
            format!("DROP TABLE IF EXISTS {q}"),
            format!("CREATE TABLE {q} LIKE {}", target.quoted()),
            format!("ALTER TABLE {q} REMOVE PARTITIONING"),
        ] {
            conn.query_drop(&sql)
                .map_err(my_err(format!("table {target}: preparing {shadow}")))?;
        }
        let loaded = self.load_chunks(conn, work, load, shadow)?;
        // The swap waits for the target's metadata lock at most `ddl_lock_wait_secs`
        // (transient on timeout), like every DDL of the sync.
        conn.query_drop(format!(
            "SET SESSION lock_wait_timeout = {}",
            self.ddl_lock_wait_secs.max(1)
        ))
        .map_err(my_err("setting lock_wait_timeout for EXCHANGE PARTITION"))?;
        let swapped = conn.query_drop(format!(
            "ALTER TABLE {} EXCHANGE PARTITION {} WITH TABLE {q}",
            target.quoted(),
            quote_ident(mysql_partition)
        ));
        let _ = conn.query_drop("SET SESSION lock_wait_timeout = DEFAULT");
        swapped.map_err(my_err(format!(
            "table {target}, partition {pid}: EXCHANGE PARTITION {mysql_partition}"
        )))?;
        Ok(loaded)
    }

    /// Loads the partition's rows into the shadow, `chunk_rows` per transaction, waiting on
    /// the throttle before each. Returns the rows loaded.
    fn load_chunks(
        &self,
        conn: &mut Conn,
        work: &TableWork,
        load: &PartitionLoad,
        shadow: &str,
    ) -> Result<u64, LoadError> {
        let target = &work.table.spec.target;
        let rows = Arc::new(Mutex::new(RowCursor::new(self.writer.store, &load.files)));
        let mut loaded = 0u64;
        loop {
            self.throttle
                .wait(conn)
                .map_err(sink_err(format!("table {target}: waiting to load")))?;
            let chunk = Chunk {
                into: shadow,
                rows: &rows,
                limit: Some(self.chunk_rows),
                offset: loaded,
            };
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .map_err(my_err("starting a chunk's transaction"))?;
            let n = self
                .writer
                .chunk(&mut tx, (work, load), &chunk, self.progress)?;
            tx.commit()
                .map_err(my_err(format!("table {target}: committing a chunk")))?;
            loaded += n;
            if n < self.chunk_rows {
                return Ok(loaded);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_names_fit_mysql() {
        assert_eq!(shadow_name("daily_stats"), "sync_shadow_daily_stats");
        let long = "t".repeat(64);
        let s = shadow_name(&long);
        assert!(s.len() <= 64, "{s}");
        assert_ne!(
            shadow_name(&long),
            shadow_name(&format!("{}u", "t".repeat(63)))
        );
    }
}
