"""The row-version log behind deploy/dev/emulator/history.py (see docs/emulator.md#history).

Per table (key = hash of project, dataset, table), in DuckDB's reserved schema
`_bqemulator_snapshots` (which bqemulator's table rewriter leaves alone, so rewritten SQL can
name these relations directly):

- `bqemu_h_<key>_shadow`: the table's rows as of its last recorded write. For an
  ingestion-time-partitioned table it also carries each row's `_PARTITIONTIME`
  (`__bqemu_partitiontime`, NULL while the row sits in the streaming buffer) and the time it
  was ingested (`__bqemu_ingested_at`).
- `bqemu_h_<key>_log`: every row image inserted (`__bqemu_op` = 1) or deleted (-1), with its
  commit time (`__bqemu_ts`), the kind of change (INSERT, UPDATE, DELETE) and the partition
  id the row had (`__bqemu_pid`).
- `bqemu_h_parts`: last modification time per (table, partition id).
- `bqemu_h_meta`: per table the generation (its creation time: a re-created table starts a
  new history), where its history starts, and its `enable_change_history` option.

A write is recorded after it ran by diffing the table with its shadow (one GROUP BY over
both: rows whose count changed), so every write path (DML, insertAll, load, copy,
TRUNCATE, partition deletion) is covered the same way, and only the partitions whose rows
changed advance. Commit times are distinct and increasing in milliseconds (BigQuery reports
`lastModifiedTime` and `INFORMATION_SCHEMA.PARTITIONS.last_modified_time` in ms), so two
writes never share a modification time. Everything lives in the emulator's DuckDB file, so
it survives a restart with `--persistent`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
import hashlib

SCHEMA = "_bqemulator_snapshots"
META = f'"{SCHEMA}"."bqemu_h_meta"'
PARTS = f'"{SCHEMA}"."bqemu_h_parts"'
PT = "__bqemu_partitiontime"
PD = "__bqemu_partitiondate"
INGESTED = "__bqemu_ingested_at"
#: BigQuery's time-travel window (default 7 days); history older than this (+1 day) is purged.
WINDOW = timedelta(days=7)
_FORMATS = {"HOUR": "%Y%m%d%H", "DAY": "%Y%m%d", "MONTH": "%Y%m", "YEAR": "%Y"}
_MS = timedelta(milliseconds=1)


def q(name):
    """A quoted DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def table_key(project, dataset, table):
    return hashlib.sha1(f"{project}\x00{dataset}\x00{table}".encode()).hexdigest()[:16]


def rel(key, what):
    """The quoted relation `what` (shadow, log) of table `key`."""
    return f'"{SCHEMA}"."bqemu_h_{key}_{what}"'


def live_ref(meta):
    return f"{q(meta.project_id + '__' + meta.dataset_id)}.{q(meta.table_id)}"


def is_ingestion(meta):
    tp = meta.time_partitioning
    return tp is not None and not tp.field


def partition_id_sql(meta, columns):
    """SQL for a row's partition id, as BigQuery assigns it (partitioned-tables docs):
    `__NULL__` for a NULL partitioning value (and the single partition of an unpartitioned
    table), `__UNPARTITIONED__` for values outside 1960-01-01..2159-12-31 (outside
    [start, end) for integer ranges) and for ingestion-time rows still in the streaming
    buffer, else YYYY[MM[DD[HH]]] / the range bucket's start."""
    tp, rp = meta.time_partitioning, meta.range_partitioning
    if tp is not None:
        fmt = _FORMATS.get(tp.type, "%Y%m%d")
        if not tp.field:
            return f"CASE WHEN {PT} IS NULL THEN '__UNPARTITIONED__' ELSE strftime({PT}, '{fmt}') END"
        if tp.field not in columns:
            return "'__NULL__'"
        c = q(tp.field)
        return (
            f"CASE WHEN {c} IS NULL THEN '__NULL__' "
            f"WHEN CAST({c} AS DATE) < DATE '1960-01-01' OR CAST({c} AS DATE) > DATE '2159-12-31' "
            f"THEN '__UNPARTITIONED__' ELSE strftime({c}, '{fmt}') END"
        )
    if rp is not None and rp.field in columns:
        c, start, end, step = q(rp.field), int(rp.start), int(rp.end), int(rp.interval)
        return (
            f"CASE WHEN {c} IS NULL THEN '__NULL__' WHEN {c} < {start} OR {c} >= {end} "
            f"THEN '__UNPARTITIONED__' "
            f"ELSE CAST({start} + FLOOR(({c} - {start}) / {step}) * {step} AS BIGINT)::VARCHAR END"
        )
    return "'__NULL__'"


