"""Dry runs as BigQuery answers them: validated, never executed, with an estimate.

BigQuery (JobConfiguration.dryRun): "don't actually run this job. A valid query will return a
mostly empty response with some processing statistics, while an invalid query will return the
same error it would if it wasn't a dry run." bqemulator got three things wrong:

- It executed a dry-run SELECT to learn its schema, and executed any statement it could not
  classify as DML/DDL: a multi-statement script (`INSERT ...; SELECT 1`), EXPORT DATA, CREATE
  MODEL were run for real, their writes committed.
- It did not validate dry-run DML: `INSERT INTO missing_table ...` answered a happy 200.
- totalBytesProcessed was always 0.

Here, a dry run executes nothing:
- A single SELECT goes through the emulator's own pipeline (so its errors and its result schema
  are the real run's), but the final DuckDB call binds instead of executing: `EXPLAIN` checks it
  (binder errors, unknown tables and columns, exactly as the run reports them) and `DESCRIBE`
  gives the result types. A DML statement is checked the same way, through the same translation
  (`executor._run_single_sql`), plus the run's own immutable-table check; nothing else of the
  job path runs (no snapshot, no catalog change, no write hook). Statements of any other kind
  (DDL, scripts, EXPORT DATA, CREATE MODEL, CALL) are not run at all; DDL keeps the emulator's
  schema preview. An invalid query errors as the real run does (400 invalidQuery, 404 notFound,
  with the dry-run `location: "q"`).
- totalBytesProcessed is estimated from what the query reads (see dryrun_estimate.py), also in
  `statistics.query.totalBytesProcessed`, `statistics.totalBytesProcessed`, with
  `statistics.query.totalBytesProcessedAccuracy` and `referencedTables`; `cacheHit: false`.
- jobs.query answers `{kind, jobReference: {projectId, location}, schema, jobComplete: true,
  totalBytesProcessed, cacheHit: false, statementType}`: no `rows`/`totalRows` (there is no
  result), no `jobId` (no job exists). jobs.insert answers the DONE job, as before.

Real runs keep reporting totalBytesProcessed 0 (what BigQuery reports for a cached result; the
syncs only use it as a metric), so their cost is unchanged.
"""

import contextvars
import copy
import re

import duckdb
import pyarrow

from bqemulator.api.routes import jobs
from bqemulator.domain.errors import InvalidQueryError
from bqemulator.jobs import executor
from bqemulator.row_access.identity import CallerIdentity
from bqemulator.scripting.ast import SqlStmt
from bqemulator.storage import engine as engine_module

from . import dryrun_estimate

# Set while a dry run validates: DuckDBEngine.fetch_arrow binds instead of executing.
_BIND_ONLY = contextvars.ContextVar("bqemu_dryrun_bind_only", default=False)
# The estimate of the dry run in progress (read by the jobs.insert response builder).
_ESTIMATE = contextvars.ContextVar("bqemu_dryrun_estimate", default=None)

_CHECKED = {
    duckdb.StatementType.SELECT,
    duckdb.StatementType.INSERT,
    duckdb.StatementType.UPDATE,
    duckdb.StatementType.DELETE,
    getattr(duckdb.StatementType, "MERGE_INTO", duckdb.StatementType.DELETE),
}
_DML = {"INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE_TABLE"}


class _NotChecked(BaseException):
    """fetch_arrow was asked for a statement it cannot check without running it. A
    BaseException so the executor's `except Exception` error mapping lets it through."""


def _renumber(message):
    """DuckDB's error context of `EXPLAIN\\n<sql>` as it reads for `<sql>` (LINE n -> n-1)."""
    return re.sub(r"(?m)^LINE (\d+):", lambda m: f"LINE {int(m.group(1)) - 1}:", message)


def _check(connection, sql, parameters):
    try:
        if parameters:
            connection.execute("EXPLAIN\n" + sql, parameters)
        else:
            connection.execute("EXPLAIN\n" + sql)
    except duckdb.Error as exc:
        try:
            renumbered = type(exc)(_renumber(str(exc)))
        except Exception:  # noqa: BLE001
            raise exc from None
        raise renumbered from None


def _result_shape(connection, sql, parameters):
    """An empty Arrow table with the types `sql` would return, without running it."""
    describe = "DESCRIBE\n" + sql
    rows = (
        connection.execute(describe, parameters) if parameters else connection.execute(describe)
    ).fetchall()
    columns = ", ".join(
        f'CAST(NULL AS {typ}) AS "{name.replace(chr(34), chr(34) * 2)}"'
        for name, typ, *_ in rows
    )
    result = connection.execute(f"SELECT {columns} LIMIT 0")
    return engine_module._annotate_with_duckdb_types(result.to_arrow_table(), result.description)


def _wrap_fetch_arrow(previous):
    def fetch_arrow(self, sql, parameters=None):
        if not _BIND_ONLY.get():
            return previous(self, sql, parameters)
        connection = self.connection
        statements = connection.extract_statements(sql)  # a syntax error raises as in a run
        if len(statements) != 1 or statements[0].type not in _CHECKED:
            raise _NotChecked()
        _check(connection, sql, parameters)
        if statements[0].type == duckdb.StatementType.SELECT:
            try:
                return _result_shape(connection, sql, parameters)
            except duckdb.Error:
                return pyarrow.table({})
        return pyarrow.table({})

    fetch_arrow._bqemu_dryrun = True
    return fetch_arrow


