"""SQL forms of deploy/dev/emulator/history.py, rewritten before bqemulator translates a
statement (docs/emulator.md#history says which BigQuery pages each follows):

- `FROM t [AS a] FOR SYSTEM_TIME AS OF <timestamp expr>`: the table as it was then.
- `APPENDS(TABLE t, start, end)` and `CHANGES(TABLE t, start, end)`: the change history.
- `_PARTITIONTIME` / `_PARTITIONDATE` of ingestion-time-partitioned tables in queries: the
  partition each row was assigned (NULL in the streaming buffer).
- `ALTER TABLE t SET OPTIONS (enable_change_history = TRUE|FALSE)` and the same option in
  `CREATE TABLE ... OPTIONS (...)` (the latter applied by history.py after the table exists).

Each form becomes a reference to a view in `_bqemulator_snapshots` (a schema bqemulator's
table rewriter leaves as it is); the views are plain DuckDB SQL over the live table and the
row-version log of history_store.py, so nothing is copied.
"""

from __future__ import annotations

from datetime import UTC, timedelta
import hashlib
import re

import sqlglot
from sqlglot import exp

from bqemulator.domain.errors import InvalidQueryError
from bqemulator.versioning.time_travel import _eval_timestamp_via_duckdb, _resolve_target_ts

from . import history_store as hs

#: CHANGES: end_timestamp must be at least this long before now, and the range at most a day.
CHANGES_MIN_AGE = timedelta(minutes=10)
CHANGES_MAX_RANGE = timedelta(days=1)


class HistoryError(InvalidQueryError):
    """BigQuery answers these with reason `invalid` (HTTP 400)."""

    bq_reason = "invalid"


def ms(t):
    return int(t.timestamp() * 1000)


def _lit(t):
    return f"TIMESTAMPTZ '{t.astimezone(UTC).isoformat()}'"


def _colhash(cols):
    return hashlib.sha1("\x00".join(cols).encode()).hexdigest()[:8]


def _ref(meta):
    return f"{meta.project_id}:{meta.dataset_id}.{meta.table_id}"


# -- FOR SYSTEM_TIME AS OF ---------------------------------------------------------------------


def time_travel_relation(store, meta, target):
    """The view that reads `meta`'s table as of `target`, or None for the live table.

    BigQuery (time-travel docs): the timestamp must be within the time-travel window (seven
    days by default), not before the table's creation and not in the future; otherwise
    `Invalid snapshot time <ms> for table <p>:<d>.<t>@<ms>. Cannot read before <ms>`.
    State at T = (live rows + rows deleted after T) minus rows inserted after T (multisets).
    """
    now = store.clock.now().astimezone(UTC)
    target = target.astimezone(UTC) if target.tzinfo else target.replace(tzinfo=UTC)
    hist = store.get(meta)
    stamp = f"Invalid snapshot time {ms(target)} for table {_ref(meta)}@{ms(target)}."
    if target > now:
        raise HistoryError(f"{stamp} Cannot read in the future.")
    # A table without a history (it predates this patch) can only be read as it is now.
    start = hist.start.astimezone(UTC) if hist is not None else now
    floor = max(now - hs.WINDOW, start)
    if target < floor:
        raise HistoryError(f"{stamp} Cannot read before {ms(floor)}")
    last = store.last_change(hist)
    if last is None or target >= last:
        return None
    cols = store._sync_columns(meta, hist.key)
    clist = ", ".join(hs.q(c) for c in cols)
    log = hs.rel(hist.key, "log")
    at = _lit(target)
    micros = int(target.timestamp() * 1_000_000)
    return store.view(
        f"tt_{hist.key}_{micros}_{_colhash(cols)}",
        f"SELECT {clist} FROM ((SELECT {clist} FROM {hs.live_ref(meta)} UNION ALL "
        f"SELECT {clist} FROM {log} WHERE __bqemu_op = -1 AND __bqemu_ts > {at}) EXCEPT ALL "
        f"SELECT {clist} FROM {log} WHERE __bqemu_op = 1 AND __bqemu_ts > {at})",
    )


def _table_meta(store, node, project_id):
    if not node.db or not node.name:
        return None
    return store.catalog.get_table(node.catalog or project_id, node.db, node.name)


def _point_at(node, view):
    """Makes the table node read `_bqemulator_snapshots.<view>`, keeping the name it was
    referred to by as its alias."""
    if not node.alias:
        node.set("alias", exp.TableAlias(this=exp.to_identifier(node.name)))
    node.set("version", None)
    node.set("catalog", None)
    node.set("db", exp.Identifier(this=hs.SCHEMA, quoted=True))
    node.set("this", exp.Identifier(this=view, quoted=True))


