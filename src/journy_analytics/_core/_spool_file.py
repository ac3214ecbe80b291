"""The spool's file: accepted events on disk until the server acknowledges them.

SQLite in WAL mode, written only in group commits (every ``commit_interval`` and before
each batch goes out), never once per event, so the call path pays nothing for it.
Rows are keyed by the event's position in take order, which the worker already tracks,
so acknowledging a batch is one range delete.

Guarantee (synchronous=NORMAL under WAL): a committed event survives the process being
killed (``kill -9``, a crash, OOM); the last commits may be lost on power failure.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import IO, List, Optional, Sequence

from journy_analytics._exceptions import SpoolLockedError

__all__ = ["SpoolError", "SpoolFile"]

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, one process per path
    fcntl = None  # type: ignore[assignment]


class SpoolError(Exception):
    """The spool file cannot be used (corrupt, unwritable): the client falls back to memory."""


class SpoolFile:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._lock = threading.Lock()
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
            self._db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.Error as exc:
            self._release_process_lock()
            raise SpoolError(f"cannot use spool file {self.path}: {exc}") from exc

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
                    self._db.execute("ROLLBACK")
                    raise
        return [bytes(row[0]) for row in rows]

    def append(self, first_position: int, bodies: Sequence[bytes]) -> None:
        """One transaction for many events: the group commit."""
        if not bodies:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO spool (position, body) VALUES (?, ?)",
                    ((first_position + i, body) for i, body in enumerate(bodies)),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def remove(self, first_position: int, end_position: int) -> None:
        """Forget positions [first, end): the server acknowledged them (or refused them for
        good, which was reported)."""
        with self._lock:
            self._db.execute(
                "DELETE FROM spool WHERE position >= ? AND position < ?",
                (first_position, end_position),
            )

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            finally:
                self._release_process_lock()

    def abandon(self) -> None:
        """In a forked child: the parent owns the file and the connection; touch neither."""
        self._lock_file = None
