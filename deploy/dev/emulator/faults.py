"""Fault injection: the next N matching requests fail as BigQuery fails.

Control (never subject to rules, nor is any /_emulator/* path or a health probe):

    POST   /_emulator/faults  {"fault": KIND, "method": "GET", "path": REGEX, "sql": REGEX,
                               "count": N (default 1), "delay_ms": M (slow only, required)}
           -> 201 the rule: {"id", "fault", "method", "path", "sql", "delay_ms", "count",
                             "remaining", "hits"}; 400 {"error": {...}} for a bad rule
    GET    /_emulator/faults  -> 200 {"faults": [pending rules], "spent": [used-up rules]}
    DELETE /_emulator/faults  -> 200 {"cleared": <rules removed>}

A request matches a rule when every criterion the rule gives holds: `method` equals the HTTP
method, `path` re.search-es the URL path, `sql` re.search-es the query text of the request body
(jobs.query `query`, jobs.insert `configuration.query.query`; for GET .../queries/{jobId} and
.../jobs/{jobId}, the text of that job). Rules apply first-added first; each applies to `count`
requests, then is spent. Matching and counting hold a lock (uvicorn and any thread agree); with
no rule pending a request passes straight through.

Kinds (bodies as BigQuery sends them: {"error": {"code", "message", "errors": [{"message",
"domain", "reason"}], "status"}}):
- rateLimitExceeded: 403, reason rateLimitExceeded, domain usageLimits, PERMISSION_DENIED.
- quotaExceeded: 403, reason quotaExceeded, domain usageLimits, PERMISSION_DENIED.
- backendError: 500, reason backendError, domain global, INTERNAL.
- unavailable: 503, reason backendError (BigQuery has no "unavailable" reason), UNAVAILABLE.
- reset: the connection is aborted with a TCP RST before any response byte.
- slow: the real answer, after delay_ms.
- empty_page: the real request runs, then its 200 answer is replaced by the documented
  "not finished yet" answer: jobs.query / getQueryResults -> {kind, jobReference,
  jobComplete: false} (no schema, rows, totalRows, pageToken: "If jobComplete is false,
  totalRows will not be available"); jobs.insert / jobs.get -> the job with status RUNNING.
  The client polls getQueryResults (or jobs.get) and gets the real answer. Only those four
  endpoints can match an empty_page rule; an error answer passes unchanged.
- truncated: the real request runs, then its finished 200 answer loses its rows: jobs.query /
  getQueryResults -> `rows` empty, `totalRows` "0", no `pageToken` (an empty answer that
  claims to be complete, as a broken proxy or a bug would give; BigQuery itself never does).
  Only jobs.query and getQueryResults can match a truncated rule; an unfinished or error answer
  passes unchanged and does not count (the rule waits for a finished answer).
"""

import asyncio
import gzip
import itertools
import json
import re
import socket
import struct
import sys
import threading

KINDS = (
    "rateLimitExceeded",
    "quotaExceeded",
    "backendError",
    "unavailable",
    "reset",
    "slow",
    "empty_page",
    "truncated",
)

_TROUBLESHOOT = (
    "For more information, see https://cloud.google.com/bigquery/docs/troubleshoot-quotas"
)
_ERRORS = {
    "rateLimitExceeded": (
        403,
        "usageLimits",
        "PERMISSION_DENIED",
        "Exceeded rate limits: too many api requests per user per method for this user_method. "
        + _TROUBLESHOOT,
    ),
    "quotaExceeded": (
        403,
        "usageLimits",
        "PERMISSION_DENIED",
        "Quota exceeded: Your project exceeded quota for free query bytes scanned. "
        + _TROUBLESHOOT,
    ),
    "backendError": (
        500,
        "global",
        "INTERNAL",
        "Error encountered during execution. Retrying may solve the problem.",
    ),
    "unavailable": (503, "global", "UNAVAILABLE", "The service is currently unavailable."),
}
_REASONS = {"unavailable": "backendError"}

CONTROL_PATH = "/_emulator/faults"
_EXEMPT_PREFIXES = ("/_emulator/",)
_EXEMPT_PATHS = ("/_emulator/faults", "/healthz", "/readyz", "/metrics")