def _wrap_dry_run_response(previous):
    async def _dry_run_response(
        *, project_id, job_id, bq_sql, query_params, ctx, caller, wire_shape
    ):
        if not bq_sql.strip():
            raise InvalidQueryError("Empty query")
        try:
            script = executor._parse_script_or_raise(bq_sql)  # lexer errors as in a run
        except jobs._SQL_EXECUTION_DOMAIN_ERRORS as exc:
            jobs._rewrite_for_dry_run(exc, bq_sql=bq_sql)
            raise
        single = len(script.statements) == 1 and isinstance(script.statements[0], SqlStmt)
        statement_type = executor.classify_statement_type(bq_sql) if single else "SCRIPT"
        body = None
        token = _BIND_ONLY.set(True)
        try:
            if single and statement_type in ("SELECT", ""):
                try:
                    body = await previous(
                        project_id=project_id,
                        job_id=job_id,
                        bq_sql=bq_sql,
                        query_params=query_params,
                        ctx=ctx,
                        caller=caller,
                        wire_shape=wire_shape,
                    )
                except _NotChecked:
                    body = None
            elif single and statement_type in _DML:
                await _check_dml(project_id, bq_sql, query_params, ctx, caller)
        finally:
            _BIND_ONLY.reset(token)
            executor.JOB_RESULTS.pop(job_id, None)
            executor.JOB_SCHEMAS.pop(job_id, None)
        if body is None:
            body = _preview(project_id, job_id, bq_sql, statement_type, ctx, wire_shape)
        estimate = await dryrun_estimate.estimate(
            bq_sql,
            project_id=project_id,
            query_params=query_params,
            ctx=ctx,
            caller=caller or _anonymous(),
        )
        _ESTIMATE.set(estimate)
        body["totalBytesProcessed"] = str(estimate.bytes)
        body["cacheHit"] = False
        body["jobComplete"] = True
        if wire_shape == "query":
            body.pop("rows", None)
            body.pop("totalRows", None)
            body["jobReference"] = {"projectId": project_id, "location": "US"}
        return body

    _dry_run_response._bqemu_dryrun = True
    return _dry_run_response


def _anonymous():
    return CallerIdentity(principal="user:anonymous@bqemulator.local", is_authenticated=False)


async def _check_dml(project_id, bq_sql, query_params, ctx, caller):
    """Validate a DML statement the way its run starts, stopping before it writes."""
    try:
        executor._reject_dml_on_immutable(project_id, bq_sql, ctx)
        await executor._run_single_sql(
            project_id, bq_sql, query_params, ctx, caller=caller or _anonymous()
        )
    except _NotChecked:
        return
    except jobs._SQL_EXECUTION_DOMAIN_ERRORS as exc:
        jobs._rewrite_for_dry_run(exc, bq_sql=bq_sql)
        raise


def _preview(project_id, job_id, bq_sql, statement_type, ctx, wire_shape):
    """The response body for a statement not run through the executor (the emulator's shape)."""
    schema_fields = []
    if statement_type in jobs._DESTRUCTIVE_STATEMENT_TYPES:
        schema_fields = jobs._destructive_dry_run_schema(
            bq_sql=bq_sql, statement_type=statement_type, project_id=project_id, ctx=ctx
        )
    body = {
        "kind": "bigquery#queryResponse" if wire_shape == "query" else "bigquery#job",
        "jobComplete": True,
        "totalBytesProcessed": "0",
        "schema": {"fields": schema_fields},
        "rows": [],
        "totalRows": "0",
        "cacheHit": False,
    }
    if statement_type:
        body["statementType"] = statement_type
        from bqemulator.jobs.ddl_result import ddl_operation_for

        ddl_op = ddl_operation_for(statement_type)
        if ddl_op:
            body["ddlOperationPerformed"] = ddl_op
    body["jobReference"] = {"projectId": project_id, "jobId": job_id, "location": "US"}
    return body


def _wrap_build_dry_run_query_response(previous):
    async def _build_dry_run_query_response(**kwargs):
        token = _ESTIMATE.set(None)
        try:
            response = await previous(**kwargs)
            estimate = _ESTIMATE.get()
        finally:
            _ESTIMATE.reset(token)
        if estimate is None:
            return response
        statistics = response.setdefault("statistics", {})
        _apply(statistics, estimate)
        # The job jobs.get / jobs.list return afterwards says the same.
        ctx, project_id, job_id = kwargs["ctx"], kwargs["project_id"], kwargs["job_id"]
        meta = ctx.catalog.get_job(project_id, job_id)
        if meta is not None:
            stats = copy.deepcopy(dict(meta.statistics or {}))
            _apply(stats, estimate)
            ctx.catalog.upsert_job(meta.model_copy(update={"statistics": stats}))
        return response

    _build_dry_run_query_response._bqemu_dryrun = True
    return _build_dry_run_query_response


def _apply(statistics, estimate):
    total = str(estimate.bytes)
    statistics["totalBytesProcessed"] = total
    query = statistics.setdefault("query", {})
    query["totalBytesProcessed"] = total
    query["totalBytesProcessedAccuracy"] = estimate.accuracy
    query["cacheHit"] = False
    if estimate.tables:
        query["referencedTables"] = [
            {"projectId": p, "datasetId": d, "tableId": t} for p, d, t in estimate.tables
        ]


def install():
    if getattr(engine_module.DuckDBEngine.fetch_arrow, "_bqemu_dryrun", False):
        return  # already installed
    engine_module.DuckDBEngine.fetch_arrow = _wrap_fetch_arrow(
        engine_module.DuckDBEngine.fetch_arrow
    )
    jobs._dry_run_response = _wrap_dry_run_response(jobs._dry_run_response)
    jobs._build_dry_run_query_response = _wrap_build_dry_run_query_response(
        jobs._build_dry_run_query_response
    )
