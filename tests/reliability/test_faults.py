"""Delivery under server faults: a mix of 500/429/resets, a poisoned batch, a hung server.

Each test compares the messageIds it sent with what the server stored, and the client's
``stats()`` and error reports with the server's own counters.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Dict, List, Optional

from journy_analytics import Analytics, DeliveryError, RetryPolicy
from journy_analytics.collector import CollectorThread

from .conftest import ids, mixed_faults, report, reset_requests, scales

# -- mixed faults ----------------------------------------------------------------------

P500, P429, PRESET = 0.30, 0.10, 0.05

# Every attempt fails with probability 0.45, so a batch is lost only if 1 + max_retries
# attempts in a row fail: 0.45**26 ≈ 1e-9 per batch. The longest wait between attempts is
# max(max_backoff, Retry-After) = 2 s, so 25 retries fit well inside the 300 s deadline.
MIXED_POLICY = RetryPolicy(max_retries=25, initial_backoff=0.1, max_backoff=2.0, deadline=300.0)


@scales(
    default={"events": 50_000, "batch": 100, "concurrency": 16},
    soak={"events": 50_000, "batch": 15, "concurrency": 32},
)
def test_mixed_faults_every_message_id_arrives(
    collector: CollectorThread, scale: Dict[str, int]
) -> None:
    n = scale["events"]
    collector.set_faults(mixed_faults(P500, P429, PRESET, seed=20240605))
    sent = ids("mixed", n)
    outcomes: Dict[str, Optional[BaseException]] = {}
    lock = threading.Lock()
    errors: List[DeliveryError] = []

    def callback(error: Optional[BaseException], message: Dict[str, Any]) -> None:
        with lock:
            assert message["messageId"] not in outcomes, "a callback fired twice"
            outcomes[message["messageId"]] = error

    analytics = Analytics(
        write_key="k",
        host=collector.url,
        max_events_in_batch=scale["batch"],
        max_concurrent_requests=scale["concurrency"],
        max_queue_size=n,  # the whole run fits: this test is about the network, not overflow
        retry_policy=MIXED_POLICY,
    )
    analytics.on("error", errors.append)
    started = time.monotonic()
    for i, mid in enumerate(sent):
        analytics.track(
            user_id=f"user-{i % 500}",
            event="Fault Test",
            properties={"i": i},
            message_id=mid,
            callback=callback,
        )
    assert analytics.close_and_flush(timeout=240) is True
    elapsed = time.monotonic() - started

    stats = analytics.stats()
    server = collector.stats()
    stored = collector.unique_message_ids()
    resets = reset_requests(collector)
    reset_events = sum(len(r["body"]["batch"]) for r in resets)

    # Every messageId sent arrived, and nothing else did.
    assert stored == set(sent)
    assert server["stored"] == n
    # The client saw every event delivered, none dropped, each callback once without error.
    assert errors == []
    assert stats["delivered"] == n
    assert stats["dropped"] == {
        "queue_full": 0,
        "rejected": 0,
        "retries_exhausted": 0,
        "outage_deadline": 0,
        "spool_overflow": 0,
        "closed": 0,
    }
    assert len(outcomes) == n and not any(outcomes.values())
    # The faults really happened, at about the configured rates.
    faults = server["faults"]
    requests = server["requests"]
    assert requests == stats["requests"]
    assert abs(faults["failed"] / requests - P500) < 0.06, faults
    assert abs(faults["rate_limited"] / requests - P429) < 0.04, faults
    assert abs(faults["reset"] / requests - PRESET) < 0.03, faults
    assert faults["reset"] == len(resets) > 0
    assert stats["retried"] == faults["failed"] + faults["rate_limited"] + faults["reset"]
    # Duplicates: exactly the events of requests that were stored and then reset. Each such
    # request is retried once more and every event of it arrives a second time; nothing
    # else (500, 429, a timeout) produces a duplicate.
    assert server["duplicates"] == reset_events
    assert server["received"] == n + reset_events
    seen: Dict[str, int] = collections.Counter()
    for r in collector.requests():
        if r["status"] == 200 or r["status"] == "reset":
            seen.update(e["messageId"] for e in r["body"]["batch"])
    in_reset = {e["messageId"] for r in resets for e in r["body"]["batch"]}
    assert {m for m, k in seen.items() if k > 1} <= in_reset
    report(
        "mixed_faults",
        events_sent=n,
        batch=scale["batch"],
        requests=requests,
        faults_500=faults["failed"],
        faults_429=faults["rate_limited"],
        faults_reset_after_store=faults["reset"],
        events_delivered=len(stored),
        duplicates_received=server["duplicates"],
        retried=stats["retried"],
        elapsed_s=round(elapsed, 1),
    )


def test_resets_before_store_make_no_duplicates(collector: CollectorThread) -> None:
    """The other side of the duplicate rule: a reset before the server stored anything,
    like a 500 or a 429, is retried without producing a single duplicate."""
    collector.set_faults(fail_rate=0.2, reset_rate=0.3, reset_when="before", seed=7)
    n = 3_000
    sent = ids("before", n)
    analytics = Analytics(
        write_key="k",
        host=collector.url,
        max_events_in_batch=50,
        max_queue_size=n,
        retry_policy=RetryPolicy(max_retries=25, initial_backoff=0.05, max_backoff=0.5),
    )
    for mid in sent:
        analytics.track(user_id="u", event="E", message_id=mid)
    assert analytics.close_and_flush(timeout=60) is True
    server = collector.stats()
    assert collector.unique_message_ids() == set(sent)
    assert server["faults"]["reset"] > 0 and server["faults"]["failed"] > 0
    assert server["duplicates"] == 0 and server["received"] == n
    assert analytics.stats()["delivered"] == n


# -- poisoned batch --------------------------------------------------------------------


def test_poisoned_batch_is_dropped_and_reported(scripted: Any) -> None:
    def decide(batch: List[Dict[str, Any]]) -> tuple[int, float]:
        poisoned = any(e.get("properties", {}).get("poison") for e in batch)
        return (400 if poisoned else 200), 0.0

    server, url = scripted(decide)
    n, poison_at = 200, 95
    sent = ids("poison", n)
    errors: List[DeliveryError] = []
    outcomes: Dict[str, Optional[BaseException]] = {}

    def callback(error: Optional[BaseException], message: Dict[str, Any]) -> None:
        outcomes[message["messageId"]] = error

    analytics = Analytics(
        write_key="k",
        host=url,
        max_events_in_batch=10,
        retry_policy=RetryPolicy(max_retries=5, initial_backoff=0.05),
    )
    analytics.on("error", errors.append)
    for i, mid in enumerate(sent):
        analytics.track(
            user_id="u",
            event="E",
            properties={"poison": i == poison_at},
            message_id=mid,
            callback=callback,
        )
    assert analytics.close_and_flush(timeout=30) is True

    rejected_requests = [req for status, req in server.answered if status == 400]
    assert len(rejected_requests) == 1, "a 400 must not be retried"
    rejected = set(rejected_requests[0])
    assert sent[poison_at] in rejected and 1 <= len(rejected) <= 10
    # Reported once, with the status and exactly the events of that batch.
    assert len(errors) == 1
    error = errors[0]
    assert error.code == "delivery_failure" and error.status == 400
    assert (
        {e["messageId"] for e in error.events}
        == rejected
        == {m for m, err in outcomes.items() if err is not None}
    )
    stats = analytics.stats()
    assert stats["dropped"]["rejected"] == len(rejected)
    assert stats["delivered"] == n - len(rejected)
    # Every other event arrived, once.
    assert server.unique_accepted == set(sent) - rejected
    assert len(server.accepted) == n - len(rejected)
    report(
        "poisoned_batch",
        events_sent=n,
        rejected_batch=len(rejected),
        events_delivered=len(server.unique_accepted),
        duplicates=len(server.accepted) - len(server.unique_accepted),
    )


# -- hung server -----------------------------------------------------------------------


def test_hung_request_is_abandoned_and_retried(scripted: Any) -> None:
    hung: List[int] = []
    lock = threading.Lock()

    def decide(batch: List[Dict[str, Any]]) -> tuple[int, float]:
        with lock:
            if len(hung) < 2:  # the first two requests hang far past the client timeout
                hung.append(1)
                return 200, 10.0
        return 200, 0.0

    server, url = scripted(decide)
    sent = ids("hang", 30)
    responses: List[Dict[str, Any]] = []
    analytics = Analytics(
        write_key="k",
        host=url,
        max_events_in_batch=15,
        http_request_timeout=0.5,
        retry_policy=RetryPolicy(max_retries=5, initial_backoff=0.05),
    )
    analytics.on("http_response", responses.append)
    for mid in sent:
        analytics.track(user_id="u", event="E", message_id=mid)
    started = time.monotonic()
    assert analytics.close_and_flush(timeout=8) is True
    elapsed = time.monotonic() - started
    # Abandoned after 0.5 s each instead of waiting 10 s for the server.
    assert elapsed < 3.0, elapsed
    timeouts = [r for r in responses if r["status"] is None]
    assert len(timeouts) == 2 and all("Timeout" in r["error"] for r in timeouts)
    stats = analytics.stats()
    assert stats["delivered"] == 30 and stats["retried"] == 2
    assert server.unique_accepted == set(sent)
    report("hang_retry", events_sent=30, timeouts=2, delivered=30, elapsed_s=round(elapsed, 2))


def test_close_and_flush_returns_on_time_against_a_hung_server(scripted: Any) -> None:
    _server, url = scripted(lambda batch: (200, 60.0))  # every request hangs
    n, timeout, request_timeout = 100, 1.0, 3.0
    sent = ids("stuck", n)
    errors: List[DeliveryError] = []
    outcomes: Dict[str, Optional[BaseException]] = {}
    lock = threading.Lock()

    def callback(error: Optional[BaseException], message: Dict[str, Any]) -> None:
        with lock:
            outcomes[message["messageId"]] = error

    analytics = Analytics(
        write_key="k",
        host=url,
        max_events_in_batch=15,
        max_concurrent_requests=2,
        http_request_timeout=request_timeout,
        retry_policy=RetryPolicy(max_retries=50),
    )
    analytics.on("error", errors.append)
    for mid in sent:
        analytics.track(user_id="u", event="E", message_id=mid, callback=callback)
    started = time.monotonic()
    assert analytics.close_and_flush(timeout=timeout) is False
    elapsed = time.monotonic() - started
    assert timeout <= elapsed < timeout + 0.5, elapsed

    # At return every event is already reported and counted (cause closed): what never
    # left the queue, and what is on the wire (two requests, bounded by
    # http_request_timeout) with an unknown fate, so a process that exits now has said so.
    stats = analytics.stats()
    assert stats["delivered"] == 0
    assert stats["in_flight"] == 0
    assert stats["dropped"]["closed"] == n
    reported_now = {e["messageId"] for err in list(errors) for e in err.events}
    assert reported_now == set(sent)
    # The abandoned requests end within http_request_timeout and are reported too.
    deadline = time.monotonic() + request_timeout + 2.0
    while analytics.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = analytics.stats()
    assert stats["in_flight"] == 0
    assert stats["dropped"]["closed"] == n and stats["delivered"] == 0
    assert all(err.cause == "closed" for err in errors)
    assert {e["messageId"] for err in errors for e in err.events} == set(sent)
    assert set(outcomes) == set(sent)
    assert all(
        isinstance(err, DeliveryError) and err.cause == "closed" for err in outcomes.values()
    )
    report(
        "hang_close",
        events_sent=n,
        close_timeout_s=timeout,
        close_elapsed_s=round(elapsed, 2),
        reported_closed=stats["dropped"]["closed"],
    )
