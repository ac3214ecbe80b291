"""The collector's HTTP side: aiohttp.web handlers for ingest and the read API."""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import ssl
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Awaitable, Callable, Deque, Iterable, Optional, TypeVar

import orjson
from aiohttp import web

from journy_analytics.client import DEFAULT_PATH
from journy_analytics.collector._faults import Decision, FaultInjector, Faults
from journy_analytics.collector._guard import request_guard
from journy_analytics.collector._ingest import (
    EVENT_TYPES,
    MAX_BODY_BYTES,
    IngestError,
    decode_body,
    parse_json,
    prepare_batch,
    write_key_from_body,
)
from journy_analytics.collector._live import HEARTBEAT, LIVE_ROWS, PUSH_INTERVAL, LiveFeed
from journy_analytics.collector._rest import RestSettings, add_rest_routes
from journy_analytics.collector._rules import RULES
from journy_analytics.collector._store import INSPECTOR_FILTERS, Store

__all__ = ["DEFAULT_PATH", "CollectorState", "Server", "create_app", "logged_requests"]


T = TypeVar("T")

# Segment's single-event endpoints: the body is one event of the type in the path.
_SINGLE_EVENT_PATHS = {f"/v1/{t}": t for t in EVENT_TYPES}
_READ_CHUNK = 64 * 1024
_INSPECTOR_DIR = Path(__file__).resolve().parent / "inspector"
# The inspector's files, by URL name: (file, content type).
_INSPECTOR_FILES = {
    "app.js": ("app.js", "text/javascript"),
    "app.css": ("app.css", "text/css"),
}
# Nothing from elsewhere, no inline script: even a rendering bug could not run a payload.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_MAX_PAGE = 500


class _ClientGone(Exception):
    """The client closed the connection before its request was read."""


class _Encoded:
    """A logged request body that parsed as JSON, kept as received until it is read."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def logged_requests(state: CollectorState) -> list[dict[str, Any]]:
    """The request log, oldest first, each ``body`` decoded (None if it was not JSON)."""
    records = []
    for record in list(state.requests):
        body = record.get("body")
        if isinstance(body, _Encoded):
            record = {**record, "body": orjson.loads(body.data)}
        records.append(record)
    return records


class CollectorState:
    """What outlives one run of the HTTP server: the store, fault settings, request log,
    the REST API's settings (keys, rate limit)."""

    def __init__(
        self,
        store: Store,
        write_keys: Optional[Iterable[str]] = None,
        path: str = DEFAULT_PATH,
        faults: Optional[Faults] = None,
        max_logged_requests: int = 1000,
        max_body_bytes: int = MAX_BODY_BYTES,
        allowed_hosts: Iterable[str] = (),
        rest: Optional[RestSettings] = None,
    ) -> None:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        keys = None if write_keys is None else frozenset(write_keys)
        if keys is not None and (not keys or not all(isinstance(k, str) and k for k in keys)):
            raise ValueError("write_keys must be non-empty strings")
        self.store = store
        self.write_keys = keys
        self.path = path
        self.faults = FaultInjector(faults)
        self.requests: Deque[dict[str, Any]] = collections.deque(maxlen=max_logged_requests)
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
            raise ValueError(f"max_body_bytes must be an int, not {max_body_bytes!r}")
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, not {max_body_bytes}")
        # Larger ingest bodies are answered 413 (as journy.io answers above its own limit).
        self.max_body_bytes = max_body_bytes
        # Host names the collector answers besides loopback and its bound address.
        self.allowed_hosts = tuple(allowed_hosts)
        self.rest = rest if rest is not None else RestSettings()

    def key_accepted(self, key: Optional[str]) -> bool:
        if not key:
            return False
        return self.write_keys is None or key in self.write_keys


_STATE: web.AppKey[CollectorState] = web.AppKey("journy_collector_state", CollectorState)


def _json(data: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"success": False, "code": code, "message": message}, status=status)


async def _wait(future: Future[T]) -> T:
    return await asyncio.wrap_future(future)


