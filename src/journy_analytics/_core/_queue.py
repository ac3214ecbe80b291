"""The bounded in-memory queue of encoded events, and batch cutting.

The call path takes no lock: ``deque.append`` is atomic, and the dispatcher is woken only
when the queue goes from empty to non-empty or reaches a full batch. Taking and draining
happen under the worker's state lock (shared with the outcomes, so that ``stats()``
reads every count at one instant).

Positions: every event that leaves the queue, in a batch or drained at close, gets the
next position in take order (``next_position``). A flush waits until every position below
its target is settled.

The bound, ``max_size``, covers every event held in memory: queued here, plus those taken
and not yet settled (in flight or waiting to retry), which the outcomes count. A server
that keeps asking for pauses cannot make the process hold more than ``max_size`` events.
"""

from __future__ import annotations

import threading
from collections import deque
from itertools import repeat, starmap
from typing import Callable, Deque, List, Optional, Protocol, Tuple

from journy_analytics._message import MAX_BATCH_BYTES, compact
from journy_analytics._types import Batch, Item, data_of, data_of_all

__all__ = ["ENVELOPE_BYTES", "EventQueue"]

# The envelope around the joined events: {"batch":[...],"sentAt":"...","writeKey":"..."}.
ENVELOPE_BYTES = 128


class HeldElsewhere(Protocol):
    """Who counts the events taken from the queue and not yet settled (the outcomes)."""

    in_flight: int


class EventQueue:
    def __init__(
        self,
        *,
        max_size: int,
        batch_size: int,
        lock: threading.Lock,
        held_elsewhere: HeldElsewhere,
        wake: threading.Event,
    ) -> None:
        self.max_size = max_size
        self.batch_size = batch_size
        self._lock = lock
        self._held = held_elsewhere
        self._wake = wake
        self._items: Deque[Item] = deque()
        # Beyond this many waiting events an event is copied to its exact size (orjson's
        # buffer has slack); events sent at once skip the copy.
        self._compact_after = 2 * batch_size
        self._batch_numbers = 0
        self.next_position = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Item) -> bool:
        """Append, or return False when ``max_size`` events are already held."""
        items = self._items
        n = len(items)
        if n >= self._compact_after:
            if n + self._held.in_flight >= self.max_size:
                return False
            # compact() inlined for bare events (most of them): a call per event adds up.
            item = b"%b" % item if isinstance(item, bytes) else (compact(item[0]), item[1])
        elif n + self._held.in_flight >= self.max_size:
            return False
        items.append(item)
        # Event.set() takes a lock and notifies: only when it changes something (a backlog
        # above a batch would otherwise pay it on every call).
        if (n == 0 or n + 1 >= self.batch_size) and not self._wake.is_set():
            self._wake.set()
        return True

    def peek(self, start: int, end: int) -> List[bytes]:
        """The bodies of positions ``[start, end)`` still queued (for the spool's commit).
        Call with the state lock held."""
        base = self.next_position
        items = self._items
        stop = min(end, base + len(items))
        return [data_of(items[i - base]) for i in range(max(start, base), stop)]

    def take(self) -> Optional[Batch]:
        """Cut the next batch: up to ``batch_size`` events and ``MAX_BATCH_BYTES``. Call with
        the state lock held."""
        items = self._items
        count = min(self.batch_size, len(items))
        if not count:
            return None
        # This runs for every event the worker sends, so the common case stays in C: pop
        # ``count`` events at once, then size them; a per-event Python loop cost a third of
        # the dispatcher's time.
        taken: List[Item] = list(starmap(items.popleft, repeat((), count)))
        lengths = list(map(len, data_of_all(taken)))
        if ENVELOPE_BYTES + sum(lengths) + count > MAX_BATCH_BYTES:
            taken = self._fit(taken, lengths)
        batch = Batch(self._batch_numbers, self.next_position, taken)
        self._batch_numbers += 1
        self.next_position += len(taken)
        return batch

    def _fit(self, taken: List[Item], lengths: List[int]) -> List[Item]:
        """Keep the leading events that fit ``MAX_BATCH_BYTES`` (at least one: an event is
        at most ``MAX_EVENT_BYTES``); the rest go back to the head of the queue, in order."""
        size = ENVELOPE_BYTES
        keep = 0
        for length in lengths:
            if keep and size + length + 1 > MAX_BATCH_BYTES:
                break
            size += length + 1
            keep += 1
        self._items.extendleft(reversed(taken[keep:]))
        return taken[:keep]

    def drain(self) -> Batch:
        """Everything queued, out of the queue (close gave up on it). Call with the state
        lock held."""
        items = self._items
        taken = list(items)
        items.clear()
        batch = Batch(-1, self.next_position, taken)
        self.next_position += len(taken)
        return batch

    def purge(self, matches: Callable[[bytes], bool]) -> Tuple[int, List[Item], List[Item]]:
        """Take out the queued events ``matches`` accepts (a GDPR erase). Call with the
        state lock held. The removed events keep their positions, as if taken and settled,
        so the positions of the rest, and the flushes waiting on them, stay valid: the kept
        events move up to ``first + len(removed)`` onwards. Returns ``first``, the kept and
        the removed events, in order."""
        items = self._items
        # Only the events queued now: put() appends on the right without the lock, and
        # those appended meanwhile stay where they are, after the kept ones.
        snapshot = [items.popleft() for _ in range(len(items))]
        kept: List[Item] = []
        removed: List[Item] = []
        for item in snapshot:
            (removed if matches(data_of(item)) else kept).append(item)
        items.extendleft(reversed(kept))
        first = self.next_position
        self.next_position += len(removed)
        return first, kept, removed

    def replay(self, items: List[bytes]) -> None:
        """Events a spool kept from an earlier run go first. At start, before any thread."""
        self._items.extendleft(reversed(items))
