"""The worker: composes the delivery parts and runs the dispatcher thread.

It owns the lifecycle (start, flush, close, fork, retirement) and the dispatcher loop,
which decides *when* to send: a full batch, the oldest event past ``flush_interval``, a
flush or a close. Each piece of state has one owner (see ``_types`` for the path of one
event): the queue (``_queue.EventQueue``), the senders and parked retries
(``_senders.SenderPool``), the counters and reporting (``_outcomes.Outcomes``) and the
spool (``_spool.Spool``). The queue and the outcomes share one state lock so that a
``stats()`` snapshot is consistent.

Deadlines are on ``time.monotonic()``: one per flush or close, passed down as remaining
time. A timeout that is accepted is honoured.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from journy_analytics._core._attempt import BatchResult, BatchSender
from journy_analytics._core._outcomes import OVERFLOW_REPORT_EVERY, Outcomes
from journy_analytics._core._queue import EventQueue
from journy_analytics._core._retry import RetryPolicy
from journy_analytics._core._sender_pool import SenderPool
from journy_analytics._core._spool import Spool
from journy_analytics._core._transport import HttpClient, Response
from journy_analytics._deadline import remaining as _remaining
from journy_analytics._handlers import Emitter
from journy_analytics._lifecycle import fork as _fork
from journy_analytics._lifecycle import shutdown as _shutdown
from journy_analytics._lifecycle import signal_free, user_code
from journy_analytics._logging import RateLimitedLog, logger
from journy_analytics._types import Batch, Callback, Cause, Item, data_of

__all__ = ["Worker", "WorkerConfig"]

# A flush still waiting after this long says, once, what it waits for.
_SLOW_FLUSH_NOTICE = 5.0


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
    # A transport the user gave us is theirs: we neither rebuild it after fork nor close it.
    owns_transport: bool
    exit_flush_timeout: float = 5.0
    # Seconds put() waits for room in a full client before dropping (0: never waits).
    enqueue_timeout: float = 0.0
    spool_path: Optional[str] = None
    spool_commit_interval: float = 0.2


_notices = RateLimitedLog(every=60.0)


class Lifecycle(enum.Enum):
    """Where a worker is in its life. It only moves forward (``Worker._move``, under the
    state lock); a forked child starts its own at OPEN. Events are taken up to
    TERMINATING; from CLOSING on the dispatcher stops once everything has settled."""

    OPEN = 0  # accepting events; the dispatcher sends batches when they are due
    TERMINATING = 1  # SIGTERM with an app handler to chain to: every event goes at once and
    #                  each call waits for its delivery, until ``_terminate_by``
    CLOSING = 2  # close_and_flush() is delivering what is queued; then FINISHED
    RETIRING = 3  # nobody will wait (garbage collected, or closed from a worker thread):
    #               the dispatcher delivers what is queued, then finishes
    GIVING_UP = 4  # close_and_flush() timed out: retries and backoff waits are cut short,
    #                what is left is reported (closed, or kept in the spool)
    FINISHED = 5  # threads stopped, spool closed; a late event is dropped (closed)


class Worker:
    def __init__(self, config: WorkerConfig, emitter: Emitter) -> None:
        self._config = config
        self._emitter = emitter
        self._transport: Optional[HttpClient] = None
        self._user_transport: Optional[HttpClient] = (
            None if config.owns_transport else _UserTransport(config.make_transport())
        )
        self._reset(config.spool_path)
        self._replay()
        _fork.register(self._after_fork)
        _shutdown.track(self)

    @property
    def exit_flush_timeout(self) -> float:
        return self._config.exit_flush_timeout

    def _reset(self, spool_path: Optional[str], spool_error: Optional[str] = None) -> None:
        """Fresh runtime state: at start, and in a forked child (whose threads are gone and
        whose locks may be held by threads that no longer exist)."""
        cfg = self._config
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._outcomes = Outcomes(self._lock, self._emitter, cfg.max_queue_size)
        self._queue = EventQueue(
            max_size=cfg.max_queue_size,
            batch_size=cfg.max_events_in_batch,
            lock=self._lock,
            held_elsewhere=self._outcomes,
            wake=self._wake,
        )
        self._journal = Spool(
            spool_path,
            lock=self._lock,
            queue=self._queue,
            commit_interval=cfg.spool_commit_interval,
            on_failure=self._outcomes.spool_failed,
            error=spool_error,
        )
        if cfg.owns_transport:
            # The parent's connections carry the parent's requests: never share them.
            self._transport = None
        sender = BatchSender(
            url=cfg.url,
            write_key=cfg.write_key,
            policy=cfg.policy,
            timeout=cfg.http_request_timeout,
            gzip=cfg.gzip,
            emitter=self._emitter,
            transport=self._get_transport,
            aborted=self._giving_up,
            observe=self._outcomes.observe,
        )
        self._sender = sender
        self._pool = SenderPool(
            max_concurrent=cfg.max_concurrent_requests,
            sender=sender,
            wake=self._wake,
            on_result=self._on_result,
            on_split=self._outcomes.split,
        )
        self._dispatcher: Optional[threading.Thread] = None
        # Not a state of the worker but of the interpreter: it refused a thread (it is
        # shutting down), so flush and close run the dispatcher's steps inline.
        self._threads_refused = False
        self._lifecycle = Lifecycle.OPEN
        self._terminate_by = 0.0  # TERMINATING: when the SIGTERM budget ends
        # put()'s one test for its common case: OPEN with the dispatcher running. Written
        # only by _start and _move, the two places that change either.
        self._steady = False
        self._flush_target = 0
        self._replayed_into_queue = 0
        # When the oldest queued event arrived (None: the queue is empty); a child starts
        # with none of its parent's.
        self._oldest: Optional[float] = None
        # Callers waiting for room (enqueue_timeout); while any does, batches go at once.
        self._room_waiters = 0

    def _replay(self) -> None:
        leftovers = self._journal.open()
        if not leftovers:
            return
        limit = self._config.max_queue_size
        kept, excess = leftovers[:limit], leftovers[limit:]
        self._journal.forget_beyond(len(kept), len(leftovers))
        self._queue.replay(kept)
        self._journal.replayed(len(kept))
        self._replayed_into_queue = len(kept)
        self._outcomes.note_replayed(len(leftovers))
        if excess:
            self._outcomes.drop_queued(
                Batch(-1, -1, list(excess)),
                Cause.SPOOL_OVERFLOW,
                f"{len(excess)} event(s) found in the spool beyond max_queue_size={limit} "
                "were dropped",
                kept=False,
            )
        logger.info("re-sending %d event(s) from the spool", len(kept))
        self._start()

    def _after_fork(self) -> None:
        self._journal.after_fork()
        error = self._journal.figures()["error"]
        self._reset(None, error)

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
        """Queue one event; False if it was dropped at once (full, or the client closed)."""
        item: Item = data if callback is None else (data, callback)
        queued = self._queue.put(item)
        # The common case in one test: queued, the dispatcher running, the worker open.
        if queued and self._steady:
            return True
        return self._put_unsteady(queued, item, data, callback)

    def _put_unsteady(
        self, queued: bool, item: Item, data: bytes, callback: Optional[Callback]
    ) -> bool:
        if not queued and self._config.enqueue_timeout > 0:
            queued = self._wait_for_room(item)
        if not queued:
            self._outcomes.overflow(data, callback)
            self._wake.set()  # the dispatcher reports it
        elif self._dispatcher is None:
            self._start()
        if self._lifecycle is Lifecycle.FINISHED:
            # This call raced close_and_flush(): its event must not sit in a queue that
            # nothing reads any more.
            self._drop_after_close()
            return False
        if self._lifecycle is Lifecycle.TERMINATING:
            self.flush(max(0.0, self._terminate_by - time.monotonic()))
        return queued

    def _wait_for_room(self, item: Item) -> bool:
        """Back-pressure (``enqueue_timeout``): wait until the events held in memory drop
        below ``max_queue_size``, then queue. A condition wait (the outcomes notify it
        whenever a batch settles, close notifies it too), never a poll. False when the
        timeout passes or the client closes first."""
        deadline = time.monotonic() + self._config.enqueue_timeout
        queue, outcomes = self._queue, self._outcomes
        if self._dispatcher is None:
            self._start()
        with self._lock:
            self._room_waiters += 1
        try:
            while True:
                self._wake.set()  # a waiting caller makes every batch urgent
                with outcomes.settled:
                    while len(queue) + outcomes.in_flight >= queue.max_size:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or not self._accepting():
                            return False
                        outcomes.settled.wait(remaining)
                if queue.put(item):
                    return True
        finally:
            with self._lock:
                self._room_waiters -= 1

    def _start(self) -> None:
        with self._lock:
            if (
                self._dispatcher is not None
                or self._threads_refused
                or self._lifecycle is Lifecycle.FINISHED
            ):
                return
            thread = threading.Thread(
                target=signal_free(self._run_dispatcher),
                name="journy-analytics-dispatcher",
                daemon=True,
            )
            self._dispatcher = thread
        try:
            thread.start()
            with self._lock:
                self._steady = self._lifecycle is Lifecycle.OPEN
        except RuntimeError:
            # Interpreter shutdown (Python 3.12+ refuses new threads once it begins): the
            # event stays queued, and the exit flush delivers it from its own thread.
            with self._lock:
                self._dispatcher = None
                self._threads_refused = True

    # -- the dispatcher ------------------------------------------------------------------

    def _run_dispatcher(self) -> None:
        try:
            while not self._giving_up():
                wait = self._step()
                if wait == _DONE:
                    break
                if wait != 0.0:  # 0.0: the next step at once (wait(0) would only cost)
                    self._wake.wait(wait)
        except BaseException:  # pragma: no cover - a bug; say so loudly, never die silently
            logger.exception("the dispatcher thread failed")
            raise
        if self._lifecycle is Lifecycle.RETIRING:
            self._finish()

    def _step(self) -> Optional[float]:
        """Do the next thing there is to do; return how long to wait before the next step
        (None: until woken), or ``_DONE``."""
        self._wake.clear()
        outcomes, pool, queue, journal = self._outcomes, self._pool, self._queue, self._journal
        if outcomes.overflow_pending():
            outcomes.report_overflow()
        now = time.monotonic()
        waits: List[float] = []
        if outcomes.overflow_pending():
            waits.append(OVERFLOW_REPORT_EVERY)
        due = pool.next_due()
        if due is not None:
            if due <= now:
                if pool.has_capacity():
                    # A due retry goes before new batches: its events are older.
                    pool.resubmit_due(now)
                    return 0.0
            else:
                waits.append(due - now)
        n = len(queue)
        if n == 0:
            self._oldest = None
            with self._lock:
                done = not self._accepting() and outcomes.idle()
            if done:
                return _DONE
            return min(waits, default=None)
        if journal.enabled:
            commit_in = journal.commit_due()
            if commit_in == 0.0:
                journal.commit()
                commit_in = self._config.spool_commit_interval
            waits.append(commit_in)
        gate = pool.gate(now)
        if gate is not None:
            # The server is down or asked for a pause: only parked retries probe it.
            if gate > 0:
                waits.append(gate)
            return min(waits, default=None)
        with self._lock:
            due_target = self._flush_target
            taken = queue.next_position
            hurry = self._lifecycle is not Lifecycle.OPEN or self._room_waiters > 0
        if n < queue.batch_size and taken >= due_target and not hurry:
            oldest = self._oldest if self._oldest is not None else now
            self._oldest = oldest
            remaining = oldest + self._config.flush_interval - now
            if remaining > 0:
                waits.append(remaining)
                return min(waits)
            # Everything queued now has waited long enough; later events get their own
            # full interval.
            with self._lock:
                self._flush_target = max(self._flush_target, taken + n)
        if not pool.has_capacity():
            return min(waits, default=None)  # a sender coming back wakes us
        if journal.enabled:
            # Nothing leaves unspooled: a batch's events are on disk before it is cut.
            journal.commit()
        with self._lock:
            batch = queue.take()
            if batch is not None:
                outcomes.begin(batch)
            if not len(queue):
                self._oldest = None
        if batch is not None:
            pool.submit(batch)
        return 0.0

    def _on_result(self, batch: Batch, result: BatchResult) -> None:
        kept = result.cause is Cause.CLOSED and self._journal.enabled
        self._journal.settled(batch, result)
        self._outcomes.settle(batch, result, kept=kept)
        with self._lock:
            idle = self._outcomes.idle()
            quiet = self._outcomes.quiet()
        if self._lifecycle is Lifecycle.FINISHED:
            self._journal.maybe_finish(quiet)
        if idle and not len(self._queue) and not batch.abandoned:
            self._emitter.emit("drained")

    # -- flush and close -----------------------------------------------------------------

    def _in_worker_thread(self) -> bool:
        current = threading.current_thread()
        return current is self._dispatcher or self._pool.owns(current)

    def flush(self, timeout: Optional[float]) -> bool:
        # Every entry point but put() (the event methods check before they build an
        # event) notices a fork Python did not see: the child must not wait for, report or
        # spool the parent's events.
        _fork.check()
        if self._in_worker_thread():
            # A handler or callback: waiting would wait on itself.
            _notices.log(
                "flush-in-handler",
                logging.WARNING,
                "flush() called from a callback or handler cannot wait for the thread it "
                "runs on; it returns False at once and delivery goes on in the background",
            )
            return False
        started = time.monotonic()
        deadline = None if timeout is None else started + max(0.0, timeout)
        queue = self._queue
        with self._lock:
            target = queue.next_position + len(queue)
            if target > self._flush_target:
                self._flush_target = target
        if len(queue) and self._dispatcher is None:
            self._start()
        if self._dispatcher is None and self._threads_refused:
            return self._flush_inline(target, deadline)
        self._wake.set()
        noticed = False
        outcomes = self._outcomes
        while True:
            notice: Optional[str] = None
            with outcomes.settled:
                settled_upto = outcomes.watermark(queue.next_position)
                if settled_upto >= target:
                    return True
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return False
                if not noticed and now - started >= _SLOW_FLUSH_NOTICE:
                    noticed = True
                    error = outcomes.last_error
                    notice = (
                        f"flush/close has waited {now - started:.0f} s for "
                        f"{target - settled_upto} event(s) to settle"
                        + (f"; last error: {error[0]}" if error else "; the server is slow")
                    )
                else:
                    slice_end = None if noticed else started + _SLOW_FLUSH_NOTICE
                    limits = [t for t in (deadline, slice_end) if t is not None]
                    outcomes.settled.wait(min(limits) - now if limits else None)
            if notice is not None:
                # Outside the lock: a log handler may take its time.
                _notices.log("slow-flush", logging.WARNING, "%s", notice)

    def _flush_inline(self, target: int, deadline: Optional[float]) -> bool:
        """No thread can start (interpreter shutdown): run the dispatcher's steps here."""
        self._pool.inline = True
        while True:
            with self._lock:
                if self._outcomes.watermark(self._queue.next_position) >= target:
                    return True
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            wait = self._step()
            if wait == _DONE:
                return True
            if wait:
                limit = wait if deadline is None else min(wait, deadline - now)
                self._wake.wait(max(0.0, limit))
            elif wait is None:
                self._wake.wait(0.05 if deadline is None else min(0.05, deadline - now))

    def close(self, timeout: Optional[float]) -> bool:
        """Deliver what is queued within ``timeout``, then stop the threads.

        Past the deadline, retries and backoff waits are cut short, what is still queued or
        in flight is reported (``closed``, or kept in the spool), and it returns False.
        """
        _fork.check()
        with self._lock:
            self._move(Lifecycle.CLOSING)
            self._outcomes.settled.notify_all()  # callers waiting for room give up now
        if self._in_worker_thread():
            # From a callback or handler: this thread cannot wait for itself. Nothing is
            # dropped; the dispatcher finishes the work and then stops.
            with self._lock:
                self._move(Lifecycle.RETIRING)
            self._wake.set()
            _notices.log(
                "close-in-handler",
                logging.WARNING,
                "close_and_flush() called from a callback or handler cannot wait for the "
                "thread it runs on; queued events are delivered in the background",
            )
            return False
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        settled = self.flush(timeout)
        if not settled:
            self._give_up(deadline)
        self._finish()
        return settled

    def _give_up(self, deadline: Optional[float]) -> None:
        with self._lock:
            self._move(Lifecycle.GIVING_UP)
        self._wake.set()  # the dispatcher may be waiting; it must see GIVING_UP now
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher is not threading.current_thread():
            dispatcher.join(_remaining(deadline, cap=0.5))
        kept = self._journal.enabled
        why = "the client closed while the batch waited to retry; " + (
            "it stays in the spool for the next client" if kept else "it was dropped"
        )
        for batch in self._pool.take_parked():
            self._on_result(batch, self._sender.closed(batch.state, why))
        self._journal.commit()
        with self._lock:
            drained = self._queue.drain()
        fate = (
            "they stay in the spool and are sent when a client next opens it"
            if kept
            else "they were dropped"
        )
        self._outcomes.drop_queued(
            drained,
            Cause.CLOSED,
            f"{len(drained)} event(s) were still queued when close_and_flush() timed out; " + fate,
            kept=kept,
        )
        self._outcomes.abandon_in_flight(
            "they stay in the spool and are re-sent by the next client on it"
            if kept
            else "they are lost if the process ends before the server answers",
            kept=kept,
        )

    def _finish(self) -> None:
        """Stop for good (idempotent): threads, spool, transport, the exit registry."""
        with self._lock:
            if self._lifecycle is Lifecycle.FINISHED:
                return
            self._move(Lifecycle.FINISHED)
        self._wake.set()
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher is not threading.current_thread():
            dispatcher.join(0.2)
        self._drop_after_close()
        self._outcomes.report_overflow(now_or_never=True)
        self._pool.stop()
        with self._lock:
            quiet = self._outcomes.quiet()
        self._journal.close(quiet)
        if self._config.owns_transport and self._transport is not None:
            try:
                self._transport.close()  # idle connections; requests on the wire finish
            except Exception:  # pragma: no cover
                logger.debug("closing the transport failed", exc_info=True)
        _shutdown.untrack(self)

    def _drop_after_close(self) -> None:
        self._journal.commit()
        with self._lock:
            drained = self._queue.drain()
        if drained.items:
            kept = self._journal.enabled
            self._outcomes.drop_queued(
                drained,
                Cause.CLOSED,
                f"{len(drained)} event(s) arrived while close_and_flush() was finishing; "
                + ("they stay in the spool" if kept else "they were not sent"),
                kept=kept,
            )

    def _move(self, to: Lifecycle) -> None:
        """The one place the lifecycle changes (under the state lock): forward only, so
        a close after a retire stays RETIRING and nothing leaves FINISHED."""
        if to.value > self._lifecycle.value:
            self._lifecycle = to
            self._steady = False

    # Identity tests, not ``.value`` comparisons: an enum's value is a Python-level
    # property, and these run at every dispatcher step and every attempt.

    def _accepting(self) -> bool:
        """OPEN or TERMINATING: events are taken and the dispatcher keeps running."""
        state = self._lifecycle
        return state is Lifecycle.OPEN or state is Lifecycle.TERMINATING

    def _giving_up(self) -> bool:
        """Past a close that timed out: the dispatcher stops, attempts end their waits."""
        state = self._lifecycle
        return state is Lifecycle.GIVING_UP or state is Lifecycle.FINISHED

    def retire(self) -> None:
        """The client is gone (garbage collected without close_and_flush): deliver what
        it queued in the background, then stop the threads."""
        _fork.check()
        with self._lock:
            self._move(Lifecycle.RETIRING)
            running = self._dispatcher is not None
        if running:
            self._wake.set()
        elif not len(self._queue):
            self._finish()
        # Queued without a dispatcher (threads refused at shutdown): the exit flush has it.

    def terminating(self, budget: float) -> None:
        """SIGTERM with an app handler to chain to: from now on every event is sent at
        once, and each call waits (within ``budget`` seconds in all) for its delivery."""
        _fork.check()
        with self._lock:
            self._terminate_by = time.monotonic() + budget
            self._move(Lifecycle.TERMINATING)
        self._wake.set()

    # -- GDPR erase (client.erase_user / erase_account; see _erase.py) ----------------------

    def erase(self, matches: Callable[[bytes], bool]) -> Tuple[List[Item], List[Item], int, int]:
        """Remove the events ``matches`` accepts from the queue, from batches parked
        waiting to retry, and from the spool (its rows of batches on the wire too).
        Returns the removed queued events, the removed parked events, the spool rows
        deleted, and how many events on the wire match (they cannot be recalled)."""
        removed, gone = self._journal.purge(matches)
        unsent = self._purge_parked(matches)
        with self._lock:
            taken = self._outcomes.count_taken(matches)
            # The removed positions count as settled: a flush waiting on them returns.
            self._outcomes.settled.notify_all()
        self._wake.set()
        return removed, unsent, gone, taken

    def _purge_parked(self, matches: Callable[[bytes], bool]) -> List[Item]:
        """Re-cut each parked batch without the events ``matches`` accepts: the body is
        rebuilt from the kept events (as a 413 split builds its halves), the kept events
        move to the end of the batch's positions (in the spool too, as the queue purge
        does), so its positions stay contiguous and the flush watermark right."""
        entries = self._pool.take_parked_matching(matches)
        removed: List[Item] = []
        back = []
        for due, number, batch in entries:
            kept = [item for item in batch.items if not matches(data_of(item))]
            gone = [item for item in batch.items if matches(data_of(item))]
            first, end = batch.first_index, batch.first_index + len(batch.items)
            self._journal.recut(first, end, [data_of(item) for item in kept])
            with self._lock:
                batch.items = kept
                batch.first_index = end - len(kept)
                if batch.state is not None:
                    batch.state = self._sender.recut(batch.state, [data_of(i) for i in kept])
                self._outcomes.erased_from(batch, len(gone))
            removed.extend(gone)
            if kept:
                back.append((due, number, batch))
        self._pool.put_back(back)
        return removed

    def save_fence(self, kind: str, value: str, until: float) -> bool:
        return self._journal.save_fence(kind, value, until)

    def fences(self, now: float) -> List[Tuple[str, str, float]]:
        return self._journal.fences(now)

    # -- figures -------------------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        _fork.check()
        with self._lock:
            figures = self._outcomes.figures()
            queued = len(self._queue)
            taken = self._queue.next_position
        figures["queued"] = queued
        figures["accepted"] = (
            taken + queued + figures["dropped"]["queue_full"] - self._replayed_into_queue
        )
        figures["waiting_to_retry"] = self._pool.parked_events()
        dispatcher = self._dispatcher
        figures["worker_alive"] = dispatcher is not None and dispatcher.is_alive()
        figures["senders"] = self._pool.alive()
        spool = self._journal.figures()
        spool["replayed"] = self._replayed_into_queue
        spool["kept"] = figures["kept_in_spool"]
        figures["spool"] = spool
        return figures


_DONE = -1.0


class _UserTransport:
    """A user's ``http_client`` is user code: it runs with a normal thread's signal mask
    (see ``_threads``), like callbacks and handlers."""

    __slots__ = ("_inner",)

    def __init__(self, inner: HttpClient) -> None:
        self._inner = inner

    def send(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
        with user_code:
            return self._inner.send(url, body, headers, timeout)

    def close(self) -> None:
        with user_code:
            self._inner.close()
