"""The bytes a query would process, as BigQuery's on-demand pricing counts them (helper of
dryrun.py).

Rule (BigQuery "Data type sizes" + "on-demand query size calculation"):

- Per table the query reads, the referenced columns (every column for `SELECT *`, none for
  `COUNT(*)`), each column counted once per table however often it is referenced. Columns are
  found with sqlglot's qualify (stars expanded from the catalog schema) and
  pushdown_projections (a CTE/subquery column nobody uses is not read).
- A column's size is the sum over the rows read of its logical size: INT64, FLOAT64, DATE,
  DATETIME, TIME, TIMESTAMP 8; BOOL 1; NUMERIC, INTERVAL, RANGE 16; BIGNUMERIC 32; STRING
  2 + UTF-8 bytes; BYTES 2 + bytes; JSON its UTF-8 text; STRUCT the sum of its fields; a
  REPEATED column the sum over its elements; NULL 0 (GEOGRAPHY is counted as a point, 40).
- Rows read: every row, or only the partitions selected when the query's WHERE has conjuncts
  on the partition column alone (`day = DATE '...'`, BETWEEN, IN, `_PARTITIONDATE = ...`,
  `@param`s, ...). The conjuncts are evaluated on the partition key (the column truncated to
  the partitioning unit), so a whole partition is read as soon as the filter selects it.
- DML: INSERT reads what its SELECT reads (VALUES: 0); UPDATE / DELETE / MERGE with an UPDATE
  or DELETE clause read their referenced columns plus every column of the target (its selected
  partitions), as the DML pricing doc sums them. CREATE TABLE AS / EXPORT DATA: their query.
  Views are counted by their own query; wildcard tables by every table they match;
  INFORMATION_SCHEMA and other metadata: 0 (BigQuery's 10 MB minimum is a billing minimum, not
  bytes processed).

`totalBytesProcessedAccuracy` is PRECISE, UPPER_BOUND when a partition filter could not be
applied (join conditions, mixed predicates, positional parameters) or a view / wildcard table
was read, UNKNOWN when the SQL could not be analysed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.pushdown_projections import pushdown_projections
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import traverse_scope

from bqemulator.jobs import executor
from bqemulator.sql.parameters import bind_parameters
from bqemulator.sql.table_rewriter import rewrite_table_refs

_log = logging.getLogger(__name__)

PRECISE, UPPER_BOUND, UNKNOWN = "PRECISE", "UPPER_BOUND", "UNKNOWN"
_ORDER = {PRECISE: 0, UPPER_BOUND: 1, UNKNOWN: 2}
_ALL = None  # "every column" marker in a read's column set
_PSEUDO = {"_partitiontime", "_partitiondate"}
_FIXED = {
    "INT64": 8, "INTEGER": 8, "FLOAT64": 8, "FLOAT": 8, "DATE": 8, "DATETIME": 8, "TIME": 8,
    "TIMESTAMP": 8, "BOOL": 1, "BOOLEAN": 1, "NUMERIC": 16, "DECIMAL": 16, "BIGNUMERIC": 32,
    "BIGDECIMAL": 32, "INTERVAL": 16, "RANGE": 16, "GEOGRAPHY": 40,
}
_MAX_VIEW_DEPTH = 4


@dataclass
class Estimate:
    bytes: int = 0
    accuracy: str = PRECISE
    tables: list[tuple[str, str, str]] = field(default_factory=list)

    def worse(self, accuracy):
        if _ORDER[accuracy] > _ORDER[self.accuracy]:
            self.accuracy = accuracy


@dataclass
class _Read:
    """What the query reads of one table: columns (None: all) and partition filters."""

    meta: object
    columns: set | None = field(default_factory=set)
    # Partition filter per scan: a list of BigQuery SQL conjunct texts (with the alias they use),
    # or None for a scan that reads every partition.
    filters: list = field(default_factory=list)


async def estimate(bq_sql, *, project_id, query_params, ctx, caller):
    """Estimate of what `bq_sql` would process (never raises)."""
    result = Estimate()
    try:
        statements = [s for s in sqlglot.parse(bq_sql, read="bigquery") if s is not None]
    except Exception:  # noqa: BLE001 - unparseable for sqlglot: the emulator validated it
        result.accuracy = UNKNOWN
        return result
    reads = {}
    for statement in statements:
        try:
            _statement_reads(statement, project_id, ctx, reads, result, depth=0)
        except Exception as exc:  # noqa: BLE001
            _log.debug("dry-run analysis failed: %s", exc)
            result.worse(UNKNOWN)
    for key, read in reads.items():
        if key[:3] not in result.tables:
            result.tables.append(key[:3])
        try:
            result.bytes += await _size(read, project_id, query_params, ctx, caller, result)
        except Exception as exc:  # noqa: BLE001
            _log.debug("dry-run sizing of %s failed: %s", key, exc)
            result.worse(UNKNOWN)
    return result


# -- What a statement reads ------------------------------------------------------------------


def _statement_reads(statement, project_id, ctx, reads, result, depth):
    if isinstance(statement, exp.Query):
        _query_reads(statement, project_id, ctx, reads, result, depth)
    elif isinstance(statement, exp.Insert):
        if isinstance(statement.expression, exp.Query):
            _query_reads(statement.expression, project_id, ctx, reads, result, depth)
    elif isinstance(statement, (exp.Update, exp.Delete)):
        _update_delete_reads(statement, project_id, ctx, reads, result, depth)
    elif isinstance(statement, exp.Merge):
        _merge_reads(statement, project_id, ctx, reads, result, depth)
    elif isinstance(statement, exp.Create):
        kind = (statement.args.get("kind") or "").upper()
        if kind == "TABLE" and isinstance(statement.expression, exp.Query):
            _query_reads(statement.expression, project_id, ctx, reads, result, depth)
    else:  # EXPORT DATA ... AS SELECT, and whatever else carries a query
        query = statement.find(exp.Query)
        if query is not None:
            _query_reads(query, project_id, ctx, reads, result, depth)


def _target(statement):
    target = statement.this
    if not isinstance(target, (exp.Table, exp.Schema)) and statement.args.get("tables"):
        target = statement.args["tables"][0]  # DELETE <table> AS alias
    if isinstance(target, exp.Schema):
        target = target.this
    return target if isinstance(target, exp.Table) else None


def _update_delete_reads(statement, project_id, ctx, reads, result, depth):
    target = _target(statement)
    if target is None:
        result.worse(UNKNOWN)
        return
    projections = [e.expression.copy() for e in statement.expressions if isinstance(e, exp.EQ)]
    select = exp.select(*(projections or [exp.Literal.number(1)])).from_(target.copy())
    source = statement.args.get("from_") or statement.args.get("from")
    if isinstance(source, exp.From):
        for item in [source.this, *source.expressions]:
            if item is not None:
                select = select.join(item.copy(), join_type="cross")
    where = statement.args.get("where")
    if where is not None:
        select = select.where(where.this.copy())
    _query_reads(select, project_id, ctx, reads, result, depth)
    # ... plus every column of the modified table, in the partitions the WHERE selects.
    _add_whole_target(select, target, project_id, ctx, reads, result, pruned=True)


def _merge_reads(statement, project_id, ctx, reads, result, depth):
    target = _target(statement)
    using = statement.args.get("using")
    on = statement.args.get("on")
    if target is None or not isinstance(using, exp.Expression) or on is None:
        result.worse(UNKNOWN)
        return
    expressions = []
    modifies = False
    for when in statement.find_all(exp.When):
        then = when.args.get("then")
        if when.args.get("condition") is not None:
            expressions.append(when.args["condition"].copy())
        if isinstance(then, exp.Insert):
            if isinstance(then.expression, exp.Expression):
                expressions.append(then.expression.copy())
        else:
            modifies = True
            if isinstance(then, exp.Update):
                expressions.extend(
                    e.expression.copy() for e in then.expressions if isinstance(e, exp.EQ)
                )
    select = exp.select(*(expressions or [exp.Literal.number(1)])).from_(target.copy())
    select = select.join(using.copy(), on=on.copy())
    _query_reads(select, project_id, ctx, reads, result, depth)
    if modifies:
        _add_whole_target(select, target, project_id, ctx, reads, result, pruned=False)


def _add_whole_target(select, target, project_id, ctx, reads, result, *, pruned):
    """Every column of the modified table: counted on top of its referenced columns, as the
    DML pricing doc sums them."""
    meta = _table_meta(target, project_id, ctx)
    if meta is None:
        return
    read = _read_for(reads, meta, whole=True)
    read.columns = _ALL
    if pruned:
        read.filters.append(
            _partition_filter(select, target.alias_or_name, meta, result, qualified=False)
        )
    else:
        read.filters.append(None)
        if _partition_key(meta) is not None:
            result.worse(UPPER_BOUND)


def _query_reads(query, project_id, ctx, reads, result, depth):
    query = query.copy()
    metas = {}  # id(exp.Table) of the original -> TableMeta list (wildcards: several)
    schema = {}
    for table in query.find_all(exp.Table):
        parts = [p.name for p in table.parts]
        if any(p.upper() == "INFORMATION_SCHEMA" for p in parts) or not table.args.get("db"):
            continue  # metadata views (0 bytes), CTE / UNNEST names
        matched = _resolve(table, project_id, ctx)
        if not matched:
            continue
        metas[(table.catalog or project_id, table.db, table.name)] = matched
        columns = {}
        for meta in matched:
            for f in meta.schema_.fields:
                columns.setdefault(f.name, "STRING")
        schema.setdefault(table.catalog or project_id, {}).setdefault(table.db, {})[
            table.name
        ] = columns
    if not metas:
        return
    try:
        qualified = qualify(
            query,
            schema=schema,
            dialect="bigquery",
            catalog=project_id,
            validate_qualify_columns=False,
            quote_identifiers=False,
            infer_schema=True,
        )
        qualified = pushdown_projections(qualified, schema=schema, dialect="bigquery")
        scopes = list(traverse_scope(qualified))
    except Exception as exc:  # noqa: BLE001 - cannot attribute columns: count them all
        _log.debug("qualify failed (%s): counting every column", exc)
        result.worse(UPPER_BOUND)
        for matched in metas.values():
            for meta in matched:
                read = _read_for(reads, meta)
                read.columns = _ALL
                read.filters.append(None)
        return
    for scope in scopes:
        for alias, source in scope.sources.items():
            if not isinstance(source, exp.Table):
                continue
            matched = metas.get((source.catalog or project_id, source.db, source.name))
            if not matched:
                continue
            used = set()
            star = False
            for column in scope.columns:
                name = _column_of(column, alias, scope)
                if name is not None:
                    used.add(name.lower())
            select = scope.expression
            for projection in select.expressions if isinstance(select, exp.Select) else []:
                if isinstance(projection, exp.Star) or (
                    isinstance(projection, exp.Column)
                    and isinstance(projection.this, exp.Star)
                    and projection.table in ("", alias)
                ):
                    star = True  # a `*` left unexpanded (schema unknown)
            if len(matched) > 1 or source.name.endswith("*"):
                result.worse(UPPER_BOUND)  # _TABLE_SUFFIX filters are not applied
            for meta in matched:
                if meta.table_type == "VIEW":
                    _view_reads(meta, project_id, ctx, reads, result, depth)
                    continue
                read = _read_for(reads, meta)
                if star:
                    read.columns = _ALL
                elif read.columns is not _ALL:
                    names = {f.name.lower(): f.name for f in meta.schema_.fields}
                    read.columns |= {names[n] for n in used if n in names}
                scan = None
                if len(matched) == 1:
                    scan = _partition_filter(scope.expression, alias, meta, result, qualified=True)
                if scan is None and _filtered_elsewhere(qualified, meta):
                    result.worse(UPPER_BOUND)  # e.g. filtered outside the CTE that reads it
                read.filters.append(scan)


def _filtered_elsewhere(tree, meta):
    """Whether some WHERE of the statement names the partition column of `meta`."""
    key = _partition_key(meta)
    if key is None:
        return False
    tp = getattr(meta, "time_partitioning", None)
    rp = getattr(meta, "range_partitioning", None)
    names = {n for n in _PSEUDO} | {((tp.field if tp else rp.field) or "").lower()}
    return any(
        column.name.lower() in names
        for where in tree.find_all(exp.Where)
        for column in where.find_all(exp.Column)
    )


def _column_of(column, alias, scope):
    """The column of table `alias` that `column` reads (a struct access reads its column)."""
    parts = [p.name for p in column.parts]
    for i, part in enumerate(parts[:-1]):
        if part == alias and i + 1 < len(parts):
            return parts[i + 1]
    if len(scope.sources) == 1 and not column.table and column.name.lower() not in _PSEUDO:
        return column.name
    return None


def _view_reads(meta, project_id, ctx, reads, result, depth):
    result.worse(UPPER_BOUND)
    if depth >= _MAX_VIEW_DEPTH or not getattr(meta, "view_query", None):
        return
    for statement in sqlglot.parse(meta.view_query, read="bigquery"):
        if statement is not None:
            _statement_reads(statement, meta.project_id, ctx, reads, result, depth + 1)


def _resolve(table, project_id, ctx):
    project = table.catalog or project_id
    name = table.name
    if name.endswith("*"):
        prefix = name[:-1]
        return [
            m
            for m in ctx.catalog.list_tables(project, table.db)
            if m.table_id.startswith(prefix) and m.table_type != "VIEW"
        ]
    meta = ctx.catalog.get_table(project, table.db, name)
    return [meta] if meta is not None else []


def _table_meta(table, project_id, ctx):
    if not table.args.get("db"):
        return None
    return ctx.catalog.get_table(table.catalog or project_id, table.db, table.name)


def _read_for(reads, meta, whole=False):
    key = (meta.project_id, meta.dataset_id, meta.table_id, whole)
    if key not in reads:
        reads[key] = _Read(meta=meta)
    return reads[key]


# -- Partition pruning -----------------------------------------------------------------------


def _partition_key(meta):
    """BigQuery SQL of the partition key of a row, with `{a}` for the table alias, or None."""
    tp = getattr(meta, "time_partitioning", None)
    rp = getattr(meta, "range_partitioning", None)
    if tp is not None:
        unit = (tp.type or "DAY").upper()
        if not tp.field:
            return "_PARTITIONTIME" if unit == "DAY" else f"TIMESTAMP_TRUNC(_PARTITIONTIME, {unit})"
        ftype = next((f.type.upper() for f in meta.schema_.fields if f.name == tp.field), "DATE")
        column = f"{{a}}.`{tp.field}`"
        if ftype == "DATE":
            return column if unit == "DAY" else f"DATE_TRUNC({column}, {unit})"
        if ftype == "DATETIME":
            return f"DATETIME_TRUNC({column}, {unit})"
        return f"TIMESTAMP_TRUNC({column}, {unit})"
    if rp is not None:
        return (
            f"RANGE_BUCKET({{a}}.`{rp.field}`, GENERATE_ARRAY({rp.start}, {rp.end}, {rp.interval}))"
        )
    return None


def _partition_filter(select, alias, meta, result, *, qualified):
    """The WHERE conjuncts of `select` that restrict only the partition column of `alias`,
    as BigQuery SQL, or None when the scan reads every partition."""
    if _partition_key(meta) is None or not isinstance(select, exp.Select):
        return None
    where = select.args.get("where")
    if where is None:
        return None
    tp = getattr(meta, "time_partitioning", None)
    rp = getattr(meta, "range_partitioning", None)
    pcol = (tp.field if tp is not None else rp.field) or ""
    kept, blocked = [], False
    for conjunct in where.this.flatten() if isinstance(where.this, exp.And) else [where.this]:
        columns = list(conjunct.find_all(exp.Column))
        on_partition = [c for c in columns if _is_partition_column(c, alias, pcol, qualified)]
        if not on_partition:
            continue
        if len(on_partition) != len(columns) or conjunct.find(exp.Query) is not None:
            blocked = True
            continue
        if any(not p.name for p in conjunct.find_all(exp.Placeholder)) or "?" in conjunct.sql():
            blocked = True
            continue
        kept.append(conjunct.sql(dialect="bigquery"))
    if blocked:
        result.worse(UPPER_BOUND)
    if not kept:
        return None
    return (alias, kept)


def _is_partition_column(column, alias, pcol, qualified):
    name = column.name.lower()
    if name in _PSEUDO:
        return True
    if name != pcol.lower() or not pcol:
        return False
    return column.table == alias or (not qualified and column.table in ("", alias))


# -- Sizing ----------------------------------------------------------------------------------


def _size_sql(expr, f, repeated=None):
    """DuckDB SQL of the logical size of one value `expr` of field `f` (0 when NULL)."""
    mode = (f.mode or "NULLABLE").upper() if repeated is None else ("REPEATED" if repeated else "")
    ftype = (f.type or "").upper()
    if mode == "REPEATED":
        if ftype in _FIXED:
            return f"COALESCE(len({expr}) * {_FIXED[ftype]}, 0)"
        inner = _size_sql("__e", f, repeated=False)
        return f"COALESCE(list_sum(list_transform({expr}, lambda __e: {inner})), 0)"
    if ftype in _FIXED:
        return f"(CASE WHEN {expr} IS NULL THEN 0 ELSE {_FIXED[ftype]} END)"
    if ftype == "STRING":
        return f"COALESCE(2 + strlen({expr}), 0)"
    if ftype == "BYTES":
        return f"COALESCE(2 + octet_length({expr}), 0)"
    if ftype in ("RECORD", "STRUCT") and f.fields:
        parts = " + ".join(
            _size_sql(f"struct_extract({expr}, '{sub.name}')", sub) for sub in f.fields
        )
        return f"(CASE WHEN {expr} IS NULL THEN 0 ELSE {parts} END)"
    # JSON (its text) and anything unforeseen.
    return f"COALESCE(strlen(CAST({expr} AS VARCHAR)), 0)"


async def _size(read, project_id, query_params, ctx, caller, result):
    meta = read.meta
    fields = meta.schema_.fields
    if read.columns is not _ALL:
        fields = [f for f in fields if f.name in read.columns]
    if not fields:
        return 0
    where = ""
    key = _partition_key(meta)
    if key is not None and read.filters and all(f is not None for f in read.filters):
        ref = f"`{meta.project_id}.{meta.dataset_id}.{meta.table_id}`"
        where = " WHERE " + " OR ".join(
            f"{key.format(a='__bqemu_t')} IN (SELECT DISTINCT {key.format(a=f'`{alias}`')} "
            f"FROM {ref} AS `{alias}` WHERE {' AND '.join(conjuncts)})"
            for alias, conjuncts in read.filters
        )
    try:
        return await _sum_sizes(meta, fields, where, project_id, query_params, ctx, caller)
    except Exception as exc:  # noqa: BLE001 - the filter did not translate: read it all
        if not where:
            raise
        _log.debug("partition filter not applied (%s)", exc)
        result.worse(UPPER_BOUND)
        return await _sum_sizes(meta, fields, "", project_id, query_params, ctx, caller)


async def _sum_sizes(meta, fields, where, project_id, query_params, ctx, caller):
    columns = ", ".join(f"__bqemu_t.`{f.name}`" for f in fields)
    rows_sql = (
        f"SELECT {columns} FROM `{meta.project_id}.{meta.dataset_id}.{meta.table_id}` "
        f"AS __bqemu_t{where}"
    )
    translated = await executor.rewrite_and_translate_statement(
        rows_sql, project_id=project_id, ctx=ctx, caller=caller, translator=executor._translator
    )
    duckdb_sql = rewrite_table_refs(translated, project_id)
    duckdb_sql, params = bind_parameters(duckdb_sql, query_params if where else None)
    sums = ", ".join(
        f"COALESCE(SUM({_size_sql(f'__bqemu_rows.c{i}', f)}), 0)" for i, f in enumerate(fields)
    )
    renamed = ", ".join(f"c{i}" for i in range(len(fields)))
    sql = f"SELECT {sums} FROM ({duckdb_sql}) AS __bqemu_rows({renamed})"
    row = ctx.engine.connection.execute(sql, params or None).fetchone()
    return int(sum(int(v) for v in row))
