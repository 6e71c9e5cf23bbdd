"""What the syncs read about change, as BigQuery reports it (docs/emulator.md#history):

- `lastModifiedTime` / `numRows` of `tables.get` and `INFORMATION_SCHEMA.PARTITIONS`
  (`last_modified_time`, `total_rows`) advance with every write that changes rows, per table
  and per partition: only the partitions whose rows changed.
- Partition ids as BigQuery assigns them: `__NULL__`, `__UNPARTITIONED__` (values outside
  1960-01-01..2159-12-31, and the streaming buffer of ingestion-time tables: rows streamed
  with tabledata.insertAll wait there, `_PARTITIONTIME` NULL, until `POST /_emulator/flush`).
- `FOR SYSTEM_TIME AS OF` time travel within the 7-day window.
- Change history: `APPENDS`, and `CHANGES` on tables with `enable_change_history = TRUE`.

One mechanism serves all: a per-table row-version log (history_store.py) recorded after each
write, which replaces bqemulator's full-table copy per write (its AUTO snapshots). The SQL
forms are rewritten in history_sql.py; the REST surface is patched in history_routes.py.

Hook points (each wraps what is current at install time):
- versioning/snapshots.py SnapshotManager: __init__ (makes the store), capture (kind AUTO:
  record the write instead of copying the table), drop_snapshots_for_table (forget history).
- catalog repositories create_table / update_table: a new table (or CREATE OR REPLACE)
  starts its history.
- jobs/executor.py _capture_dml_snapshots (tells the record the statement kind; scripts),
  sync_created_table (CREATE TABLE ... OPTIONS (enable_change_history = TRUE)).
- sql/inner_query.py rewrite_for_system_time: history_sql.rewrite first.
- storage/partition_state.py list_partitions_for_table: INFORMATION_SCHEMA.PARTITIONS.
- routes: tabledata insertAll, tables get / delete, jobs `_apply_write_append` (query jobs
  write their destinationTable), and /_emulator/flush, /_emulator/age.
"""

import contextvars
import functools

from bqemulator.catalog import duckdb_repository, memory_repository
from bqemulator.catalog.models import PartitionMeta
from bqemulator.jobs import executor
from bqemulator.observability.logging_ import get_logger
from bqemulator.sql import inner_query
from bqemulator.storage import partition_state
from bqemulator.versioning import snapshots

from . import history_routes, history_sql
from .history_store import HistoryStore

_log = get_logger(__name__)
#: engine id -> HistoryStore (one emulator per process in practice; tests may run several).
STORES = {}
#: The statement kind (INSERT, UPDATE, DELETE, MERGE, TRUNCATE) of the write being recorded.
WRITE_KIND = contextvars.ContextVar("bqemu_write_kind", default="INSERT")
#: True while tabledata.insertAll runs (ingestion-time tables buffer its rows).
STREAMED = contextvars.ContextVar("bqemu_streamed", default=False)


def store_for(engine):
    return STORES.get(id(engine)) if engine is not None else None


def _writable_table(meta):
    return meta is not None and meta.table_type == "TABLE"


# -- SnapshotManager -------------------------------------------------------------------------------


def _wrap_snapshot_manager():
    cls = snapshots.SnapshotManager
    init, capture, drop = cls.__init__, cls.capture, cls.drop_snapshots_for_table

    @functools.wraps(init)
    def __init__(self, engine, catalog, clock, events, **kwargs):
        init(self, engine, catalog, clock, events, **kwargs)
        self._bqemu_history = STORES[id(engine)] = HistoryStore(engine, catalog, clock)

    @functools.wraps(capture)
    def capture_(self, project_id, dataset_id, table_id, *, kind="AUTO"):
        """AUTO snapshots (a full copy after every write, for time travel) become a record in
        the row-version log; USER snapshots (CREATE SNAPSHOT TABLE) are copies as before."""
        store = getattr(self, "_bqemu_history", None)
        if kind != "AUTO" or store is None:
            return capture(self, project_id, dataset_id, table_id, kind=kind)
        meta = self._catalog.get_table(project_id, dataset_id, table_id)
        if _writable_table(meta):
            try:
                store.record(meta, WRITE_KIND.get(), streamed=STREAMED.get())
            except Exception as exc:  # noqa: BLE001 - never fail the write itself
                _log.warning("history.record_failed", table=table_id, error=str(exc))
                store.forget(meta)
        return None

    @functools.wraps(drop)
    def drop_(self, project_id, dataset_id, table_id, *, include_user=True):
        removed = drop(self, project_id, dataset_id, table_id, include_user=include_user)
        store = getattr(self, "_bqemu_history", None)
        if store is not None:
            store.drop(project_id, dataset_id, table_id)
        return removed

    cls.__init__, cls.capture, cls.drop_snapshots_for_table = __init__, capture_, drop_


# -- catalog: a table's history starts with it -----------------------------------------------------


