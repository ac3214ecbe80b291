"""The spool's file: accepted events on disk until the server acknowledges them.

SQLite in WAL mode, written only in group commits (every ``commit_interval`` and before
each batch goes out), never once per event, so the call path pays nothing for it.
Rows are keyed by the event's position in take order, which the worker already tracks,
so acknowledging a batch is one range delete.

Guarantee (synchronous=NORMAL under WAL): a committed event survives the process being
killed (``kill -9``, a crash, OOM); the last commits may be lost on power failure.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from typing import IO, Callable, List, Optional, Sequence, Tuple

from journy_analytics._exceptions import SpoolLockedError
from journy_analytics._logging import logger

__all__ = ["SpoolError", "SpoolFile", "describe_failure"]

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, one process per path
    fcntl = None  # type: ignore[assignment]


class SpoolError(Exception):
    """The spool file cannot be used (corrupt, unwritable): the client falls back to memory."""


_SQLITE_FULL = 13
_DISK_FULL_ERRNOS = {
    code for code in (getattr(errno, n, None) for n in ("ENOSPC", "EDQUOT", "EFBIG")) if code
}


def describe_failure(path: str, exc: BaseException) -> str:
    """What went wrong with the spool file, with what to do about it where we can tell."""
    if _disk_full(exc):
        return (
            f"spool {path} failed: the disk is full ({exc}); free space on that disk, or "
            "point spool= at a disk with room"
        )
    return f"spool {path} failed: {exc}"


def _disk_full(exc: BaseException) -> bool:
    seen: Optional[BaseException] = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL_ERRNOS:
            return True
        if isinstance(seen, sqlite3.Error) and (
            getattr(seen, "sqlite_errorcode", None) == _SQLITE_FULL  # Python 3.11+
            or "database or disk is full" in str(seen)
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class SpoolFile:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        # The connection and the lock belong to this process: a forked child must never
        # write through them (the worker resets on a fork; this is the last guard).
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._closed = False
        self._lock_file: Optional[IO[str]] = None
        self._acquire_process_lock()
        try:
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=5.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS spool"
                " (position INTEGER PRIMARY KEY, body BLOB NOT NULL)"
            )
            # GDPR erase fences (Analytics.erase_user): kept across restarts with the events.
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS erase_fences"
                " (kind TEXT NOT NULL, value TEXT NOT NULL, until REAL NOT NULL,"
                " PRIMARY KEY (kind, value))"
            )
            self._db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.Error as exc:
            self._release_process_lock()
            raise SpoolError(describe_failure(self.path, exc)) from exc

    def _acquire_process_lock(self) -> None:
        if fcntl is None:
            return
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
            handle = open(self.path + ".lock", "a+")  # noqa: SIM115 - held for the spool's life
        except OSError as exc:
            raise SpoolError(f"cannot create spool lock {self.path}.lock: {exc}") from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            if holder == str(os.getpid()):
                raise SpoolLockedError(
                    f"spool={self.path!r} is in use by another client in this process; "
                    "close_and_flush() it before opening a new client on the same path"
                ) from None
            raise SpoolLockedError(
                f"spool={self.path!r} is in use by process {holder}; a spool belongs to one "
                "process at a time: give each process its own path (e.g. include os.getpid())"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def _release_process_lock(self) -> None:
        if self._lock_file is not None:
            try:
                self._lock_file.close()
            finally:
                self._lock_file = None

    def take_leftovers(self) -> List[bytes]:
        """Events a previous run accepted but never settled, oldest first, renumbered from 0
        so the new run's positions can follow them."""
        with self._lock:
            rows = self._db.execute("SELECT body FROM spool ORDER BY position").fetchall()
            if rows:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute("DELETE FROM spool")
                    self._db.executemany(
                        "INSERT INTO spool (position, body) VALUES (?, ?)",
                        ((i, row[0]) for i, row in enumerate(rows)),
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
        return [bytes(row[0]) for row in rows]

    def _check_owner(self) -> None:
        if os.getpid() != self._owner:
            raise SpoolError(
                f"spool {self.path} belongs to process {self._owner}; a forked child "
                "keeps its events in memory"
            )

    def append(self, first_position: int, bodies: Sequence[bytes]) -> None:
        """One transaction for many events: the group commit."""
        if not bodies:
            return
        self._check_owner()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO spool (position, body) VALUES (?, ?)",
                    ((first_position + i, body) for i, body in enumerate(bodies)),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        """Undo a failed transaction without hiding why it failed. SQLite has already rolled
        it back after some errors (a full disk, an I/O error): a ROLLBACK then raises "no
        transaction is active", which used to replace the real cause."""
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            logger.debug("rolling back the spool transaction failed", exc_info=True)

    def remove(self, first_position: int, end_position: int) -> None:
        """Forget positions [first, end): the server acknowledged them (or refused them for
        good, which was reported). A no-op once closed: a new client took the file
        over (see ``_spool.Spool``), and these rows are re-sent by it."""
        self._check_owner()
        with self._lock:
            if self._closed:
                return
            self._db.execute(
                "DELETE FROM spool WHERE position >= ? AND position < ?",
                (first_position, end_position),
            )

    def rewrite(
        self,
        start: int,
        end: int,
        first_kept: int,
        kept: Sequence[bytes],
        matches: Callable[[bytes], bool],
    ) -> int:
        """A GDPR erase, in one transaction: the queued range ``[start, end)`` becomes
        ``kept`` from ``first_kept`` on, and every other row ``matches`` accepts (events of
        batches taken and not yet acknowledged) is deleted. Returns how many rows went."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                erased = sum(
                    1
                    for row in self._db.execute(
                        "SELECT body FROM spool WHERE position >= ? AND position < ?",
                        (start, end),
                    )
                    if matches(bytes(row[0]))
                )
                self._db.execute(
                    "DELETE FROM spool WHERE position >= ? AND position < ?", (start, end)
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO spool (position, body) VALUES (?, ?)",
                    ((first_kept + i, body) for i, body in enumerate(kept)),
                )
                others = [
                    row[0]
                    for row in self._db.execute(
                        "SELECT position, body FROM spool WHERE position < ? OR position >= ?",
                        (start, end),
                    )
                    if matches(bytes(row[1]))
                ]
                self._db.executemany("DELETE FROM spool WHERE position = ?", ((p,) for p in others))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return erased + len(others)

    def save_fence(self, kind: str, value: str, until: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO erase_fences (kind, value, until) VALUES (?, ?, ?)",
                (kind, value, until),
            )

    def fences(self, now: float) -> List[Tuple[str, str, float]]:
        """The fences still standing at ``now`` (wall clock); expired ones are deleted."""
        with self._lock:
            self._db.execute("DELETE FROM erase_fences WHERE until <= ?", (now,))
            rows = self._db.execute("SELECT kind, value, until FROM erase_fences").fetchall()
        return [(str(k), str(v), float(u)) for k, v, u in rows]

    def close(self) -> None:
        if os.getpid() != self._owner:
            self.abandon()
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.close()
            finally:
                self._release_process_lock()

    def abandon(self) -> None:
        """In a forked child: the parent owns the file and the connection; touch neither.

        Not even by freeing it: freeing a connection closes it, and closing runs SQLite in
        the child on the parent's file (a WAL checkpoint) and takes the connection's mutex,
        which a parent thread may have held at the fork (the child then hangs at exit).
        So the child keeps one reference to it for ever: a few KB of the parent's memory
        it already has."""
        import ctypes  # only here: a forked child, once per spool

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._db))
        self._lock_file = None
