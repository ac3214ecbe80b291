"""The spool: the worker's side of the optional disk queue (``Analytics(spool=path)``).

It owns the :class:`~journy_analytics._core._spool_file.SpoolFile` (the SQLite file) and the
bookkeeping around it: which queue positions are on disk (``spooled_upto``), group commits (every
``commit_interval`` and before each batch leaves, never per event), removing rows once
their batch is settled for good, replaying an earlier run's leftovers, falling back to
memory when the disk fails, and closing the file only once no batch is on the wire (a
late 200 must still remove its rows, or the next client would send them again).

A client re-created on the same path in the same process, while the closed one still waits
for such an answer, takes the file over: it waits up to ``HANDOVER_WAIT`` seconds for that
answer, then closes the old client's spool itself. The old client's late answer is then
ignored and its rows stay, so the new client re-sends them (at least once: an event the
late answer had delivered arrives twice, with the same ``messageId``; none is lost).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from journy_analytics._core._attempt import BatchResult
from journy_analytics._core._queue import EventQueue
from journy_analytics._core._spool_file import SpoolError, SpoolFile, describe_failure
from journy_analytics._exceptions import SpoolLockedError
from journy_analytics._lifecycle import fork as _fork
from journy_analytics._logging import logger
from journy_analytics._types import Batch, Cause, Item, data_of

__all__ = ["HANDOVER_WAIT", "Spool"]

HANDOVER_WAIT = 1.0

# Spools of this process that were closed with a request still on the wire, by path:
# their spool stays open until it is answered, or until a new client takes it over.
_closing: Dict[str, Spool] = {}
_closing_lock = threading.Lock()


def _after_fork() -> None:
    # The parent's closing clients and their files are the parent's: a child opening the
    # same path is another process (refused by the file lock), never a hand-over.
    global _closing_lock
    _closing_lock = threading.Lock()
    _closing.clear()


_fork.register(_after_fork)


class Spool:
    def __init__(
        self,
        path: Optional[str],
        *,
        lock: threading.Lock,
        queue: EventQueue,
        commit_interval: float,
        on_failure: Callable[[str], None],
        error: Optional[str] = None,
    ) -> None:
        self._path = path
        self._lock = lock
        self._queue = queue
        self._commit_interval = commit_interval
        self._on_failure = on_failure
        self._file: Optional[SpoolFile] = None
        self._error = error
        self._spooled_upto = 0
        self._last_commit = 0.0
        self._closing = False
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        # Held across a group commit's read of the queue and its write, and by an erase's
        # purge: a commit must not write back bodies an erase just removed.
        self._commit_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def open(self) -> List[bytes]:
        """Open the spool; return what an earlier run left (oldest first). A path another
        live process holds raises ``SpoolLockedError``: a configuration mistake to fix."""
        if self._path is None:
            return []
        with _closing_lock:
            previous = _closing.get(os.path.abspath(self._path))
        if previous is not None:
            previous.hand_over(HANDOVER_WAIT)
        try:
            spool = SpoolFile(self._path)
            leftovers = spool.take_leftovers()
        except SpoolLockedError:
            raise
        except SpoolError as exc:
            self._error = str(exc)
            logger.error("%s; events are kept in memory only", exc)
            return []
        except Exception as exc:  # sqlite3 errors on a damaged file, disk errors
            self._error = f"cannot use spool file {self._path}: {exc}"
            logger.error("%s; events are kept in memory only", self._error)
            return []
        self._file = spool
        return leftovers

    def forget_beyond(self, keep: int, total: int) -> None:
        """Leftovers past the queue's bound are dropped (and reported by the caller)."""
        if self._file is not None and total > keep:
            self._file.remove(keep, total)

    def replayed(self, count: int) -> None:
        self._spooled_upto = count

    # -- the dispatcher's side ------------------------------------------------------------

    def commit_due(self) -> float:
        """Seconds until the next group commit is due (0: now)."""
        return max(0.0, self._last_commit + self._commit_interval - time.monotonic())

    def commit(self) -> None:
        """Write what is queued and not on disk yet, in one transaction."""
        with self._commit_lock:
            self._commit()

    def _commit(self) -> None:
        spool = self._file
        if spool is None:
            return
        self._last_commit = time.monotonic()
        with self._lock:
            start = self._spooled_upto
            end = self._queue.next_position + len(self._queue)
            bodies = self._queue.peek(start, end)
            first = end - len(bodies)
        if not bodies:
            return
        try:
            spool.append(first, bodies)
        except Exception as exc:
            self._failed(exc)
            return
        self._spooled_upto = end

    def purge(self, matches: Callable[[bytes], bool]) -> Tuple[List[Item], int]:
        """A GDPR erase: the queued events ``matches`` accepts leave the queue and the
        spool; so do its rows of batches already taken (they stay in memory for their
        attempt, but a restart will not send them again). Returns the removed queued
        events and how many spool rows went."""
        with self._commit_lock:
            with self._lock:
                first, kept, removed = self._queue.purge(matches)
            spool = self._file
            if spool is None:
                return removed, 0
            end = first + len(kept) + len(removed)
            try:
                gone = spool.rewrite(
                    first, end, first + len(removed), [data_of(i) for i in kept], matches
                )
            except Exception as exc:
                self._failed(exc)
                return removed, 0
            self._spooled_upto = max(self._spooled_upto, end)
            return removed, gone

    def recut(self, first: int, end: int, kept: List[bytes]) -> None:
        """A parked batch covering ``[first, end)`` lost events to an erase: its rows become
        ``kept``, at the end of the range (the batch now starts at ``end - len(kept)``)."""
        spool = self._file
        if spool is None:
            return
        with self._commit_lock:
            try:
                spool.rewrite(first, end, end - len(kept), kept, lambda data: False)
            except Exception as exc:
                self._failed(exc)

    def save_fence(self, kind: str, value: str, until: float) -> bool:
        spool = self._file
        if spool is None:
            return False
        try:
            spool.save_fence(kind, value, until)
        except Exception as exc:
            self._failed(exc)
            return False
        return True

    def fences(self, now: float) -> List[Tuple[str, str, float]]:
        spool = self._file
        if spool is None:
            return []
        try:
            return spool.fences(now)
        except Exception as exc:
            self._failed(exc)
            return []

    def settled(self, batch: Batch, result: BatchResult) -> None:
        """Delivered, or refused for good and reported: not to be sent again. A batch the
        client gave up on at close stays for the next client on this path."""
        spool = self._file
        if spool is None or result.cause is Cause.CLOSED:
            return
        try:
            spool.remove(batch.first_index, batch.first_index + len(batch.items))
        except Exception as exc:
            self._failed(exc)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self, quiet: bool) -> None:
        """Close now if no request is on the wire, else when the last one is answered (or
        when a new client on the same path takes the file over)."""
        self._closing = True
        spool = self._file
        if quiet or spool is None:
            self._close_now()
            return
        with _closing_lock:
            _closing[spool.path] = self
        if self._closed.is_set():  # answered meanwhile: closed already, unregister
            self._unregister(spool.path)

    def maybe_finish(self, quiet: bool) -> None:
        if self._closing and quiet:
            self._close_now()

    def hand_over(self, wait: float) -> None:
        """A new client opens this path: wait up to ``wait`` seconds for the request still
        on the wire, then close the spool anyway (its rows are re-sent by the new client)."""
        if self._closed.wait(wait):
            return
        logger.info(
            "spool %s: a client closed earlier still waits for a request; the new client "
            "takes the file over and re-sends those events (at least once)",
            self._path,
        )
        self._close_now()

    def _close_now(self) -> None:
        with self._close_lock:
            spool, self._file = self._file, None
            if spool is not None:
                spool.close()
                self._unregister(spool.path)
            self._closed.set()

    def _unregister(self, path: str) -> None:
        with _closing_lock:
            if _closing.get(path) is self:
                del _closing[path]

    def after_fork(self) -> None:
        if self._file is not None:
            # The file, its lock and its connection are the parent's.
            self._file.abandon()
            self._file = None
            self._error = "a forked child does not share its parent's spool"
            logger.warning(
                "this forked child keeps events in memory only; create the client after "
                "fork to give each process its own spool"
            )

    def _failed(self, exc: BaseException) -> None:
        spool, self._file = self._file, None
        path = spool.path if spool is not None else self._path
        self._error = describe_failure(str(path), exc)
        self._on_failure(self._error)

    def figures(self) -> Dict[str, Any]:
        return {
            "enabled": self._file is not None,
            "path": self._file.path if self._file is not None else self._path,
            "error": self._error,
        }
