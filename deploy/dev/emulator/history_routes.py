"""REST surface of deploy/dev/emulator/history.py (docs/emulator.md#history):

- tabledata.insertAll: marks its write as streamed (ingestion-time tables buffer the rows).
- tables.get: `streamingBuffer` {estimatedRows, estimatedBytes, oldestEntryTime} while an
  ingestion-time table has buffered rows (the Table resource's documented field).
- tables.delete of a partition decorator `table$YYYYMMDD` (or `$__NULL__`,
  `$__UNPARTITIONED__`, an HOUR/MONTH/YEAR id, a range start): deletes that partition's rows.
- jobs.insert of a query with `destinationTable` (an existing table, not an anonymous result):
  the result is written there per `writeDisposition` (WRITE_APPEND, WRITE_TRUNCATE,
  WRITE_EMPTY), which bqemulator does not do, and recorded as a write.
- `POST /_emulator/flush` {"project"?, "dataset"?, "table"?}: moves streamed rows out of the
  buffer into the partitions of their ingestion time (BigQuery does it within minutes).
- `POST /_emulator/age` {"project"?, "dataset", "table", "seconds"}: moves one table's history
  that far into the past, so tests can reach CHANGES' ten-minute rule and the time-travel
  window without waiting.

Routes are swapped in bqemulator's routers before its app is built, each new endpoint
calling the one it replaces (whatever was current at install time).
"""

import functools

from fastapi import Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from bqemulator.api import health
from bqemulator.api.routes import tabledata, tables


def _replace_endpoint(router, path_suffix, method, make):
    """Rebuilds the router's route `method path` around `make(old_endpoint)`."""
    for i, route in enumerate(router.routes):
        if isinstance(route, APIRoute) and route.path.endswith(path_suffix) and method in route.methods:
            router.routes[i] = APIRoute(
                route.path,
                make(route.endpoint),
                methods=list(route.methods),
                status_code=route.status_code,
                response_class=route.response_class,
                name=route.name,
                tags=route.tags,
                include_in_schema=route.include_in_schema,
            )
            return
    raise RuntimeError(f"bqemulator route not found: {method} {path_suffix}")


def _context(request):
    return request.app.state.context


def install(store_for, write_kind, streamed):
    table_path = "/projects/{project_id}/datasets/{dataset_id}/tables/{table_id}"

    def insert_all(endpoint):
        @functools.wraps(endpoint)
        async def wrapper(*args, **kwargs):
            token = streamed.set(True)
            try:
                return await endpoint(*args, **kwargs)
            finally:
                streamed.reset(token)

        return wrapper

    def get_table(endpoint):
        # async (run on the event loop, like every other DuckDB use) around the sync original.
        @functools.wraps(endpoint)
        async def wrapper(project_id, dataset_id, table_id, ctx):
            body = endpoint(project_id, dataset_id, table_id, ctx)
            store = store_for(ctx.engine)
            meta = ctx.catalog.get_table(project_id, dataset_id, table_id)
            if store is not None and meta is not None:
                buffer = store.streaming_buffer(meta)
                if buffer is not None:
                    rows, oldest = buffer
                    body["streamingBuffer"] = {
                        "estimatedRows": str(rows),
                        "estimatedBytes": str(rows * 64),
                        "oldestEntryTime": str(int(oldest.timestamp() * 1000)),
                    }
            return body

        return wrapper

    def delete_table(endpoint):
        @functools.wraps(endpoint)
        async def wrapper(project_id, dataset_id, table_id, ctx):
            if "$" not in table_id:
                return await endpoint(project_id, dataset_id, table_id, ctx)
            from bqemulator.domain.errors import ResourceRef, resource_not_found

            name, partition = table_id.split("$", 1)
            meta = ctx.catalog.get_table(project_id, dataset_id, name)
            store = store_for(ctx.engine)
            if meta is None or store is None:
                raise resource_not_found(ResourceRef("table", project_id, dataset_id, table_id))
            async with ctx.engine.write_lock():
                token = write_kind.set("DELETE")
                try:
                    store.delete_partition(meta, partition)
                finally:
                    write_kind.reset(token)
            return Response(status_code=status.HTTP_204_NO_CONTENT)

        return wrapper

    _wrap_destination_writes()
    _replace_endpoint(tabledata.router, table_path + "/insertAll", "POST", insert_all)
    _replace_endpoint(tables.router, table_path, "GET", get_table)
    _replace_endpoint(tables.router, table_path, "DELETE", delete_table)
    health.router.add_api_route("/_emulator/flush", _flush(store_for), methods=["POST"], include_in_schema=False)
    health.router.add_api_route("/_emulator/age", _age(store_for), methods=["POST"], include_in_schema=False)


