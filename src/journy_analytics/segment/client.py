"""``Client``: segment-analytics-python 2.x's client, with journy-analytics underneath.

Same constructor and method signatures (positional order included), the same
``(success, message)`` return, the same ``AssertionError`` for a malformed call. Every
setting is honoured or refused with an error saying why (docs/migrating.md has the table).
Delivery is journy-analytics' own: its queue, batching, retries and error reporting.
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
import numbers
import os
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from journy_analytics import _message as m
from journy_analytics._core import PROXY_FROM_ENV, RetryPolicy
from journy_analytics._exceptions import DeliveryError, ValidationError
from journy_analytics._logging import logger
from journy_analytics.client import DEFAULT_HOST, Analytics
from journy_analytics.segment._proxy import proxy_for

__all__ = ["DEFAULT_HOST", "Client", "SegmentValidationError"]

# journy.io serves Segment's batch API under /backend: segment's ``host + "/v1/batch"``
# becomes /backend/v1/batch there. Any other host (your proxy, the local collector) gets
# segment's shape unchanged.
_JOURNY_HOSTS = frozenset({"analyze.journy.io"})
_SEGMENT_PATH = "/v1/batch"
_JOURNY_PATH = "/backend/v1/batch"

# Segment's own defaults, for what it did and journy-analytics does differently.
_SEGMENT_MAX_TOTAL_BACKOFF = 43200
_SEGMENT_MAX_RATE_LIMIT = 1800
_SEGMENT_OAUTH_SERVER = "https://oauth2.segment.io"
_SEGMENT_OAUTH_SCOPE = "tracking_api:write"

ID_TYPES = (numbers.Number, str)

_SETTING_NAMES = (
    ("max_events_in_batch", "upload_size"),
    ("flush_interval", "upload_interval"),
    ("http_request_timeout", "timeout"),
    ("max_concurrent_requests", "thread"),
)

# The keys segment's returned message always has (None where unset), per type.
_COMMON = ("integrations", "anonymousId", "timestamp", "context", "type", "userId", "messageId")
_SHAPE: Dict[str, Tuple[str, ...]] = {
    "identify": (*_COMMON, "traits"),
    "track": (*_COMMON, "properties", "event"),
    "alias": (*_COMMON, "previousId"),
    "group": (*_COMMON, "groupId", "traits"),
    "page": (*_COMMON, "properties", "category", "name"),
    "screen": (*_COMMON, "properties", "category", "name"),
}


class SegmentValidationError(ValidationError, AssertionError):
    """A malformed call. An ``AssertionError`` as segment's ``require()`` raised, and a
    journy-analytics ``ValidationError`` (a ``ValueError``)."""


def require(name: str, value: Any, data_type: Any) -> None:
    if not isinstance(value, data_type):
        kinds = data_type if isinstance(data_type, tuple) else (data_type,)
        expected = " or ".join(k.__name__ for k in kinds)
        raise SegmentValidationError(f"{name} must be a {expected}, got: {value!r}")


def _stringify(value: Any) -> Optional[str]:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _timestamp(value: Any) -> Any:
    """segment's guess for a naive datetime: made by ``datetime.now()`` a moment ago means
    local time; any other naive one is UTC."""
    if value is None:
        return None
    require("timestamp", value, (_dt.datetime, _dt.date, str))
    if (
        isinstance(value, _dt.datetime)
        and value.tzinfo is None
        and (_dt.datetime.now() - value).total_seconds() < 5
    ):
        return value.astimezone()
    return value


def _endpoint(host: Optional[str]) -> Tuple[str, str]:
    """(host, path) for our client from a segment-style ``host``."""
    given = host or os.environ.get("JOURNY_HOST") or DEFAULT_HOST
    if not isinstance(given, str):
        raise SegmentValidationError(f"host must be a str URL, got: {given!r}")
    given = given.strip().rstrip("/")
    parts = urlsplit(given)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SegmentValidationError(
            f"host={given!r} is not an http(s) URL; leave it unset for journy.io, or pass "
            "e.g. 'https://track.example.com'"
        )
    base = f"{parts.scheme}://{parts.netloc}"
    if parts.path:
        return base, parts.path + _SEGMENT_PATH
    if parts.hostname in _JOURNY_HOSTS:
        return base, _JOURNY_PATH
    return base, _SEGMENT_PATH


class _QueueView:
    """What segment's ``client.queue`` was used for: ``maxsize``, ``qsize()`` (events not
    yet settled: queued, in flight or waiting to retry), ``empty()``, ``full()``, ``join()``."""

    def __init__(self, analytics: Analytics, maxsize: int) -> None:
        self._analytics = analytics
        self.maxsize = maxsize

    def qsize(self) -> int:
        s = self._analytics.stats()
        return int(s["queued"]) + int(s["in_flight"]) + int(s.get("waiting_to_retry", 0))

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return self.qsize() >= self.maxsize

    def join(self) -> None:
        self._analytics.flush()


class _ConsumerView:
    """Read-only stand-in for segment's consumer thread: its settings and ``is_alive()``."""

    def __init__(self, client: Client, retries: int, upload_size: int, upload_interval: float):
        self._client = client
        self.retries = retries
        self.timeout = client.timeout
        self.upload_size = upload_size
        self.upload_interval = upload_interval

    def is_alive(self) -> bool:
        return not self._client.analytics.closed