def _relation_exists(store, meta):
    return bool(store.live_columns(meta))


def _wrap_catalog(cls):
    create, update = cls.create_table, cls.update_table

    @functools.wraps(create)
    def create_table(self, table):
        result = create(self, table)
        store = store_for(getattr(self, "_engine", None))
        if store is not None and _writable_table(table) and store.get(table) is None:
            if _relation_exists(store, table):
                store.start(table)
        return result

    @functools.wraps(update)
    def update_table(self, table):
        before = self.get_table(table.project_id, table.dataset_id, table.table_id)
        result = update(self, table)
        store = store_for(getattr(self, "_engine", None))
        recreated = before is None or before.creation_time != table.creation_time
        if store is not None and recreated and _writable_table(table) and store.get(table) is None:
            if _relation_exists(store, table):
                store.start(table)
        return result

    cls.create_table, cls.update_table = create_table, update_table


# -- executor --------------------------------------------------------------------------------------


def _statement_kind(tree):
    from sqlglot import exp

    for cls, kind in ((exp.Update, "UPDATE"), (exp.Delete, "DELETE"), (exp.Merge, "MERGE"),
                      (exp.Insert, "INSERT")):
        if isinstance(tree, cls):
            return kind
    truncate = getattr(exp, "TruncateTable", None)
    if truncate is not None and isinstance(tree, truncate):
        return "TRUNCATE"
    return "INSERT"


def _wrap_capture_dml():
    original = executor._capture_dml_snapshots

    @functools.wraps(original)
    async def _capture_dml_snapshots(project_id, bq_sql, ctx):
        """Records each table a DML statement changed, with the statement kind; a script's
        statements too (bqemulator only parses single statements here)."""
        import sqlglot

        try:
            trees = [t for t in sqlglot.parse(bq_sql, read="bigquery") if t is not None]
        except Exception:  # noqa: BLE001
            trees = []
        if len(trees) <= 1:
            token = WRITE_KIND.set(_statement_kind(trees[0]) if trees else "INSERT")
            try:
                return await original(project_id, bq_sql, ctx)
            finally:
                WRITE_KIND.reset(token)
        for tree in trees:
            if not executor._is_dml(tree):
                continue
            token = WRITE_KIND.set(_statement_kind(tree))
            try:
                async with ctx.engine.write_lock():
                    for proj, dataset, table in executor._dml_target_tables(tree, project_id):
                        if ctx.catalog.get_table(proj, dataset, table) is not None:
                            ctx.snapshots.record_change(proj, dataset, table)
            finally:
                WRITE_KIND.reset(token)
        return None

    executor._capture_dml_snapshots = _capture_dml_snapshots


def _wrap_sync_created_table():
    original = executor.sync_created_table

    @functools.wraps(original)
    def sync_created_table(bq_sql, project_id, ctx):
        """Then applies `OPTIONS (enable_change_history = TRUE)` of CREATE TABLE."""
        original(bq_sql, project_id, ctx)
        store = store_for(ctx.engine)
        if store is not None and "ENABLE_CHANGE_HISTORY" in bq_sql.upper():
            history_sql.apply_change_history_option(bq_sql, project_id, store)

    executor.sync_created_table = sync_created_table


def _wrap_rewrite():
    original = inner_query.rewrite_for_system_time

    @functools.wraps(original)
    def rewrite_for_system_time(bq_sql, project_id, snapshot_manager, engine):
        store = getattr(snapshot_manager, "_bqemu_history", None)
        if store is not None:
            bq_sql = history_sql.rewrite(bq_sql, project_id, store)
        return original(bq_sql, project_id, snapshot_manager, engine)

    inner_query.rewrite_for_system_time = rewrite_for_system_time


def _wrap_partitions():
    original = partition_state.list_partitions_for_table

    @functools.wraps(original)
    def list_partitions_for_table(engine, table):
        """INFORMATION_SCHEMA.PARTITIONS rows: ids as BigQuery assigns them, each partition's own
        last_modified_time (the table's when a partition predates its history)."""
        store = store_for(engine)
        rows = store.partitions(table) if store is not None and _writable_table(table) else None
        if rows is None:
            return original(engine, table)
        return tuple(
            PartitionMeta(
                table_catalog=table.project_id,
                table_schema=table.dataset_id,
                table_name=table.table_id,
                partition_id=pid,
                total_rows=int(n),
                last_modified_time=modified or table.last_modified_time,
            )
            for pid, n, modified in rows
        )

    partition_state.list_partitions_for_table = list_partitions_for_table


def install():
    _wrap_snapshot_manager()
    _wrap_catalog(duckdb_repository.DuckDBCatalogRepository)
    _wrap_catalog(memory_repository.MemoryCatalogRepository)
    _wrap_capture_dml()
    _wrap_sync_created_table()
    _wrap_rewrite()
    _wrap_partitions()
    history_routes.install(store_for, WRITE_KIND, STREAMED)
