"""The server goes away in the middle of a run and comes back.

The rule these tests prove (docs/reliability.md, "Outages"): when the server gives no
answer at all (connection refused, reset, timeout) the batch is retried with backoff until
the retry policy's ``deadline`` (600 s by default), whatever ``max_retries`` says, because
an outage is not the batch's fault; ``max_retries`` counts only failures the server
answered (5xx, 429, ...). So with the default settings an outage shorter than the deadline
loses nothing that fits in ``max_queue_size``; a longer one is reported, never silent.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

from journy_analytics import Analytics, Cause, DeliveryError, RetryPolicy
from journy_analytics.collector import CollectorThread

from .conftest import ids, report, scales


@scales(
    default={"before": 2.0, "outage": 5.0, "after": 2.0, "rate": 400},
    soak={"before": 5.0, "outage": 20.0, "after": 5.0, "rate": 300},
)
def test_outage_loses_nothing_within_max_queue_size(
    collector: CollectorThread, scale: Dict[str, float]
) -> None:
    rate = int(scale["rate"])
    total_time = scale["before"] + scale["outage"] + scale["after"]
    n = int(rate * total_time)
    # Everything produced during the outage waits in memory: it must fit.
    assert rate * (scale["outage"] + 6.0) < 10_000
    sent = ids("outage", n)
    errors: List[DeliveryError] = []
    failures: List[Dict[str, Any]] = []
    analytics = Analytics(
        write_key="k",
        host=collector.url,
        flush_interval=0.5,
        max_queue_size=10_000,
        # The default retry policy: max_retries=3 does not limit retries when nobody answers.
    )
    analytics.on("error", errors.append)
    analytics.on("http_response", lambda r: r["status"] is None and failures.append(r))

    max_queued = 0
    phases: Dict[str, float] = {}
    stop_outage = threading.Event()

    def outage() -> None:
        time.sleep(scale["before"])
        collector.stop()
        phases["down"] = time.monotonic()
        stop_outage.wait(scale["outage"])
        collector.start()
        phases["up"] = time.monotonic()

    switch = threading.Thread(target=outage)
    started = time.monotonic()
    switch.start()
    try:
        # A steady producer: `rate` events a second, paced against the clock.
        for i, mid in enumerate(sent):
            due = started + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            analytics.track(
                user_id=f"u{i % 50}", event="Outage", properties={"i": i}, message_id=mid
            )
            if i % 100 == 0:
                max_queued = max(max_queued, analytics.stats()["queued"])
    finally:
        switch.join()
    assert analytics.close_and_flush(timeout=90) is True
    elapsed = time.monotonic() - started
    recovered = time.monotonic() - phases["up"]

    stats = analytics.stats()
    server = collector.stats()
    stored = collector.unique_message_ids()
    assert stored == set(sent)
    assert errors == []
    assert stats["delivered"] == n
    assert stats["dropped"] == {cause.value: 0 for cause in Cause}
    # The outage was real: requests failed with no answer and events piled up meanwhile.
    assert len(failures) > 0 and stats["retried"] >= len(failures)
    assert max_queued > rate * (scale["outage"] - 3.0)
    report(
        "outage",
        outage_s=scale["outage"],
        events_sent=n,
        requests_without_answer=len(failures),
        max_queued=max_queued,
        events_delivered=len(stored),
        duplicates_received=server["duplicates"],
        drained_after_up_s=round(recovered, 1),
        elapsed_s=round(elapsed, 1),
    )


def test_outage_past_the_deadline_is_reported(collector: CollectorThread) -> None:
    """An outage longer than the retry deadline costs the batches caught in it. Nothing is
    silent: each lost event is in an error report, a callback and stats()."""
    n = 120  # 8 batches: one round of the 8 concurrent senders
    sent = ids("short", n)
    errors: List[DeliveryError] = []
    failed: Dict[str, BaseException] = {}
    analytics = Analytics(
        write_key="k",
        host=collector.url,
        flush_interval=0.2,
        retry_policy=RetryPolicy(deadline=3.0),
    )
    analytics.on("error", errors.append)
    collector.stop()
    try:
        for mid in sent:
            analytics.track(
                user_id="u",
                event="E",
                message_id=mid,
                callback=lambda e, m: e is not None and failed.setdefault(m["messageId"], e),
            )
        # Refused attempts (backoff 0.5, 1, 2 s ...) until the 3 s deadline.
        assert analytics.flush(timeout=20) is True
    finally:
        collector.start()
    stats = analytics.stats()
    assert stats["delivered"] == 0
    assert stats["dropped"]["outage_deadline"] == n
    assert set(failed) == set(sent)
    assert {e["messageId"] for err in errors for e in err.events} == set(sent)
    assert all(err.cause == "outage_deadline" for err in errors)
    assert collector.unique_message_ids() == set()
    analytics.close_and_flush(timeout=5)
