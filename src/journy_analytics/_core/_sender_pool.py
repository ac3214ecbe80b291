"""The sender pool: threads that make attempts, and batches parked between attempts.

Up to ``max_concurrent`` sender threads, started only when a backlog needs them. A batch
that must wait for a retry is *parked* (a heap by due time), not held by a sleeping
thread; the dispatcher hands it back when it is due. Two gates keep new batches off a
server that cannot take them, while parked retries probe it:

* ``endpoint_down``: the last attempt got no answer at all; cleared by the next answer.
* ``paused_until``: the server asked for a pause (``Retry-After``); new batches wait too.

Where no thread can be started (interpreter shutdown on Python 3.12+), batches are
delivered inline, in the thread that submits them, and the capacity count stays right.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from typing import Callable, List, Optional, Tuple

from journy_analytics._core._attempt import BatchResult, BatchSender, RetryLater, Split
from journy_analytics._lifecycle import signal_free
from journy_analytics._logging import logger
from journy_analytics._types import Batch, data_of, data_of_all

__all__ = ["SenderPool"]


class SenderPool:
    def __init__(
        self,
        *,
        max_concurrent: int,
        sender: BatchSender,
        wake: threading.Event,
        on_result: Callable[[Batch, BatchResult], None],
        on_split: Callable[[Batch, List[Batch]], bool] = lambda batch, halves: False,
    ) -> None:
        self._max = max_concurrent
        self._sender = sender
        self._wake = wake
        self._on_result = on_result
        self._on_split = on_split
        # Halves of split batches are numbered below the queue's numbers (0, 1, 2...).
        self._split_numbers = itertools.count(-2, -1)
        self._lock = threading.Lock()
        self._work: queue.SimpleQueue[Optional[Batch]] = queue.SimpleQueue()
        self._threads: List[threading.Thread] = []
        self._idle = 0
        # Batches handed to the threads and not yet picked up by one.
        self._waiting = 0
        self._busy = 0
        self._parked: List[Tuple[float, int, Batch]] = []
        self.paused_until = 0.0
        self.endpoint_down = False
        self.inline = False

    # -- the dispatcher's side ------------------------------------------------------------

    def has_capacity(self) -> bool:
        return self._busy < self._max

    def gate(self, now: float) -> Optional[float]:
        """None if new batches may go; else seconds to wait (0 meaning "until woken")."""
        if self.endpoint_down:
            return 0.0
        if self.paused_until > now:
            return self.paused_until - now
        return None

    def next_due(self) -> Optional[float]:
        with self._lock:
            return self._parked[0][0] if self._parked else None

    def resubmit_due(self, now: float) -> bool:
        with self._lock:
            if not self._parked or self._parked[0][0] > now:
                return False
            _, _, batch = heapq.heappop(self._parked)
        self.submit(batch)
        return True

    def submit(self, batch: Batch) -> None:
        with self._lock:
            self._busy += 1
            if not self.inline:
                self._waiting += 1
            # A thread for each batch no idle thread will pick up: a burst cut before the
            # first thread ran must not queue behind one request (a slow server holds it).
            spawn = (
                not self.inline and self._idle < self._waiting and len(self._threads) < self._max
            )
            if spawn:
                thread = threading.Thread(
                    target=signal_free(self._serve),
                    name=f"journy-analytics-sender-{len(self._threads)}",
                    daemon=True,
                )
                self._threads.append(thread)
                # Counted idle before it runs: it picks up one of the waiting batches.
                self._idle += 1
        if spawn:
            try:
                thread.start()
            except RuntimeError:
                # At interpreter shutdown no new thread may start: deliver inline instead.
                with self._lock:
                    self._threads.remove(thread)
                    self._idle -= 1
                    self.inline = not self._threads
                    if self.inline:
                        self._waiting -= 1
        if self.inline:
            self._run(batch)
        else:
            self._work.put(batch)

    def take_parked(self) -> List[Batch]:
        with self._lock:
            parked = [entry[2] for entry in self._parked]
            self._parked.clear()
        return parked

    def take_parked_matching(
        self, matches: Callable[[bytes], bool]
    ) -> List[Tuple[float, int, Batch]]:
        """Take out the parked batches holding an event ``matches`` accepts (a GDPR erase
        re-cuts them). Out of the heap, no sender can pick them up meanwhile; hand the
        re-cut ones back with :meth:`put_back`."""
        with self._lock:
            taken = [
                entry
                for entry in self._parked
                if any(matches(data_of(item)) for item in entry[2].items)
            ]
            if taken:
                self._parked = [entry for entry in self._parked if entry not in taken]
                heapq.heapify(self._parked)
        return taken

    def put_back(self, entries: List[Tuple[float, int, Batch]]) -> None:
        with self._lock:
            for entry in entries:
                heapq.heappush(self._parked, entry)
        self._wake.set()

    def parked_events(self) -> int:
        with self._lock:
            return sum(len(entry[2].items) for entry in self._parked)

    def stop(self) -> None:
        with self._lock:
            threads = len(self._threads)
        for _ in range(threads):
            self._work.put(None)

    def owns(self, thread: threading.Thread) -> bool:
        return thread in self._threads

    def alive(self) -> int:
        return sum(1 for t in self._threads if t.is_alive())

    # -- the senders ----------------------------------------------------------------------

    def _split(self, batch: Batch) -> bool:
        """Replace ``batch`` by its two halves, due at once (the dispatcher sends them as
        capacity allows). Positions stay contiguous: the flush watermark and the spool
        see the halves as they saw the whole."""
        items = batch.items
        middle = len(items) // 2
        started = batch.state.started
        halves = [
            Batch(next(self._split_numbers), batch.first_index, items[:middle]),
            Batch(next(self._split_numbers), batch.first_index + middle, items[middle:]),
        ]
        for half in halves:
            half.state = self._sender.start([data_of(item) for item in half.items], started)
        if not self._on_split(batch, halves):
            return False
        now = time.monotonic()
        with self._lock:
            for half in halves:
                heapq.heappush(self._parked, (now, half.number, half))
            self.endpoint_down = False
        return True

    def _serve(self) -> None:
        first = True
        while True:
            if not first:
                with self._lock:
                    self._idle += 1
            first = False
            batch = self._work.get()
            with self._lock:
                self._idle -= 1
                if batch is not None:
                    self._waiting -= 1
            if batch is None:
                return
            self._run(batch)

    def _run(self, batch: Batch) -> None:
        try:
            self._attempt(batch)
        except BaseException:  # pragma: no cover - a bug; keep the pool's counts right
            logger.exception("delivering a batch failed unexpectedly")
        finally:
            with self._lock:
                self._busy -= 1
            self._wake.set()

    def _attempt(self, batch: Batch) -> None:
        sender = self._sender
        if batch.state is None:
            batch.state = sender.start(data_of_all(batch.items))
        result = sender.attempt(batch.state)
        if isinstance(result, Split):
            if self._split(batch):
                return
            result = sender.closed(batch.state, "close_and_flush() gave up on it")
        if isinstance(result, RetryLater):
            now = time.monotonic()
            with self._lock:
                heapq.heappush(self._parked, (now + result.delay, batch.number, batch))
                self.endpoint_down = result.outage
                if result.server_asked:
                    self.paused_until = max(self.paused_until, now + result.delay)
            return
        self.endpoint_down = False
        self._on_result(batch, result)