def rewrite_time_travel(bq_sql, project_id, store):
    try:
        tree = sqlglot.parse_one(bq_sql, read="bigquery")
    except Exception:  # noqa: BLE001 - later layers report it
        return bq_sql
    changed = False
    for node in list(tree.find_all(exp.Table)):
        version = node.args.get("version")
        if version is None:
            continue
        meta = _table_meta(store, node, project_id)
        if meta is None:
            continue
        view = time_travel_relation(store, meta, _resolve_target_ts(version, store.engine))
        if view is None:
            node.set("version", None)
        else:
            _point_at(node, view)
        changed = True
    return tree.sql(dialect="bigquery") if changed else bq_sql


# -- APPENDS / CHANGES ---------------------------------------------------------------------------

_TVF = re.compile(r"\b(APPENDS|CHANGES)\s*\(\s*TABLE\s+", re.IGNORECASE)


def _split_call(sql, start):
    """From `start` (just after `TABLE `), the top-level comma-separated arguments up to the
    closing parenthesis; returns (args, index after the parenthesis)."""
    depth, args, cur, i, quote = 0, [], [], start, None
    while i < len(sql):
        ch = sql[i]
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
            cur.append(ch)
        elif ch == "(":
            depth += 1
            cur.append(ch)
        elif ch == ")":
            if depth == 0:
                args.append("".join(cur).strip())
                return args, i + 1
            depth -= 1
            cur.append(ch)
        elif ch == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    raise InvalidQueryError("Unterminated table-valued function call")


def _parse_table_arg(text, project_id):
    parts = [p for p in re.split(r"\.", text.replace("`", "")) if p]
    if len(parts) == 2:
        return project_id, parts[0], parts[1]
    if len(parts) == 3:
        return tuple(parts)
    raise InvalidQueryError(f"Table-valued function argument must be a table: {text}")


def _timestamp_arg(args, i, store):
    if len(args) <= i or args[i].strip().upper() in ("", "NULL"):
        return None
    value = _eval_timestamp_via_duckdb(args[i], store.engine)
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def change_relation(store, meta, function, start, end):
    """The view of APPENDS / CHANGES over [start, end) (time-series-functions and
    change-history docs):

    - start NULL: since the table's creation; a start before the creation means the
      creation; a start (or, when NULL, a creation) before the time-travel window is an
      error.
    - APPENDS: end NULL means now; only appended rows (CREATE TABLE AS SELECT, INSERT,
      rows MERGE inserts, loads, streaming), `_CHANGE_TYPE` = INSERT; no table option needed.
    - CHANGES: needs the table option `enable_change_history = TRUE` (history from when it
      was set); end must be at least ten minutes before now and end - start at most one day;
      an UPDATE is a DELETE of the old row and an UPDATE of the new one, same timestamp.
    """
    now = store.clock.now().astimezone(UTC)
    hist = store.get(meta)
    if hist is None:  # predates this patch: no change is known
        key = hs.table_key(meta.project_id, meta.dataset_id, meta.table_id)
        cols = [c for c, _ in store.live_columns(meta)]
        return store.view(f"empty_{key}_{_colhash(cols)}", _empty_change_sql(store, meta))
    created = hist.start.astimezone(UTC)
    window = now - hs.WINDOW
    name = function.upper()
    if start is not None and start < window:
        raise HistoryError(
            f"Invalid {name} start_timestamp {ms(start)} for table {_ref(meta)}: "
            f"Cannot read before {ms(window)}"
        )
    if start is None and created < window:
        raise HistoryError(
            f"{name}: table {_ref(meta)} was created before the time travel window; "
            f"specify a start_timestamp not before {ms(window)}"
        )
    given_start, start = start, max(start or created, created)
    if name == "CHANGES":
        if hist.change_history is None:
            raise HistoryError(
                f"CHANGES requires the table option enable_change_history = TRUE on table {_ref(meta)}"
            )
        if end is None or end > now - CHANGES_MIN_AGE:
            raise HistoryError(
                "The end_timestamp of CHANGES must be at least 10 minutes before the current time"
            )
        if end - (given_start or start) > CHANGES_MAX_RANGE:
            raise HistoryError(
                "The time range of CHANGES between start_timestamp and end_timestamp must not "
                "exceed 1 day"
            )
        start = max(start, hist.change_history.astimezone(UTC))
        where = "TRUE"
        change = "CASE WHEN __bqemu_op = -1 THEN 'DELETE' ELSE __bqemu_kind END"
    else:
        end = now if end is None else end
        where = "__bqemu_op = 1 AND __bqemu_kind = 'INSERT'"
        change = "'INSERT'"
    cols = store._sync_columns(meta, hist.key)
    clist = ", ".join(hs.q(c) for c in cols)
    us = lambda t: int(t.timestamp() * 1_000_000)  # noqa: E731
    return store.view(
        f"{name.lower()}_{hist.key}_{us(start)}_{us(end)}_{_colhash(cols)}",
        f"SELECT {clist}, {change} AS _CHANGE_TYPE, __bqemu_ts AS _CHANGE_TIMESTAMP "
        f"FROM {hs.rel(hist.key, 'log')} WHERE {where} AND __bqemu_ts >= {_lit(start)} "
        f"AND __bqemu_ts < {_lit(end)}",
    )


