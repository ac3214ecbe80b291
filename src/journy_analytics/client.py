"""``Analytics``: configuration, the event methods and the lifecycle. Nothing else.

Every event method validates and encodes the event in the caller's thread (so a bad call
raises at once and later changes to the caller's dicts cannot leak in) and hands the
bytes to the worker. It never blocks on the network and never raises for delivery.
"""

from __future__ import annotations

import dataclasses
import math
import os
import ssl
import threading
import time
import uuid
import weakref
from types import TracebackType
from typing import Any, Dict, Mapping, NoReturn, Optional, Tuple, Type, Union
from urllib.parse import urlsplit

import orjson

from journy_analytics import _default, _erase
from journy_analytics import _message as m
from journy_analytics._aio import run_in_thread as _run_in_thread
from journy_analytics._core import (
    PROXY_FROM_ENV,
    HttpClient,
    NetworkSettings,
    ProxySetting,
    Response,
    RetryPolicy,
    StdlibHttpClient,
    Worker,
    WorkerConfig,
)
from journy_analytics._deadline import remaining as _remaining
from journy_analytics._exceptions import DeliveryError, ValidationError
from journy_analytics._handlers import Emitter, Handler
from journy_analytics._lifecycle import fork as _fork
from journy_analytics._lifecycle import shutdown as _shutdown
from journy_analytics._logging import RateLimit, logger
from journy_analytics._message import PluginChain, encode_event
from journy_analytics._message import active_scope as _active_scope
from journy_analytics._message import build_track as _build_track
from journy_analytics._settings import (
    check_transport_settings,
    positive_int,
    positive_number,
    warn_plain_http,
)
from journy_analytics._types import FLUSH_TIMEOUT, Callback, FlushTimeoutDefault

__all__ = ["DEFAULT_HOST", "DEFAULT_PATH", "Analytics"]

DEFAULT_HOST = "https://analyze.journy.io"
DEFAULT_PATH = "/backend/v1/batch"

# An id: str, or an int or UUID (converted with str()).
Id = Union[str, int, uuid.UUID]

