"""Outcomes: the one owner of what happened to accepted events.

It keeps the counters of ``stats()``, the batches taken and not yet settled (``in_flight``,
which includes batches waiting to retry), the last error and success, and it tells the
user: ``error`` and per-type handlers, callbacks, log lines (the first of a kind at once,
repeats rate-limited with a count). Flush waiters wait on its condition.

Every count changes under the worker's state lock, which the queue shares, so a snapshot
sees each event in exactly one place::

    accepted + found_in_spool == delivered + sum(dropped) + queued + in_flight + kept_in_spool

Reporting runs outside the lock. A callback or handler may raise anything, even
``SystemExit``: it is logged, and the accounting is already done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Protocol, Tuple

import orjson

from journy_analytics._core._attempt import Attempted, BatchResult
from journy_analytics._exceptions import DeliveryError
from journy_analytics._handlers import Emitter
from journy_analytics._lifecycle import user_code
from journy_analytics._logging import RateLimitedLog, logger
from journy_analytics._types import EVENT_TYPES, Batch, Callback, Cause, Item, callback_of, data_of

__all__ = ["BatchAck", "BatchOwner", "Outcomes"]

_SAMPLE_SIZE = 20
OVERFLOW_REPORT_EVERY = 1.0
_EVENT_TYPES = frozenset(EVENT_TYPES)
# The queue_full counter's key, spelled once: overflow_pending() asks for it twice at every
# dispatcher step, and an enum's .value is a Python-level property.
_QUEUE_FULL = Cause.QUEUE_FULL.value


class Outcomes:
    def __init__(self, lock: threading.Lock, emitter: Emitter, max_queue_size: int) -> None:
        self._lock = lock
        self.settled = threading.Condition(lock)
        self._emitter = emitter
        self._max_queue_size = max_queue_size
        self._logs = RateLimitedLog()
        self.in_flight = 0
        self._outstanding: Dict[int, Batch] = {}
        # Given up on at a close timeout, but their request may still be on the wire.
        self._abandoned: Dict[int, Batch] = {}
        self.delivered = 0
        self.batches_sent = 0
        # Batches answered 413 and split in halves (each half's requests count in requests).
        self.batches_split = 0
        self.requests = 0
        self.retried = 0
        self.bytes_sent = 0
        self.dropped: Dict[str, int] = {cause.value: 0 for cause in Cause}
        self.kept_in_spool = 0
        self.replayed = 0
        self.last_error: Optional[Tuple[str, float]] = None
        self.last_success: Optional[float] = None
        self._failed_attempts = 0
        self._failing_since: Optional[float] = None
        self._overflow_reported = 0
        self._overflow_reported_at = -OVERFLOW_REPORT_EVERY
        self._overflow_sample: Deque[bytes] = deque(maxlen=_SAMPLE_SIZE)

    # -- transitions (callers hold the state lock where it says so) -----------------------

    def begin(self, batch: Batch) -> None:
        """A batch left the queue. With the state lock held."""
        self.in_flight += len(batch.items)
        self._outstanding[batch.number] = batch

    def observe(self, attempted: Attempted) -> None:
        """One request went out: live counters, and the outage log."""
        now = time.time()
        with self._lock:
            self.requests += 1
            self.bytes_sent += attempted.bytes_sent
            if attempted.is_retry:
                self.retried += 1
            if attempted.ok:
                self.last_success = now
                failed, self._failed_attempts = self._failed_attempts, 0
                since, self._failing_since = self._failing_since, None
            else:
                self.last_error = (attempted.failure, now)
                self._failed_attempts += 1
                if self._failing_since is None:
                    self._failing_since = now
                failed, since = 0, None
        if attempted.ok:
            if failed >= 3:
                logger.info(
                    "delivery recovered after %d failed attempt(s) over %.1f s",
                    failed,
                    now - (since or now),
                )
            return
        if attempted.next:
            # A last attempt is not logged here: the batch's settlement reports it, once.
            self._logs.log(
                "attempt",
                logging.WARNING,
                "delivery attempt failed: %s; %s",
                attempted.failure,
                attempted.next,
            )

    def split(self, batch: Batch, halves: List[Batch]) -> bool:
        """A batch the server found too large (413) is replaced by its two halves, each
        settled on its own. False if close_and_flush already gave up on it."""
        with self._lock:
            if batch.abandoned:
                return False
            self._outstanding.pop(batch.number, None)
            for half in halves:
                self._outstanding[half.number] = half
            self.batches_split += 1
        return True

    def erased_from(self, batch: Batch, count: int) -> None:
        """An erase took ``count`` events out of a parked batch (they are never sent; the
        erase tells their callbacks). A batch left empty is settled. With the state lock
        held."""
        if batch.abandoned:
            return  # close_and_flush already counted and reported it
        self.in_flight -= count
        if not batch.items:
            self._outstanding.pop(batch.number, None)
        self.settled.notify_all()

    def settle(self, batch: Batch, result: BatchResult, kept: bool = False) -> None:
        """A batch's last attempt is over: count, report, then release flush waiters.
        ``kept``: not delivered, but the spool keeps it for the next client."""
        try:
            if batch.abandoned:
                with self._lock:
                    self._abandoned.pop(batch.number, None)
                return  # close_and_flush already counted and reported it
            n = len(batch.items)
            with self._lock:
                self.in_flight -= n
                if result.delivered:
                    self.delivered += n
                    self.batches_sent += 1
                elif kept:
                    self.kept_in_spool += n
                else:
                    assert result.cause is not None
                    self.dropped[result.cause.value] += n
            if result.delivered:
                self._report_delivered(batch.items)
            else:
                assert result.cause is not None
                self._report_failed(batch.items, result.cause, result.reason, result.status)
        finally:
            with self._lock:
                self._outstanding.pop(batch.number, None)
                self.settled.notify_all()

    def drop_queued(self, batch: Batch, cause: Cause, reason: str, kept: bool) -> None:
        """Events that never left the queue and never will (close gave up, or a call raced
        the close): counted as kept in the spool or dropped, and reported."""
        if not batch.items:
            return
        with self._lock:
            if kept:
                self.kept_in_spool += len(batch.items)
            else:
                self.dropped[cause.value] += len(batch.items)
            self.settled.notify_all()
        self._report_failed(batch.items, cause, reason, None)

    def abandon_in_flight(self, fate: str, kept: bool) -> None:
        """close_and_flush timed out with batches still on the wire or waiting to retry:
        report them once, now (at exit the process may end before they settle). Their late
        answer, if any, is not reported again."""
        with self._lock:
            batches = [b for b in self._outstanding.values() if not b.abandoned]
            items: List[Item] = []
            for batch in batches:
                batch.abandoned = True
                items.extend(batch.items)
                self._abandoned[batch.number] = batch
            self.in_flight -= len(items)
            if kept:
                self.kept_in_spool += len(items)
            else:
                self.dropped[Cause.CLOSED.value] += len(items)
            self._outstanding.clear()
            self.settled.notify_all()
        if items:
            self._report_failed(
                items,
                Cause.CLOSED,
                f"{len(items)} event(s) were in flight when close_and_flush() timed out; {fate}",
                None,
            )

    def overflow(self, data: bytes, callback: Optional[Callback]) -> None:
        """The queue was full. Counted here, reported by the dispatcher (at most once a
        second): the caller never waits on a user's error handler. A callback is the
        caller's own and is told at once."""
        with self._lock:
            self.dropped[_QUEUE_FULL] += 1
            self._overflow_sample.append(data)
        if callback is not None:
            error = DeliveryError(
                Cause.QUEUE_FULL,
                f"the client holds max_queue_size={self._max_queue_size} events; this event "
                "was dropped (raise max_queue_size or check the server)",
                events=[orjson.loads(data)],
            )
            _call(callback, error, orjson.loads(data))

    def overflow_pending(self) -> bool:
        return self.dropped[_QUEUE_FULL] != self._overflow_reported

    def report_overflow(self, now_or_never: bool = False) -> None:
        """Report queue_full drops not reported yet: at most once a second, unless
        ``now_or_never`` (close: there is no later)."""
        with self._lock:
            dropped = self.dropped[_QUEUE_FULL] - self._overflow_reported
            now = time.monotonic()
            if dropped <= 0 or (
                now - self._overflow_reported_at < OVERFLOW_REPORT_EVERY and not now_or_never
            ):
                return
            self._overflow_reported_at = now
            self._overflow_reported += dropped
            sample = list(self._overflow_sample)
            self._overflow_sample.clear()
        error = DeliveryError(
            Cause.QUEUE_FULL,
            f"{dropped} event(s) dropped: the client already held max_queue_size="
            f"{self._max_queue_size} events; raise max_queue_size, or check why the server "
            "is not keeping up",
            events=[orjson.loads(d) for d in sample],
            count=dropped,
        )
        self._logs.log("queue_full", logging.WARNING, "%s", error.reason)
        self._emitter.emit("error", error)

    def note_replayed(self, count: int) -> None:
        with self._lock:
            self.replayed += count

    def spool_failed(self, reason: str) -> None:
        logger.error("%s; carrying on with events in memory only", reason)
        self._emitter.emit(
            "error",
            DeliveryError(
                "spool",
                f"{reason}; events are no longer written to disk (none was lost)",
                code="spool_failure",
            ),
        )

    def count_taken(self, matches: Callable[[bytes], bool]) -> int:
        """Events of batches taken and not settled (on the wire or waiting to retry) that
        ``matches`` accepts. With the state lock held."""
        return sum(
            1 for b in self._outstanding.values() for item in b.items if matches(data_of(item))
        )

    # -- flush ----------------------------------------------------------------------------

    def watermark(self, next_position: int) -> int:
        """Every position below this is settled. With the state lock held."""
        outstanding = self._outstanding
        if not outstanding:
            return next_position
        return min(b.first_index for b in outstanding.values())

    def idle(self) -> bool:
        """Nothing taken is unsettled. With the state lock held."""
        return not self._outstanding

    def quiet(self) -> bool:
        """No request of ours can still be answered, abandoned ones included. With the
        state lock held."""
        return not self._outstanding and not self._abandoned

    # -- reporting --------------------------------------------------------------------------

    def _report_delivered(self, items: List[Item]) -> None:
        emitter = self._emitter
        wants_callbacks = tuple in map(type, items)  # an Item is bytes or a tuple
        wants_types = emitter.has_any(_EVENT_TYPES)
        if not wants_callbacks and not wants_types:
            return
        if not wants_types and _ack_batch(items):
            return
        with user_code:  # one mask switch for the batch, not one per callback
            for item in items:
                message = orjson.loads(data_of(item))
                if wants_types:
                    emitter.emit(message.get("type", ""), message)
                callback = callback_of(item)
                if callback is not None:
                    _call(callback, None, message)

    def _report_failed(
        self, items: List[Item], cause: Cause, reason: str, status: Optional[int]
    ) -> None:
        decoded = [orjson.loads(data_of(item)) for item in items]
        error = DeliveryError(cause, reason, events=decoded, status=status)
        self._logs.log(
            f"failed:{cause.value}",
            logging.WARNING,
            "%d event(s) not delivered (%s): %s",
            len(items),
            cause.value,
            reason,
        )
        with user_code:
            self._emitter.emit("error", error)
            for item, message in zip(items, decoded):
                callback = callback_of(item)
                if callback is not None:
                    _call(callback, error, message)

    # -- figures ----------------------------------------------------------------------------

    def figures(self) -> Dict[str, Any]:
        """With the state lock held."""
        last_error = self.last_error
        return {
            "in_flight": self.in_flight,
            "delivered": self.delivered,
            "retried": self.retried,
            "requests": self.requests,
            "dropped": dict(self.dropped),
            "kept_in_spool": self.kept_in_spool,
            "found_in_spool": self.replayed,
            "batches_sent": self.batches_sent,
            "batches_split": self.batches_split,
            "bytes_sent": self.bytes_sent,
            "last_error": None
            if last_error is None
            else {"text": last_error[0], "at": last_error[1]},
            "last_success": self.last_success,
        }


