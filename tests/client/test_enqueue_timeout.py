"""Back-pressure: ``Analytics(enqueue_timeout=...)``, through the public API only."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, List

import pytest

from journy_analytics import Analytics, DeliveryError
from journy_analytics.collector import CollectorThread


def _loop(client: Analytics, n: int) -> None:
    for i in range(n):
        client.track(user_id=f"u{i % 7}", event="Backfilled", properties={"i": i})


@pytest.mark.parametrize("enqueue_timeout", [0.0, 30.0])
def test_a_plain_loop_into_a_slow_server_waits_instead_of_dropping(
    collector: CollectorThread, make_client: Callable[..., Analytics], enqueue_timeout: float
) -> None:
    collector.set_faults(latency_ms=15)
    client = make_client(
        max_queue_size=100,
        max_events_in_batch=50,
        max_concurrent_requests=1,
        enqueue_timeout=enqueue_timeout,
    )
    _loop(client, 1500)
    assert client.flush(timeout=60)
    dropped = client.stats()["dropped"]["queue_full"]
    if enqueue_timeout == 0.0:
        # Today's behaviour, kept by default: the loop outruns the server and events drop.
        assert dropped > 0
    else:
        assert dropped == 0
        assert collector.stats()["events"] == 1500


def _stuck_client(**settings: Any) -> Analytics:
    """A client whose full queue never drains: batches of 100 from a queue of 5, sent only
    after an hour (the host is never contacted)."""
    return Analytics(
        "k",
        host="http://127.0.0.1:9",
        max_queue_size=5,
        max_events_in_batch=100,
        flush_interval=3600,
        **settings,
    )


def test_the_wait_is_bounded_and_the_event_is_then_reported_as_queue_full() -> None:
    client = _stuck_client(enqueue_timeout=0.3)
    try:
        _loop(client, 5)
        errors: List[BaseException] = []
        started = time.monotonic()
        client.track(user_id="late", event="E", callback=lambda e, m: errors.append(e))
        waited = time.monotonic() - started
        assert waited >= 0.25  # it did wait for room ...
        assert waited < 10  # ... and gave up
        assert [getattr(e, "cause", None) for e in errors] == ["queue_full"]
        assert isinstance(errors[0], DeliveryError)
        assert client.stats()["dropped"]["queue_full"] == 1
    finally:
        client.close_and_flush(timeout=0)


def test_waiting_burns_no_cpu() -> None:
    client = _stuck_client(enqueue_timeout=1.0)
    try:
        _loop(client, 5)
        cpu0 = time.process_time()
        client.track(user_id="late", event="E")
        # A condition wait costs next to nothing; a spin would use the whole second.
        assert time.process_time() - cpu0 < 0.3
    finally:
        client.close_and_flush(timeout=0)


def test_close_and_flush_wakes_a_waiting_caller() -> None:
    # The server is down: the first batch waits to be retried, and while it does the client
    # is full (max_queue_size counts the events waiting to retry too), not even drained by
    # close_and_flush() (it gives up after its timeout).
    client = Analytics(
        "k",
        host=f"http://127.0.0.1:{_closed_port()}",
        max_queue_size=5,
        max_events_in_batch=5,
        # One batch of all five, cut when full: a short interval could cut the first event
        # alone when the machine is loaded between two calls.
        flush_interval=60.0,
        enqueue_timeout=60.0,
    )
    _loop(client, 5)
    deadline = time.monotonic() + 10
    parked = 0
    while parked < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
        parked = client.stats()["waiting_to_retry"]
    assert parked == 5  # the first attempt failed: the batch waits to retry, the client is full
    outcome: List[Any] = []
    waiting = threading.Thread(
        target=lambda: client.track(
            user_id="late", event="E", callback=lambda e, m: outcome.append(e)
        ),
        daemon=True,
    )
    waiting.start()
    time.sleep(0.3)  # a while to see that the call waits
    assert waiting.is_alive()  # blocked on the full queue
    client.close_and_flush(timeout=0.5)
    waiting.join(timeout=10)
    assert not waiting.is_alive(), "close_and_flush() left a caller waiting for room"
    assert len(outcome) == 1 and getattr(outcome[0], "cause", None) in ("queue_full", "closed")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "5", True])
def test_enqueue_timeout_is_validated(bad: Any) -> None:
    with pytest.raises(ValueError, match="enqueue_timeout"):
        Analytics("k", host="http://127.0.0.1:9", enqueue_timeout=bad)


def test_default_never_waits() -> None:
    client = _stuck_client()
    try:
        assert client.enqueue_timeout == 0.0
        _loop(client, 6)
        assert client.stats()["dropped"]["queue_full"] == 1
    finally:
        client.close_and_flush(timeout=0)
