"""The collector's side of journy.io's REST API (``https://api.journy.io``): every path
of its OpenAPI document, over the collector's store. See docs/collector.md, "REST API".

Every answer carries ``X-RateLimit-Limit`` / ``X-RateLimit-Remaining`` and the document's
envelope ``{"meta": {"requestId", "status"}, ...}``; a refused body answers 400 with
``{"errors": {"fields": {...}, "parameters": {"header", "query", "path"}}}``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from concurrent.futures import Future
from datetime import datetime
from typing import (
    Any,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    NamedTuple,
    Optional,
    TypeVar,
    Union,
)

import orjson
from aiohttp import web

from journy_analytics.collector import _rest_store as ops
from journy_analytics.collector._faults import Decision, FaultInjector
from journy_analytics.collector._ingest import MAX_BODY_BYTES
from journy_analytics.collector._rest_auth import (
    DEFAULT_API_RATE_LIMIT,
    OPERATION_PERMISSIONS,
    ApiKey,
    ApiKeys,
    RateLimit,
    RateLimiter,
    parse_api_key,
    parse_rate_limit,
)
from journy_analytics.collector._store import Store

__all__ = ["MAX_USERS_PER_CALL", "RestSettings", "add_rest_routes"]

T = TypeVar("T")
_log = logging.getLogger("journy_analytics.collector")

# journy.io's documented limit on /accounts/users/add and /remove (stated in prose only).
MAX_USERS_PER_CALL = 100

# Statuses the document lists per operation beyond its success: where it lists no 403
# (memberships), a switched-off key gets 401 instead, so every answer is one it documents.
_NO_403 = {("POST", "/accounts/users/add"), ("POST", "/accounts/users/remove")}


class RestSettings:
    """The REST API's configuration: accepted API keys (``None``: any non-empty key with
    every permission), the per-key rate limit, and the websites that have a snippet
    (``None``: every domain).

    Keys and the limit are written as on the command line or given parsed:
    ``RestSettings(api_keys=["k1", "k2:ReadEvents"], rate_limit="50/s")``.
    """

    def __init__(
        self,
        api_keys: Optional[Iterable[Union[str, ApiKey]]] = None,
        rate_limit: Union[str, RateLimit] = DEFAULT_API_RATE_LIMIT,
        websites: Optional[Iterable[str]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        keys = None
        if api_keys is not None:
            keys = [k if isinstance(k, ApiKey) else parse_api_key(k) for k in api_keys]
        if isinstance(rate_limit, str):
            rate_limit = parse_rate_limit(rate_limit)
        self.keys = ApiKeys(keys)
        self.limiter = RateLimiter(rate_limit, clock)
        self.websites = None if websites is None else frozenset(w.lower() for w in websites)


class _Invalid(Exception):
    def __init__(
        self, fields: Optional[dict[str, str]] = None, query: Optional[dict[str, str]] = None
    ) -> None:
        super().__init__("invalid request")
        self.fields = fields or {}
        self.query = query or {}


class _Answer(NamedTuple):
    status: int
    message: Optional[str] = None
    data: Any = None


# -- the document's formats ------------------------------------------------------------

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"^(?:{_LABEL}\.)+{_LABEL}$")
_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}(?::?\d{2})?)?)?$"
)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def is_datetime(value: Any) -> bool:
    """ISO 8601: a date, or a date and time with an optional zone (``Z``, ``+02:00``)."""
    if not isinstance(value, str):
        return False
    match = _DATETIME.match(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        return False
    return True


def is_domain(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 253 and bool(_DOMAIN.match(value))


# -- validating bodies -----------------------------------------------------------------


def _object(value: Any, where: str, errors: dict[str, str]) -> Optional[dict[str, Any]]:
    if not isinstance(value, dict):
        errors[where] = "must be an object" if value is not None else "is required"
        return None
    return value


def _user(value: Any, where: str, errors: dict[str, str]) -> None:
    ident = _object(value, where, errors)
    if ident is None:
        return
    if "userId" not in ident and "email" not in ident:
        errors[where] = "needs a userId, an email or both"
    if "userId" in ident and not _text(ident["userId"]):
        errors[f"{where}.userId"] = "must be a non-empty string"
    if "email" in ident and not (isinstance(ident["email"], str) and _EMAIL.match(ident["email"])):
        errors[f"{where}.email"] = "must be an email address"


def _account(value: Any, where: str, errors: dict[str, str]) -> None:
    ident = _object(value, where, errors)
    if ident is None:
        return
    if "accountId" not in ident and "domain" not in ident:
        errors[where] = "needs an accountId, a domain or both"
    if "accountId" in ident and not _text(ident["accountId"]):
        errors[f"{where}.accountId"] = "must be a non-empty string"
    if "domain" in ident and not is_domain(ident["domain"]):
        errors[f"{where}.domain"] = "must be a domain name such as acme-inc.com"


def _properties(value: Any, where: str, errors: dict[str, str]) -> None:
    props = _object(value, where, errors)
    for name, item in (props or {}).items():
        if item is None or isinstance(item, (str, bool, int, float)):
            continue
        if isinstance(item, list) and all(_text(v) for v in item):
            continue
        errors[f"{where}.{name}"] = (
            "must be a string, boolean, number, ISO 8601 datetime, list of non-empty "
            "strings, or null (deletes the property)"
        )


def _metadata(value: Any, where: str, errors: dict[str, str]) -> None:
    meta = _object(value, where, errors)
    for name, item in (meta or {}).items():
        if not isinstance(item, (str, bool, int, float)):
            errors[f"{where}.{name}"] = "must be a string, boolean, number or ISO 8601 datetime"


def _members(body: dict[str, Any], errors: dict[str, str]) -> None:
    _account(body.get("account"), "account", errors)
    users = body.get("users")
    if not isinstance(users, list):
        errors["users"] = "must be a list of {identification: {userId, email}}"
        return
    if len(users) > MAX_USERS_PER_CALL:
        errors["users"] = (
            f"has {len(users)} users; journy.io takes at most {MAX_USERS_PER_CALL} per call "
            "(split the list)"
        )
    for i, item in enumerate(users[: MAX_USERS_PER_CALL + 1]):
        entry = _object(item, f"users.{i}", errors)
        if entry is not None:
            _user(entry.get("identification"), f"users.{i}.identification", errors)


def _track(body: dict[str, Any], errors: dict[str, str]) -> None:
    ident = _object(body.get("identification"), "identification", errors)
    if ident is not None:
        if "user" not in ident and "account" not in ident:
            errors["identification"] = "needs a user, an account or both"
        if "user" in ident:
            _user(ident["user"], "identification.user", errors)
        if "account" in ident:
            _account(ident["account"], "identification.account", errors)
    if not _text(body.get("name")):
        errors["name"] = "must be a non-empty event name"
    if "triggeredAt" in body and not is_datetime(body["triggeredAt"]):
        errors["triggeredAt"] = "must be an ISO 8601 datetime such as 2024-05-01T12:00:00Z"
    if "metadata" in body:
        _metadata(body["metadata"], "metadata", errors)


def _validate(call: str, body: dict[str, Any]) -> None:
    errors: dict[str, str] = {}
    if call == "POST /users/upsert":
        _user(body.get("identification"), "identification", errors)
        if "properties" in body:
            _properties(body["properties"], "properties", errors)
    elif call == "POST /accounts/upsert":
        _account(body.get("identification"), "identification", errors)
        if "properties" in body:
            _properties(body["properties"], "properties", errors)
    elif call in ("POST /accounts/users/add", "POST /accounts/users/remove"):
        _members(body, errors)
    elif call in ("POST /track", "POST /events"):
        _track(body, errors)
    elif call == "POST /link":
        if not _text(body.get("deviceId")):
            errors["deviceId"] = "must be the non-empty __journey cookie value"
        _user(body.get("identification"), "identification", errors)
    elif call == "DELETE /users":
        _user(body.get("identification"), "identification", errors)
    elif call == "DELETE /accounts":
        _account(body.get("identification"), "identification", errors)
    if errors:
        raise _Invalid(errors)


# -- the operations --------------------------------------------------------------------


class _Call(NamedTuple):
    request: web.Request
    key: ApiKey
    body: dict[str, Any]
    raw: bytes
    store: Store
    settings: RestSettings
    on_stored: Callable[[], None]


async def _wait(future: Future[T]) -> T:
    return await asyncio.wrap_future(future)


def _shown_headers(request: web.Request) -> dict[str, str]:
    secret = ("x-api-key", "authorization", "proxy-authorization", "cookie")
    return {
        str(k): ("[redacted]" if k.lower() in secret else v) for k, v in request.headers.items()
    }


def _meta(call: _Call) -> dict[str, Any]:
    return {
        "method": call.request.method,
        "path": call.request.path,
        "headers": _shown_headers(call.request),
        "size": len(call.raw),
        "gzip": False,
        "retry_count": None,
    }


_MESSAGES = {
    "POST /users/upsert": "User will be created or updated",
    "POST /accounts/upsert": "Account will be created or updated",
    "POST /accounts/users/add": "Users will be added to the account",
    "POST /track": "Event will be tracked",
    "POST /events": "Event will be tracked (POST /events is deprecated: use POST /track)",
}


async def _store_events(call: _Call, name: str) -> _Answer:
    await _wait(call.store.rest_write(ops.store_events, name, call.body, _meta(call), ingest=True))
    call.on_stored()
    return _Answer(201, _MESSAGES[name])


async def _remove_members(call: _Call) -> _Answer:
    await _wait(call.store.rest_write(ops.remove_members, call.body))
    return _Answer(204)


async def _link(call: _Call) -> _Answer:
    await _wait(call.store.rest_write(ops.link, call.body, _meta(call), ingest=True))
    call.on_stored()
    return _Answer(201, "Device will be linked to the user")


async def _delete(call: _Call, what: str) -> _Answer:
    fn = ops.delete_user if what == "User" else ops.delete_account
    await _wait(call.store.rest_write(fn, call.body))
    call.on_stored()
    return _Answer(202, f"{what} will be deleted")


async def _read(call: _Call, fn: Callable[[Any], Any]) -> _Answer:
    return _Answer(200, data=await _wait(call.store.rest_read(fn)))


_SEGMENTS = {
    "users": [{"id": "all-users", "name": "All users"}],
    "accounts": [{"id": "all-accounts", "name": "All accounts"}],
}


async def _segments(call: _Call, kind: str) -> _Answer:
    return _Answer(200, data=_SEGMENTS[kind])


async def _snippet(call: _Call) -> _Answer:
    domain = call.request.query.get("domain")
    if domain is None:
        raise _Invalid(query={"domain": "is required (the website's domain, e.g. acme-inc.com)"})
    if not is_domain(domain):
        raise _Invalid(query={"domain": "must be a domain name such as acme-inc.com"})
    websites = call.settings.websites
    if websites is not None and domain.lower() not in websites:
        return _Answer(404, f"no website {domain!r} (this collector has --website for others)")
    site = uuid.uuid5(uuid.NAMESPACE_DNS, domain.lower())
    snippet = (
        "<script>\n"
        "(function(j,o,u,r,n,y){j[n]=j[n]||function(){(j[n].q=j[n].q||[]).push(arguments)};\n"
        "y=o.createElement(u);y.async=1;y.src=r;o.head.appendChild(y)})\n"
        "(window,document,'script','https://analytics.journy.io/cdn/tracker.js','journy');\n"
        f"journy('init', {{ trackerId: '{site}', domain: '{domain}' }});\n"
        "journy('pageview');\n"
        "</script>"
    )
    return _Answer(200, data={"domain": domain, "snippet": snippet})


async def _validate_key(call: _Call) -> _Answer:
    return _Answer(200, data={"permissions": list(call.key.permissions)})


_Operation = Callable[[_Call], Awaitable[_Answer]]

_OPERATIONS: dict[tuple[str, str], _Operation] = {
    ("DELETE", "/accounts"): lambda c: _delete(c, "Account"),
    ("POST", "/accounts/upsert"): lambda c: _store_events(c, "POST /accounts/upsert"),
    ("POST", "/accounts/users/add"): lambda c: _store_events(c, "POST /accounts/users/add"),
    ("POST", "/accounts/users/remove"): _remove_members,
    ("GET", "/events"): lambda c: _read(c, ops.event_types),
    ("POST", "/events"): lambda c: _store_events(c, "POST /events"),
    ("POST", "/link"): _link,
    ("GET", "/properties/accounts"): lambda c: _read(c, ops.account_properties),
    ("GET", "/properties/users"): lambda c: _read(c, ops.user_properties),
    ("GET", "/segments/accounts"): lambda c: _segments(c, "accounts"),
    ("GET", "/segments/users"): lambda c: _segments(c, "users"),
    ("POST", "/track"): lambda c: _store_events(c, "POST /track"),
    ("GET", "/tracking/snippet"): _snippet,
    ("DELETE", "/users"): lambda c: _delete(c, "User"),
    ("POST", "/users/upsert"): lambda c: _store_events(c, "POST /users/upsert"),
    ("GET", "/validate"): _validate_key,
}


# -- the HTTP side ---------------------------------------------------------------------


def _response(
    answer: _Answer,
    request_id: str,
    rate: tuple[int, int],
    errors: Optional[dict[str, Any]] = None,
    headers: Optional[Mapping[str, str]] = None,
) -> web.Response:
    shown = {"X-RateLimit-Limit": str(rate[0]), "X-RateLimit-Remaining": str(rate[1])}
    shown.update(headers or {})
    if answer.status == 204:
        # The document declares a JSON body for this 204; HTTP forbids one (RFC 9110).
        return web.Response(status=204, headers=shown)
    body: dict[str, Any] = {"meta": {"requestId": request_id, "status": answer.status}}
    if answer.message is not None:
        body["message"] = answer.message
    if answer.data is not None:
        body["data"] = answer.data
    if errors is not None:
        body["errors"] = errors
    return web.Response(
        body=orjson.dumps(body),
        status=answer.status,
        content_type="application/json",
        headers=shown,
    )


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _Invalid({"body": f"is over {MAX_BODY_BYTES} bytes"})
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            # read(n) answers what has arrived, up to n: a large body takes several.
            chunk = await request.content.read(64 * 1024)
        except (ConnectionError, asyncio.IncompleteReadError):
            raise _Invalid({"body": "the connection closed before the body was read"}) from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _Invalid({"body": f"is over {MAX_BODY_BYTES} bytes"})
        chunks.append(chunk)


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        raise _Invalid({"body": "is not valid JSON"}) from None
    if not isinstance(body, dict):
        raise _Invalid({"body": "must be a JSON object" if body is not None else "is required"})
    return body


def _endpoint(
    method: str,
    path: str,
    settings: RestSettings,
    store: Store,
    on_stored: Callable[[], None],
    faults: Optional[FaultInjector],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    permission = OPERATION_PERMISSIONS[(method, path)]
    operation = _OPERATIONS[(method, path)]
    name = f"{method} {path}"
    limiter = settings.limiter
    limit = limiter.rate.limit

    async def answer(request: web.Request, request_id: str) -> tuple[web.Response, bytes]:
        raw = b""
        header = request.headers.get("X-Api-Key")
        key = settings.keys.find(header)
        if key is None:
            message = (
                "no API key: send it in the X-Api-Key header"
                if not header
                else "unknown API key (this collector takes the keys given with --api-key)"
            )
            return _response(_Answer(401, message), request_id, (limit, limit)), raw
        if not key.enabled:
            status = 401 if (method, path) in _NO_403 else 403
            message = "this API key is not enabled (--api-key KEY:disabled)"
            return _response(
                _Answer(status, message), request_id, (limit, limiter.remaining(key.key))
            ), raw
        if permission is not None and permission not in key.permissions:
            has = ", ".join(key.permissions) or "no permissions"
            message = (
                f"this API key lacks the {permission} permission that {name} needs (it has {has})"
            )
            return _response(
                _Answer(401, message), request_id, (limit, limiter.remaining(key.key))
            ), raw
        verdict = limiter.take(key.key)
        rate = (limit, verdict.remaining)
        if not verdict.allowed:
            return (
                _response(
                    _Answer(429, f"rate limit of {limiter.rate} requests reached: retry later"),
                    request_id,
                    rate,
                    headers={"Retry-After": str(verdict.retry_after)},
                ),
                raw,
            )
        try:
            body: dict[str, Any] = {}
            if method != "GET":
                raw = await _read_body(request)
                body = _parse(raw)
                _validate(name, body)
            result = await operation(_Call(request, key, body, raw, store, settings, on_stored))
        except _Invalid as exc:
            first = next(iter({**exc.fields, **exc.query}.items()))
            errors = {
                "fields": exc.fields,
                "parameters": {"header": {}, "query": exc.query, "path": {}},
            }
            message = f"Bad request: {first[0]} {first[1]}"
            return _response(_Answer(400, message), request_id, rate, errors=errors), raw
        return _response(result, request_id, rate), raw

    async def injected(request: web.Request, request_id: str, decision: Decision) -> web.Response:
        """The answer fault injection (``--fail-rate``, ``--retry-after-rate``...) gives."""
        rate = (limit, limiter.remaining(request.headers.get("X-Api-Key")))
        if decision.rate_limited:
            await _wait(store.count({"faults.rate_limited": 1}))
            return _response(
                _Answer(429, "rate limited (fault injected by the collector)"),
                request_id,
                rate,
                headers={"Retry-After": str(decision.retry_after)},
            )
        await _wait(store.count({"faults.failed": 1}))
        status = decision.fail_status or 500
        return _response(_Answer(status, "fault injected by the collector"), request_id, rate)

    async def endpoint(request: web.Request) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        decision = faults.decide() if faults is not None else Decision()
        if decision.delay > 0:
            await _wait(store.count({"faults.delayed": 1}))
            await asyncio.sleep(decision.delay)
        raw = b""
        if decision.rate_limited or decision.fail_status is not None:
            response = await injected(request, request_id, decision)
        elif decision.reset and not decision.reset_after_store:
            response = None
        else:
            try:
                response, raw = await answer(request, request_id)
            except Exception:
                _log.exception("collector: %s failed", name)
                response = _response(
                    _Answer(500, "the collector failed on this request (see its log)"),
                    request_id,
                    (limit, limiter.remaining(request.headers.get("X-Api-Key"))),
                )
        if decision.reset or response is None:
            await _wait(store.count({"faults.reset": 1}))
        message = ""
        if response is not None and isinstance(response.body, bytes):
            message = str(orjson.loads(response.body).get("message", ""))
        call = {
            "method": method,
            "path": path,
            "status": 0 if decision.reset else response.status if response else 0,
            "requestId": request_id,
            "message": "connection reset (fault injected)" if decision.reset else message,
            "body": raw or None,
        }
        await _wait(store.rest_write(lambda tx: ops.log_call(tx.conn, call)))
        if decision.reset or response is None:
            # The client sees the connection close with no answer.
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        return response

    return endpoint


async def _inspector_calls(request: web.Request) -> web.Response:
    store = request.app[_STORE]
    raw_before = request.query.get("before")
    try:
        before = int(raw_before) if raw_before else None
        limit = int(request.query.get("limit") or 100)
    except ValueError:
        raise web.HTTPBadRequest(reason="before and limit must be integers") from None
    page = await _wait(store.rest_read(ops.rest_calls, before, max(1, min(limit, 500))))
    return web.Response(body=orjson.dumps(page), content_type="application/json")


_STORE: web.AppKey[Store] = web.AppKey("journy_rest_store", Store)


def add_rest_routes(
    app: web.Application,
    settings: RestSettings,
    store: Store,
    on_stored: Callable[[], None],
    faults: Optional[FaultInjector] = None,
) -> None:
    """Serve every path of journy.io's REST API, and the inspector's feed of its calls
    (``GET /api/inspector/rest``). ``faults``, when given, injects faults into its calls
    as into the batch path's."""
    app[_STORE] = store
    for method, path in OPERATION_PERMISSIONS:
        endpoint = _endpoint(method, path, settings, store, on_stored, faults)
        app.router.add_route(method, path, endpoint)
    app.router.add_get("/api/inspector/rest", _inspector_calls)