_JOB_PATH = re.compile(
    r"/projects/(?P<project>[^/]+)/(?P<kind>queries|jobs)(?:/(?P<job>[^/]+))?/?$"
)


class _Rule:
    __slots__ = ("id", "fault", "method", "path", "sql", "delay_ms", "count", "remaining", "hits")

    def __init__(self, rule_id, fault, method, path, sql, delay_ms, count):
        self.id = rule_id
        self.fault = fault
        self.method = method
        self.path = path
        self.sql = sql
        self.delay_ms = delay_ms
        self.count = count
        self.remaining = count
        self.hits = 0

    def view(self):
        return {
            "id": self.id,
            "fault": self.fault,
            "method": self.method,
            "path": self.path.pattern if self.path else None,
            "sql": self.sql.pattern if self.sql else None,
            "delay_ms": self.delay_ms,
            "count": self.count,
            "remaining": self.remaining,
            "hits": self.hits,
        }


class _Registry:
    """The rules, shared by every request (and thread) of the process."""

    SPENT_KEPT = 100

    def __init__(self):
        self.lock = threading.Lock()
        self.pending = []
        self.spent = []
        self.ids = itertools.count(1)

    def add(self, **kwargs):
        with self.lock:
            rule = _Rule(next(self.ids), **kwargs)
            self.pending.append(rule)
            return rule.view()

    def views(self):
        with self.lock:
            return [r.view() for r in self.pending], [r.view() for r in self.spent]

    def clear(self):
        with self.lock:
            cleared = len(self.pending) + len(self.spent)
            self.pending = []
            self.spent = []
            return cleared

    def needs_sql(self):
        with self.lock:
            return any(r.sql is not None for r in self.pending)

    def take(self, method, path, sql, job_endpoint):
        """The first pending rule this request matches, counted; None when none does."""
        with self.lock:
            for rule in self.pending:
                if rule.method is not None and rule.method != method:
                    continue
                if rule.path is not None and not rule.path.search(path):
                    continue
                if rule.sql is not None and (sql is None or not rule.sql.search(sql)):
                    continue
                if rule.fault == "empty_page" and not job_endpoint:
                    continue
                if rule.fault == "truncated" and job_endpoint != "queries":
                    continue
                rule.remaining -= 1
                rule.hits += 1
                if rule.remaining <= 0:
                    self.pending = [r for r in self.pending if r is not rule]
                    self.spent = (self.spent + [rule])[-self.SPENT_KEPT :]
                return rule.view()
        return None


    def refund(self, rule_id):
        """Gives back one use of a rule whose request it could not apply to."""
        with self.lock:
            for rule in self.pending + self.spent:
                if rule.id == rule_id:
                    rule.remaining += 1
                    rule.hits -= 1
                    if rule in self.spent:
                        self.spent = [r for r in self.spent if r is not rule]
                        # Back in its first-added-first place.
                        self.pending = sorted(self.pending + [rule], key=lambda r: r.id)
                    return


REGISTRY = _Registry()


# -- Control endpoints ------------------------------------------------------------------------


def _bad_request(message):
    from fastapi.responses import JSONResponse

    return JSONResponse(
        status_code=400,
        content={
            "error": {
                "code": 400,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": "invalid"}],
                "status": "INVALID_ARGUMENT",
            }
        },
    )