async def _body(request):
    raw = await request.body()
    if not raw.strip():
        return {}
    import json

    return json.loads(raw)


def _flush(store_for):
    async def flush(request: Request):
        """Flushes the streaming buffer of one table, or of every table when no table is named."""
        ctx = _context(request)
        body = await _body(request)
        store = store_for(ctx.engine)
        moved = {}
        async with ctx.engine.write_lock():
            for meta in _tables(ctx, body):
                n = store.flush(meta)
                if n:
                    moved[f"{meta.project_id}.{meta.dataset_id}.{meta.table_id}"] = n
        return {"flushed": moved}

    return flush


def _age(store_for):
    async def age(request: Request):
        """Moves one table's history `seconds` into the past."""
        ctx = _context(request)
        body = await _body(request)
        if not body.get("dataset") or not body.get("table") or "seconds" not in body:
            return JSONResponse({"error": "dataset, table and seconds are required"}, status_code=400)
        metas = _tables(ctx, body)
        if not metas:
            return JSONResponse({"error": "table not found"}, status_code=404)
        async with ctx.engine.write_lock():
            store_for(ctx.engine).age(metas[0], float(body["seconds"]))
        return {"aged": f"{metas[0].project_id}.{metas[0].dataset_id}.{metas[0].table_id}"}

    return age


def _tables(ctx, body):
    """The catalog tables a control request names (all when it names none)."""
    project, dataset, table = body.get("project"), body.get("dataset"), body.get("table")
    if project and dataset and table:
        meta = ctx.catalog.get_table(project, dataset, table)
        return [meta] if meta is not None else []
    found = []
    for ds in ctx.catalog.list_datasets(project) if project else _all_datasets(ctx):
        if dataset and ds.dataset_id != dataset:
            continue
        for meta in ctx.catalog.list_tables(ds.project_id, ds.dataset_id):
            if meta.table_type == "TABLE" and (not table or meta.table_id == table):
                found.append(meta)
    return found


def _all_datasets(ctx):
    return list(ctx.catalog.list_all_datasets())


def _wrap_destination_writes():
    """bqemulator answers a query job with a destinationTable as if it had written it (it
    shapes the response) but leaves the table as it was; BigQuery writes the result there
    (jobs.insert `configuration.query.destinationTable`, `writeDisposition`)."""
    from bqemulator.api.routes import jobs
    from bqemulator.jobs.executor import JOB_RESULTS

    original = jobs._apply_write_append

    @functools.wraps(original)
    async def _apply_write_append(*, job_meta, job_id, query_config, ctx, caller, request_project_id):
        result = JOB_RESULTS.get(job_id)
        answer = await original(job_meta=job_meta, job_id=job_id, query_config=query_config,
                                ctx=ctx, caller=caller, request_project_id=request_project_id)
        destination = query_config.get("destinationTable") or {}
        statement = (job_meta.statistics.get("query") or {}).get("statementType")
        if result is None or job_meta.error_result or statement != "SELECT" or not destination.get("tableId"):
            return answer
        project = destination.get("projectId") or request_project_id
        meta = ctx.catalog.get_table(project, destination.get("datasetId", ""), destination["tableId"])
        if meta is None or meta.table_type != "TABLE":
            return answer
        disposition = (query_config.get("writeDisposition") or "WRITE_EMPTY").upper()
        if not await _write_result(ctx, meta, result, disposition):
            return answer.model_copy(update={"error_result": {
                "reason": "duplicate",
                "message": f"Already Exists: Table {meta.project_id}:{meta.dataset_id}.{meta.table_id}",
            }})
        return answer

    jobs._apply_write_append = _apply_write_append


async def _write_result(ctx, meta, result, disposition):
    """Writes the rows; False (nothing written) for WRITE_EMPTY into a table with rows."""
    from uuid import uuid4

    from .history_store import live_ref

    target = live_ref(meta)
    name = f"__bqemu_destination_{uuid4().hex[:12]}"
    async with ctx.engine.write_lock():
        if disposition == "WRITE_EMPTY" and ctx.engine.execute(f"SELECT count(*) FROM {target}").fetchone()[0]:
            return False
        ctx.engine.connection.register(name, result)
        try:
            if disposition == "WRITE_TRUNCATE":
                ctx.engine.execute(f"DELETE FROM {target}")
            ctx.engine.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {name}")
        finally:
            ctx.engine.connection.unregister(name)
        ctx.snapshots.record_change(meta.project_id, meta.dataset_id, meta.table_id)
    return True
