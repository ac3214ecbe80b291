"""``Store``: the collector's SQLite store, with journy.io's profile semantics.

A front over the database thread: each read is a function of ``queries`` and each write
a method of the ``Writer``, run on the thread; callers get ``concurrent.futures.Future``
objects, resolved (for a write) only once its transaction committed.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, TypeVar

from journy_analytics.collector._ingest import PreparedEvent
from journy_analytics.collector._store import queries
from journy_analytics.collector._store.database_thread import DatabaseThread
from journy_analytics.collector._store.writer import IngestResult, Writer

if TYPE_CHECKING:
    from typing_extensions import Concatenate, ParamSpec

    P = ParamSpec("P")

__all__ = ["Store"]

T = TypeVar("T")


def _read(
    query: Callable[Concatenate[sqlite3.Connection, P], T],
) -> Callable[Concatenate[Store, P], Future[T]]:
    """A ``Store`` method that runs ``query(connection, ...)`` on the database thread."""

    def method(store: Store, /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return store._db.read(query, *args, **kwargs)

    method.__name__ = method.__qualname__ = query.__name__
    method.__doc__ = query.__doc__
    return method


class Store:
    """SQLite store for the collector. ``path`` is a file or ``":memory:"``.

    Thread-safe: every call is queued to the store's own thread.
    """

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self._writer = Writer()
        self._db = DatabaseThread(path, self._writer)

    def close(self) -> None:
        """Wait for queued work (every write is committed when its future resolves), close."""
        self._db.close()

    @property
    def closed(self) -> bool:
        return self._db.closed

    # -- writes -----------------------------------------------------------------------

    def ingest(
        self,
        events: Sequence[PreparedEvent],
        counters: Optional[Mapping[str, int]] = None,
        request: Optional[Mapping[str, Any]] = None,
    ) -> Future[IngestResult]:
        """Store one request's events in one transaction, and bump ``counters`` with it.

        ``request``, when given, is what the inspector shows about the request:
        ``method``, ``path``, ``headers`` (already redacted), ``size``, ``gzip`` and
        ``retry_count``; it is stored with the events and receipts of duplicates.
        """
        return self._db.write(
            self._writer.ingest,
            list(events),
            dict(counters or {}),
            dict(request) if request is not None else None,
        )

    def count(self, counters: Mapping[str, int]) -> Future[None]:
        """Add to named counters (``requests``, ``rejected.<code>``, ``faults.<kind>``...)."""
        return self._db.write(self._writer.count, dict(counters))

    def reset(self) -> Future[None]:
        """Delete every event, profile and counter."""
        return self._db.write(self._writer.reset)

    # -- the REST API (what its calls do is in rest.py) -------------------------------

    def rest_write(self, fn: Callable[..., T], *args: Any, ingest: bool = False) -> Future[T]:
        """Run ``fn(tx, *args)`` in a write transaction, after ``tx`` wrote what earlier
        jobs of its group gathered (so plain SQL sees it all). With ``ingest=True``, ``fn``
        gets ``ingest(events, request)`` after ``tx``: it stores events as a batch would."""
        return self._db.write(self._writer.rest_write, fn, args, ingest)

    def rest_read(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(connection, *args)`` on the store's thread."""
        return self._db.read(fn, *args)

    # -- reads: the functions of queries.py, each run on the database thread ----------

    events_json = _read(queries.events_json)
    events_with_warnings = _read(queries.events_with_warnings)
    event_detail = _read(queries.event_detail)
    user = _read(queries.user)
    account = _read(queries.account)
    message_ids = _read(queries.message_ids)
    stats = _read(queries.stats)

    def inspector_events(
        self,
        filters: Mapping[str, str],
        before: Optional[int] = None,
        after: Optional[int] = None,
        limit: int = 100,
    ) -> Future[dict[str, Any]]:
        # A copy taken now: the caller may change its mapping before the thread reads it.
        return self._db.read(queries.inspector_events, dict(filters), before, after, limit)

    inspector_events.__doc__ = queries.inspector_events.__doc__

    def profile(
        self, kind: str, id: str, events_limit: int = 50
    ) -> Future[Optional[dict[str, Any]]]:
        # Checked on the caller's thread: a wrong kind is the caller's error, raised now.
        if kind not in ("user", "account"):
            raise ValueError(f"kind must be 'user' or 'account', got {kind!r}")
        return self._db.read(queries.profile, kind, id, events_limit)

    profile.__doc__ = queries.profile.__doc__