class Client:
    """segment-analytics-python's ``Client``; ``client.analytics`` is the journy-analytics
    client underneath (plugins, ``stats()``, ``on('error', ...)``)."""

    class DefaultConfig:
        write_key = None
        host = None
        on_error = None
        debug = False
        log_handler = None
        send = True
        sync_mode = False
        max_queue_size = 10000
        gzip = False
        timeout = 15
        max_retries = 10
        max_total_backoff_duration = _SEGMENT_MAX_TOTAL_BACKOFF
        max_rate_limit_duration = _SEGMENT_MAX_RATE_LIMIT
        proxies = None
        thread = 1
        upload_interval = 0.5
        upload_size = 100
        oauth_client_id = None
        oauth_client_key = None
        oauth_key_id = None
        oauth_auth_server = _SEGMENT_OAUTH_SERVER
        oauth_scope = _SEGMENT_OAUTH_SCOPE

    log = logger

    def __init__(
        self,
        write_key: Any = DefaultConfig.write_key,
        host: Optional[str] = DefaultConfig.host,
        debug: bool = DefaultConfig.debug,
        max_queue_size: int = DefaultConfig.max_queue_size,
        send: bool = DefaultConfig.send,
        on_error: Any = DefaultConfig.on_error,
        gzip: bool = DefaultConfig.gzip,
        max_retries: int = DefaultConfig.max_retries,
        sync_mode: bool = DefaultConfig.sync_mode,
        timeout: float = DefaultConfig.timeout,
        proxies: Optional[Mapping[str, str]] = DefaultConfig.proxies,
        thread: int = DefaultConfig.thread,
        upload_size: int = DefaultConfig.upload_size,
        upload_interval: float = DefaultConfig.upload_interval,
        log_handler: Optional[logging.Handler] = DefaultConfig.log_handler,
        oauth_client_id: Optional[str] = DefaultConfig.oauth_client_id,
        oauth_client_key: Optional[str] = DefaultConfig.oauth_client_key,
        oauth_key_id: Optional[str] = DefaultConfig.oauth_key_id,
        oauth_auth_server: str = DefaultConfig.oauth_auth_server,
        oauth_scope: str = DefaultConfig.oauth_scope,
        max_total_backoff_duration: float = DefaultConfig.max_total_backoff_duration,
        max_rate_limit_duration: float = DefaultConfig.max_rate_limit_duration,
    ) -> None:
        require("write_key", write_key, str)
        _refuse_oauth(
            oauth_client_id, oauth_client_key, oauth_key_id, oauth_auth_server, oauth_scope
        )
        if max_total_backoff_duration is None or max_total_backoff_duration < 0:
            raise ValueError("max_total_backoff_duration must be a non-negative number")
        if max_rate_limit_duration is None or max_rate_limit_duration < 0:
            raise ValueError("max_rate_limit_duration must be a non-negative number")
        if max_rate_limit_duration != _SEGMENT_MAX_RATE_LIMIT:
            raise ValueError(
                "max_rate_limit_duration is not supported: journy-analytics bounds every "
                "retry, rate-limited or not, by max_total_backoff_duration (and one "
                "Retry-After by 300 s); leave max_rate_limit_duration at its default"
            )
        if on_error is not None and on_error is not False and not callable(on_error):
            raise ValueError(
                "on_error must be callable as on_error(error, items), "
                f"not {type(on_error).__name__}"
            )
        if isinstance(thread, bool) or not isinstance(thread, int) or thread < 1:
            raise ValueError(f"thread must be an int of at least 1, not {thread!r}")

        self.write_key = write_key
        self.host = host
        self.on_error = on_error
        self.debug = debug
        self.send = send
        self.sync_mode = sync_mode
        self.gzip = gzip
        self.timeout = timeout
        self.proxies = proxies
        self.max_total_backoff_duration = max_total_backoff_duration
        self.max_rate_limit_duration = max_rate_limit_duration

        if log_handler:
            self.log.addHandler(log_handler)
        if debug:
            self.log.setLevel(logging.DEBUG)
            if not log_handler:
                _add_debug_handler(self.log)

        base, path = _endpoint(host)
        # As requests does: an entry of proxies for the endpoint's scheme wins, otherwise
        # HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY from the environment.
        proxy = (proxy_for(proxies, base) if proxies else None) or PROXY_FROM_ENV
        if sync_mode:
            # segment's sync_mode makes one POST per call, no retry: a failed attempt is final
            # at once (deadline 0 ends an outage too), so the call can report it.
            policy = RetryPolicy(max_retries=0, deadline=0.0)
        else:
            policy = RetryPolicy(
                max_retries=max_retries, deadline=float(max_total_backoff_duration)
            )
        try:
            self.analytics = Analytics(
                write_key,
                host=base,
                path=path,
                max_retries=max_retries,
                max_events_in_batch=upload_size,
                flush_interval=upload_interval,
                http_request_timeout=timeout,
                disable=not send,
                max_queue_size=max_queue_size,
                proxy=proxy,
                gzip=bool(gzip),
                max_concurrent_requests=thread,
                retry_policy=policy,
            )
        except ValueError as exc:
            # Name the setting as the caller spelled it.
            message = str(exc)
            for ours, theirs in _SETTING_NAMES:
                message = message.replace(ours, theirs)
            raise ValueError(message) from None
        if on_error:
            handler = on_error

            def report(error: DeliveryError) -> None:
                handler(error, list(error.events))

            self.analytics.on("error", report)
        self.queue = _QueueView(self.analytics, max_queue_size)
        self.consumers: Optional[List[_ConsumerView]] = (
            None if sync_mode else [_ConsumerView(self, max_retries, upload_size, upload_interval)]
        )

    def __repr__(self) -> str:
        return f"Client(host={self.host!r}, send={self.send}, sync_mode={self.sync_mode})"

    # -- segment's event methods, in segment's positional order ------------------------------

    def identify(
        self,
        user_id: Any = None,
        traits: Any = None,
        context: Any = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Any = None,
        message_id: Any = None,
    ) -> Tuple[bool, Dict[str, Any]]:
        traits, context, integrations = traits or {}, context or {}, integrations or {}
        _require_user(user_id, anonymous_id)
        require("traits", traits, dict)
        _require_common(context, integrations)
        return self._enqueue(
            m.build_identify,
            user_id=_stringify(user_id),
            anonymous_id=_stringify(anonymous_id),
            traits=traits,
            timestamp=_timestamp(timestamp),
            context=context,
            integrations=integrations,
            message_id=_stringify(message_id),
        )

    def track(
        self,
        user_id: Any = None,
        event: Any = None,
        properties: Any = None,
        context: Any = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Any = None,
        message_id: Any = None,
    ) -> Tuple[bool, Dict[str, Any]]:
        properties, context, integrations = properties or {}, context or {}, integrations or {}
        _require_user(user_id, anonymous_id)
        require("properties", properties, dict)
        require("event", event, str)
        _require_common(context, integrations)
        return self._enqueue(
            m.build_track,
            user_id=_stringify(user_id),
            anonymous_id=_stringify(anonymous_id),
            event=event,
            properties=properties,
            timestamp=_timestamp(timestamp),
            context=context,
            integrations=integrations,
            message_id=_stringify(message_id),
        )

    def alias(
        self,
        previous_id: Any = None,
        user_id: Any = None,
        context: Any = None,
        timestamp: Any = None,
        integrations: Any = None,
        message_id: Any = None,
    ) -> Tuple[bool, Dict[str, Any]]:
        context, integrations = context or {}, integrations or {}
        require("previous_id", previous_id, ID_TYPES)
        require("user_id", user_id, ID_TYPES)
        _require_common(context, integrations)
        return self._enqueue(
            m.build_alias,
            user_id=_stringify(user_id),
            previous_id=_stringify(previous_id),
            timestamp=_timestamp(timestamp),
            context=context,
            integrations=integrations,
            message_id=_stringify(message_id),
        )

    def group(
        self,
        user_id: Any = None,
        group_id: Any = None,
        traits: Any = None,
        context: Any = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Any = None,
        message_id: Any = None,
    ) -> Tuple[bool, Dict[str, Any]]:
        traits, context, integrations = traits or {}, context or {}, integrations or {}
        _require_user(user_id, anonymous_id)
        require("group_id", group_id, ID_TYPES)
        require("traits", traits, dict)
        _require_common(context, integrations)
        return self._enqueue(
            m.build_group,
            user_id=_stringify(user_id),
            anonymous_id=_stringify(anonymous_id),
            group_id=_stringify(group_id),
            traits=traits,
            timestamp=_timestamp(timestamp),
            context=context,
            integrations=integrations,
            message_id=_stringify(message_id),
        )

    def page(
        self,
        user_id: Any = None,
        category: Any = None,
        name: Any = None,
        properties: Any = None,
        context: Any = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Any = None,
        message_id: Any = None,
    ) -> Tuple[bool, Dict[str, Any]]:
        return self._page(
            "page",
            user_id,
            category,
            name,
            properties,
            context,
            timestamp,
            anonymous_id,
            integrations,
            message_id,
        )

    def screen(
        self,
        user_id: Any = None,
        category: Any = None,
        name: Any = None,
        properties: Any = None,
        context: Any = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Any = None,
        message_id: Any = None,
    ) -> Tuple[bool, Dict[str, Any]]:
        return self._page(
            "screen",
            user_id,
            category,
            name,
            properties,
            context,
            timestamp,
            anonymous_id,
            integrations,
            message_id,
        )

    def _page(
        self,
        kind: str,
        user_id: Any,
        category: Any,
        name: Any,
        properties: Any,
        context: Any,
        timestamp: Any,
        anonymous_id: Any,
        integrations: Any,
        message_id: Any,
    ) -> Tuple[bool, Dict[str, Any]]:
        properties, context, integrations = properties or {}, context or {}, integrations or {}
        _require_user(user_id, anonymous_id)
        require("properties", properties, dict)
        if name:
            require("name", name, str)
        if category:
            require("category", category, str)
        _require_common(context, integrations)

        build = functools.partial(m.build_page, kind=kind)

        return self._enqueue(
            build,
            user_id=_stringify(user_id),
            anonymous_id=_stringify(anonymous_id),
            category=category or None,
            name=name or None,
            properties=properties,
            timestamp=_timestamp(timestamp),
            context=context,
            integrations=integrations,
            message_id=_stringify(message_id),
        )

    def _enqueue(self, build: Callable[..., Dict[str, Any]], **fields: Any) -> Tuple[bool, Any]:
        """Build, run the plugins, queue; ``(queued, message)`` as segment returns it."""
        outcome: Optional[_SyncOutcome] = None
        if self.sync_mode and self.send:
            outcome = _SyncOutcome()
        try:
            message = build(**fields)
            accepted = self.analytics._enqueue(message, outcome)
        except SegmentValidationError:
            raise
        except ValidationError as exc:
            raise SegmentValidationError(str(exc)) from None
        plugins = self.analytics._plugins
        final = plugins.last_final() if plugins is not None else message
        dropped = final is None
        if final is None:  # a plugin dropped it on purpose (its callback is never called)
            final = message
        shaped = dict.fromkeys(_SHAPE.get(final.get("type", ""), ()))
        shaped.update(final)
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("queueing: %s", shaped)
        if accepted and outcome is not None and not dropped:
            self._wait_sync(outcome)
        return accepted, shaped

    def _wait_sync(self, outcome: _SyncOutcome) -> None:
        """segment's sync_mode: the call returns once its one attempt succeeded, and raises
        if it failed, within ``timeout`` (the attempt's own bound) plus a moment for the
        hand-off to the sender thread."""
        limit = float(self.timeout) + _SYNC_GRACE
        deadline = time.monotonic() + limit
        self.analytics.flush(limit)
        if not outcome.done.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(
                f"sync_mode: the event was not sent within timeout={self.timeout:g}s (events "
                "queued before it were still being delivered); it stays queued, and if it "
                "cannot be delivered on_error is told"
            )
        if outcome.error is not None:
            raise outcome.error

    # -- lifecycle ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Block until everything queued so far is delivered or finally failed."""
        self.analytics.flush()
        self.log.debug("flushed")

    def join(self) -> None:
        """Deliver what is queued and stop the client. Calls made after it are not sent
        (each is reported, as a call after close)."""
        self.analytics.close_and_flush()

    def shutdown(self) -> None:
        """Flush all messages and stop the client."""
        self.flush()
        self.join()

    # -- journy-analytics extras -------------------------------------------------------------

    def register(self, *plugins: Any) -> None:
        self.analytics.register(*plugins)

    def deregister(self, name: str) -> Any:
        return self.analytics.deregister(name)

    def stats(self) -> Dict[str, Any]:
        return self.analytics.stats()