def _parse_rule(spec):
    """Keyword arguments of a _Rule from the POSTed JSON, or an error message."""
    if not isinstance(spec, dict):
        return "the body must be a JSON object"
    unknown = set(spec) - {"fault", "method", "path", "sql", "count", "delay_ms"}
    if unknown:
        return f"unknown field(s): {', '.join(sorted(unknown))}"
    fault = spec.get("fault")
    if fault not in KINDS:
        return f"fault must be one of {', '.join(KINDS)}"
    method = spec.get("method")
    if method is not None and (not isinstance(method, str) or not method.strip()):
        return "method must be an HTTP method"
    compiled = {}
    for key in ("path", "sql"):
        pattern = spec.get(key)
        if pattern is None:
            compiled[key] = None
            continue
        if not isinstance(pattern, str):
            return f"{key} must be a regular expression string"
        try:
            compiled[key] = re.compile(pattern)
        except re.error as exc:
            return f"{key} is not a valid regular expression: {exc}"
    count = spec.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return "count must be an integer >= 1"
    delay_ms = spec.get("delay_ms")
    if fault == "slow":
        if isinstance(delay_ms, bool) or not isinstance(delay_ms, (int, float)) or delay_ms < 0:
            return "a slow fault needs delay_ms >= 0"
    elif delay_ms is not None:
        return "delay_ms applies to slow faults only"
    return {
        "fault": fault,
        "method": method.strip().upper() if method else None,
        "path": compiled["path"],
        "sql": compiled["sql"],
        "delay_ms": delay_ms,
        "count": count,
    }


def _add_control_routes(app):
    from fastapi import Request
    from fastapi.responses import JSONResponse

    async def add_fault(request: Request):
        try:
            spec = json.loads(await request.body() or b"null")
        except ValueError:
            return _bad_request("the body must be JSON")
        parsed = _parse_rule(spec)
        if isinstance(parsed, str):
            return _bad_request(parsed)
        return JSONResponse(status_code=201, content=REGISTRY.add(**parsed))

    async def list_faults():
        pending, spent = REGISTRY.views()
        return {"faults": pending, "spent": spent}

    async def clear_faults():
        return {"cleared": REGISTRY.clear()}

    app.add_api_route(CONTROL_PATH, add_fault, methods=["POST"], include_in_schema=False)
    app.add_api_route(CONTROL_PATH, list_faults, methods=["GET"], include_in_schema=False)
    app.add_api_route(CONTROL_PATH, clear_faults, methods=["DELETE"], include_in_schema=False)


# -- The fault layer (outermost ASGI layer) ---------------------------------------------------


def _header(scope, name):
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


async def _read_body(receive):
    """The whole request body, and a receive that replays it to the app."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _sql_of_body(scope, body):
    try:
        if (_header(scope, b"content-encoding") or b"").strip().lower() == b"gzip":
            body = gzip.decompress(body)
        doc = json.loads(body or b"null")
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("query"), str):
        return doc["query"]
    configuration = doc.get("configuration")
    query = configuration.get("query") if isinstance(configuration, dict) else None
    if isinstance(query, dict) and isinstance(query.get("query"), str):
        return query["query"]
    return None


def _sql_of_job(app, match):
    try:
        meta = app.state.context.catalog.get_job(match["project"], match["job"])
        return ((meta.configuration or {}).get("query") or {}).get("query") if meta else None
    except Exception:  # noqa: BLE001
        return None


def _json_response_messages(status, document):
    body = json.dumps(document).encode()
    return (
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json; charset=UTF-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        },
        {"type": "http.response.body", "body": body, "more_body": False},
    )


def error_document(fault):
    code, domain, status, message = _ERRORS[fault]
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [
                {"message": message, "domain": domain, "reason": _REASONS.get(fault, fault)}
            ],
            "status": status,
        }
    }


async def _reset(send):
    """Abort the connection with a TCP RST, before any byte of a response."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()
        await asyncio.sleep(0)  # let the server see the connection lost (no 500 is written)
        return
    # Not served by uvicorn directly: start a response that never completes.
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]}
    )
    raise ConnectionAbortedError("fault injection: connection reset")


async def _captured(app, scope, receive):
    """Runs the request to the end without sending: its response start, body, and the body as
    a JSON document when it is a 200 without errors (else None)."""
    start = None
    chunks = []

    async def capture(message):
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, capture)
    body = b"".join(chunks)
    document = None
    if start is not None and start["status"] == 200:
        try:
            document = json.loads(body)
        except ValueError:
            document = None
    if not isinstance(document, dict) or document.get("errors") or (
        (document.get("status") or {}).get("errorResult")
    ):
        document = None
    return start, body, document


