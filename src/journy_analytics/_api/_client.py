"""``JournyAPI``: every path of journy.io's REST API, with the batch path's delivery rules.

One call is one logical request: validated before it goes (``ValidationError``), paced
from the rate-limit headers (``_pacing``), retried on 5xx and on no answer at all with
the SDK's ``RetryPolicy`` (backoff with jitter, ``max_retries`` answered failures, one
overall deadline), and held on 429 until the server allows it again (Retry-After, else
until the window has room). A 429 never counts against ``max_retries``: the pacing makes
it rare, and a bulk job must not lose a call to it.

Not used: the deprecated ``POST /events``. It takes the same event as ``POST /track``
minus datetime metadata, and journy.io's changelog replaced it with ``/track`` in
December 2021; offering both would only let a caller pick the worse one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import socket
import ssl
import time
from types import TracebackType
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    NoReturn,
    Optional,
    Tuple,
    Type,
    TypeVar,
)
from urllib.parse import quote, urljoin, urlsplit

import orjson

from journy_analytics._api import _body as b
from journy_analytics._api._errors import JournyAPIError, KeyInfo
from journy_analytics._api._pacing import Pacer
from journy_analytics._core import (
    PROXY_FROM_ENV,
    USER_AGENT,
    NetworkSettings,
    Outcome,
    ProxySetting,
    Response,
    RetryPolicy,
    StdlibHttpClient,
    explain_failure,
    parse_retry_after,
)
from journy_analytics._exceptions import NameResolutionError, ValidationError
from journy_analytics._logging import RateLimitedLog
from journy_analytics._settings import (
    check_transport_settings,
    positive_int,
    positive_number,
    warn_plain_http,
)

__all__ = ["DEFAULT_API_HOST", "AsyncJournyAPI", "JournyAPI"]

DEFAULT_API_HOST = "https://api.journy.io"

# The permission each path needs (the document's x-key-permissions), to say which one a
# key lacks on a 401.
_TRACK = "TrackData"
_log = RateLimitedLog(every=30.0)

T = TypeVar("T")


def _no_positional(method: str, args: Tuple[Any, ...]) -> None:
    if args:
        raise TypeError(f"{method}() takes keyword arguments only (got {len(args)} positional)")


class JournyAPI:
    """A client of journy.io's REST API (``X-Api-Key``). Thread-safe; share one.

    ``timeout`` bounds each attempt; ``max_retries`` counts answered failures (5xx);
    no answer at all is retried until the retry policy's deadline (600 s by default).
    ``rate_window`` is the rate limit's window in seconds (journy.io's is a minute).
    ``proxy``: ``PROXY_FROM_ENV`` (the default: ``HTTPS_PROXY`` / ``NO_PROXY``... as
    ``urllib`` reads them), ``None`` (never a proxy) or a URL such as
    ``"http://user:pass@proxy:3128"`` (wins over the environment). ``ssl_context``: the
    trust for https:// (a company CA). Both configure the default transport: not with
    ``http_client=``.
    """

    def __init__(
        self,
        *positional: NoReturn,
        api_key: str,
        host: str = DEFAULT_API_HOST,
        timeout: float = 10.0,
        max_retries: int = 3,
        retry_policy: Optional[RetryPolicy] = None,
        http_client: Optional[Any] = None,
        rate_window: float = 60.0,
        proxy: ProxySetting = PROXY_FROM_ENV,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        _no_positional("JournyAPI", positional)
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError(
                "api_key must be a non-empty str: create one in journy.io under Connections "
                "> API keys (it is not the write key of the batch SDK)"
            )
        parts = urlsplit(host.strip() if isinstance(host, str) else "")
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError(f"host={host!r} is not an http(s) base URL like {DEFAULT_API_HOST!r}")
        positive_number("timeout", timeout)
        positive_int("max_retries", max_retries, allow_zero=True)
        positive_number("rate_window", rate_window)
        if http_client is not None and not callable(getattr(http_client, "request", None)):
            raise ValueError(
                "http_client must have request(method, url, body, headers, timeout) "
                "returning journy_analytics.Response (StdlibHttpClient has it)"
            )
        check_transport_settings(http_client, proxy, ssl_context)
        network = NetworkSettings(proxy=proxy, ssl_context=ssl_context)
        self.host = host.strip().rstrip("/")
        # Named in failure messages: the host name, never a credential of the URL.
        self._server = parts.hostname
        warn_plain_http(parts.scheme, parts.hostname, "JournyAPI host", "API key")
        self.timeout = float(timeout)
        policy = retry_policy or RetryPolicy()
        self._policy = dataclasses.replace(policy, max_retries=max_retries)
        self._api_key = api_key.strip()
        self._owns_transport = http_client is None
        self._transport: Any = http_client or StdlibHttpClient(network=network)
        self._pacer = Pacer(window=float(rate_window))
        self._key_info: Optional[KeyInfo] = None
        self._closed = False
        self.requests = 0
        self.retried = 0
        self.rate_limited = 0

    def __repr__(self) -> str:
        # Never the API key: reprs end up in logs and error trackers.
        return f"JournyAPI(host={self.host!r}, timeout={self.timeout:g})"

    # -- users ---------------------------------------------------------------------------

    def upsert_user(
        self,
        *positional: NoReturn,
        user_id: Any = None,
        email: Optional[str] = None,
        properties: Optional[Mapping[str, Any]] = None,
    ) -> Dict[str, str]:
        """Create or update a user (``POST /users/upsert``). Returns the properties the
        server rejected, by name (empty when all were taken)."""
        _no_positional("upsert_user", positional)
        body: Dict[str, Any] = {"identification": b.user_identification(user_id, email)}
        props = b.property_map(properties)
        if props is not None:
            body["properties"] = props
        answer = self._call("POST", "/users/upsert", body, _TRACK)
        return _rejected(answer)

    def delete_user(self, *positional: NoReturn, user_id: Any = None, email: Any = None) -> None:
        """Delete a user and its data (``DELETE /users``); journy.io answers 202 and
        deletes in the background."""
        _no_positional("delete_user", positional)
        body = {"identification": b.user_identification(user_id, email)}
        self._call("DELETE", "/users", body, _TRACK)

    def link(
        self, *positional: NoReturn, device_id: str, user_id: Any = None, email: Any = None
    ) -> None:
        """Tie the web visitor of a ``__journey`` cookie to a user (``POST /link``), e.g.
        right after login."""
        _no_positional("link", positional)
        body = {
            "deviceId": b.non_empty(device_id, "device_id"),
            "identification": b.user_identification(user_id, email),
        }
        self._call("POST", "/link", body, _TRACK)

    # -- accounts ------------------------------------------------------------------------

    def upsert_account(
        self,
        *positional: NoReturn,
        account_id: Any = None,
        domain: Optional[str] = None,
        properties: Optional[Mapping[str, Any]] = None,
        members: Optional[Iterable[Mapping[str, Any]]] = None,
    ) -> Dict[str, str]:
        """Create or update an account (``POST /accounts/upsert``). ``members`` (dicts
        with ``user_id`` and/or ``email``) are then added with ``add_users_to_account``:
        the document's upsert body has no members field, only its description says one."""
        _no_positional("upsert_account", positional)
        ident = b.account_identification(account_id, domain)
        body: Dict[str, Any] = {"identification": ident}
        props = b.property_map(properties)
        if props is not None:
            body["properties"] = props
        users = None if members is None else b.membership_users(members, "members")
        answer = self._call("POST", "/accounts/upsert", body, _TRACK)
        if users:
            self._memberships("/accounts/users/add", ident, users)
        return _rejected(answer)

    def delete_account(
        self, *positional: NoReturn, account_id: Any = None, domain: Any = None
    ) -> None:
        """Delete an account (``DELETE /accounts``); 202, deleted in the background."""
        _no_positional("delete_account", positional)
        body = {"identification": b.account_identification(account_id, domain)}
        self._call("DELETE", "/accounts", body, _TRACK)

    def add_users_to_account(
        self,
        *positional: NoReturn,
        account_id: Any = None,
        domain: Any = None,
        users: Iterable[Mapping[str, Any]],
    ) -> None:
        """Add users (``[{"user_id": ...}, {"email": ...}]``) to an account
        (``POST /accounts/users/add``), 100 per request."""
        _no_positional("add_users_to_account", positional)
        ident = b.account_identification(account_id, domain)
        self._memberships("/accounts/users/add", ident, b.membership_users(users))

    def remove_users_from_account(
        self,
        *positional: NoReturn,
        account_id: Any = None,
        domain: Any = None,
        users: Iterable[Mapping[str, Any]],
    ) -> None:
        """Remove users from an account (``POST /accounts/users/remove``), 100 per
        request; journy.io keeps them, marked removed."""
        _no_positional("remove_users_from_account", positional)
        ident = b.account_identification(account_id, domain)
        self._memberships("/accounts/users/remove", ident, b.membership_users(users))

    def _memberships(self, path: str, account: Dict[str, str], users: List[Any]) -> None:
        # Each chunk is a request of its own: if a later one fails, the earlier ones stand
        # (adding or removing a member twice is harmless, so calling again is the fix).
        for start in range(0, len(users), b.MAX_USERS_PER_CALL):
            chunk = users[start : start + b.MAX_USERS_PER_CALL]
            self._call("POST", path, {"account": account, "users": chunk}, _TRACK)

    # -- events --------------------------------------------------------------------------

    def track(
        self,
        *positional: NoReturn,
        event: str,
        user_id: Any = None,
        email: Any = None,
        account_id: Any = None,
        domain: Any = None,
        metadata: Optional[Mapping[str, Any]] = None,
        timestamp: Any = None,
    ) -> None:
        """Record an event for a user, an account, or a user in an account
        (``POST /track``)."""
        _no_positional("track", positional)
        ident: Dict[str, Any] = {}
        if user_id is not None or email is not None:
            ident["user"] = b.user_identification(user_id, email)
        if account_id is not None or domain is not None:
            ident["account"] = b.account_identification(account_id, domain)
        if not ident:
            raise ValidationError(
                "track() needs a user (user_id/email), an account (account_id/domain) or both"
            )
        body: Dict[str, Any] = {"identification": ident, "name": b.event_name(event)}
        meta = b.metadata_map(metadata)
        if meta is not None:
            body["metadata"] = meta
        if timestamp is not None:
            body["triggeredAt"] = b.format_timestamp(timestamp, "timestamp")
        self._call("POST", "/track", body, _TRACK)

    # -- key, snippet and reads ----------------------------------------------------------

    def validate_key(self) -> KeyInfo:
        """The key's permissions (``GET /validate``)."""
        answer = self._call("GET", "/validate", None, None)
        data = answer.get("data")
        perms = data.get("permissions") if isinstance(data, dict) else None
        if not isinstance(perms, list):
            raise JournyAPIError("GET /validate answered without data.permissions")
        info = KeyInfo(frozenset(str(p) for p in perms))
        self._key_info = info
        return info

    def tracking_snippet(self, *positional: NoReturn, domain: str) -> str:
        """The JavaScript snippet of a website (``GET /tracking/snippet``)."""
        _no_positional("tracking_snippet", positional)
        name = b.domain_name(domain)
        answer = self._call(
            "GET", "/tracking/snippet?domain=" + quote(name, safe=""), None, "GetTrackingSnippet"
        )
        data = answer.get("data")
        snippet = data.get("snippet") if isinstance(data, dict) else None
        if not isinstance(snippet, str):
            raise JournyAPIError("GET /tracking/snippet answered without data.snippet")
        return snippet

    def events(self) -> List[Dict[str, Any]]:
        """The event types journy.io knows (``GET /events``): ``id``, ``name``, ``group``."""
        return self._read("/events", "ReadEvents")

    def user_properties(self) -> List[Dict[str, Any]]:
        """``GET /properties/users``: ``name``, ``label``, ``isComputed``, ``group``."""
        return self._read("/properties/users", "ReadProperties")

    def account_properties(self) -> List[Dict[str, Any]]:
        """``GET /properties/accounts``."""
        return self._read("/properties/accounts", "ReadProperties")

    def user_segments(self) -> List[Dict[str, Any]]:
        """``GET /segments/users``: ``id``, ``name``."""
        return self._read("/segments/users", "ReadSegments")

    def account_segments(self) -> List[Dict[str, Any]]:
        """``GET /segments/accounts``."""
        return self._read("/segments/accounts", "ReadSegments")

    def _read(self, path: str, permission: str) -> List[Dict[str, Any]]:
        # The document's read paths take no page parameter and answer the whole list.
        data = self._call("GET", path, None, permission).get("data")
        if not isinstance(data, list):
            raise JournyAPIError(f"GET {path} answered without a data list")
        return [item for item in data if isinstance(item, dict)]

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        if self._owns_transport:
            self._transport.close()

    def __enter__(self) -> JournyAPI:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def stats(self) -> Dict[str, Any]:
        return {
            "requests": self.requests,
            "retried": self.retried,
            "rate_limited": self.rate_limited,
            "paced_seconds": round(self._pacer.waited, 3),
            "rate_limit": self._pacer.limit,
        }

    # -- delivery ------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: Optional[Dict[str, Any]], permission: Optional[str]
    ) -> Dict[str, Any]:
        if self._closed:
            raise JournyAPIError(f"{method} {path}: this JournyAPI is closed")
        data = None if body is None else orjson.dumps(body)
        headers = {
            "X-Api-Key": self._api_key,
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        url = self.host + path
        label = f"{method} {path.split('?')[0]}"
        policy = self._policy
        started = time.monotonic()
        answered_failures = retries = throttled = 0
        while True:
            seq = self._pacer.acquire()
            self.requests += 1
            response: Optional[Response] = None
            error: Optional[BaseException] = None
            try:
                response = self._transport.request(method, url, data, headers, self.timeout)
            except Exception as exc:  # no answer: refused, reset, DNS, TLS, timeout
                error = exc
            if response is not None:
                self._pacer.observe(
                    seq,
                    response.header("X-RateLimit-Limit"),
                    response.header("X-RateLimit-Remaining"),
                )
                status = response.status
                if 200 <= status < 300:
                    return _json(response)
                if response.proxy is not None or 300 <= status < 400:
                    # The proxy's own refusal, or a redirect: no retry changes either.
                    raise self._network_error(label, response)
                if status == 429:
                    self.rate_limited += 1
                    throttled += 1
                    wait = parse_retry_after(response.header("Retry-After"), time.time())
                    if wait is None:
                        # Each 429 in a row waits twice as long, up to the window: a key
                        # that keeps hitting the limit gets blocked.
                        step = self._pacer.until_window_allows()
                        wait = min(self._pacer.window, step * 2 ** min(throttled - 1, 16))
                    wait = min(wait, policy.max_retry_after)
                    if time.monotonic() - started + wait > policy.deadline:
                        raise self._error(label, response, permission)
                    _log.log(
                        "429",
                        logging.WARNING,
                        "%s: rate limited (429); waiting %.1f s",
                        label,
                        wait,
                    )
                    self._pacer.pause(wait)
                    continue
                if policy.classify(status) is Outcome.DROP:
                    raise self._error(label, response, permission)
                answered_failures += 1
            failure = None
            if error is not None:
                failure = explain_failure(error, self._server)
                if _fails_at_once(error):
                    # A certificate nobody trusts, or a name that does not exist: retrying
                    # cannot fix either, and the hint is what the caller needs.
                    raise JournyAPIError(f"{label}: {failure.text}") from error
                if not failure.outage:
                    answered_failures += 1  # e.g. not HTTP: counts under max_retries
            decision = policy.decide(
                status=None if response is None else response.status,
                outage=failure is not None and failure.outage,
                answered_failures=answered_failures,
                retries=retries,
                elapsed=time.monotonic() - started,
                retry_after=None if response is None else response.header("Retry-After"),
                wall_now=time.time(),
            )
            if decision.outcome is not Outcome.RETRY:
                if response is not None:
                    raise self._error(label, response, permission, decision.why)
                assert failure is not None
                raise JournyAPIError(f"{label}: {failure.text}; {decision.why}") from error
            _log.log(
                f"retry:{label}",
                logging.WARNING,
                "%s failed (%s); retrying in %.1f s",
                label,
                f"HTTP {response.status}" if response is not None else type(error).__name__,
                decision.delay,
            )
            retries += 1
            self.retried += 1
            time.sleep(decision.delay)

    def _network_error(self, label: str, response: Response) -> JournyAPIError:
        status = response.status
        if response.proxy is not None:
            if status in (401, 407):  # tinyproxy answers a CONNECT with bad credentials 401
                reason = (
                    f"{label}: the proxy {response.proxy} refused the request ({status}: it "
                    "needs a user and password, or refused them): check the user and "
                    "password of the proxy setting (proxy=, or the HTTPS_PROXY / HTTP_PROXY "
                    "variable)"
                )
            else:
                reason = (
                    f"{label}: the proxy {response.proxy} refused to connect to "
                    f"{self._server} ({status})"
                )
            return JournyAPIError(reason, status=status)
        location = response.header("Location")
        if not location:
            reason = f"{label}: the server answered {status} (a redirect) without a Location"
        else:
            target = urljoin(self.host + "/", location)
            parts = urlsplit(target)
            reason = (
                f"{label}: the server answered {status}, a redirect to {target}: redirects "
                "are not followed (the API key must not go to another server); if that is "
                f"the right server, set host='{parts.scheme}://{parts.netloc}'"
            )
        return JournyAPIError(reason, status=status)

    def _error(
        self, label: str, response: Response, permission: Optional[str], why: str = ""
    ) -> JournyAPIError:
        answer = _json(response)
        message = _dict_get(answer, "message", str) or ""
        meta = _dict_get(answer, "meta", dict) or {}
        request_id = _dict_get(meta, "requestId", str)
        errors = _dict_get(answer, "errors", dict) or {}
        fields: Dict[str, Any] = _dict_get(errors, "fields", dict) or {}
        params: Dict[str, Any] = _dict_get(errors, "parameters", dict) or {}
        status = response.status
        if status == 400:
            detail = "; ".join(f"{k}: {v}" for k, v in fields.items())
            for part, errs in params.items():
                if isinstance(errs, dict):
                    detail += "".join(f"; {part} {k}: {v}" for k, v in errs.items())
            reason = f"{label}: 400 bad request: {detail.strip('; ') or message}"
        elif status == 401:
            reason = f"{label}: 401 unauthorised: " + self._permission_hint(permission)
        elif status == 403:
            reason = (
                f"{label}: 403: the API key is not enabled; enable it in journy.io "
                "(Connections > API keys) or use another"
            )
        elif status == 404:
            reason = f"{label}: 404 not found: {message or 'no such resource'}"
        else:
            reason = f"{label}: HTTP {status}: {message or 'no message'}" + (
                f"; {why}" if why else ""
            )
        return JournyAPIError(
            reason,
            status=status,
            message=message,
            fields=fields,
            parameters={k: v for k, v in params.items() if isinstance(v, dict)},
            request_id=request_id,
            permission=permission,
        )

    def _permission_hint(self, permission: Optional[str]) -> str:
        if permission is None:
            return "the API key is missing or not valid"
        info = self._key_info
        if info is None:
            try:
                info = self.validate_key()
            except JournyAPIError as exc:
                if exc.status == 401:
                    return "the API key is not valid (GET /validate refuses it too)"
                return f"the key needs the {permission} permission (its permissions are unknown)"
        if info.allows(permission):
            return (
                f"the key has {permission}, which this call needs; journy.io refused it "
                "anyway (a permission changed since validate_key()?)"
            )
        have = ", ".join(sorted(info.permissions)) or "none"
        return (
            f"the key lacks the {permission} permission this call needs (it has: {have}); "
            "add it to the key in journy.io"
        )


def _dict_get(mapping: Dict[str, Any], key: str, kind: Type[T]) -> Optional[T]:
    value = mapping.get(key)
    return value if isinstance(value, kind) else None


def _rejected(answer: Dict[str, Any]) -> Dict[str, str]:
    rejected = answer.get("rejected")
    if not isinstance(rejected, dict):
        return {}
    return {str(k): str(v) for k, v in rejected.items()}


def _json(response: Response) -> Dict[str, Any]:
    # A 204 may or may not carry the body the document declares for it; a proxy may
    # answer HTML: neither is an error of the call.
    if not response.body:
        return {}
    try:
        value = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


def _fails_at_once(error: BaseException) -> bool:
    """A certificate that is not trusted, or a host name the name server says does not
    exist (a DNS lookup that timed out or failed for now is an outage, and retried)."""
    seen = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        if isinstance(current, NameResolutionError):
            cause = current.__cause__
            return isinstance(cause, socket.gaierror) and cause.errno in _NO_SUCH_NAME
        current = current.__cause__ or current.__context__
    return False


class AsyncJournyAPI:
    """``JournyAPI`` for asyncio: the same methods as coroutines. Each call runs on a
    small thread pool of its own (``max_concurrent_requests``), so a waiting call (a
    retry, the rate limit) never blocks the event loop. Cancelling an awaiting task does
    not recall a request already sent."""

    def __init__(
        self,
        *positional: NoReturn,
        api_key: str,
        host: str = DEFAULT_API_HOST,
        timeout: float = 10.0,
        max_retries: int = 3,
        retry_policy: Optional[RetryPolicy] = None,
        http_client: Optional[Any] = None,
        rate_window: float = 60.0,
        max_concurrent_requests: int = 8,
        proxy: ProxySetting = PROXY_FROM_ENV,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        _no_positional("AsyncJournyAPI", positional)
        self._sync = JournyAPI(
            api_key=api_key,
            host=host,
            timeout=timeout,
            max_retries=max_retries,
            retry_policy=retry_policy,
            http_client=http_client,
            rate_window=rate_window,
            proxy=proxy,
            ssl_context=ssl_context,
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_concurrent_requests, thread_name_prefix="journy-api"
        )

    def __repr__(self) -> str:
        return f"Async{self._sync!r}"

    @property
    def host(self) -> str:
        return self._sync.host

    async def _run(self, fn: Callable[..., T], **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, **kwargs))

    async def upsert_user(self, **kwargs: Any) -> Dict[str, str]:
        return await self._run(self._sync.upsert_user, **kwargs)

    async def upsert_account(self, **kwargs: Any) -> Dict[str, str]:
        return await self._run(self._sync.upsert_account, **kwargs)

    async def add_users_to_account(self, **kwargs: Any) -> None:
        await self._run(self._sync.add_users_to_account, **kwargs)

    async def remove_users_from_account(self, **kwargs: Any) -> None:
        await self._run(self._sync.remove_users_from_account, **kwargs)

    async def track(self, **kwargs: Any) -> None:
        await self._run(self._sync.track, **kwargs)

    async def link(self, **kwargs: Any) -> None:
        await self._run(self._sync.link, **kwargs)

    async def delete_user(self, **kwargs: Any) -> None:
        await self._run(self._sync.delete_user, **kwargs)

    async def delete_account(self, **kwargs: Any) -> None:
        await self._run(self._sync.delete_account, **kwargs)

    async def validate_key(self) -> KeyInfo:
        return await self._run(self._sync.validate_key)

    async def tracking_snippet(self, **kwargs: Any) -> str:
        return await self._run(self._sync.tracking_snippet, **kwargs)

    async def events(self) -> List[Dict[str, Any]]:
        return await self._run(self._sync.events)

    async def user_properties(self) -> List[Dict[str, Any]]:
        return await self._run(self._sync.user_properties)

    async def account_properties(self) -> List[Dict[str, Any]]:
        return await self._run(self._sync.account_properties)

    async def user_segments(self) -> List[Dict[str, Any]]:
        return await self._run(self._sync.user_segments)

    async def account_segments(self) -> List[Dict[str, Any]]:
        return await self._run(self._sync.account_segments)

    def stats(self) -> Dict[str, Any]:
        return self._sync.stats()

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False)
        self._sync.close()

    async def __aenter__(self) -> AsyncJournyAPI:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.aclose()
