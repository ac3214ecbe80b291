"""``Analytics``: configuration, the event methods and the lifecycle. Nothing else.

Every event method validates and encodes the event in the caller's thread (so a bad call
raises at once and later changes to the caller's dicts cannot leak in) and hands the
bytes to the worker. It never blocks on the network and never raises for delivery.
"""

from __future__ import annotations

import atexit
import dataclasses
import ipaddress
import logging
import math
import os
import threading
import time
import weakref
from types import TracebackType
from typing import Any, Dict, Mapping, Optional, Type, Union
from urllib.parse import urlsplit

import orjson

from journy_analytics import _messages as m
from journy_analytics._encoding import encode_event
from journy_analytics._errors import DeliveryError, ValidationError
from journy_analytics._events import Emitter, Handler
from journy_analytics._retry import RetryPolicy
from journy_analytics._transport import HttpClient, Response, Urllib3HttpClient
from journy_analytics._worker import Callback, Worker, WorkerConfig

__all__ = ["Analytics"]

logger = logging.getLogger("journy_analytics")

DEFAULT_HOST = "https://analyze.journy.io"
DEFAULT_PATH = "/backend/v1/batch"


class _NullHttpClient:
    """``disable=True``: the whole pipeline runs, nothing leaves the process."""

    def send(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
        return Response(200, {}, b'{"success":true}')

    def close(self) -> None:
        pass


class Analytics:
    """A journy.io client. Create one per process and share it between threads.

    See the README's configuration table for every setting.
    """

    def __init__(
        self,
        write_key: str,
        host: str = DEFAULT_HOST,
        path: str = DEFAULT_PATH,
        max_retries: int = 3,
        max_events_in_batch: int = 15,
        flush_interval: float = 10.0,
        http_request_timeout: float = 10.0,
        disable: bool = False,
        http_client: Optional[HttpClient] = None,
        max_queue_size: int = 10_000,
        gzip: bool = False,
        spool: Optional[Union[str, os.PathLike[str]]] = None,
        *,
        max_concurrent_requests: int = 8,
        exit_flush_timeout: float = 5.0,
        retry_policy: Optional[RetryPolicy] = None,
        spool_commit_interval: float = 0.2,
        enqueue_timeout: float = 0.0,
    ) -> None:
        if not isinstance(write_key, str) or not write_key.strip():
            raise ValueError(
                "write_key must be a non-empty str: copy it from journy.io, "
                "Connections > API/SDK Connector"
            )
        url = _endpoint(host, path)
        _positive_int("max_retries", max_retries, allow_zero=True)
        _positive_int("max_events_in_batch", max_events_in_batch)
        _positive_int("max_queue_size", max_queue_size)
        _positive_int("max_concurrent_requests", max_concurrent_requests)
        _positive_number("flush_interval", flush_interval, allow_zero=True)
        _positive_number("http_request_timeout", http_request_timeout)
        _positive_number("exit_flush_timeout", exit_flush_timeout, allow_zero=True)
        if http_client is not None and not callable(getattr(http_client, "send", None)):
            raise ValueError(
                "http_client must have a send(url, body, headers, timeout) method "
                "returning journy_analytics.Response (see the HttpClient protocol)"
            )
        if spool is not None and (not isinstance(spool, (str, os.PathLike)) or not str(spool)):
            raise ValueError(
                "spool must be a file path (str or os.PathLike), e.g. 'journy-spool.db'"
            )
        _positive_number("spool_commit_interval", spool_commit_interval)
        # Back-pressure for backfills: an event method waits this long for room in a full
        # queue before the event is dropped and reported as queue_full (0: never waits).
        _positive_number("enqueue_timeout", enqueue_timeout, allow_zero=True)
        self._write_key = write_key
        self.host = host
        self.path = path
        self.disable = bool(disable)
        self.exit_flush_timeout = float(exit_flush_timeout)
        policy = retry_policy or RetryPolicy()
        if retry_policy is None or max_retries != 3:
            policy = dataclasses.replace(policy, max_retries=max_retries)
        self._emitter = Emitter()
        self._closed = False
        self._close_lock = threading.Lock()
        self._calls_after_close = 0
        self._after_close_logged_at = -10.0
        if self.disable:
            make: Any = _NullHttpClient
            owns = True
        elif http_client is not None:
            given = http_client
            make, owns = (lambda: given), False
        else:

            def make() -> HttpClient:
                return Urllib3HttpClient(maxsize=max_concurrent_requests)

            owns = True
        self._config = WorkerConfig(
            url=url,
            write_key=write_key,
            max_events_in_batch=max_events_in_batch,
            flush_interval=float(flush_interval),
            http_request_timeout=float(http_request_timeout),
            max_queue_size=max_queue_size,
            max_concurrent_requests=max_concurrent_requests,
            gzip=bool(gzip),
            policy=policy,
            make_transport=make,
            owns_transport=owns,
            spool_path=None if spool is None else os.fspath(spool),
            spool_commit_interval=float(spool_commit_interval),
            enqueue_timeout=float(enqueue_timeout),
        )
        self._worker = Worker(self._config, self._emitter)
        _warn_plain_http(url)
        _open_clients.add(self)

    # -- settings a user may read --------------------------------------------------------

    @property
    def max_retries(self) -> int:
        return self._config.policy.max_retries

    @property
    def max_events_in_batch(self) -> int:
        return self._config.max_events_in_batch

    @property
    def flush_interval(self) -> float:
        return self._config.flush_interval

    @property
    def http_request_timeout(self) -> float:
        return self._config.http_request_timeout

    @property
    def max_queue_size(self) -> int:
        return self._config.max_queue_size

    @property
    def enqueue_timeout(self) -> float:
        return self._config.enqueue_timeout

    @property
    def gzip(self) -> bool:
        return self._config.gzip

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        # Never the write key: reprs end up in logs and error trackers.
        return (
            f"Analytics(host={self.host!r}, path={self.path!r}, "
            f"disable={self.disable}, closed={self._closed})"
        )

    # -- event methods -------------------------------------------------------------------

    def identify(
        self,
        *,
        user_id: Optional[Any] = None,
        anonymous_id: Optional[Any] = None,
        traits: Optional[Mapping[str, Any]] = None,
        timestamp: m.Timestamp = None,
        context: Optional[Mapping[str, Any]] = None,
        integrations: Optional[Mapping[str, Any]] = None,
        message_id: Optional[str] = None,
        callback: Optional[Callback] = None,
    ) -> None:
        """Tie a user to their traits. Traits merge (union) across calls; ``None`` deletes."""
        self._enqueue(
            m.build_identify(
                user_id, anonymous_id, traits, timestamp, context, integrations, message_id
            ),
            callback,
        )

    def group(
        self,
        *,
        group_id: Any = None,
        user_id: Optional[Any] = None,
        anonymous_id: Optional[Any] = None,
        traits: Optional[Mapping[str, Any]] = None,
        timestamp: m.Timestamp = None,
        context: Optional[Mapping[str, Any]] = None,
        integrations: Optional[Mapping[str, Any]] = None,
        message_id: Optional[str] = None,
        callback: Optional[Callback] = None,
    ) -> None:
        """Link a user to an account (group) and record the account's traits."""
        self._enqueue(
            m.build_group(
                user_id,
                anonymous_id,
                group_id,
                traits,
                timestamp,
                context,
                integrations,
                message_id,
            ),
            callback,
        )

    def track(
        self,
        *,
        event: Any = None,
        user_id: Optional[Any] = None,
        anonymous_id: Optional[Any] = None,
        properties: Optional[Mapping[str, Any]] = None,
        group_id: Optional[Any] = None,
        timestamp: m.Timestamp = None,
        context: Optional[Mapping[str, Any]] = None,
        integrations: Optional[Mapping[str, Any]] = None,
        message_id: Optional[str] = None,
        callback: Optional[Callback] = None,
    ) -> None:
        """Record an action. ``group_id`` puts it in the context of that account."""
        self._enqueue(
            m.build_track(
                user_id,
                anonymous_id,
                event,
                properties,
                timestamp,
                context,
                integrations,
                message_id,
                group_id,
            ),
            callback,
        )

    def page(
        self,
        *,
        user_id: Optional[Any] = None,
        anonymous_id: Optional[Any] = None,
        category: Optional[str] = None,
        name: Optional[str] = None,
        properties: Optional[Mapping[str, Any]] = None,
        group_id: Optional[Any] = None,
        timestamp: m.Timestamp = None,
        context: Optional[Mapping[str, Any]] = None,
        integrations: Optional[Mapping[str, Any]] = None,
        message_id: Optional[str] = None,
        callback: Optional[Callback] = None,
    ) -> None:
        """Record a page view (journy.io records a page *with* a name as a screen)."""
        self._enqueue(
            m.build_page(
                user_id,
                anonymous_id,
                category,
                name,
                properties,
                timestamp,
                context,
                integrations,
                message_id,
                group_id,
            ),
            callback,
        )

    def screen(
        self,
        *,
        user_id: Optional[Any] = None,
        anonymous_id: Optional[Any] = None,
        category: Optional[str] = None,
        name: Optional[str] = None,
        properties: Optional[Mapping[str, Any]] = None,
        group_id: Optional[Any] = None,
        timestamp: m.Timestamp = None,
        context: Optional[Mapping[str, Any]] = None,
        integrations: Optional[Mapping[str, Any]] = None,
        message_id: Optional[str] = None,
        callback: Optional[Callback] = None,
    ) -> None:
        """Record a screen view in an app."""
        self._enqueue(
            m.build_page(
                user_id,
                anonymous_id,
                category,
                name,
                properties,
                timestamp,
                context,
                integrations,
                message_id,
                group_id,
                kind="screen",
            ),
            callback,
        )

    def alias(
        self,
        *,
        user_id: Any = None,
        previous_id: Any = None,
        anonymous_id: Optional[Any] = None,
        timestamp: m.Timestamp = None,
        context: Optional[Mapping[str, Any]] = None,
        integrations: Optional[Mapping[str, Any]] = None,
        message_id: Optional[str] = None,
        callback: Optional[Callback] = None,
    ) -> None:
        """Link ``previous_id`` (e.g. an anonymous id) to ``user_id``."""
        self._enqueue(
            m.build_alias(
                user_id, previous_id, timestamp, context, integrations, message_id, anonymous_id
            ),
            callback,
        )

    def _enqueue(self, message: Dict[str, Any], callback: Optional[Callback]) -> None:
        if callback is not None and not callable(callback):
            raise ValidationError(
                f"callback must be callable as callback(error, message), "
                f"not {type(callback).__name__}"
            )
        data = encode_event(message)
        if self._closed:
            self._after_close(data, callback)
            return
        self._worker.put(data, callback)

    def _after_close(self, data: bytes, callback: Optional[Callback]) -> None:
        message = orjson.loads(data)
        self._calls_after_close += 1
        now = time.monotonic()
        if now - self._after_close_logged_at >= 10.0:
            # The first such call, then one line per 10 s: a loop that keeps calling a closed
            # client must not flood the logs. Every call is still emitted and counted.
            self._after_close_logged_at = now
            logger.warning(
                "journy_analytics: %s() called after close_and_flush() (%d such call(s) so "
                "far); the event is not sent",
                message.get("type"),
                self._calls_after_close,
            )
        self._emitter.emit("call_after_close", message)
        if callback is not None:
            try:
                callback(
                    DeliveryError("closed", "called after close_and_flush()", [message]), message
                )
            except Exception:
                logger.exception("journy_analytics: an event callback raised; carrying on")

    # -- lifecycle -----------------------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Send everything queued so far; True once all of it is settled (delivered or
        finally dropped and reported), False if ``timeout`` seconds passed first."""
        return self._worker.flush(_timeout(timeout))

    def close_and_flush(self, timeout: Optional[float] = None) -> bool:
        """Stop accepting events, deliver what is queued, stop the worker.

        Returns True when everything was settled within ``timeout``. Later calls to event
        methods emit ``call_after_close`` and send nothing. Safe to call more than once.
        """
        timeout = _timeout(timeout)
        with self._close_lock:
            if self._closed:
                return self._worker.flush(timeout)
            self._closed = True
        _open_clients.discard(self)
        return self._worker.close(timeout)

    def __enter__(self) -> Analytics:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close_and_flush()

    # -- errors and figures --------------------------------------------------------------

    def on(self, name: str, handler: Handler) -> None:
        """Subscribe to ``error``, ``http_request``, ``http_response``, ``drained``,
        ``call_after_close`` or a type (``track``, ``identify``, ...). Handlers run on a
        worker thread; one that raises is logged and the worker carries on."""
        self._emitter.on(name, handler)

    def off(self, name: str, handler: Handler) -> None:
        self._emitter.off(name, handler)

    def once(self, name: str, handler: Handler) -> None:
        self._emitter.once(name, handler)

    def stats(self) -> Dict[str, Any]:
        """Counters: queued, in_flight, delivered, retried, dropped (by reason),
        batches_sent, requests, bytes_sent, worker_alive."""
        figures = self._worker.stats()
        figures["closed"] = self._closed
        figures["calls_after_close"] = self._calls_after_close
        figures["disabled"] = self.disable
        return figures


def _timeout(timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout):
        raise ValueError(f"timeout must be a number of seconds or None, not {timeout!r}")
    return max(0.0, float(timeout))


def _endpoint(host: str, path: str) -> str:
    if not isinstance(host, str) or not isinstance(path, str):
        raise ValueError("host and path must be str, e.g. host='https://analyze.journy.io'")
    parts = urlsplit(host.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"host={host!r} is not an http(s) URL; pass e.g. 'https://analyze.journy.io' "
            "or your proxy domain 'https://track.example.com'"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"host={host!r} must not carry a query or fragment")
    if not path.startswith("/"):
        path = "/" + path
    return host.strip().rstrip("/") + path


def _positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        need = "zero or more" if allow_zero else "at least 1"
        raise ValueError(f"{name}={value} is out of range: it must be {need}")


def _positive_number(name: str, value: Any, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        need = "zero or more" if allow_zero else "more than 0"
        raise ValueError(f"{name}={value} is out of range: it must be {need} seconds")


_warned_hosts: set[str] = set()


def _warn_plain_http(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        return
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and host not in _warned_hosts:
        _warned_hosts.add(host)
        logger.warning(
            "journy_analytics: host %s uses plain http:// off this machine; the write key "
            "and your users' data travel unencrypted. Use https://.",
            host,
        )


_open_clients: weakref.WeakSet[Analytics] = weakref.WeakSet()


def _flush_at_exit() -> None:
    """Give open clients one bounded chance to deliver; exit is never held longer than the
    largest ``exit_flush_timeout`` of them."""
    clients = list(_open_clients)
    if not clients:
        return
    deadline = time.monotonic() + max(c.exit_flush_timeout for c in clients)
    for client in clients:
        remaining = min(client.exit_flush_timeout, deadline - time.monotonic())
        try:
            client.close_and_flush(timeout=max(0.0, remaining))
        except Exception:  # pragma: no cover
            logger.exception("journy_analytics: flushing at exit failed")


atexit.register(_flush_at_exit)


class _ExitHook:
    """A weak-referenceable key for multiprocessing's after-fork registry."""


_exit_hook = _ExitHook()


def _register_multiprocessing_exit_flush(_: object) -> None:
    import sys

    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.Finalize(None, _flush_at_exit, exitpriority=0)


def _watch_multiprocessing_child() -> None:
    """multiprocessing ends a fork/forkserver child with ``os._exit()``: atexit never runs
    there, so events tracked in the child would be lost silently. Its own finalizers do
    run, but it clears them in the child after this hook, so register through its
    after-fork registry, which runs after the clear. A no-op unless multiprocessing is in
    use (it is imported then; we never import it ourselves)."""
    import sys

    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.register_after_fork(_exit_hook, _register_multiprocessing_exit_flush)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watch_multiprocessing_child)
