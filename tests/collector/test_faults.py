"""Fault injection: failures, rate limiting, latency, resets; counted in stats."""

from __future__ import annotations

import time

import pytest
import urllib3

from journy_analytics.collector import CollectorThread, Faults


def identify(n: int) -> dict[str, object]:
    return {"type": "identify", "userId": "u", "messageId": f"m{n}", "traits": {"n": n}}


def test_no_faults_by_default(collector):
    assert collector.faults == Faults()
    assert not collector.faults.active


def test_fail_rate_answers_fail_status_and_stores_nothing(collector, http):
    collector.set_faults(fail_rate=1.0, fail_status=503)
    r = http.batch(identify(1))
    assert r.status == 503
    assert r.json()["code"] == "injected_fault"
    assert collector.events() == []
    assert collector.stats()["faults"] == {"failed": 1}
    assert collector.stats()["requests"] == 1


def test_fail_rate_is_a_seeded_fraction(make_http):
    def statuses(seed: int) -> list[int]:
        with CollectorThread(faults=Faults(fail_rate=0.5, seed=seed)) as c:
            http = make_http(c.url)
            return [http.batch(identify(i)).status for i in range(40)]

    first = statuses(7)
    assert first == statuses(7)
    assert 5 < first.count(500) < 35
    assert set(first) == {200, 500}


def test_rate_limit_answers_429_with_retry_after(collector, http):
    collector.set_faults(rate_limit=3)
    # Stay inside one second-long window so the count is exact.
    while time.monotonic() % 1 > 0.5:
        time.sleep(0.05)
    statuses = [http.batch(identify(i)) for i in range(5)]
    assert [r.status for r in statuses] == [200, 200, 200, 429, 429]
    assert statuses[3].headers["Retry-After"] == "1"
    assert collector.stats()["faults"] == {"rate_limited": 2}
    assert collector.unique_message_ids() == {"m0", "m1", "m2"}


def test_latency(collector, http):
    collector.set_faults(latency_ms=200)
    started = time.monotonic()
    assert http.batch(identify(1)).status == 200
    assert time.monotonic() - started >= 0.19
    assert collector.stats()["faults"] == {"delayed": 1}


@pytest.mark.parametrize(("when", "stored"), [("after", {"m1"}), ("before", set())])
def test_reset_closes_without_answer(collector, http, when, stored):
    collector.set_faults(reset_rate=1.0, reset_when=when)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        http.batch(identify(1))
    assert collector.unique_message_ids() == stored
    assert collector.stats()["faults"] == {"reset": 1}
    assert collector.requests()[-1]["status"] == "reset"


def test_reset_after_store_then_retry_is_a_counted_duplicate(collector, http):
    collector.set_faults(reset_rate=1.0)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        http.batch(identify(1))
    collector.set_faults(Faults())
    assert http.batch(identify(1)).status == 200  # the client's retry
    stats = collector.stats()
    assert stats["duplicates"] == 1
    assert stats["stored"] == 1


def test_faults_leave_read_api_alone(collector, http):
    collector.set_faults(fail_rate=1.0)
    assert http.get("/api/stats").status == 200


def test_server_down_then_back(collector, http):
    assert http.batch(identify(1)).status == 200
    collector.stop()
    with pytest.raises(urllib3.exceptions.HTTPError):
        http.batch(identify(2))
    collector.start()
    assert http.batch(identify(3)).status == 200
    assert collector.unique_message_ids() == {"m1", "m3"}


def test_invalid_fault_settings():
    with pytest.raises(ValueError):
        Faults(fail_rate=1.5)
    with pytest.raises(ValueError):
        Faults(fail_status=200)
    with pytest.raises(ValueError):
        Faults(reset_when="during")
    with pytest.raises(ValueError):
        Faults().replace(nope=1)
