"""Batch cutting in the queue: counts, the byte limit, order, and events with callbacks."""

from __future__ import annotations

import threading
from typing import Any, List

from journy_analytics._core._queue import ENVELOPE_BYTES, EventQueue
from journy_analytics._message import MAX_BATCH_BYTES
from journy_analytics._types import Item, data_of, data_of_all


class _Held:
    in_flight = 0


def _queue(batch_size: int) -> EventQueue:
    return EventQueue(
        max_size=100_000,
        batch_size=batch_size,
        lock=threading.Lock(),
        held_elsewhere=_Held(),
        wake=threading.Event(),
    )


def _event(i: int, size: int = 40) -> bytes:
    head = b'{"i":%d,"pad":"' % i
    return head + b"x" * (size - len(head) - 2) + b'"}'


def _callback(error: Any, message: Any) -> None:
    pass


def test_batches_hold_batch_size_events_in_order_with_positions() -> None:
    q = _queue(7)
    for i in range(20):
        assert q.put(_event(i))
    cuts = []
    while (batch := q.take()) is not None:
        cuts.append(batch)
    assert [len(b.items) for b in cuts] == [7, 7, 6]
    assert [b.first_index for b in cuts] == [0, 7, 14]
    assert [item for b in cuts for item in b.items] == [_event(i) for i in range(20)]
    assert q.next_position == 20


def test_a_batch_stops_below_the_byte_limit_and_the_rest_keeps_its_order() -> None:
    q = _queue(20)  # a full batch of 20 would not fit: each cut puts events back
    size = 30_000
    for i in range(40):
        q.put(_event(i, size) if i % 3 else (_event(i, size), _callback))
    cuts: List[List[Item]] = []
    while (batch := q.take()) is not None:
        body = b",".join(data_of_all(batch.items))
        assert ENVELOPE_BYTES + len(body) <= MAX_BATCH_BYTES
        cuts.append(batch.items)
    # As many as fit: one more event of this size would pass the limit.
    fit = (MAX_BATCH_BYTES - ENVELOPE_BYTES) // (size + 1)
    assert [len(c) for c in cuts[:-1]] == [fit] * (len(cuts) - 1)
    assert [data_of(item) for c in cuts for item in c] == [_event(i, size) for i in range(40)]
    # Callbacks stay with their events.
    with_callbacks = [item for c in cuts for item in c if isinstance(item, tuple)]
    assert len(with_callbacks) == 14 and all(cb is _callback for _, cb in with_callbacks)


def test_bodies_of_a_batch_with_and_without_callbacks() -> None:
    plain = [_event(0), _event(1)]
    assert data_of_all(list(plain)) == plain
    mixed: List[Item] = [_event(0), (_event(1), _callback)]
    assert data_of_all(mixed) == plain


def test_events_that_wait_are_kept_at_their_own_size() -> None:
    # orjson's bytes keep their ~4 KB write buffer; beyond two batches' worth, the queue
    # keeps an exact-size copy. 3,000 small events must not hold 3,000 buffers.
    import tracemalloc

    import orjson

    q = _queue(10)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(3000):
            assert q.put(orjson.dumps({"type": "track", "event": "E", "i": i}))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(q) == 3000
    assert held < 3000 * 400, f"{held / 3000:.0f} bytes per queued event"
    first, last = q.peek(0, 1)[0], q.peek(2999, 3000)[0]
    assert orjson.loads(first)["i"] == 0 and orjson.loads(last)["i"] == 2999