def _empty_change_sql(store, meta):
    clist = ", ".join(hs.q(c) for c, _ in store.live_columns(meta))
    return (
        f"SELECT {clist}, CAST(NULL AS VARCHAR) AS _CHANGE_TYPE, "
        f"CAST(NULL AS TIMESTAMPTZ) AS _CHANGE_TIMESTAMP FROM {hs.live_ref(meta)} WHERE FALSE"
    )


def rewrite_change_functions(bq_sql, project_id, store):
    out, pos = [], 0
    for match in _TVF.finditer(bq_sql):
        if match.start() < pos:
            continue
        args, after = _split_call(bq_sql, match.end())
        if len(args) > 3:
            raise InvalidQueryError(f"{match.group(1).upper()} takes at most 3 arguments")
        meta = store.catalog.get_table(*_parse_table_arg(args[0], project_id))
        if meta is None:
            raise InvalidQueryError(f"Not found: Table {args[0].strip('`')}")
        view = change_relation(
            store, meta, match.group(1), _timestamp_arg(args, 1, store), _timestamp_arg(args, 2, store)
        )
        out.append(bq_sql[pos:match.start()])
        out.append(f"{hs.SCHEMA}.{view}")
        pos = after
    if not out:
        return bq_sql
    out.append(bq_sql[pos:])
    return "".join(out)


# -- _PARTITIONTIME / _PARTITIONDATE -------------------------------------------------------------

_PSEUDO = {"_PARTITIONTIME": hs.PT, "_PARTITIONDATE": hs.PD}


def rewrite_pseudo_columns(bq_sql, project_id, store):
    """In a query (not DML) over an ingestion-time-partitioned table with a history, the
    table is read through a view carrying each row's `_PARTITIONTIME` / `_PARTITIONDATE`
    (NULL for rows in the streaming buffer: partitioned-tables docs, "Query ingestion-time
    partitioned tables"). Other statements keep bqemulator's rewrite (current date/time)."""
    try:
        tree = sqlglot.parse_one(bq_sql, read="bigquery")
    except Exception:  # noqa: BLE001
        return bq_sql
    if isinstance(tree, (exp.Insert, exp.Update, exp.Delete, exp.Merge)):
        return bq_sql
    pointed = False
    for node in list(tree.find_all(exp.Table)):
        if node.args.get("version") is not None:
            continue
        meta = _table_meta(store, node, project_id)
        if meta is None or not hs.is_ingestion(meta):
            continue
        hist = store.get(meta)
        if hist is None:
            continue
        view = store.view(
            f"pt_{hist.key}",
            f"SELECT * EXCLUDE ({hs.INGESTED}), CAST({hs.PT} AS DATE) AS {hs.PD} "
            f"FROM {hs.rel(hist.key, 'shadow')}",
        )
        _point_at(node, view)
        pointed = True
    if not pointed:
        return bq_sql
    for column in list(tree.find_all(exp.Column)):
        new = _PSEUDO.get(column.name.upper())
        if new:
            column.set("this", exp.to_identifier(new))
    return tree.sql(dialect="bigquery")


# -- enable_change_history --------------------------------------------------------------------------

_ALTER = re.compile(
    r"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?([`\w.\-]+)\s+SET\s+OPTIONS\s*\((.*)\)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CREATE = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([`\w.\-]+)",
    re.IGNORECASE,
)
_OPTION = re.compile(r"\benable_change_history\s*=\s*(TRUE|FALSE)\b", re.IGNORECASE)


def change_history_option(bq_sql):
    """(table text, True/False) when the statement sets enable_change_history, else None."""
    option = _OPTION.search(bq_sql)
    if option is None:
        return None
    target = _ALTER.match(bq_sql) or _CREATE.match(bq_sql)
    if target is None:
        return None
    return target.group(1), option.group(1).upper() == "TRUE"


def apply_change_history_option(bq_sql, project_id, store):
    found = change_history_option(bq_sql)
    if found is None:
        return
    meta = store.catalog.get_table(*_parse_table_arg(found[0], project_id))
    if meta is not None:
        store.set_change_history(meta, found[1])


# -- the whole pass -----------------------------------------------------------------------------------


def rewrite(bq_sql, project_id, store):
    """Every rewrite above that the statement needs; reads without them cost a few string
    searches."""
    upper = bq_sql.upper()
    if "ENABLE_CHANGE_HISTORY" in upper and _ALTER.match(bq_sql):
        apply_change_history_option(bq_sql, project_id, store)
    if "APPENDS" in upper or "CHANGES" in upper:
        bq_sql = rewrite_change_functions(bq_sql, project_id, store)
    if "SYSTEM_TIME" in upper:
        bq_sql = rewrite_time_travel(bq_sql, project_id, store)
    if "_PARTITIONTIME" in upper or "_PARTITIONDATE" in upper:
        bq_sql = rewrite_pseudo_columns(bq_sql, project_id, store)
    return bq_sql