# Reads 0 in a forked child until _fork.check() has run there (see _fork.py): one byte
# read per event instead of a getpid() system call, and a fork that bypassed Python is
# still noticed before the child's first event.
_fork_mark = _fork.mark


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
        host: Optional[str] = None,
        path: Optional[str] = None,
        max_retries: Optional[int] = None,
        max_events_in_batch: Optional[int] = None,
        flush_interval: Optional[float] = None,
        http_request_timeout: float = 10.0,
        disable: Optional[bool] = None,
        http_client: Optional[HttpClient] = None,
        max_queue_size: Optional[int] = None,
        gzip: Optional[bool] = None,
        spool: Optional[Union[str, os.PathLike[str]]] = None,
        *,
        flush_timeout: Optional[float] = 30.0,
        handle_sigterm: bool = True,
        max_concurrent_requests: int = 8,
        exit_flush_timeout: float = 5.0,
        retry_policy: Optional[RetryPolicy] = None,
        spool_commit_interval: float = 0.2,
        enqueue_timeout: float = 0.0,
        proxy: Union[str, ProxySetting, None] = PROXY_FROM_ENV,
        ssl_context: Optional[ssl.SSLContext] = None,
        api_key: Optional[str] = None,
        api_host: str = "https://api.journy.io",
        erase_fence_seconds: float = 86400.0,
    ) -> None:
        if not isinstance(write_key, str) or not write_key.strip():
            raise ValueError(
                "write_key must be a non-empty str: copy it from journy.io, "
                "Connections > API/SDK Connector"
            )
        # What is not given comes from the environment (JOURNY_HOST, ...), as for the
        # module-level client, else from the defaults.
        env = _default.environment_settings(
            host=host,
            path=path,
            max_retries=max_retries,
            max_events_in_batch=max_events_in_batch,
            flush_interval=flush_interval,
            disable=disable,
            max_queue_size=max_queue_size,
            gzip=gzip,
        )
        host, path = env.get("host", DEFAULT_HOST), env.get("path", DEFAULT_PATH)
        max_retries, max_queue_size = env.get("max_retries", 3), env.get("max_queue_size", 10_000)
        max_events_in_batch = env.get("max_events_in_batch", 15)
        flush_interval = env.get("flush_interval", 10.0)
        disable, gzip = env.get("disable", False), env.get("gzip", False)
        url = _endpoint(host, path)
        positive_int("max_retries", max_retries, allow_zero=True)
        positive_int("max_events_in_batch", max_events_in_batch)
        positive_int("max_queue_size", max_queue_size)
        positive_int("max_concurrent_requests", max_concurrent_requests)
        positive_number("flush_interval", flush_interval, allow_zero=True)
        positive_number("http_request_timeout", http_request_timeout)
        positive_number("exit_flush_timeout", exit_flush_timeout, allow_zero=True)
        if flush_timeout is not None:
            positive_number("flush_timeout", flush_timeout, allow_zero=True)
        if http_client is not None and not callable(getattr(http_client, "send", None)):
            raise ValueError(
                "http_client must have a send(url, body, headers, timeout) method "
                "returning journy_analytics.Response (see the HttpClient protocol)"
            )
        if spool is not None and (not isinstance(spool, (str, os.PathLike)) or not str(spool)):
            raise ValueError(
                "spool must be a file path (str or os.PathLike), e.g. 'journy-spool.db'"
            )
        positive_number("spool_commit_interval", spool_commit_interval)
        # Back-pressure for backfills: an event method waits this long for room in a full
        # queue before the event is dropped and reported as queue_full (0: never waits).
        positive_number("enqueue_timeout", enqueue_timeout, allow_zero=True)
        # How requests reach the server (docs: README "Networks"): the proxy, from the
        # environment unless given (None: never one), and the trust for https://.
        network = NetworkSettings(proxy=proxy, ssl_context=ssl_context)
        # The REST client of erase_user/erase_account goes the same way.
        self._rest_network: Dict[str, Any] = {"proxy": proxy, "ssl_context": ssl_context}
        check_transport_settings(http_client, proxy, ssl_context)
        positive_number("erase_fence_seconds", erase_fence_seconds, allow_zero=True)
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            raise ValueError(
                "api_key must be a non-empty str: a journy.io API key (Connections > API "
                "keys), used by erase_user/erase_account; it is not the write key"
            )
        self.host = host
        self.path = path
        self.disable = bool(disable)
        self.exit_flush_timeout = float(exit_flush_timeout)
        self.flush_timeout = None if flush_timeout is None else float(flush_timeout)
        policy = retry_policy or RetryPolicy()
        if retry_policy is None or max_retries != 3:
            policy = dataclasses.replace(policy, max_retries=max_retries)
        self._emitter = Emitter()
        self._closed = False
        self._close_lock = threading.Lock()
        self._calls_after_close = 0
        self._after_close_log = RateLimit(10.0)
        if self.disable:
            make: Any = _NullHttpClient
            owns = True
        elif http_client is not None:
            given = http_client
            make, owns = (lambda: given), False
        else:

            def make() -> HttpClient:
                return StdlibHttpClient(maxsize=max_concurrent_requests, network=network)

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
            exit_flush_timeout=float(exit_flush_timeout),
            spool_path=None if spool is None else os.fspath(spool),
            spool_commit_interval=float(spool_commit_interval),
            enqueue_timeout=float(enqueue_timeout),
        )
        self._worker = Worker(self._config, self._emitter)
        # Garbage collected without close_and_flush(): the worker delivers what it holds
        # in the background and stops (and is flushed at exit like any open client).
        # (Any: older typeshed declares finalize's attributes read-only.) Not at exit: the
        # exit flush closes every open worker itself.
        finalizer: Any = weakref.finalize(self, self._worker.retire)
        finalizer.atexit = False
        if handle_sigterm:
            _shutdown.install_sigterm_handler()
        # Plugins (docs/plugins.md): the event path looks at _plugins, which is None while
        # no plugin is registered, so a client without plugins pays one attribute test.
        self._plugin_chain = PluginChain(self._emitter)
        self._plugins: Optional[PluginChain] = None
        parts = urlsplit(url)
        warn_plain_http(parts.scheme, parts.hostname, "host", "write key")
        self._setup_erase(api_key, api_host, erase_fence_seconds)

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
    # Keyword arguments only: a positional call raises TypeError saying so (the
    # ``*positional: NoReturn`` also makes it a type error for mypy and pyright).

    def identify(
        self,
        *positional: NoReturn,
        user_id: Optional[Id] = None,
        anonymous_id: Optional[Id] = None,
        traits: Optional[Mapping[str, Any]] = None,
        timestamp: m.Timestamp = None,
        context: Optional[Mapping[str, Any]] = None,
        integrations: Optional[Mapping[str, Any]] = None,
        message_id: Optional[str] = None,
        callback: Optional[Callback] = None,
    ) -> None:
        """Tie a user to their traits. Traits merge (union) across calls; ``None`` deletes."""
        if positional:
            raise _positional_call("identify", positional)
        if not _fork_mark[0]:
            _fork.check()
        if (scope := _active_scope()) is not None:  # journy_analytics.scope(): _message/_scope.py
            user_id, anonymous_id, _, _, context = scope.fill(
                user_id, anonymous_id, None, None, context
            )
        self._enqueue(
            m.build_identify(
                user_id=user_id,
                anonymous_id=anonymous_id,
                traits=traits,
                timestamp=timestamp,
                context=context,
                integrations=integrations,
                message_id=message_id,
            ),
            callback,
        )

    def group(
        self,
        *positional: NoReturn,
        group_id: Optional[Id] = None,
        user_id: Optional[Id] = None,
        anonymous_id: Optional[Id] = None,
        traits: Optional[Mapping[str, Any]] = None,
        timestamp: m.Timestamp = None,
        context: Optional[Mapping[str, Any]] = None,
        integrations: Optional[Mapping[str, Any]] = None,
        message_id: Optional[str] = None,
        callback: Optional[Callback] = None,
    ) -> None:
        """Link a user to an account (group) and record the account's traits."""
        if positional:
            raise _positional_call("group", positional)
        if not _fork_mark[0]:
            _fork.check()
        if (scope := _active_scope()) is not None:
            user_id, anonymous_id, group_id, _, context = scope.fill(
                user_id, anonymous_id, group_id, None, context
            )
        self._enqueue(
            m.build_group(
                user_id=user_id,
                anonymous_id=anonymous_id,
                group_id=group_id,
                traits=traits,
                timestamp=timestamp,
                context=context,
                integrations=integrations,
                message_id=message_id,
            ),
            callback,
        )

    def track(
        self,
        *positional: NoReturn,
        event: Optional[str] = None,
        user_id: Optional[Id] = None,
        anonymous_id: Optional[Id] = None,
        properties: Optional[Mapping[str, Any]] = None,
        group_id: Optional[Id] = None,
        timestamp: m.Timestamp = None,
        context: Optional[Mapping[str, Any]] = None,
        integrations: Optional[Mapping[str, Any]] = None,
        message_id: Optional[str] = None,
        callback: Optional[Callback] = None,
    ) -> None:
        """Record an action. ``group_id`` puts it in the context of that account."""
        if positional:
            raise _positional_call("track", positional)
        if not _fork_mark[0]:
            _fork.check()
        if (scope := _active_scope()) is not None:
            user_id, anonymous_id, group_id, properties, context = scope.fill(
                user_id, anonymous_id, group_id, properties, context
            )
        self._enqueue(
            _build_track(
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
        *positional: NoReturn,
        user_id: Optional[Id] = None,
        anonymous_id: Optional[Id] = None,
        category: Optional[str] = None,
        name: Optional[str] = None,
        properties: Optional[Mapping[str, Any]] = None,
        group_id: Optional[Id] = None,
        timestamp: m.Timestamp = None,
        context: Optional[Mapping[str, Any]] = None,
        integrations: Optional[Mapping[str, Any]] = None,
        message_id: Optional[str] = None,
        callback: Optional[Callback] = None,
    ) -> None:
        """Record a page view (journy.io records a page *with* a name as a screen)."""
        if positional:
            raise _positional_call("page", positional)
        if not _fork_mark[0]:
            _fork.check()
        if (scope := _active_scope()) is not None:
            user_id, anonymous_id, group_id, properties, context = scope.fill(
                user_id, anonymous_id, group_id, properties, context
            )
        self._enqueue(
            m.build_page(
                user_id=user_id,
                anonymous_id=anonymous_id,
                category=category,
                name=name,
                properties=properties,
                timestamp=timestamp,
                context=context,
                integrations=integrations,
                message_id=message_id,
                group_id=group_id,
            ),
            callback,
        )

    def screen(
        self,
        *positional: NoReturn,
        user_id: Optional[Id] = None,
        anonymous_id: Optional[Id] = None,
        category: Optional[str] = None,
        name: Optional[str] = None,
        properties: Optional[Mapping[str, Any]] = None,
        group_id: Optional[Id] = None,
        timestamp: m.Timestamp = None,
        context: Optional[Mapping[str, Any]] = None,
        integrations: Optional[Mapping[str, Any]] = None,
        message_id: Optional[str] = None,
        callback: Optional[Callback] = None,
    ) -> None:
        """Record a screen view in an app."""
        if positional:
            raise _positional_call("screen", positional)
        if not _fork_mark[0]:
            _fork.check()
        if (scope := _active_scope()) is not None:
            user_id, anonymous_id, group_id, properties, context = scope.fill(
                user_id, anonymous_id, group_id, properties, context
            )
        self._enqueue(
            m.build_page(
                user_id=user_id,
                anonymous_id=anonymous_id,
                category=category,
                name=name,
                properties=properties,
                timestamp=timestamp,
                context=context,
                integrations=integrations,
                message_id=message_id,
                group_id=group_id,
                kind="screen",
            ),
            callback,
        )

    def alias(
        self,
        *positional: NoReturn,
        user_id: Optional[Id] = None,
        previous_id: Optional[Id] = None,
        anonymous_id: Optional[Id] = None,
        timestamp: m.Timestamp = None,
        context: Optional[Mapping[str, Any]] = None,
        integrations: Optional[Mapping[str, Any]] = None,
        message_id: Optional[str] = None,
        callback: Optional[Callback] = None,
    ) -> None:
        """Link ``previous_id`` (e.g. an anonymous id) to ``user_id``."""
        if positional:
            raise _positional_call("alias", positional)
        if not _fork_mark[0]:
            _fork.check()
        if (scope := _active_scope()) is not None:
            user_id, anonymous_id, _, _, context = scope.fill(
                user_id, anonymous_id, None, None, context
            )
        self._enqueue(
            m.build_alias(
                user_id=user_id,
                previous_id=previous_id,
                anonymous_id=anonymous_id,
                timestamp=timestamp,
                context=context,
                integrations=integrations,
                message_id=message_id,
            ),
            callback,
        )

    def _enqueue(self, message: Dict[str, Any], callback: Optional[Callback]) -> bool:
        """Encode and queue one event. False if it was not queued (queue full, closed);
        True if it was, or if a plugin dropped it on purpose."""
        if callback is not None and not callable(callback):
            raise ValidationError(
                f"callback must be callable as callback(error, message), "
                f"not {type(callback).__name__}"
            )
        plugins = self._plugins
        if plugins is not None:
            final = plugins.run(message)
            if final is None:
                return True
            message = final
        if self._fence is not None and self._fenced(message):
            return False
        data = encode_event(message)
        if self._closed:
            self._after_close(data, callback)
            return False
        if plugins is not None:
            plugins.deliver(data)
        return self._worker.put(data, callback)

    def _enqueue_encoded(
        self, message: Dict[str, Any], data: bytes, callback: Optional[Callback]
    ) -> bool:
        """For bulk senders (the import engine): ``message``, built by a ``_messages``
        builder, and ``data``, its ``encode_event`` bytes, go the rest of an event
        method's way. With plugins (which may change the message) it is ``_enqueue``."""
        if not _fork_mark[0]:
            _fork.check()
        if self._plugins is not None:
            return self._enqueue(message, callback)
        if self._fence is not None and self._fenced(message):
            return False
        if self._closed:
            self._after_close(data, callback)
            return False
        return self._worker.put(data, callback)

    # -- plugins ---------------------------------------------------------------------------

    def register(self, *plugins: Any) -> None:
        """Add plugins (``before``, ``enrichment`` or ``destination``; see docs/plugins.md).

        Each needs a unique ``name``. ``before`` plugins run first, then ``enrichment``
        ones, each kind in registration order, in the caller's thread; ``destination``
        plugins get the final event on a thread of their own.
        """
        if not plugins:
            raise ValueError("register() needs at least one plugin")
        self._plugin_chain.register(plugins, self)
        self._plugins = self._plugin_chain

    def deregister(self, name: str) -> Any:
        """Remove the plugin called ``name`` (KeyError if there is none); returns it."""
        plugin = self._plugin_chain.deregister(name)
        if self._plugin_chain.empty:
            self._plugins = None
        return plugin

    def _after_close(self, data: bytes, callback: Optional[Callback]) -> None:
        message = orjson.loads(data)
        self._calls_after_close += 1
        if self._after_close_log.check()[0]:
            # The first such call, then one line per 10 s: a loop that keeps calling a closed
            # client must not flood the logs. Every call is still emitted and counted.
            logger.warning(
                "%s() called after close_and_flush() (%d such call(s) so far); the event is "
                "not sent",
                message.get("type"),
                self._calls_after_close,
            )
        self._emitter.emit("call_after_close", message)
        if callback is not None:
            error = DeliveryError("call_after_close", "called after close_and_flush()", [message])
            try:
                callback(error, message)
            except BaseException:
                logger.exception("an event callback raised; carrying on")

    # -- GDPR erase (docs/journy-api.md; the work is in _erase.py) -------------------------

    def _setup_erase(
        self, api_key: Optional[str], api_host: str, erase_fence_seconds: float
    ) -> None:
        self._api_key = api_key
        self._api_host = api_host
        self._api: Any = None
        self.erase_fence_seconds = float(erase_fence_seconds)
        self._erase_fence = _erase.EraseFence()
        self._fence_lock = threading.Lock()
        # None while no fence stands: the event path then pays one attribute test.
        self._fence: Optional[_erase.EraseFence] = None
        for kind, value, until in self._worker.fences(time.time()):
            self._erase_fence.add(kind, value, until)
            self._fence = self._erase_fence

    def _fenced(self, message: Dict[str, Any]) -> bool:
        fence = self._erase_fence
        if fence.blocks(message):
            return True
        if not fence.active():
            # Under the lock, checked again: an erase arming the fence meanwhile wins.
            with self._fence_lock:
                if not fence.active():
                    self._fence = None
        return False

    def _rest(self, timeout: float) -> Any:
        """A REST client for one erase: the batch path's retry policy and request timeout,
        with the whole DELETE (retries included) bounded by ``timeout``."""
        if self._api_key is None:
            return None
        from journy_analytics._api import JournyAPI

        positive_number("timeout", timeout)
        return JournyAPI(
            api_key=self._api_key,
            host=self._api_host,
            timeout=min(self.http_request_timeout, timeout),
            max_retries=self.max_retries,
            retry_policy=dataclasses.replace(self._config.policy, deadline=timeout),
            **self._rest_network,
        )

    def erase_user(
        self,
        *positional: NoReturn,
        user_id: Optional[Id] = None,
        email: Optional[str] = None,
        timeout: float = 60.0,
    ) -> _erase.EraseResult:
        """GDPR erase of a user: purge its events held here (queue and spool), refuse new
        ones for ``erase_fence_seconds``, and ``DELETE /users`` at journy.io (needs
        ``api_key``), retried for up to ``timeout`` seconds. Returns what was done; see
        docs/journy-api.md."""
        if positional:
            raise _positional_call("erase_user", positional)
        targets = {}
        if user_id is not None:
            targets["user_id"] = m.checked_id(user_id, "user_id") or ""
        if email is not None:
            from journy_analytics._api import user_identification

            targets["email"] = user_identification(None, email)["email"]
        if not targets:
            raise ValidationError("erase_user() needs user_id, email or both")
        return self._erase("user", targets, {"user_id": user_id, "email": email}, timeout)

    def erase_account(
        self,
        *positional: NoReturn,
        account_id: Optional[Id] = None,
        domain: Optional[str] = None,
        timeout: float = 60.0,
    ) -> _erase.EraseResult:
        """GDPR erase of an account: ``erase_user``'s steps for an account id or domain
        (``DELETE /accounts``)."""
        if positional:
            raise _positional_call("erase_account", positional)
        targets = {}
        if account_id is not None:
            targets["account_id"] = m.checked_id(account_id, "account_id") or ""
        if domain is not None:
            from journy_analytics._api import domain_name

            targets["domain"] = domain_name(domain)
        if not targets:
            raise ValidationError("erase_account() needs account_id, domain or both")
        return self._erase(
            "account", targets, {"account_id": account_id, "domain": domain}, timeout
        )

    def _erase(
        self, kind: str, targets: Dict[str, str], identity: Dict[str, Any], timeout: float
    ) -> _erase.EraseResult:
        api = self._rest(timeout)
        try:
            return _erase.run_erase(
                worker=self._worker,
                fence=self._erase_fence,
                fence_seconds=self.erase_fence_seconds,
                kind=kind,
                targets=targets,
                delete=None if api is None else lambda: getattr(api, f"delete_{kind}")(**identity),
                wait_for_in_flight=min(timeout, self.http_request_timeout * 3),
                arm=self._arm_fence,
            )
        finally:
            if api is not None:
                api.close()

    def _arm_fence(self) -> None:
        with self._fence_lock:
            self._fence = self._erase_fence

    # -- lifecycle -----------------------------------------------------------------------

    def flush(self, timeout: Union[float, FlushTimeoutDefault, None] = FLUSH_TIMEOUT) -> bool:
        """Send everything queued so far and wait until all of it is *settled*: delivered,
        or finally dropped and reported. True when settled (which is not "delivered": a
        401 settles a batch too; see ``stats()`` or the ``error`` event), False if
        ``timeout`` seconds (default: the ``flush_timeout`` setting, 30 s) passed first.
        ``timeout=None`` waits until settled, however long the retries take. Destination
        plugins are waited for too."""
        seconds = self._timeout(timeout)
        if self._plugins is None:
            return self._worker.flush(seconds)
        deadline = None if seconds is None else time.monotonic() + seconds
        settled = self._worker.flush(seconds)
        return self._plugin_chain.flush(_remaining(deadline)) and settled

    def close_and_flush(
        self, timeout: Union[float, FlushTimeoutDefault, None] = FLUSH_TIMEOUT
    ) -> bool:
        """Stop accepting events, deliver what is queued, stop the worker.

        Returns True when everything was settled within ``timeout`` (default: the
        ``flush_timeout`` setting). Past it, what is left is reported as ``closed``. Later
        calls to event methods emit ``call_after_close`` and send nothing. Safe to call
        more than once.
        """
        seconds = self._timeout(timeout)
        with self._close_lock:
            if self._closed:
                return self._worker.flush(seconds)
            self._closed = True
        deadline = None if seconds is None else time.monotonic() + seconds
        settled = self._worker.close(seconds)
        return self._plugin_chain.close(_remaining(deadline)) and settled

    def _timeout(self, timeout: Union[float, FlushTimeoutDefault, None]) -> Optional[float]:
        if isinstance(timeout, FlushTimeoutDefault):
            return self.flush_timeout
        if timeout is None:
            return None
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or math.isnan(timeout)
        ):
            raise ValueError(f"timeout must be a number of seconds or None, not {timeout!r}")
        return max(0.0, float(timeout))

    def __enter__(self) -> Analytics:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close_and_flush()

    # -- asyncio (the blocking work runs in a thread: see _aio.py) --------------------------

    async def aflush(
        self, timeout: Union[float, FlushTimeoutDefault, None] = FLUSH_TIMEOUT
    ) -> bool:
        """``flush()`` for coroutines: awaits delivery without blocking the event loop.
        Cancelling the awaiting task leaves the client as it was (delivery goes on)."""
        return await _run_in_thread(self.flush, self._timeout(timeout), name="journy-aflush")

    async def aclose(
        self, timeout: Union[float, FlushTimeoutDefault, None] = FLUSH_TIMEOUT
    ) -> bool:
        """``close_and_flush()`` for coroutines, without blocking the event loop. Cancelling
        the awaiting task does not stop the close: the client ends up closed and flushed."""
        return await _run_in_thread(
            self.close_and_flush, self._timeout(timeout), name="journy-aclose"
        )

    async def __aenter__(self) -> Analytics:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.aclose()

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
        batches_sent, requests, bytes_sent, worker_alive; dropped_by_plugin and plugins
        (registered names, drops and errors per plugin, the destination queue)."""
        figures = self._worker.stats()
        figures["closed"] = self._closed
        figures["calls_after_close"] = self._calls_after_close
        figures["disabled"] = self.disable
        # Events a plugin dropped on purpose (returned None): not a delivery failure, so kept
        # apart from "dropped" (whose reasons the worker owns); per-plugin detail in "plugins".
        figures["dropped_by_plugin"] = self._plugin_chain.dropped_total()
        figures["plugins"] = self._plugin_chain.stats()
        figures["erase_fence"] = self._erase_fence.figures()
        return figures


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
    host_path = parts.path.rstrip("/")
    if host_path and (
        host_path.endswith(path.rstrip("/")) or host_path.endswith(("/batch", "/v1/batch"))
    ):
        base = f"{parts.scheme}://{parts.netloc}"
        raise ValueError(
            f"host={host!r} already ends with an API path ({parts.path!r}); host is the base "
            f"URL and path is added to it: pass host={base!r} (and path={parts.path!r} if "
            "that is not the default)"
        )
    return host.strip().rstrip("/") + path


def _positional_call(method: str, args: Tuple[Any, ...]) -> TypeError:
    return TypeError(
        f"{method}() takes keyword arguments only (got {len(args)} positional): write "
        f"{method}(user_id=..., ...). Coming from segment-analytics-python? Its positional "
        "API is journy_analytics.segment: `import journy_analytics.segment as analytics`."
    )
