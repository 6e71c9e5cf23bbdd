//! The MySQL side of a run (`docs/sync.md#load`): one transaction per group that deletes the
//! changed and vanished partitions' rows (children first), writes the exported rows (parents
//! first) and the partitions' watermarks, and records the run. Nothing is visible before
//! commit; any error rolls everything back. The targets' DDL runs before it (`target_ddl`);
//! rows reach MySQL by LOAD DATA (`load_data`) or batched INSERTs (`insert`). Blocking code:
//! run it on a blocking thread.

use std::sync::{Arc, Mutex};

use mysql::prelude::Queryable;
use mysql::{Conn, TxOpts};
use object_store::path::Path;
use object_store::ObjectStore;

use sync_engine::session;
use sync_engine::session::MysqlError;
use sync_engine::throttle::Throttle;

use crate::exchange;
use crate::insert::insert_chunk;
use crate::load_data::{self, Feed};
use crate::plan::{Reason, SourcePartition};
use crate::readers::{Chunk, RowCursor};
use crate::source::PartitionedSource;
use crate::state;

// The targets' DDL moved to `target_ddl`; still reachable here (tests/sync/gcs.rs uses it).
pub use crate::target_ddl::{ensure_mysql_partitions, ensure_target};

/// One partition to load and the exported files that hold its rows.
#[derive(Debug, Clone)]
pub struct PartitionLoad {
    pub partition: SourcePartition,
    pub reason: Reason,
    pub files: Vec<Path>,
    /// The rows MySQL holds for it, as recorded at its last sync (`None`: no watermark).
    pub synced_rows: Option<u64>,
}

/// The work of one table in a group.
#[derive(Debug, Clone)]
pub struct TableWork {
    pub table: PartitionedSource,
    pub loads: Vec<PartitionLoad>,
    pub vanished: Vec<String>,
}

/// What a group's transaction did to one table.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TableLoadSummary {
    pub table: String,
    pub partitions_loaded: usize,
    /// Of `partitions_loaded`, those replaced by exchange (`docs/sync.md#exchange`).
    pub partitions_exchanged: usize,
    pub partitions_removed: usize,
    pub rows_loaded: u64,
    pub rows_deleted: u64,
}

/// Errors of the load. Each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("table {table}, partition {partition}, key {key}, column {column}: {message}")]
    BadRow {
        table: String,
        partition: String,
        key: String,
        column: String,
        message: String,
    },
    #[error("table {table}: MySQL schema differs from the warehouse: {}", problems.join("; "))]
    SchemaDrift {
        table: String,
        problems: Vec<String>,
    },
    #[error("table {table}: cannot create it: {message}")]
    Create { table: String, message: String },
    #[error("table {table}, partition {partition}: staging file {file}: {message}")]
    Staging {
        table: String,
        partition: String,
        file: String,
        message: String,
    },
    #[error("{context}: {source}")]
    Sink {
        context: String,
        #[source]
        source: MysqlError,
    },
}

impl LoadError {
    pub fn transient(&self) -> bool {
        matches!(self, LoadError::Sink { source, .. } if source.transient())
    }

    /// A bounded label for metrics (`docs/architecture.md#error-handling`).
    pub fn kind(&self) -> &'static str {
        match self {
            LoadError::BadRow { .. } => "bad_row",
            LoadError::SchemaDrift { .. } | LoadError::Create { .. } => "schema",
            LoadError::Staging { .. } => "staging",
            LoadError::Sink { .. } => "mysql",
        }
    }
}

pub(crate) fn sink_err(context: impl Into<String>) -> impl FnOnce(MysqlError) -> LoadError {
    let context = context.into();
    move |source| LoadError::Sink { context, source }
}

pub(crate) fn my_err(context: impl Into<String>) -> impl FnOnce(mysql::Error) -> LoadError {
    let context = context.into();
    move |e| LoadError::Sink {
        context,
        source: e.into(),
    }
}

pub(crate) fn staging_err(
    table: &str,
    partition: &str,
    file: &Path,
    message: impl Into<String>,
) -> LoadError {
    LoadError::Staging {
        table: table.into(),
        partition: partition.into(),
        file: file.to_string(),
        message: message.into(),
    }
}

/// Progress of a load, for the progress bar and logs.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The `done`-th of `total` partitions of a group is being exported.
    Exporting {
        table: String,
        partition: String,
        done: usize,
        total: usize,
    },
    PartitionStarted {
        table: String,
        partition: String,
        rows: i64,
    },
    Rows(u64),
    PartitionDone {
        table: String,
        partition: String,
        rows: u64,
    },
}

/// How a batch is written: the loader, how partitions of `mysql_partitioning` targets are
/// replaced and in what chunks, and the throttle that protects MySQL.
pub struct LoadOptions<'a> {
    pub loader: domain::config::Loader,
    pub replace: domain::config::Replace,
    pub chunk_rows: u64,
    pub ddl_lock_wait_secs: u64,
    pub throttle: &'a Throttle,
}