async def _send_as_is(send, start, body):
    """Sends a captured response unchanged."""
    if start is None:
        return
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _empty_page(app, scope, receive, send, kind, method):
    """Run the request; answer its 200 as a not-yet-finished query/job."""
    start, body, document = await _captured(app, scope, receive)
    if document is None:
        await _send_as_is(send, start, body)
        return
    if kind == "queries":
        reference = dict(document.get("jobReference") or {})
        reference.setdefault("location", "US")
        document = {
            "kind": document.get("kind", "bigquery#queryResponse"),
            "jobReference": reference,
            "jobComplete": False,
        }
    else:
        document = dict(document)
        document["status"] = {"state": "RUNNING"}
        statistics = dict(document.get("statistics") or {})
        statistics.pop("endTime", None)
        document["statistics"] = statistics
    for message in _json_response_messages(200, document):
        await send(message)


async def _truncated(app, scope, receive, send):
    """Run the query request; answer its finished 200 without rows. Returns whether it did."""
    start, body, document = await _captured(app, scope, receive)
    if document is None or not document.get("jobComplete", True):
        await _send_as_is(send, start, body)
        return False
    document = dict(document)
    document["rows"] = []
    document["totalRows"] = "0"
    document.pop("pageToken", None)
    for message in _json_response_messages(200, document):
        await send(message)
    return True


def _job_endpoint(method, path):
    """('queries'|'jobs', match) when the request is jobs.query / getQueryResults / jobs.insert /
    jobs.get, else (None, match-or-None)."""
    match = _JOB_PATH.search(path)
    if match is None:
        return None, None
    if match["kind"] == "queries" and (method == "POST") == (match["job"] is None):
        return "queries", match
    if match["kind"] == "jobs" and (
        (method == "POST" and match["job"] is None) or (method == "GET" and match["job"])
    ):
        return "jobs", match
    return None, match


class FaultLayer:
    """ASGI layer outside every other one (so `send` is the server's own)."""

    def __init__(self, app, fastapi_app):
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope, receive, send):
        if not REGISTRY.pending or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in _EXEMPT_PATHS or path.startswith(_EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET").upper()
        kind, match = _job_endpoint(method, path)
        sql = None
        if REGISTRY.needs_sql():
            if method in ("POST", "PUT", "PATCH"):
                body, receive = await _read_body(receive)
                sql = _sql_of_body(scope, body)
            elif method == "GET" and match is not None and match["job"]:
                sql = _sql_of_job(self.fastapi_app, match)
        rule = REGISTRY.take(method, path, sql, job_endpoint=kind)
        if rule is None:
            await self.app(scope, receive, send)
            return
        fault = rule["fault"]
        if fault in _ERRORS:
            for message in _json_response_messages(_ERRORS[fault][0], error_document(fault)):
                await send(message)
        elif fault == "reset":
            await _reset(send)
        elif fault == "slow":
            await asyncio.sleep(rule["delay_ms"] / 1000.0)
            await self.app(scope, receive, send)
        elif fault == "empty_page":
            await _empty_page(self.app, scope, receive, send, kind, method)
        elif fault == "truncated":
            if not await _truncated(self.app, scope, receive, send):
                REGISTRY.refund(rule["id"])


# -- Installation ----------------------------------------------------------------------------


def _install_on(app):
    if getattr(app.state, "bqemu_faults", False):
        return app
    app.state.bqemu_faults = True
    _add_control_routes(app)
    build = app.build_middleware_stack

    def build_middleware_stack():
        return FaultLayer(build(), app)

    app.build_middleware_stack = build_middleware_stack
    return app


def _wrap_create_app(previous):
    def create_app(context):
        return _install_on(previous(context))

    create_app._bqemu_faults = True
    return create_app


def install():
    from bqemulator.api import app as app_module

    current = app_module.create_app
    if not getattr(current, "_bqemu_faults", False):
        app_module.create_app = _wrap_create_app(current)
    server = sys.modules.get("bqemulator.server")
    if server is not None and not getattr(server.create_app, "_bqemu_faults", False):
        # bqemulator.server imported create_app already: wrap its binding too.
        server.create_app = (
            app_module.create_app if server.create_app is current
            else _wrap_create_app(server.create_app)
        )
