"""``CollectorThread``: the collector in a background thread, for tests and the demo."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from types import TracebackType
from typing import Any, Iterable, Optional

import orjson

from journy_analytics._lifecycle import signal_free
from journy_analytics.collector._faults import Faults
from journy_analytics.collector._ingest import MAX_BODY_BYTES
from journy_analytics.collector._rest import RestSettings
from journy_analytics.collector._server import (
    DEFAULT_PATH,
    CollectorState,
    Server,
    logged_requests,
)
from journy_analytics.collector._store import Store

__all__ = ["CollectorThread"]


class CollectorThread:
    """A real collector on a loopback port, served by a background thread's event loop.

    ::

        with CollectorThread() as c:
            analytics = Analytics(write_key="k", host=c.url)
            ...
            assert c.user("f4ca124298")["traits"]["email"] == "elon@tesla.com"

    Arguments:
        db: SQLite file path, or ``":memory:"`` (the default) to keep nothing on disk.
        write_keys: accepted write keys; ``None`` accepts any non-empty key.
        path: the batch path (``/v1/batch`` and the single-event ``/v1/<type>`` paths are
            always served too).
        faults: fault injection at start (``Faults()``, i.e. none, by default).
        port: ``0`` picks a free port on first start; every later ``start()`` reuses the
            port first bound, so a client can see the server go down and come back.
        host: the address to bind; loopback by default.
        max_logged_requests: how many recent ingest requests ``requests()`` keeps.
        rest: the REST API's keys, rate limit and websites (``RestSettings``); by
            default any key with every permission, 1800 requests a minute per key.

    The store (and so every event and profile) lives from the first ``start()`` until
    ``close()``: ``stop()`` only takes the HTTP server down. The query helpers read the
    store directly, so they work while the server is stopped. Leaving the ``with`` block
    calls ``close()``.
    """

    def __init__(
        self,
        db: str = ":memory:",
        write_keys: Optional[Iterable[str]] = None,
        path: str = DEFAULT_PATH,
        faults: Optional[Faults] = None,
        port: int = 0,
        host: str = "127.0.0.1",
        max_logged_requests: int = 1000,
        max_body_bytes: int = MAX_BODY_BYTES,
        ssl_context: Optional[ssl.SSLContext] = None,
        rest: Optional[RestSettings] = None,
    ) -> None:
        self._db = db
        self._rest = rest
        self._write_keys = None if write_keys is None else list(write_keys)
        self._path = path
        self._initial_faults = faults
        self._host = host
        self._port = port
        self._max_logged_requests = max_logged_requests
        self._max_body_bytes = max_body_bytes
        # Serve https:// with this context (tests of TLS trust and of proxies' CONNECT).
        self._ssl_context = ssl_context
        self._state: Optional[CollectorState] = None
        self._lock = threading.RLock()
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> CollectorThread:
        """Serve (again). Returns ``self``; raises ``OSError`` if the port cannot be bound."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this CollectorThread is closed")
            if self._thread is not None:
                return self
            if self._state is None:
                self._state = CollectorState(
                    Store(self._db),
                    write_keys=self._write_keys,
                    path=self._path,
                    faults=self._initial_faults,
                    max_logged_requests=self._max_logged_requests,
                    max_body_bytes=self._max_body_bytes,
                    rest=self._rest,
                )
            ready = threading.Event()
            outcome: dict[str, Any] = {}
            thread = threading.Thread(
                target=signal_free(self._run),
                args=(self._state, ready, outcome),
                name=f"journy-collector:{self._port}",
                daemon=True,
            )
            thread.start()
            if not ready.wait(timeout):
                raise TimeoutError("the collector did not start in time")
            error = outcome.get("error")
            if error is not None:
                thread.join(timeout)
                raise error
            self._port = int(outcome["port"])
            self._loop = outcome["loop"]
            self._thread = thread
            return self

    def _run(self, state: CollectorState, ready: threading.Event, outcome: dict[str, Any]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        server = Server(state, self._host, self._port, self._ssl_context)
        try:
            try:
                outcome["port"] = loop.run_until_complete(server.start())
                outcome["loop"] = loop
            except BaseException as exc:
                outcome["error"] = exc
                return
            finally:
                ready.set()
            loop.run_forever()
            loop.run_until_complete(server.stop())
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Take the HTTP server down (connections are refused); data and port are kept."""
        with self._lock:
            thread, loop = self._thread, self._loop
            self._thread = self._loop = None
            if thread is None or loop is None:
                return
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)

    def close(self) -> None:
        """Stop serving and close the store. A ``:memory:`` database is gone after this."""
        with self._lock:
            self.stop()
            self._closed = True
            if self._state is not None:
                self._state.store.close()

    def __enter__(self) -> CollectorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (0 before the first ``start()`` when asked for a free port)."""
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: what to pass as ``Analytics(host=...)``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{self._port}"

    @property
    def path(self) -> str:
        return self._path

    # -- faults -----------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._require_state().faults.faults

    def set_faults(self, faults: Optional[Faults] = None, **changes: Any) -> Faults:
        """Replace the fault settings (``faults``), then apply keyword ``changes``.

        ``c.set_faults(fail_rate=0.5)`` changes one setting; ``c.set_faults(Faults())``
        switches everything off. Returns the settings now in force.
        """
        injector = self._require_state().faults
        new = faults if faults is not None else injector.faults
        if changes:
            new = new.replace(**changes)
        injector.set(new)
        return new

    # -- queries ----------------------------------------------------------------------

    def _require_state(self) -> CollectorState:
        if self._state is None:
            raise RuntimeError("the collector has not been started")
        return self._state

    def events(
        self,
        type: Optional[str] = None,
        user_id: Optional[str] = None,
        group_id: Optional[str] = None,
        limit: Optional[int] = None,
        anonymous_id: Optional[str] = None,
    ) -> list[dict[str, Any]]:
        """Stored events (deduplicated), in arrival order, each as received except that
        ``type`` is as journy.io records it (a page with a name is a ``"screen"``).
        ``group_id`` matches a group call's groupId and ``context.groupId``; ``limit``
        keeps the most recent ones."""
        bodies = (
            self._require_state()
            .store.events_json(
                type=type,
                user_id=user_id,
                anonymous_id=anonymous_id,
                group_id=group_id,
                limit=limit,
            )
            .result()
        )
        return [orjson.loads(b) for b in bodies]

    def user(self, id: str) -> Optional[dict[str, Any]]:
        """``{"id", "traits", "accounts", "events", "identified", "aliases", ...}`` for a
        userId (or the anonymousId of a user never identified), or None if unknown."""
        return self._require_state().store.user(id).result()

    def account(self, id: str) -> Optional[dict[str, Any]]:
        """``{"id", "traits", "members", "events", ...}`` for a groupId, or None."""
        return self._require_state().store.account(id).result()

    def stats(self) -> dict[str, Any]:
        """``{"requests", "accepted_requests", "received", "stored", "duplicates",
        "rejected": {code: n}, "faults": {kind: n}, "events", "users", "accounts"}``.

        ``received`` counts events in accepted requests, duplicates included; ``rejected``
        counts refused requests by error code; ``faults`` counts injected faults by kind
        (``delayed``, ``rate_limited``, ``failed``, ``reset``)."""
        return self._require_state().store.stats().result()

    def unique_message_ids(self) -> set[str]:
        """The distinct ``messageId`` values stored."""
        return self._require_state().store.message_ids().result()

    def requests(self) -> list[dict[str, Any]]:
        """Recent ingest requests, oldest first: ``method``, ``path``, ``query``,
        ``headers`` (dict), ``body`` (the decoded JSON, or None if it did not decode),
        ``size`` (bytes on the wire), ``status`` (int, or ``"reset"``), and ``error``."""
        return logged_requests(self._require_state())

    def reset(self) -> None:
        """Forget every event, profile, counter and logged request."""
        state = self._require_state()
        state.store.reset().result()
        state.requests.clear()

    def wait_for_events(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``count`` distinct events are stored; False on timeout."""
        deadline = time.monotonic() + timeout
        store = self._require_state().store
        while True:
            if store.stats().result()["events"] >= count:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