/// Loads one batch of a group. A group of one `mysql_partitioning` table replaces each
/// partition that is exactly one MySQL partition by exchange, one at a time, each with its
/// watermark (`docs/sync.md#exchange`); everything else (other partitions, vanished ones,
/// groups of linked tables) loads in one transaction ([`load_group`]) once the throttle lets
/// it. The caller holds the group's advisory lock.
#[allow(clippy::too_many_arguments)]
pub fn load_batch(
    conn: &mut Conn,
    store: &Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    run_id: &str,
    tables: &[TableWork],
    opts: &LoadOptions<'_>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<TableLoadSummary>, LoadError> {
    let mut exchanged = TableLoadSummary::default();
    let mut rest = tables.to_vec();
    if let [work] = tables {
        if opts.replace == domain::config::Replace::Exchange && work.table.spec.mysql_partitioning {
            let exact = exchange::exact_partitions(conn, work)?;
            let max_packet = session::max_allowed_packet(conn)
                .map_err(sink_err("reading max_allowed_packet"))?;
            let feed = load_data::enable(conn, opts.loader);
            let ex = exchange::Exchanger {
                writer: Writer {
                    store,
                    rt,
                    feed: feed.as_ref(),
                    max_packet,
                },
                chunk_rows: opts.chunk_rows,
                ddl_lock_wait_secs: opts.ddl_lock_wait_secs,
                throttle: opts.throttle,
                progress,
            };
            let mut remaining = Vec::new();
            for (load, part) in work.loads.iter().zip(exact) {
                match part {
                    Some(part) => {
                        let done = ex.replace(conn, run_id, work, load, &part)?;
                        exchanged.partitions_loaded += 1;
                        exchanged.rows_loaded += done.rows_loaded;
                        exchanged.rows_deleted += done.rows_deleted;
                    }
                    None => remaining.push(load.clone()),
                }
            }
            rest[0].loads = remaining;
        }
    }
    opts.throttle
        .wait(conn)
        .map_err(sink_err("waiting to start the batch's transaction"))?;
    let mut outcomes = load_group(conn, store, rt, run_id, &rest, opts.loader, progress)?;
    if exchanged.partitions_loaded > 0 {
        // The transaction recorded its own rows; the exchanges' add to them.
        record_run(conn, run_id, &tables[0], &exchanged)?;
        let o = &mut outcomes[0];
        o.partitions_loaded += exchanged.partitions_loaded;
        o.partitions_exchanged += exchanged.partitions_loaded;
        o.rows_loaded += exchanged.rows_loaded;
        o.rows_deleted += exchanged.rows_deleted;
    }
    Ok(outcomes)
}