def _basic_auth_key(header: Optional[str]) -> Optional[str]:
    """The write key from ``Authorization: Basic base64(key:)``; None when absent or garbled."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return decoded.partition(":")[0] or None


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise IngestError(
            413,
            "body_too_large",
            f"body is {request.content_length} bytes, over the {limit} limit",
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await request.content.read(_READ_CHUNK)
        except (ConnectionError, asyncio.IncompleteReadError):
            # aiohttp's ClientConnectionResetError is a ConnectionResetError.
            raise _ClientGone() from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise IngestError(413, "body_too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)


def _abort(request: web.Request, record: dict[str, Any]) -> web.Response:
    record["status"] = "reset"
    transport = request.transport
    if transport is not None:
        transport.abort()
    # Nothing reaches the client any more; aiohttp discards this response quietly.
    return web.Response(status=500)


def _ingest_handler(
    single_type: Optional[str],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        state = request.app[_STATE]
        record: dict[str, Any] = {
            "time": time.time(),
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": {str(k): v for k, v in request.headers.items()},
            "body": None,
            "size": None,
            "status": None,
        }
        state.requests.append(record)
        counters: dict[str, int] = {"requests": 1}
        try:
            response = await _ingest(request, state, single_type, record, counters)
        except _ClientGone:
            # Nobody is left to answer, and it is not the collector's fault: no traceback.
            record["status"] = record["error"] = "client disconnected"
            await _wait(state.store.count({"requests": 1, "rejected.client_disconnected": 1}))
            return web.Response(status=400)
        except IngestError as exc:
            counters[f"rejected.{exc.code}"] = 1
            response = _json(exc.to_json(), status=exc.status)
            if exc.status == 413:
                # The client may still be sending an oversized body we will not read.
                response.force_close()
            record["error"] = exc.message
        if counters:
            await _wait(state.store.count(counters))
        if record["status"] is None:
            record["status"] = response.status
        return response

    return handler


async def _ingest(
    request: web.Request,
    state: CollectorState,
    single_type: Optional[str],
    record: dict[str, Any],
    counters: dict[str, int],
) -> web.StreamResponse:
    decision: Decision = state.faults.decide()
    if decision.delay > 0:
        counters["faults.delayed"] = 1
        await asyncio.sleep(decision.delay)
    raw = await _read_body(request, state.max_body_bytes)
    record["size"] = len(raw)
    if decision.rate_limited:
        counters["faults.rate_limited"] = 1
        return _json(
            {"success": False, "code": "rate_limited", "message": "rate limit exceeded"},
            status=429,
            headers={"Retry-After": str(decision.retry_after)},
        )
    if decision.fail_status is not None:
        counters["faults.failed"] = 1
        return _error(decision.fail_status, "injected_fault", "fault injected by the collector")

    body = decode_body(raw, request.headers.get("Content-Encoding"), state.max_body_bytes)
    obj = parse_json(body)
    # Kept encoded, decoded when read (``logged_requests``): a thousand parsed batches
    # would be a million live objects for the garbage collector to walk again and again.
    record["body"] = _Encoded(body)
    header_key = _basic_auth_key(request.headers.get("Authorization"))
    if not state.key_accepted(header_key) and not state.key_accepted(write_key_from_body(obj)):
        missing = header_key is None and write_key_from_body(obj) is None
        raise IngestError(
            401,
            "unauthorized",
            "no write key: send it as the HTTP Basic user or as writeKey in the body"
            if missing
            else "unknown write key",
        )
    events = prepare_batch(obj, single_type)

    if decision.reset:
        counters["faults.reset"] = 1
        if not decision.reset_after_store:
            return _abort(request, record)
    meta = {
        "method": request.method,
        "path": request.path,
        "headers": redacted_headers(request.headers.items()),
        "size": len(raw),
        "gzip": raw is not body,
        "retry_count": _retry_count(request.headers.get("X-Retry-Count")),
    }
    result = await _wait(state.store.ingest(events, counters, meta))
    counters.clear()  # counted inside the ingest transaction
    if result.stored:
        request.app[_LIVE].notify()
    record["stored"] = result.stored
    record["duplicates"] = result.duplicates
    if decision.reset:
        return _abort(request, record)
    return _json({"success": True})


def redacted_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request headers as the inspector shows them: the credentials replaced."""
    shown = {}
    for name, value in items:
        if name.lower() in ("authorization", "proxy-authorization", "cookie", "x-api-key"):
            scheme = value.split(" ", 1)[0] if " " in value else ""
            value = f"{scheme} [redacted]".strip()
        shown[str(name)] = value
    return shown


