"""The vocabulary shared by the layers (a leaf module: it imports nothing of ours).

The path of one event through them is drawn once, in docs/architecture.md.
"""

from __future__ import annotations

import enum
from itertools import repeat
from typing import Any, Callable, Dict, List, Optional, Tuple, Union, cast

__all__ = [
    "EVENT_TYPES",
    "FLUSH_TIMEOUT",
    "Batch",
    "Callback",
    "Cause",
    "FlushTimeoutDefault",
    "Item",
    "callback_of",
    "data_of",
    "data_of_all",
]

# The six calls of the Segment spec, in the order the README documents them.
EVENT_TYPES = ("identify", "group", "track", "page", "screen", "alias")

Callback = Callable[[Optional[BaseException], Dict[str, Any]], Any]
# An encoded event, with the caller's callback when it gave one (most calls do not: the
# bare bytes keep the queue small and the call fast).
Item = Union[bytes, Tuple[bytes, Callback]]


def data_of(item: Item) -> bytes:
    return item if isinstance(item, bytes) else item[0]


def data_of_all(items: List[Item]) -> List[bytes]:
    """The bodies of ``items``; the list itself when none has a callback (the common case
    costs no per-event Python step: this runs for every event the worker sends)."""
    if any(map(isinstance, items, repeat(tuple))):
        return [data_of(item) for item in items]
    return cast(List[bytes], items)


def callback_of(item: Item) -> Optional[Callback]:
    return None if isinstance(item, bytes) else item[1]


class FlushTimeoutDefault:
    """The default of ``flush()`` and ``close_and_flush()``: the ``flush_timeout`` setting
    (``None``, passed explicitly, means "until settled")."""

    def __repr__(self) -> str:
        return "flush_timeout"


FLUSH_TIMEOUT = FlushTimeoutDefault()


class Cause(str, enum.Enum):
    """Why an accepted event was not delivered: one vocabulary for ``DeliveryError.cause``,
    the ``dropped`` counters of ``stats()`` and the log lines. The values are stable."""

    #: The server refused the batch for good (400, 401, 403, 404, 413, other 4xx, 501, 505).
    REJECTED = "rejected"
    #: The server kept answering with retryable failures past ``max_retries``.
    RETRIES_EXHAUSTED = "retries_exhausted"
    #: No answer at all (refused, reset, timed out) until the retry policy's deadline.
    OUTAGE_DEADLINE = "outage_deadline"
    #: The client closed (``close_and_flush`` timed out) before the event could be delivered.
    CLOSED = "closed"
    #: The queue already held ``max_queue_size`` events.
    QUEUE_FULL = "queue_full"
    #: Events a spool replayed at start beyond ``max_queue_size``.
    SPOOL_OVERFLOW = "spool_overflow"

    def __str__(self) -> str:
        return self.value


class Batch:
    """Events cut from the queue together; ``first_index`` is the position of the first in
    take order, so a batch covers the positions ``[first_index, first_index + len(items))``."""

    __slots__ = ("abandoned", "first_index", "items", "number", "state")

    def __init__(self, number: int, first_index: int, items: List[Item]) -> None:
        self.number = number
        self.first_index = first_index
        self.items = items
        # The retry state between attempts (a _delivery.RetryState), set at the first attempt.
        self.state: Any = None
        # close_and_flush gave up on it while it was in flight: already reported and counted.
        self.abandoned = False

    def __len__(self) -> int:
        return len(self.items)