/// Loads a group in one transaction. The caller holds the group's advisory lock.
pub fn load_group(
    conn: &mut Conn,
    store: &Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    run_id: &str,
    tables: &[TableWork],
    loader: domain::config::Loader,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<TableLoadSummary>, LoadError> {
    let max_packet =
        session::max_allowed_packet(conn).map_err(sink_err("reading max_allowed_packet"))?;
    let feed = load_data::enable(conn, loader);
    let writer = RowWriter {
        way: Writer {
            store,
            rt,
            feed: feed.as_ref(),
            max_packet,
        },
        progress,
    };
    let mut outcomes: Vec<TableLoadSummary> = tables
        .iter()
        .map(|t| TableLoadSummary {
            table: t.table.spec.target.to_string(),
            ..Default::default()
        })
        .collect();
    let mut tx = conn
        .start_transaction(TxOpts::default())
        .map_err(my_err("starting the transaction"))?;
    delete_partitions(&mut tx, tables, &mut outcomes)?;
    // Parents before children: insert in load order.
    for (work, outcome) in tables.iter().zip(outcomes.iter_mut()) {
        load_partitions(&mut tx, &writer, run_id, work, outcome)?;
        forget_vanished(&mut tx, work, outcome)?;
        record_run(&mut tx, run_id, work, outcome)?;
    }
    tx.commit().map_err(my_err("committing"))?;
    Ok(outcomes)
}

/// Step 1: deletes the rows of every changed and vanished partition. Children before parents:
/// tables in reverse load order.
fn delete_partitions(
    tx: &mut mysql::Transaction<'_>,
    tables: &[TableWork],
    outcomes: &mut [TableLoadSummary],
) -> Result<(), LoadError> {
    for (i, work) in tables.iter().enumerate().rev() {
        let target = &work.table.spec.target;
        let ids = work
            .loads
            .iter()
            .map(|l| l.partition.id.as_str())
            .chain(work.vanished.iter().map(String::as_str));
        for id in ids {
            let (cond, params) =
                work.table
                    .scheme
                    .mysql_filter(id)
                    .map_err(|message| LoadError::Create {
                        table: target.to_string(),
                        message,
                    })?;
            tx.exec_drop(
                format!("DELETE FROM {} WHERE {cond}", target.quoted()),
                params,
            )
            .map_err(my_err(format!("table {target}, partition {id}: DELETE")))?;
            outcomes[i].rows_deleted += tx.affected_rows();
        }
    }
    Ok(())
}

/// Step 2: writes each of the table's partitions, then records its watermark.
fn load_partitions(
    tx: &mut mysql::Transaction<'_>,
    writer: &RowWriter<'_>,
    run_id: &str,
    work: &TableWork,
    outcome: &mut TableLoadSummary,
) -> Result<(), LoadError> {
    let target = &work.table.spec.target;
    for load in &work.loads {
        let pid = &load.partition.id;
        (writer.progress)(Progress::PartitionStarted {
            table: target.to_string(),
            partition: pid.clone(),
            rows: load.partition.rows,
        });
        let loaded = writer.write(tx, work, load)?;
        (writer.progress)(Progress::PartitionDone {
            table: target.to_string(),
            partition: pid.clone(),
            rows: loaded,
        });
        state::upsert_partition(tx, target, &load.partition, loaded, run_id).map_err(my_err(
            format!(
                "table {target}, partition {}: recording state",
                load.partition.id
            ),
        ))?;
        outcome.partitions_loaded += 1;
        outcome.rows_loaded += loaded;
    }
    Ok(())
}

/// Step 3: removes the state rows of the table's vanished partitions (their rows went in
/// step 1).
fn forget_vanished(
    tx: &mut mysql::Transaction<'_>,
    work: &TableWork,
    outcome: &mut TableLoadSummary,
) -> Result<(), LoadError> {
    let target = &work.table.spec.target;
    for id in &work.vanished {
        state::delete_partition(tx, target, id).map_err(my_err(format!(
            "table {target}: removing state of vanished partition {id}"
        )))?;
        outcome.partitions_removed += 1;
    }
    Ok(())
}

/// Step 4: records what the run did to the table in `sync_runs`.
fn record_run(
    tx: &mut impl Queryable,
    run_id: &str,
    work: &TableWork,
    outcome: &TableLoadSummary,
) -> Result<(), LoadError> {
    let target = &work.table.spec.target;
    let record = session::RunRecord {
        run_id,
        target_table: target,
        engine: "partition",
        started_at: None,
        status: "ok",
        rows_loaded: outcome.rows_loaded,
        rows_deleted: outcome.rows_deleted,
        error: None,
        // One record per batch (and per exchange) of the run: the rows add up.
        accumulate: true,
    };
    session::record_run(tx, &record).map_err(|source| LoadError::Sink {
        context: format!("table {target}: recording the run"),
        source,
    })
}

/// How the rows of a partition reach MySQL, and what every partition of the group shares.
struct RowWriter<'a> {
    way: Writer<'a>,
    progress: &'a (dyn Fn(Progress) + Sync),
}

impl RowWriter<'_> {
    /// Writes one partition's rows into the target. Returns the rows loaded.
    fn write(
        &self,
        tx: &mut mysql::Transaction<'_>,
        work: &TableWork,
        load: &PartitionLoad,
    ) -> Result<u64, LoadError> {
        let rows = Arc::new(Mutex::new(RowCursor::new(self.way.store, &load.files)));
        let chunk = Chunk {
            into: work.table.spec.target.as_str(),
            rows: &rows,
            limit: None,
            offset: 0,
        };
        self.way.chunk(tx, (work, load), &chunk, self.progress)
    }
}

/// How rows reach MySQL: the store and runtime the staged files are read with, the LOAD DATA
/// feed (set when LOAD DATA may be used), the server's packet limit for INSERTs.
pub(crate) struct Writer<'a> {
    pub(crate) store: &'a Arc<dyn ObjectStore>,
    pub(crate) rt: &'a tokio::runtime::Handle,
    pub(crate) feed: Option<&'a Feed>,
    pub(crate) max_packet: usize,
}

impl Writer<'_> {
    /// Writes one chunk of a partition's rows into `chunk.into`: by LOAD DATA when it may be
    /// used and the table has no BYTES column (which a text file can't carry cleanly), else
    /// by batched INSERTs. Returns the rows written (0: none were left).
    pub(crate) fn chunk(
        &self,
        tx: &mut mysql::Transaction<'_>,
        (work, load): (&TableWork, &PartitionLoad),
        chunk: &Chunk<'_>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<u64, LoadError> {
        let bytes_column = work
            .table
            .columns
            .iter()
            .any(|c| c.bq == domain::schema::BqType::Bytes);
        match self.feed {
            Some(feed) if !bytes_column => {
                load_data::load_chunk(tx, feed, self.rt, work, load, chunk, progress)
            }
            _ => insert_chunk(
                tx,
                self.store,
                self.rt,
                (work, load),
                self.max_packet,
                chunk,
                progress,
            ),
        }
    }
}