# The sender thread's hand-off around the request that ``timeout`` bounds.
_SYNC_GRACE = 1.0


class _SyncOutcome:
    """The per-event callback of a sync_mode call: set once the event is settled."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: Optional[BaseException] = None

    def __call__(self, error: Optional[BaseException], message: Any) -> None:
        self.error = error
        self.done.set()


def _require_user(user_id: Any, anonymous_id: Any) -> None:
    require("user_id or anonymous_id", user_id or anonymous_id, ID_TYPES)


def _require_common(context: Any, integrations: Any) -> None:
    require("context", context, dict)
    require("integrations", integrations, dict)


def _refuse_oauth(client_id: Any, key: Any, key_id: Any, server: Any, scope: Any) -> None:
    if (
        client_id
        or key
        or key_id
        or server != _SEGMENT_OAUTH_SERVER
        or scope != _SEGMENT_OAUTH_SCOPE
    ):
        raise ValueError(
            "OAuth (oauth_client_id, oauth_client_key, oauth_key_id, oauth_auth_server, "
            "oauth_scope) is Segment's own authentication; journy.io authenticates with the "
            "write key alone: remove the oauth_* settings"
        )


_debug_handler: Optional[logging.Handler] = None


def _add_debug_handler(log: logging.Logger) -> None:
    """With Python's default logging setup only warnings show: ``debug=True`` adds one
    stderr handler (once per process, not once per client)."""
    global _debug_handler
    if _debug_handler is None:
        _debug_handler = logging.StreamHandler()
        _debug_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if _debug_handler not in log.handlers:
        log.addHandler(_debug_handler)