def partition_time_sql(meta, ts_sql):
    """`_PARTITIONTIME` of a row ingested at `ts_sql`: the start of its HOUR/DAY/MONTH/YEAR."""
    unit = (meta.time_partitioning.type or "DAY").lower()
    return f"date_trunc('{unit}', {ts_sql})"


class TableHistory:
    """What the store knows of one table (one row of bqemu_h_meta)."""

    def __init__(self, key, project, dataset, table, generation, start, change_history):
        self.key, self.project, self.dataset, self.table = key, project, dataset, table
        self.generation, self.start = generation, start
        #: since when enable_change_history is TRUE (None: it is not)
        self.change_history = change_history
        self.last_change = None  # newest commit in the log (None: unknown, look it up)
        self.purged = None


class HistoryStore:
    """One per DuckDB engine; every method runs on the event loop under the engine's write
    lock where it writes (bqemulator serialises writes the same way)."""

    def __init__(self, engine, catalog, clock):
        self.engine, self.catalog, self.clock = engine, catalog, clock
        self._tables = None
        self._last_ts = None
        self._known_columns = {}
        self.views = set()

    # -- bookkeeping -------------------------------------------------------------------------

    def sql(self, text, params=None):
        return self.engine.execute(text, params)

    def tables(self):
        """key -> TableHistory, loaded from DuckDB on first use (survives restarts)."""
        if self._tables is None:
            self.sql(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
            self.sql(
                f"CREATE TABLE IF NOT EXISTS {META} (key VARCHAR PRIMARY KEY, project VARCHAR, "
                "dataset VARCHAR, tbl VARCHAR, generation TIMESTAMPTZ, start TIMESTAMPTZ, "
                "change_history TIMESTAMPTZ)"
            )
            self.sql(
                f"CREATE TABLE IF NOT EXISTS {PARTS} (key VARCHAR, partition_id VARCHAR, "
                "last_modified TIMESTAMPTZ)"
            )
            rows = self.sql(f"SELECT * FROM {META}").fetchall()
            self._tables = {r[0]: TableHistory(*r) for r in rows}
            last = self.sql(f"SELECT max(last_modified) FROM {PARTS}").fetchone()[0]
            self._last_ts = last
            self.drop_views()
        return self._tables

    def drop_views(self):
        """Drops the views made for time travel and change history (cheap to remake)."""
        for (name,) in self.sql(
            "SELECT view_name FROM duckdb_views() WHERE schema_name = ? AND view_name LIKE 'bqemu_v_%'",
            [SCHEMA],
        ).fetchall():
            self.sql(f"DROP VIEW IF EXISTS {q(SCHEMA)}.{q(name)}")
        self.views = set()

    def view(self, name, select_sql):
        """The name of a view `_bqemulator_snapshots.bqemu_v_<name>` over `select_sql`,
        made once (names encode everything the view depends on)."""
        full = f"bqemu_v_{name}"
        if full not in self.views:
            if len(self.views) > 500:
                self.drop_views()
            self.sql(f"CREATE OR REPLACE VIEW {q(SCHEMA)}.{q(full)} AS {select_sql}")
            self.views.add(full)
        return full

    def set_change_history(self, meta, enabled):
        """The table option enable_change_history (CHANGES reads history from then on)."""
        hist = self.get(meta) or self.start(meta, known_start=False)
        if enabled and hist.change_history is None:
            hist.change_history = self.next_ts()
        elif not enabled:
            hist.change_history = None
        self._save_meta(hist)

    def next_ts(self):
        """A commit time: now, truncated to ms, strictly after the previous one."""
        self.tables()
        now = self.clock.now().astimezone(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if self._last_ts is not None and now <= self._last_ts:
            now = self._last_ts + _MS
        self._last_ts = now
        return now

    def get(self, meta):
        """The history of this generation of the table, or None."""
        hist = self.tables().get(table_key(meta.project_id, meta.dataset_id, meta.table_id))
        if hist is None or hist.generation != meta.creation_time:
            return None
        return hist

    def columns(self, relation_schema, relation_name):
        return self.sql(
            "SELECT column_name, data_type FROM duckdb_columns() "
            "WHERE schema_name = ? AND table_name = ? ORDER BY column_index",
            [relation_schema, relation_name],
        ).fetchall()

    def live_columns(self, meta):
        """[(name, DuckDB type)] of the table; [] when it has no DuckDB relation. Read from a
        LIMIT 0 cursor: much cheaper than duckdb_columns(), which scans the whole catalog."""
        try:
            cursor = self.sql(f"SELECT * FROM {live_ref(meta)} LIMIT 0")
        except Exception:  # noqa: BLE001 - no such relation
            return []
        return [(d[0], str(d[1])) for d in cursor.description]

    def _save_meta(self, hist):
        self.sql(
            f"INSERT OR REPLACE INTO {META} VALUES (?, ?, ?, ?, ?, ?, ?)",
            [hist.key, hist.project, hist.dataset, hist.table, hist.generation, hist.start,
             hist.change_history],
        )

    def drop(self, project, dataset, table):
        """Forget a table's history (it was dropped)."""
        key = table_key(project, dataset, table)
        self._known_columns.pop(key, None)
        for what in ("shadow", "log"):
            self.sql(f"DROP TABLE IF EXISTS {rel(key, what)}")
        self.sql(f"DELETE FROM {PARTS} WHERE key = ?", [key])
        self.sql(f"DELETE FROM {META} WHERE key = ?", [key])
        self.tables().pop(key, None)

    def forget(self, meta):
        """After a failed record: the next one starts over, marking everything modified."""
        try:
            self.drop(meta.project_id, meta.dataset_id, meta.table_id)
        except Exception:  # noqa: BLE001
            self.tables().pop(table_key(meta.project_id, meta.dataset_id, meta.table_id), None)

    # -- a table's start ---------------------------------------------------------------------

    def start(self, meta, *, known_start=True):
        """Begins the history of a new table generation: its current rows become the shadow
        and are logged as inserted at creation (CREATE TABLE ... AS SELECT appends them).
        With known_start=False (a table that predates this patch, or whose history was lost)
        the rows are not attributed and every partition is marked modified now: never older
        than a write that happened."""
        key = table_key(meta.project_id, meta.dataset_id, meta.table_id)
        self.drop(meta.project_id, meta.dataset_id, meta.table_id)
        ts = self.next_ts()
        cols = [c for c, _ in self.live_columns(meta)]
        clist = ", ".join(q(c) for c in cols)
        live = live_ref(meta)
        if is_ingestion(meta):
            pt = partition_time_sql(meta, "?::TIMESTAMPTZ")
            self.sql(
                f"CREATE TABLE {rel(key, 'shadow')} AS SELECT {clist}, {pt} AS {PT}, "
                f"?::TIMESTAMPTZ AS {INGESTED} FROM {live}",
                [ts, ts],
            )
            source = rel(key, "shadow")
        else:
            self.sql(f"CREATE TABLE {rel(key, 'shadow')} AS SELECT {clist} FROM {live}")
            source = rel(key, "shadow")
        pid = partition_id_sql(meta, cols)
        self.sql(
            f"CREATE TABLE {rel(key, 'log')} AS SELECT {clist}, ?::TIMESTAMPTZ AS __bqemu_ts, "
            f"CAST(1 AS TINYINT) AS __bqemu_op, 'INSERT' AS __bqemu_kind, {pid} AS __bqemu_pid "
            f"FROM {source}" + ("" if known_start else " LIMIT 0"),
            [ts],
        )
        self._touch(key, f"SELECT DISTINCT {pid} FROM {source}", ts)
        hist = TableHistory(
            key, meta.project_id, meta.dataset_id, meta.table_id, meta.creation_time,
            meta.creation_time if known_start else ts, None,
        )
        hist.last_change = ts
        self._save_meta(hist)
        self.tables()[key] = hist
        if not known_start:
            count = self.sql(f"SELECT count(*) FROM {live}").fetchone()[0]
            self._set_table_modified(meta, ts, count)
        return hist

    def _touch(self, key, pid_query, ts):
        """Partition `pid_query`'s ids were modified at ts (append-only: the newest row wins)."""
        self.sql(f"INSERT INTO {PARTS} SELECT ?, pid, ? FROM ({pid_query}) AS p(pid)", [key, ts])

    def _set_table_modified(self, meta, ts, num_rows=None):
        update = {"last_modified_time": ts}
        if num_rows is not None:
            update["num_rows"] = num_rows
        current = self.catalog.get_table(meta.project_id, meta.dataset_id, meta.table_id) or meta
        self.catalog.update_table(current.model_copy(update=update))

    # -- recording a write -------------------------------------------------------------------

    def record(self, meta, kind="INSERT", *, streamed=False):
        """Records what the last write changed in the table: logs the inserted and deleted row
        images at one commit time and advances the modification time of the table and of the
        partitions those rows belong to. `kind` is the statement (INSERT, UPDATE, DELETE,
        MERGE, TRUNCATE); `streamed` marks tabledata.insertAll (ingestion-time tables keep
        those rows in the streaming buffer)."""
        hist = self.get(meta)
        if hist is None:
            self.start(meta, known_start=False)
            return
        self._record(meta, hist, kind, streamed)

    def _record(self, meta, hist, kind, streamed):
        key = hist.key
        cols = self._sync_columns(meta, key)
        clist = ", ".join(q(c) for c in cols)
        live, shadow = live_ref(meta), rel(key, "shadow")
        self.sql(
            "CREATE OR REPLACE TEMP TABLE bqemu_h_diff AS "
            f"SELECT {clist}, CAST(SUM(__bqemu_s) AS BIGINT) AS __bqemu_n FROM ("
            f"SELECT {clist}, 1 AS __bqemu_s FROM {live} UNION ALL "
            f"SELECT {clist}, -1 AS __bqemu_s FROM {shadow}) GROUP BY ALL HAVING SUM(__bqemu_s) <> 0"
        )
        ins, dels = self.sql(
            "SELECT coalesce(sum(__bqemu_n) FILTER (WHERE __bqemu_n > 0), 0), "
            "coalesce(-sum(__bqemu_n) FILTER (WHERE __bqemu_n < 0), 0) FROM bqemu_h_diff"
        ).fetchone()
        if ins == 0 and dels == 0:
            return
        ts = self.next_ts()
        insert_kind = {"UPDATE": "UPDATE", "MERGE": "UPDATE" if dels else "INSERT"}.get(kind, "INSERT")
        if is_ingestion(meta):
            self._record_ingestion(meta, key, cols, ts, insert_kind, streamed, dels)
        else:
            pid = partition_id_sql(meta, cols)
            self.sql(
                f"INSERT INTO {rel(key, 'log')} ({clist}, __bqemu_ts, __bqemu_op, __bqemu_kind, __bqemu_pid) "
                f"SELECT {clist}, ?, sign(__bqemu_n), "
                f"CASE WHEN __bqemu_n > 0 THEN ? ELSE 'DELETE' END, {pid} "
                "FROM bqemu_h_diff, range(abs(bqemu_h_diff.__bqemu_n))",
                [ts, insert_kind],
            )
            self._touch(key, f"SELECT DISTINCT {pid} FROM bqemu_h_diff", ts)
            if dels:
                self.sql(f"CREATE OR REPLACE TABLE {shadow} AS SELECT {clist} FROM {live}")
            else:
                self.sql(
                    f"INSERT INTO {shadow} ({clist}) SELECT {clist} "
                    "FROM bqemu_h_diff, range(bqemu_h_diff.__bqemu_n)"
                )
        hist.last_change = ts
        count = self.sql(f"SELECT count(*) FROM {live}").fetchone()[0]
        self._set_table_modified(meta, ts, count)
        self._purge(hist, ts)

    def _record_ingestion(self, meta, key, cols, ts, insert_kind, streamed, dels):
        """The ingestion-time variant: the shadow keeps each row's _PARTITIONTIME, so deleted
        rows are taken out of it one copy per deleted image (the newest copies first), and new
        rows get the partition of their ingestion time, or none while streamed (the
        streaming buffer: BigQuery's `_PARTITIONTIME` is NULL there)."""
        clist = ", ".join(q(c) for c in cols)
        shadow, log = rel(key, "shadow"), rel(key, "log")
        pid = partition_id_sql(meta, cols)
        log_cols = f"{clist}, __bqemu_ts, __bqemu_op, __bqemu_kind, __bqemu_pid"
        if dels:
            match = " AND ".join(f"s.{q(c)} IS NOT DISTINCT FROM d.{q(c)}" for c in cols)
            self.sql(
                "CREATE OR REPLACE TEMP TABLE bqemu_h_numbered AS SELECT s.*, "
                f"s.__bqemu_rn <= coalesce(-d.__bqemu_n, 0) AS __bqemu_gone FROM ("
                f"SELECT *, row_number() OVER (PARTITION BY {clist} ORDER BY {PT} DESC NULLS FIRST) "
                f"AS __bqemu_rn FROM {shadow}) s LEFT JOIN (SELECT * FROM bqemu_h_diff WHERE __bqemu_n < 0) d ON {match}"
            )
            self.sql(
                f"INSERT INTO {log} ({log_cols}) SELECT {clist}, ?, -1, 'DELETE', {pid} "
                "FROM bqemu_h_numbered WHERE __bqemu_gone",
                [ts],
            )
            self._touch(key, f"SELECT DISTINCT {pid} FROM bqemu_h_numbered WHERE __bqemu_gone", ts)
            self.sql(
                f"CREATE OR REPLACE TABLE {shadow} AS SELECT {clist}, {PT}, {INGESTED} "
                "FROM bqemu_h_numbered WHERE NOT __bqemu_gone"
            )
            self.sql("DROP TABLE IF EXISTS bqemu_h_numbered")
        pt = "NULL::TIMESTAMPTZ" if streamed else partition_time_sql(meta, "?::TIMESTAMPTZ")
        pt_params = [] if streamed else [ts]
        self.sql(
            f"INSERT INTO {shadow} ({clist}, {PT}, {INGESTED}) SELECT {clist}, {pt}, ?::TIMESTAMPTZ "
            "FROM bqemu_h_diff, range(bqemu_h_diff.__bqemu_n) WHERE __bqemu_n > 0",
            pt_params + [ts],
        )
        new_rows = f"SELECT {clist}, {PT} FROM {shadow} WHERE {INGESTED} = {ts_literal(ts)}"
        self.sql(
            f"INSERT INTO {log} ({log_cols}) SELECT {clist}, ?, 1, ?, {pid} FROM ({new_rows})",
            [ts, insert_kind],
        )
        self._touch(key, f"SELECT DISTINCT {pid} FROM ({new_rows})", ts)

    def _sync_columns(self, meta, key):
        """Adds columns the table gained (ALTER TABLE ADD COLUMN) to its shadow and log; returns
        the table's current columns. What shadow and log have is cached per key."""
        live = self.live_columns(meta)
        names = [c for c, _ in live]
        if self._known_columns.get(key) == names:
            return names
        for what in ("shadow", "log"):
            have = {c for c, _ in self.columns(SCHEMA, f"bqemu_h_{key}_{what}")}
            for name, dtype in live:
                if name not in have:
                    self.sql(f"ALTER TABLE {rel(key, what)} ADD COLUMN {q(name)} {dtype}")
        self._known_columns[key] = names
        return names


    def _purge(self, hist, now):
        """Drops log entries that left the time-travel window (at most hourly)."""
        if hist.purged is not None and now - hist.purged < timedelta(hours=1):
            return
        hist.purged = now
        self.sql(
            f"DELETE FROM {PARTS} p WHERE key = ? AND last_modified < (SELECT max(last_modified) "
            f"FROM {PARTS} m WHERE m.key = p.key AND m.partition_id = p.partition_id)",
            [hist.key],
        )
        self.sql(f"DELETE FROM {rel(hist.key, 'log')} WHERE __bqemu_ts < ?", [now - WINDOW - timedelta(days=1)])

    # -- partitions --------------------------------------------------------------------------

    def partitions(self, meta):
        """[(partition_id, total_rows, last_modified)] of the table as it is, or None when it
        has no history (the caller falls back to bqemulator's own listing)."""
        hist = self.get(meta)
        if hist is None:
            return None
        cols = [c for c, _ in self.live_columns(meta)]
        source = rel(hist.key, "shadow") if is_ingestion(meta) else live_ref(meta)
        pid = partition_id_sql(meta, cols)
        return self.sql(
            f"SELECT p.pid, p.n, m.last_modified FROM (SELECT {pid} AS pid, count(*) AS n "
            f"FROM {source} GROUP BY 1) p LEFT JOIN (SELECT partition_id, max(last_modified) AS "
            f"last_modified FROM {PARTS} WHERE key = ? GROUP BY 1) m ON m.partition_id = p.pid "
            "ORDER BY p.pid",
            [hist.key],
        ).fetchall()

    def delete_partition(self, meta, partition_id):
        """Deletes the rows of one partition (tables.delete of `table$partition`)."""
        hist = self.get(meta) or self.start(meta, known_start=False)
        cols = [c for c, _ in self.live_columns(meta)]
        pid = partition_id_sql(meta, cols)
        if is_ingestion(meta):
            clist = ", ".join(q(c) for c in cols)
            self.sql(
                f"DELETE FROM {live_ref(meta)} WHERE ({clist}) IN "
                f"(SELECT ({clist}) FROM {rel(hist.key, 'shadow')} WHERE {pid} = ?)",
                [partition_id],
            )
        else:
            self.sql(f"DELETE FROM {live_ref(meta)} WHERE {pid} = ?", [partition_id])
        self.record(meta, "DELETE")

    # -- streaming buffer --------------------------------------------------------------------

    def streaming_buffer(self, meta):
        """(estimated rows, oldest entry time) of the streaming buffer, or None when empty."""
        hist = self.get(meta)
        if hist is None or not is_ingestion(meta):
            return None
        n, oldest = self.sql(
            f"SELECT count(*), min({INGESTED}) FROM {rel(hist.key, 'shadow')} WHERE {PT} IS NULL"
        ).fetchone()
        return (n, oldest) if n else None

    def flush(self, meta):
        """Moves the table's buffered rows to the partition of their ingestion time (BigQuery
        assigns streamed rows the time they were ingested) and advances the modification
        time of those partitions and of `__UNPARTITIONED__`. Returns the rows moved."""
        if self.streaming_buffer(meta) is None:
            return 0
        hist = self.get(meta)
        shadow = rel(hist.key, "shadow")
        ts = self.next_ts()
        pt = partition_time_sql(meta, INGESTED)
        moved = self.sql(f"SELECT count(*) FROM {shadow} WHERE {PT} IS NULL").fetchone()[0]
        self.sql(
            f"INSERT INTO {PARTS} SELECT DISTINCT ?, strftime({pt}, "
            f"'{_FORMATS.get(meta.time_partitioning.type, '%Y%m%d')}'), ? FROM {shadow} WHERE {PT} IS NULL",
            [hist.key, ts],
        )
        self.sql(f"INSERT INTO {PARTS} VALUES (?, '__UNPARTITIONED__', ?)", [hist.key, ts])
        self.sql(f"UPDATE {shadow} SET {PT} = {pt} WHERE {PT} IS NULL")
        return moved

    # -- test aid ----------------------------------------------------------------------------

    def age(self, meta, seconds):
        """Moves the table's whole history `seconds` into the past (its creation, every commit,
        every partition's and the table's modification time), as if its writes had happened
        that long ago; for tests of the time-travel window and CHANGES' limits."""
        hist = self.get(meta) or self.start(meta, known_start=False)
        delta = timedelta(seconds=seconds)
        self.sql(f"UPDATE {rel(hist.key, 'log')} SET __bqemu_ts = __bqemu_ts - ?", [delta])
        self.sql(f"UPDATE {PARTS} SET last_modified = last_modified - ? WHERE key = ?", [delta, hist.key])
        if is_ingestion(meta):
            self.sql(
                f"UPDATE {rel(hist.key, 'shadow')} SET {INGESTED} = {INGESTED} - ?, "
                f"{PT} = CASE WHEN {PT} IS NULL THEN NULL "
                f"ELSE {partition_time_sql(meta, f'{INGESTED} - ?')} END",
                [delta, delta],
            )
        current = self.catalog.get_table(meta.project_id, meta.dataset_id, meta.table_id)
        aged = current.model_copy(update={
            "creation_time": current.creation_time - delta,
            "last_modified_time": current.last_modified_time - delta,
        })
        hist.generation, hist.start = aged.creation_time, hist.start - delta
        hist.last_change = None
        self._save_meta(hist)
        self.catalog.update_table(aged)
        if hist.change_history is not None:
            hist.change_history -= delta
            self._save_meta(hist)
        self.drop_views()

    def last_change(self, hist):
        if hist.last_change is None:
            hist.last_change = self.sql(f"SELECT max(__bqemu_ts) FROM {rel(hist.key, 'log')}").fetchone()[0]
        return hist.last_change


def ts_literal(t):
    return f"TIMESTAMPTZ '{t.astimezone(UTC).isoformat()}'"


__all__ = ["HistoryStore", "table_key", "rel", "datetime"]
