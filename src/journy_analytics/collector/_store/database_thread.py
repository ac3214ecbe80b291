"""The store's one thread: every statement runs on it, through a queue of jobs.

SQLite wants a single writer, a ``:memory:`` database exists only inside its one
connection, and the HTTP event loop must never wait on disk. So the thread owns the
connection, and every caller gets a ``concurrent.futures.Future``: the server awaits it
(``asyncio.wrap_future``), synchronous callers take ``.result()``. Reads run one by one;
writes queued together are handed to the ``Writer`` as one group (one transaction).
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from concurrent.futures import Future
from typing import Any, Callable, Optional, TypeVar

from journy_analytics._lifecycle import signal_free
from journy_analytics.collector._store.schema import open_database
from journy_analytics.collector._store.writer import Writer

__all__ = ["DatabaseThread", "Job"]

T = TypeVar("T")

# At most this many writes share one transaction.
_MAX_GROUP = 64


class Job:
    __slots__ = ("args", "fn", "future", "write")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], future: Future[Any], write: bool
    ) -> None:
        self.fn = fn
        self.args = args
        self.future = future
        self.write = write

    def run(self) -> None:
        try:
            result = self.fn(*self.args)
        except BaseException as exc:
            self.fail(exc)
        else:
            self.succeed(result)

    def succeed(self, result: Any) -> None:
        if self.future.set_running_or_notify_cancel():
            self.future.set_result(result)

    def fail(self, exc: Optional[BaseException]) -> None:
        if self.future.set_running_or_notify_cancel():
            self.future.set_exception(exc)


class DatabaseThread:
    """Opens the database at ``path`` on a thread of its own and runs every job there."""

    def __init__(self, path: str, writer: Writer) -> None:
        self._path = path
        self._writer = writer
        self._jobs: queue.SimpleQueue[Optional[Job]] = queue.SimpleQueue()
        self._conn: Optional[sqlite3.Connection] = None
        self._close_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=signal_free(self._serve_jobs), name="journy-collector-db", daemon=True
        )
        self._thread.start()
        try:
            self._submit(self._open, (), write=False).result()
        except BaseException:
            self._jobs.put(None)
            self._thread.join()
            raise

    def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(connection, *args, **kwargs)`` on the thread."""
        return self._submit(lambda: fn(self._db(), *args, **kwargs), (), write=False)

    def write(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(transaction, *args)`` in a write transaction, maybe with other writes;
        the future resolves once that transaction committed."""
        return self._submit(fn, args, write=True)

    def close(self) -> None:
        """Wait for queued work (every write is committed when its future resolves), close."""
        with self._close_lock:
            if self._closed:
                return
            self._submit(self._close, (), write=False).result()
            self._closed = True
            self._jobs.put(None)
        self._thread.join()

    @property
    def closed(self) -> bool:
        return self._closed

    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...], write: bool) -> Future[T]:
        if self._closed:
            raise RuntimeError("the collector store is closed")
        future: Future[T] = Future()
        self._jobs.put(Job(fn, args, future, write))
        return future

    def _serve_jobs(self) -> None:
        carry: Optional[Job] = None
        while True:
            job = carry if carry is not None else self._jobs.get()
            carry = None
            if job is None:
                return
            if not job.write:
                job.run()
                continue
            group = [job]
            stop = False
            while len(group) < _MAX_GROUP:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if not nxt.write:
                    carry = nxt
                    break
                group.append(nxt)
            self._commit(group)
            if stop:
                return

    def _commit(self, group: list[Job]) -> None:
        try:
            conn = self._db()
        except BaseException as exc:
            for job in group:
                job.fail(exc)
            return
        self._writer.commit(conn, group)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the collector store is closed")
        return self._conn

    def _open(self) -> None:
        conn = open_database(self._path)
        self._writer.opened(conn)
        self._conn = conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
