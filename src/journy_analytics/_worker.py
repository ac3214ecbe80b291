"""The background side of the client: the queue, the dispatcher thread and the senders.

Threads: one dispatcher decides *when* to send (full batch, oldest event past
``flush_interval``, flush or close) and cuts batches; up to
``max_concurrent_requests`` sender threads, started only when a backlog needs them,
each deliver one batch at a time through :class:`BatchSender`.

The call path touches no lock: ``deque.append`` is atomic, and the dispatcher is woken
only when the queue goes from empty to non-empty or reaches a full batch.

Flush bookkeeping: every event the dispatcher takes gets an index in take order; a
batch covers a contiguous range. The *watermark* is the start of the oldest unsettled
batch (or the take count if none), so every event below it is settled. A flush waits
until the watermark reaches the take count plus the queue length at the time of the call.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

import orjson

from journy_analytics._delivery import BatchResult, BatchSender, RetryState
from journy_analytics._encoding import MAX_BATCH_BYTES, compact
from journy_analytics._errors import DeliveryError
from journy_analytics._events import Emitter
from journy_analytics._retry import RetryPolicy
from journy_analytics._spool import Spool, SpoolError, SpoolLockedError
from journy_analytics._transport import HttpClient

__all__ = ["Callback", "Worker", "WorkerConfig"]

logger = logging.getLogger("journy_analytics")

Callback = Callable[[Optional[BaseException], Dict[str, Any]], Any]
Item = Union[bytes, Tuple[bytes, Callback]]

# The envelope around the joined events: {"batch":[...],"sentAt":"...","writeKey":"..."}.
_ENVELOPE_BYTES = 128
_SAMPLE_SIZE = 20
_OVERFLOW_REPORT_EVERY = 1.0


@dataclass(frozen=True)
class WorkerConfig:
    url: str
    # Kept out of repr(): error trackers capture local variables.
    write_key: str = field(repr=False)
    max_events_in_batch: int
    flush_interval: float
    http_request_timeout: float
    max_queue_size: int
    max_concurrent_requests: int
    gzip: bool
    policy: RetryPolicy
    make_transport: Callable[[], HttpClient]
    # A transport the user gave us is theirs: we neither rebuild it after fork nor close it twice.
    owns_transport: bool
    spool_path: Optional[str] = None
    spool_commit_interval: float = 0.2
    # Seconds put() waits for room in a full queue before dropping the event (0: never wait).
    enqueue_timeout: float = 0.0


class _Batch:
    __slots__ = ("first_index", "items", "number", "state")

    def __init__(self, number: int, first_index: int, items: List[Item]) -> None:
        self.number = number
        self.first_index = first_index
        self.items = items
        self.state: Optional[RetryState] = None


def _data(item: Item) -> bytes:
    return item if isinstance(item, bytes) else item[0]


def _callback(item: Item) -> Optional[Callback]:
    return None if isinstance(item, bytes) else item[1]


_live_workers: weakref.WeakSet[Worker] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for worker in list(_live_workers):
        worker._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


class Worker:
    def __init__(self, config: WorkerConfig, emitter: Emitter) -> None:
        self._config = config
        self._emitter = emitter
        self._transport: Optional[HttpClient] = None
        self._user_transport: Optional[HttpClient] = (
            None if config.owns_transport else config.make_transport()
        )
        self._spool: Optional[Spool] = None
        self._spool_error: Optional[str] = None
        self._compact_after = 2 * config.max_events_in_batch
        self._reset()
        if config.spool_path is not None:
            self._open_spool(config.spool_path)
        _live_workers.add(self)

    def _open_spool(self, path: str) -> None:
        # SpoolLockedError (another live process has the path) propagates: that is a
        # configuration mistake to fix, not a fault to ride out.
        try:
            spool = Spool(path)
            leftovers = spool.take_leftovers()
        except SpoolLockedError:
            raise
        except SpoolError as exc:
            self._spool_error = str(exc)
            logger.error("journy_analytics: %s; events are kept in memory only", exc)
            return
        except Exception as exc:  # sqlite3 errors on a damaged file, disk errors
            self._spool_error = f"cannot use spool file {path}: {exc}"
            logger.error("journy_analytics: %s; events are kept in memory only", self._spool_error)
            return
        self._spool = spool
        limit = self._config.max_queue_size
        if len(leftovers) > limit:
            # Keep the oldest: they were accepted first. The rest is counted and reported.
            excess = leftovers[limit:]
            leftovers = leftovers[:limit]
            spool.remove(limit, limit + len(excess))
            self._overflow += len(excess)
            self._overflow_sample.extend(excess[:_SAMPLE_SIZE])
        self._queue.extend(leftovers)
        self._spooled_upto = len(leftovers)
        self._replayed = len(leftovers)
        if leftovers:
            logger.info("journy_analytics: re-sending %d event(s) from the spool", len(leftovers))
            self._start()

    # -- state ---------------------------------------------------------------------------

    def _reset(self) -> None:
        """Fresh runtime state: at start and in a forked child (whose threads are gone and
        whose locks may be held by threads that no longer exist)."""
        cfg = self._config
        self._pid = os.getpid()
        self._queue: Deque[Item] = deque()
        self._wake = threading.Event()
        self._abort = threading.Event()
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        # enqueue_timeout: callers waiting for room in a full queue. _take() and close()
        # notify it; the counter lets them skip the notify when nobody waits.
        self._room = threading.Condition(self._lock)
        self._room_waiters = 0
        self._slots = threading.BoundedSemaphore(cfg.max_concurrent_requests)
        self._work: queue.SimpleQueue[Optional[_Batch]] = queue.SimpleQueue()
        self._batch_numbers = itertools.count()
        self._dispatcher: Optional[threading.Thread] = None
        self._senders: List[threading.Thread] = []
        self._idle_senders = 0
        self._stopping = False
        self._taken = 0
        self._flush_target = 0
        self._outstanding: Dict[int, _Batch] = {}
        # Batches waiting for their next retry, by due time: parked, not holding a sender.
        self._parked: List[Tuple[float, int, _Batch]] = []
        # Set when a batch got no answer at all, cleared by the next answer or final outcome.
        self._endpoint_down = False
        self._in_flight = 0
        self._spooled_upto = 0
        self._replayed = 0
        self._overflow: int = 0
        self._overflow_reported = 0
        self._overflow_reported_at = -_OVERFLOW_REPORT_EVERY
        self._overflow_sample: Deque[bytes] = deque(maxlen=_SAMPLE_SIZE)
        self._counters: Dict[str, int] = {
            "delivered": 0,
            "retried": 0,
            "batches_sent": 0,
            "requests": 0,
            "bytes_sent": 0,
            "rejected": 0,
            "retries_exhausted": 0,
            "closed": 0,
            "kept_in_spool": 0,
        }
        if self._config.owns_transport and self._transport is not None:
            # The parent's pool holds sockets the parent still uses: never share them.
            self._transport = None
        self._sender = BatchSender(
            url=cfg.url,
            write_key=cfg.write_key,
            policy=cfg.policy,
            timeout=cfg.http_request_timeout,
            gzip=cfg.gzip,
            emitter=self._emitter,
            transport=self._get_transport,
            aborted=self._abort.is_set,
        )

    def _after_fork(self) -> None:
        if self._pid != os.getpid():
            if self._spool is not None:
                # The file, its lock and its connection are the parent's.
                self._spool.abandon()
                self._spool = None
                self._spool_error = "a forked child does not share its parent's spool"
                logger.warning(
                    "journy_analytics: forked child process %d keeps events in memory only; "
                    "create the client after fork to give each process its own spool",
                    os.getpid(),
                )
            self._reset()

    def _get_transport(self) -> HttpClient:
        if self._user_transport is not None:
            return self._user_transport
        transport = self._transport
        if transport is None:
            with self._lock:
                if self._transport is None:
                    self._transport = self._config.make_transport()
                transport = self._transport
        return transport

    # -- the call path -------------------------------------------------------------------

    def put(self, data: bytes, callback: Optional[Callback]) -> bool:
        q = self._queue
        n = len(q)
        if not n & 63 and self._pid != os.getpid():
            # register_at_fork covers every fork made through Python; this lazy check covers a
            # fork it cannot see (a C extension calling fork()). getpid() is a system call, so
            # it runs when the queue is empty and at every 64th event, not on every call.
            self._after_fork()
            q = self._queue
            n = len(q)
        if n >= self._config.max_queue_size:
            if self._config.enqueue_timeout <= 0 or not self._wait_for_room():
                self._on_overflow(data, callback)
                return False
            n = len(q)
        if n >= self._compact_after:
            # This event will wait: keep it in exactly its size. Events sent at once skip
            # the copy; their buffers are recycled as soon as the batch is out.
            data = compact(data)
        q.append(data if callback is None else (data, callback))
        n += 1
        if (n == 1 or n >= self._config.max_events_in_batch) and not self._wake.is_set():
            self._wake.set()
        if self._dispatcher is None:
            self._start()
        return True

    def _wait_for_room(self) -> bool:
        """enqueue_timeout: block the caller (back-pressure) until the dispatcher takes a
        batch out of the full queue; False when the timeout passes or the client closes
        first. A condition wait, woken by _take() and close(), never a poll."""
        limit = self._config.max_queue_size
        deadline = time.monotonic() + self._config.enqueue_timeout
        self._wake.set()  # a full queue is a full batch: make sure the dispatcher is awake
        if self._dispatcher is None:
            self._start()
        with self._room:
            self._room_waiters += 1
            try:
                while len(self._queue) >= limit:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping:
                        return False
                    self._room.wait(remaining)
            finally:
                self._room_waiters -= 1
        return True

    def _on_overflow(self, data: bytes, callback: Optional[Callback]) -> None:
        # Counted here, reported by the dispatcher: the caller is never made to wait on a
        # user's error handler. A callback is the caller's own and is told at once.
        self._overflow += 1
        self._overflow_sample.append(data)
        if not self._wake.is_set():
            self._wake.set()
        if callback is not None:
            error = DeliveryError(
                "queue_full",
                f"the queue holds max_queue_size={self._config.max_queue_size} events; "
                "this event was dropped (raise max_queue_size or check the server)",
            )
            _call(callback, error, orjson.loads(data))

    def _start(self) -> None:
        with self._lock:
            if self._dispatcher is not None:
                return
            thread = threading.Thread(
                target=self._dispatch_forever, name="journy-analytics-dispatcher", daemon=True
            )
            self._dispatcher = thread
        thread.start()

    # -- the dispatcher ------------------------------------------------------------------

    def _dispatch_forever(self) -> None:
        try:
            self._dispatch()
        except BaseException:  # pragma: no cover - a bug; say so loudly, never die silently
            logger.exception("journy_analytics: the dispatcher thread failed")
            raise

    def _dispatch(self) -> None:
        cfg = self._config
        q = self._queue
        batch_size = cfg.max_events_in_batch
        interval = cfg.flush_interval
        oldest: Optional[float] = None  # no event in the queue is older than this
        timer_target = 0
        while not self._abort.is_set():
            self._wake.clear()
            self._report_overflow()
            retry_in: Optional[float] = None
            if self._parked:
                due = self._next_retry_due()
                if due is not None:
                    retry_in = due - time.monotonic()
                    if retry_in <= 0:
                        # A due retry goes before new batches: its events are older.
                        if not self._acquire_slot():
                            return
                        self._resubmit_due_retry()
                        continue
            n = len(q)
            if n == 0:
                oldest = None
                if self._stopping and not self._outstanding:
                    return
                timeout = retry_in
                if self._overflow != self._overflow_reported:
                    timeout = min(timeout or _OVERFLOW_REPORT_EVERY, _OVERFLOW_REPORT_EVERY)
                self._wake.wait(timeout)
                continue
            if self._spool is not None:
                self._commit_to_spool()
            if self._endpoint_down:
                # While a batch waits out an outage, its retries probe the server; new
                # batches wait in the queue instead of hammering a server that is down.
                timeout = retry_in
                if self._spool is not None:
                    timeout = min(timeout or cfg.spool_commit_interval, cfg.spool_commit_interval)
                self._wake.wait(timeout)
                continue
            now = time.monotonic()
            if oldest is None:
                oldest = now
            with self._lock:
                due_target = max(self._flush_target, timer_target)
                taken = self._taken
                stopping = self._stopping
            if n < batch_size and taken >= due_target and not stopping:
                remaining = oldest + interval - now
                if remaining > 0:
                    if self._spool is not None:
                        # Wake up for the next group commit of events arriving meanwhile.
                        remaining = min(remaining, cfg.spool_commit_interval)
                    if retry_in is not None:
                        remaining = min(remaining, retry_in)
                    self._wake.wait(remaining)
                    continue
                # Everything queued now has waited long enough; what comes later gets its
                # own full interval.
                timer_target = taken + n
                oldest = now
            if not self._acquire_slot():
                return
            if self._spool is not None:
                # Nothing leaves unspooled: a batch's events are on disk before it is cut.
                self._commit_to_spool()
            batch = self._take(batch_size)
            if batch is None:  # close() emptied the queue meanwhile
                self._slots.release()
                continue
            self._submit(batch)

    def _next_retry_due(self) -> Optional[float]:
        with self._lock:
            return self._parked[0][0] if self._parked else None

    def _resubmit_due_retry(self) -> None:
        """Called holding a sender slot; gives it back if close() took the batch meanwhile."""
        with self._lock:
            entry = heapq.heappop(self._parked) if self._parked else None
        if entry is None:
            self._slots.release()
            return
        self._submit(entry[2])

    def _park(self, batch: _Batch, delay: float) -> None:
        assert batch.state is not None
        self._endpoint_down = batch.state.outage
        with self._lock:
            aborted = self._abort.is_set()
            if not aborted:
                heapq.heappush(self._parked, (time.monotonic() + delay, batch.number, batch))
        if aborted:
            self._settle(batch, self._sender.closed(batch.state, "the client closed"))
            return
        self._wake.set()

    def _commit_to_spool(self) -> None:
        """Write every queued event not yet on disk, in one transaction."""
        spool = self._spool
        if spool is None:
            return
        q = self._queue
        with self._lock:
            taken = self._taken
        # Only this thread pops from the queue, so positions cannot shift under us; index
        # access (not iteration) stays valid while callers append.
        first = self._spooled_upto
        end = taken + len(q)
        if end <= first:
            return
        try:
            bodies = [_data(q[i - taken]) for i in range(max(first, taken), end)]
        except IndexError:
            return  # close() drained the queue meanwhile; it commits what it keeps itself
        try:
            spool.append(max(first, taken), bodies)
        except Exception as exc:
            self._spool_failed(exc)
            return
        self._spooled_upto = end

    def _spool_failed(self, exc: BaseException) -> None:
        spool, self._spool = self._spool, None
        path = spool.path if spool is not None else "?"
        self._spool_error = f"spool {path} failed: {exc}"
        logger.error(
            "journy_analytics: %s; carrying on with events in memory only", self._spool_error
        )
        self._emitter.emit(
            "error",
            DeliveryError(
                "spool",
                f"{self._spool_error}; events are no longer written to disk (none was lost)",
            ),
        )

    def _acquire_slot(self) -> bool:
        while not self._slots.acquire(timeout=0.05):
            if self._abort.is_set():
                return False
        return True

    def _take(self, batch_size: int) -> Optional[_Batch]:
        q = self._queue
        items: List[Item] = []
        size = _ENVELOPE_BYTES
        with self._lock:
            while q and len(items) < batch_size:
                length = len(_data(q[0])) + 1
                if items and size + length > MAX_BATCH_BYTES:
                    break
                items.append(q.popleft())
                size += length
            if not items:
                return None
            batch = _Batch(next(self._batch_numbers), self._taken, items)
            self._outstanding[batch.number] = batch
            self._taken += len(items)
            self._in_flight += len(items)
            if self._room_waiters:
                self._room.notify_all()
        return batch

    def _submit(self, batch: _Batch) -> None:
        self._work.put(batch)
        with self._lock:
            spawn = self._idle_senders == 0 and len(self._senders) < (
                self._config.max_concurrent_requests
            )
            if spawn:
                thread = threading.Thread(
                    target=self._send_forever,
                    name=f"journy-analytics-sender-{len(self._senders)}",
                    daemon=True,
                )
                self._senders.append(thread)
        if spawn:
            try:
                thread.start()
            except RuntimeError:
                # At interpreter shutdown no new thread may start: deliver inline instead.
                with self._lock:
                    self._senders.remove(thread)
                    if self._senders:
                        return
                pending = self._work.get()
                if pending is not None:
                    self._deliver(pending)

    def _report_overflow(self) -> None:
        dropped = self._overflow - self._overflow_reported
        if dropped <= 0:
            return
        now = time.monotonic()
        if now - self._overflow_reported_at < _OVERFLOW_REPORT_EVERY and not self._stopping:
            # One report a second at most: an overloaded app must not also drown in logs.
            return
        self._overflow_reported_at = now
        self._overflow_reported += dropped
        sample = [orjson.loads(d) for d in list(self._overflow_sample)]
        self._overflow_sample.clear()
        error = DeliveryError(
            "queue_full",
            f"{dropped} event(s) dropped: the queue was full "
            f"(max_queue_size={self._config.max_queue_size}); raise max_queue_size, or check "
            "why the server is not keeping up",
            events=sample,
            count=dropped,
        )
        logger.warning("journy_analytics: %s", error.reason)
        self._emitter.emit("error", error)

    # -- the senders ---------------------------------------------------------------------

    def _send_forever(self) -> None:
        while True:
            with self._lock:
                self._idle_senders += 1
            batch = self._work.get()
            with self._lock:
                self._idle_senders -= 1
            if batch is None:
                return
            try:
                self._deliver(batch)
            except BaseException:  # pragma: no cover - a bug; keep the slot accounting right
                logger.exception("journy_analytics: delivering a batch failed unexpectedly")
            finally:
                self._slots.release()

    def _deliver(self, batch: _Batch) -> None:
        """One attempt; a batch that must wait for a retry is parked, freeing this sender."""
        if batch.state is None:
            batch.state = self._sender.start([_data(item) for item in batch.items])
        result = self._sender.attempt(batch.state)
        if isinstance(result, BatchResult):
            self._settle(batch, result)
        else:
            self._park(batch, result)

    def _settle(self, batch: _Batch, result: BatchResult) -> None:
        events = [_data(item) for item in batch.items]
        delivered = result.outcome == "delivered"
        error: Optional[DeliveryError] = None
        emitter = self._emitter
        decoded: Optional[List[Dict[str, Any]]] = None
        wants_callbacks = any(type(item) is not bytes for item in batch.items)
        if not delivered:
            code = "closed" if result.outcome == "closed" else "delivery_failure"
            if result.outcome == "retries_exhausted":
                code = "retries_exhausted"
            decoded = [orjson.loads(d) for d in events]
            error = DeliveryError(code, result.reason, events=decoded, status=result.status)
            logger.warning(
                "journy_analytics: %d event(s) not delivered: %s", len(events), result.reason
            )
            emitter.emit("error", error)
        elif wants_callbacks or any(emitter.has(t) for t in _TYPES):
            decoded = [orjson.loads(d) for d in events]
            for message in decoded:
                emitter.emit(message.get("type", ""), message)
        if wants_callbacks and decoded is not None:
            for item, message in zip(batch.items, decoded):
                callback = _callback(item)
                if callback is not None:
                    _call(callback, error, message)
        spool = self._spool
        if spool is not None and result.outcome != "closed":
            # Delivered, or refused for good and reported: either way not to be re-sent.
            try:
                spool.remove(batch.first_index, batch.first_index + len(events))
            except Exception as exc:
                self._spool_failed(exc)
        with self._settled:
            counters = self._counters
            counters["requests"] += result.requests
            counters["bytes_sent"] += result.bytes_sent
            counters["retried"] += result.retries
            if delivered:
                counters["delivered"] += len(events)
                counters["batches_sent"] += 1
            else:
                counters[result.outcome] += len(events)
            del self._outstanding[batch.number]
            self._in_flight -= len(events)
            drained = not self._outstanding and not self._queue
            self._settled.notify_all()
        if self._endpoint_down or self._stopping:
            # The server answered (or the batch is done): let the dispatcher send again, or
            # see that the last batch it waited for has settled.
            self._endpoint_down = False
            self._wake.set()
        if drained:
            emitter.emit("drained")

    # -- flush and close -----------------------------------------------------------------

    def _watermark(self) -> int:
        return min((b.first_index for b in self._outstanding.values()), default=self._taken)

    def flush(self, timeout: Optional[float]) -> bool:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        if threading.current_thread() in (*self._senders, self._dispatcher):
            # A handler or callback calling flush() would wait on itself.
            logger.warning("journy_analytics: flush() from a handler would deadlock; skipped")
            return False
        with self._lock:
            target = self._taken + len(self._queue)
            if target > self._flush_target:
                self._flush_target = target
        if self._queue and self._dispatcher is None:
            self._start()
        self._wake.set()
        with self._settled:
            while self._watermark() < target:
                if deadline is None:
                    self._settled.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._settled.wait(remaining)
        return True

    def close(self, timeout: Optional[float]) -> bool:
        """Deliver what is queued within ``timeout``, then stop the threads.

        Past the deadline, retries and backoff sleeps are cut short, what is still queued
        is dropped and reported (``closed``), and the call returns False.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._lock:
            self._stopping = True
            self._room.notify_all()  # callers waiting for room give up now (queue_full)
        settled = self.flush(timeout)
        if not settled:
            self._abort.set()
            self._wake.set()  # the dispatcher may be waiting; it must see the abort now
            if self._dispatcher is not None and self._dispatcher is not threading.current_thread():
                self._dispatcher.join(_remaining(deadline, cap=0.5))
            with self._lock:
                parked = [entry[2] for entry in self._parked]
                self._parked.clear()
            for batch in parked:
                assert batch.state is not None
                self._settle(batch, self._sender.closed(batch.state, "the client closed"))
            if self._spool is not None:
                self._commit_to_spool()
            self._drop_queued(kept=self._spool is not None)
            self._report_in_flight()
        self._wake.set()
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher is not threading.current_thread():
            dispatcher.join(_remaining(deadline, cap=1.0))
        if self._queue:
            # A call that raced close_and_flush() got in after the last batch was cut.
            if self._spool is not None:
                self._commit_to_spool()
            self._drop_queued(kept=self._spool is not None)
        for _ in self._senders:
            self._work.put(None)
        if self._spool is not None:
            self._spool.close()
        if self._config.owns_transport and self._transport is not None:
            try:
                self._transport.close()
            except Exception:  # pragma: no cover
                logger.debug("journy_analytics: closing the transport failed", exc_info=True)
        _live_workers.discard(self)
        return settled

    def _drop_queued(self, kept: bool) -> None:
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
            self._counters["kept_in_spool" if kept else "closed"] += len(items)
        if items:
            fate = (
                "they stay in the spool and are sent when a client next opens it"
                if kept
                else "they were dropped"
            )
            self._report_closed(items, "were still queued", fate)

    def _report_in_flight(self) -> None:
        """Batches still on the wire when close gave up: their fate is unknown, so say so
        now rather than never (at interpreter exit the process ends before they settle)."""
        with self._lock:
            items = [item for batch in self._outstanding.values() for item in batch.items]
        if items:
            fate = (
                "they stay in the spool and are re-sent by the next client on it"
                if self._spool is not None
                else "they are lost if the process ends before the server answers"
            )
            # Their callbacks run when (if) the server answers.
            self._report_closed(items, "were in flight", fate, call_back=False)

    def _report_closed(
        self, items: List[Item], where: str, fate: str, call_back: bool = True
    ) -> None:
        decoded = [orjson.loads(_data(item)) for item in items]
        error = DeliveryError(
            "closed",
            f"{len(items)} event(s) {where} when close_and_flush() timed out; {fate}",
            events=decoded,
        )
        logger.warning("journy_analytics: %s", error.reason)
        self._emitter.emit("error", error)
        if call_back:
            for item, message in zip(items, decoded):
                callback = _callback(item)
                if callback is not None:
                    _call(callback, error, message)

    # -- figures -------------------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            c = dict(self._counters)
            in_flight = self._in_flight
            retrying = sum(len(entry[2].items) for entry in self._parked)
        alive = self._dispatcher is not None and self._dispatcher.is_alive()
        return {
            "queued": len(self._queue),
            "in_flight": in_flight,
            "waiting_to_retry": retrying,
            "delivered": c["delivered"],
            "retried": c["retried"],
            "dropped": {
                "queue_full": self._overflow,
                "rejected": c["rejected"],
                "retries_exhausted": c["retries_exhausted"],
                "closed": c["closed"],
            },
            "batches_sent": c["batches_sent"],
            "requests": c["requests"],
            "bytes_sent": c["bytes_sent"],
            "worker_alive": alive,
            "senders": sum(1 for t in self._senders if t.is_alive()),
            "spool": {
                "enabled": self._spool is not None,
                "path": self._spool.path if self._spool is not None else self._config.spool_path,
                "error": self._spool_error,
                "replayed": self._replayed,
                "kept": c["kept_in_spool"],
            },
        }


_TYPES = ("identify", "group", "track", "page", "screen", "alias")


def _remaining(deadline: Optional[float], cap: float) -> float:
    if deadline is None:
        return cap
    return max(0.0, min(cap, deadline - time.monotonic()))


def _call(callback: Callback, error: Optional[BaseException], message: Dict[str, Any]) -> None:
    try:
        callback(error, message)
    except Exception:
        logger.exception("journy_analytics: an event callback raised; carrying on")