def _retry_count(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# -- read API --------------------------------------------------------------------------


def _opt(request: web.Request, name: str) -> Optional[str]:
    value = request.query.get(name)
    return value if value else None


async def _events(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    limit: Optional[int] = None
    raw_limit = _opt(request, "limit")
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            return _error(400, "invalid_query", "limit must be an integer")
        if limit < 0:
            return _error(400, "invalid_query", "limit must be >= 0")
    query: dict[str, Any] = {
        "type": _opt(request, "type"),
        "user_id": _opt(request, "userId"),
        "anonymous_id": _opt(request, "anonymousId"),
        "group_id": _opt(request, "groupId"),
        "limit": limit,
    }
    if _opt(request, "warnings") not in (None, "0", "false"):
        rows = await _wait(state.store.events_with_warnings(**query))
        return web.Response(
            body=b'{"events":['
            + b",".join(body for body, _ in rows)
            + b'],"warnings":'
            + orjson.dumps([found for _, found in rows])
            + b"}",
            content_type="application/json",
        )
    bodies = await _wait(state.store.events_json(**query))
    # The stored bytes are already JSON: splice them instead of decoding and re-encoding.
    return web.Response(
        body=b'{"events":[' + b",".join(bodies) + b"]}", content_type="application/json"
    )


async def _user(request: web.Request) -> web.Response:
    user_id = request.match_info["id"]
    user = await _wait(request.app[_STATE].store.user(user_id))
    if user is None:
        return _error(404, "not_found", f"no user {user_id!r}")
    return _json(user)


async def _account(request: web.Request) -> web.Response:
    account_id = request.match_info["id"]
    account = await _wait(request.app[_STATE].store.account(account_id))
    if account is None:
        return _error(404, "not_found", f"no account {account_id!r}")
    return _json(account)


async def _stats(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    stats = await _wait(state.store.stats())
    stats["fault_settings"] = state.faults.faults.to_dict()
    return _json(stats)


async def _message_ids(request: web.Request) -> web.Response:
    ids = await _wait(request.app[_STATE].store.message_ids())
    return _json({"count": len(ids), "messageIds": sorted(ids)})


async def _requests(request: web.Request) -> web.Response:
    encoded = []
    for record in logged_requests(request.app[_STATE]):
        try:
            encoded.append(orjson.dumps(record))
        except orjson.JSONEncodeError:  # a body nested deeper than orjson writes
            encoded.append(orjson.dumps({**record, "body": None}))
    return web.Response(
        body=b'{"requests":[' + b",".join(encoded) + b"]}", content_type="application/json"
    )


async def _get_faults(request: web.Request) -> web.Response:
    return _json(request.app[_STATE].faults.faults.to_dict())


async def _set_faults(request: web.Request) -> web.Response:
    injector = request.app[_STATE].faults
    try:
        changes = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error(400, "malformed_json", "body is not valid JSON")
    if not isinstance(changes, dict):
        return _error(400, "invalid_body", "body must be a JSON object of fault settings")
    try:
        faults = injector.faults.replace(**changes)
    except (TypeError, ValueError) as exc:
        return _error(400, "invalid_faults", str(exc))
    injector.set(faults)
    return _json(faults.to_dict())


async def _clear_faults(request: web.Request) -> web.Response:
    request.app[_STATE].faults.set(Faults())
    return _json(Faults().to_dict())


async def _reset(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    await _wait(state.store.reset())
    state.requests.clear()
    return _json({"success": True})


async def _index(request: web.Request) -> web.Response:
    accept = request.headers.get("Accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return await _api_index(request)
    return _inspector_file(request.app, "index.html", "text/html")


async def _api_index(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    return _json(
        {
            "name": "journy-analytics local collector",
            "ingest": sorted({state.path, "/v1/batch", *_SINGLE_EVENT_PATHS}),
            "read": [
                "/api/events?type=&userId=&anonymousId=&groupId=&limit=&warnings=",
                "/api/users/{id}",
                "/api/accounts/{id}",
                "/api/stats",
                "/api/messageids",
                "/api/requests",
                "/api/faults",
            ],
            "inspector": "/",
        }
    )


# -- the inspector ---------------------------------------------------------------------

_ASSETS: web.AppKey[dict[str, bytes]] = web.AppKey("journy_inspector_assets", dict)
_LIVE: web.AppKey[LiveFeed] = web.AppKey("journy_live_feed", LiveFeed)


def _load_assets() -> dict[str, bytes]:
    names = ["index.html", *(file for file, _ in _INSPECTOR_FILES.values())]
    return {name: (_INSPECTOR_DIR / name).read_bytes() for name in names}


def _inspector_file(app: web.Application, name: str, content_type: str) -> web.Response:
    return web.Response(
        body=app[_ASSETS][name],
        content_type=content_type,
        charset="utf-8",
        headers={
            "Content-Security-Policy": _CSP,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",
        },
    )


async def _asset(request: web.Request) -> web.Response:
    found = _INSPECTOR_FILES.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    return _inspector_file(request.app, *found)


async def _no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)


def _filters(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in request.query.items() if k in INSPECTOR_FILTERS and v}


def _int_query(request: web.Request, name: str) -> Optional[int]:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(reason=f"{name} must be an integer") from None


async def _inspector_events(request: web.Request) -> web.Response:
    limit = _int_query(request, "limit") or 100
    page = await _wait(
        request.app[_STATE].store.inspector_events(
            _filters(request),
            before=_int_query(request, "before"),
            after=_int_query(request, "after"),
            limit=max(1, min(limit, _MAX_PAGE)),
        )
    )
    return _json(page)


async def _inspector_event(request: web.Request) -> web.Response:
    try:
        seq = int(request.match_info["seq"])
    except ValueError:
        return _error(400, "invalid_query", "an event is named by its number")
    detail = await _wait(request.app[_STATE].store.event_detail(seq))
    if detail is None:
        return _error(404, "not_found", f"no event {seq}")
    return _json(detail)


def _profile_handler(kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        profile_id = request.match_info["id"]
        found = await _wait(request.app[_STATE].store.profile(kind, profile_id))
        if found is None:
            return _error(404, "not_found", f"no {kind} {profile_id!r}")
        return _json(found)

    return handler


async def _rules(request: web.Request) -> web.Response:
    return _json({"rules": RULES})


async def _stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``data: {"events": [...], "matched": n, "latest": seq}`` with
    what matches the filters since ``after``, at most every ``PUSH_INTERVAL`` seconds."""
    store = request.app[_STATE].store
    live = request.app[_LIVE]
    filters = _filters(request)
    after = _int_query(request, "after")
    if after is None:
        after = (await _wait(store.inspector_events({}, limit=0)))["latest"]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    wake = live.subscribe()
    loop = asyncio.get_running_loop()
    last_push = 0.0
    try:
        await response.write(b": live\n\n")
        while not live.closed:
            try:
                await asyncio.wait_for(wake.wait(), HEARTBEAT)
            except asyncio.TimeoutError:
                await response.write(b": still here\n\n")
                continue
            if live.closed:
                break
            pause = last_push + PUSH_INTERVAL - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            wake.clear()
            page = await _wait(store.inspector_events(filters, after=after, limit=LIVE_ROWS))
            last_push = loop.time()
            if page["latest"] < after:  # the store was reset
                after = page["latest"]
                await response.write(b'data: {"reset":true}\n\n')
            elif page["events"]:
                after = page["events"][0]["seq"]
                await response.write(b"data: " + orjson.dumps(page) + b"\n\n")
    except ConnectionError:
        pass  # the page was closed
    finally:
        live.unsubscribe(wake)
    return response


@web.middleware
async def _read_key(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """With write keys set, what the collector stored is shown only to a holder of one:
    the read API, the inspector's data and its stream (the page itself holds no data)."""
    state = request.app[_STATE]
    if (
        state.write_keys is not None
        and request.path.startswith("/api")
        and not state.key_accepted(_basic_auth_key(request.headers.get("Authorization")))
    ):
        return _error(
            401,
            "unauthorized",
            "this collector has write keys: send one as the HTTP Basic user "
            "(journy events --write-key KEY; the inspector asks for it)",
        )
    return await handler(request)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Routing errors (404, 405) answer JSON like every other error of the collector."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return _json(
            {"success": False, "code": code, "message": f"{exc.reason}: {request.path}"},
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )


def create_app(state: CollectorState, bound_host: str = "127.0.0.1") -> web.Application:
    """The aiohttp application serving ``state`` (ingest, read API, fault control), for a
    server listening on ``bound_host``."""
    guard = request_guard(bound_host, state.allowed_hosts)
    app = web.Application(middlewares=[_json_errors, guard, _read_key])
    app[_STATE] = state
    app[_ASSETS] = _load_assets()
    live = app[_LIVE] = LiveFeed()

    async def end_streams(app: web.Application) -> None:
        live.close()

    app.on_shutdown.append(end_streams)
    for path in sorted({state.path, "/v1/batch"}):
        app.router.add_post(path, _ingest_handler(None))
    for path, event_type in _SINGLE_EVENT_PATHS.items():
        if path != state.path:
            app.router.add_post(path, _ingest_handler(event_type))
    app.router.add_get("/", _index)
    app.router.add_get("/inspector/{name}", _asset)
    app.router.add_get("/favicon.ico", _no_icon)
    app.router.add_get("/api", _api_index)
    app.router.add_get("/api/inspector/events", _inspector_events)
    app.router.add_get("/api/inspector/events/{seq}", _inspector_event)
    app.router.add_get("/api/inspector/users/{id:.+}", _profile_handler("user"))
    app.router.add_get("/api/inspector/accounts/{id:.+}", _profile_handler("account"))
    app.router.add_get("/api/inspector/stream", _stream)
    app.router.add_get("/api/inspector/rules", _rules)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/api/users/{id:.+}", _user)
    app.router.add_get("/api/accounts/{id:.+}", _account)
    app.router.add_get("/api/stats", _stats)
    app.router.add_get("/api/messageids", _message_ids)
    app.router.add_get("/api/requests", _requests)
    app.router.add_get("/api/faults", _get_faults)
    app.router.add_post("/api/faults", _set_faults)
    app.router.add_delete("/api/faults", _clear_faults)
    app.router.add_post("/api/reset", _reset)
    add_rest_routes(app, state.rest, state.store, live.notify, state.faults)  # journy.io's REST API
    return app


class Server:
    """One run of the HTTP server on the current event loop."""

    def __init__(
        self,
        state: CollectorState,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self._state = state
        self._ssl_context = ssl_context
        self._host = host
        self._port = port
        self._runner: Optional[web.AppRunner] = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port (useful with ``port=0``)."""
        runner = web.AppRunner(
            create_app(self._state, self._host),
            access_log=None,
            handle_signals=False,
            # Bodies are decompressed by the collector itself, with a size cap.
            auto_decompress=False,
            # In-flight requests get this long to finish (and be stored) on stop.
            shutdown_timeout=2.0,
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, self._host, self._port, reuse_address=True, ssl_context=self._ssl_context
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        return int(runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