class BatchAck:
    """A callback that can be settled a whole batch at a time, for bulk senders.

    ``owner`` (a :class:`BatchOwner`) hears of ``token`` like any callback, with
    ``owner.event_settled(token, error, message)``; but when the whole batch settled
    delivered and every callback in it is a ``BatchAck`` of one owner, the owner gets one
    ``owner.batch_delivered(tokens)`` call instead and no event is decoded for it
    (per-event callbacks cost a backfill a third of its time). The core knows nothing of
    what a token stands for (the import's rows)."""

    __slots__ = ("owner", "token")

    def __init__(self, owner: BatchOwner, token: Any) -> None:
        self.owner = owner
        self.token = token

    def __call__(self, error: Optional[BaseException], message: Dict[str, Any]) -> None:
        self.owner.event_settled(self.token, error, message)


class BatchOwner(Protocol):
    """Who is told of :class:`BatchAck` tokens (both calls come on a sender thread)."""

    def event_settled(
        self, token: Any, error: Optional[BaseException], message: Dict[str, Any]
    ) -> None: ...

    def batch_delivered(self, tokens: List[Any]) -> None: ...


def _ack_batch(items: List[Item]) -> bool:
    """A delivered batch of one owner's ``BatchAck``s: one call; False if it is not that."""
    first = callback_of(items[0])
    if type(first) is not BatchAck:
        return False
    owner = first.owner
    tokens = []
    for item in items:
        ack = callback_of(item)
        if type(ack) is not BatchAck or ack.owner is not owner:
            return False
        tokens.append(ack.token)
    try:
        owner.batch_delivered(tokens)
    except BaseException:  # as _call: never unwind a worker thread's accounting
        logger.exception("an event callback raised; carrying on")
    return True


def _call(callback: Callback, error: Optional[BaseException], message: Dict[str, Any]) -> None:
    try:
        # Callers run it inside ``with user_code`` (the reporting loops), or in the
        # caller's own thread (overflow).
        callback(error, message)
    except BaseException:  # even SystemExit: it must not unwind a worker thread's accounting
        logger.exception("an event callback raised; carrying on")
