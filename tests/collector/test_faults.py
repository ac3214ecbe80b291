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


def in_one_window(collector, faults: Faults, send):
    """``send()`` with every request inside one window of the rate limit, so the count is
    exact. The windows are whole seconds of ``time.monotonic()`` (the collector runs in this
    process). On a loaded machine the requests can spill into the next window: such an
    attempt proves nothing either way, so it is made again on a clean collector."""
    for _ in range(10):
        while time.monotonic() % 1 > 0.5:
            time.sleep(0.01)
        collector.reset()
        collector.set_faults(faults)  # also starts the count of the window afresh
        started = time.monotonic()
        result = send()
        if int(time.monotonic()) == int(started):
            return result
    pytest.fail("ten attempts each spilled over a one-second window")


def test_rate_limit_answers_429_with_retry_after(collector, http):
    statuses = in_one_window(
        collector, Faults(rate_limit=3), lambda: [http.batch(identify(i)) for i in range(5)]
    )
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


def test_retry_after_rate_answers_429_with_retry_after(collector, http):
    collector.set_faults(retry_after_rate=1.0, retry_after=7)
    r = http.batch(identify(1))
    assert r.status == 429
    assert r.headers["Retry-After"] == "7"
    assert r.json()["code"] == "rate_limited"
    assert collector.events() == []
    assert collector.stats()["faults"] == {"rate_limited": 1}


def test_rate_limit_uses_retry_after(collector, http):
    first, r = in_one_window(
        collector,
        Faults(rate_limit=1, retry_after=3),
        lambda: (http.batch(identify(1)), http.batch(identify(2))),
    )
    assert first.status == 200
    assert (r.status, r.headers["Retry-After"]) == (429, "3")


def test_fault_kinds_mix_on_one_stream_at_their_rates(make_http):
    """One draw per request: each rate is the fraction of all requests with that fault."""
    n = 400
    faults = Faults(
        fail_rate=0.3, retry_after_rate=0.1, reset_rate=0.05, reset_when="after", seed=11
    )
    with CollectorThread(faults=faults) as c:
        http = make_http(c.url)
        outcomes = []
        for i in range(n):
            try:
                r = http.batch(identify(i))
            except urllib3.exceptions.ProtocolError:
                outcomes.append("reset")
            else:
                outcomes.append(r.status)
                if r.status == 429:
                    assert r.headers["Retry-After"] == "1"
        counts = {k: outcomes.count(k) for k in (500, 429, "reset", 200)}
        stats = c.stats()
        assert stats["faults"] == {
            "failed": counts[500],
            "rate_limited": counts[429],
            "reset": counts["reset"],
        }
        assert abs(counts[500] / n - 0.3) < 0.07
        assert abs(counts[429] / n - 0.1) < 0.05
        assert abs(counts["reset"] / n - 0.05) < 0.04 and counts["reset"] > 0
        assert counts[200] == n - counts[500] - counts[429] - counts["reset"]
        # Resets happened after the store: those events are stored too, nothing else is.
        assert stats["stored"] == counts[200] + counts["reset"]
        reset_ids = {
            e["messageId"]
            for r in c.requests()
            if r["status"] == "reset"
            for e in r["body"]["batch"]
        }
        ok_ids = {
            e["messageId"] for r in c.requests() if r["status"] == 200 for e in r["body"]["batch"]
        }
        assert c.unique_message_ids() == reset_ids | ok_ids


def test_fault_draws_replay_with_a_seed(make_http):
    faults = Faults(fail_rate=0.3, retry_after_rate=0.3, fail_status=503, seed=5)

    def statuses() -> list[int]:
        with CollectorThread(faults=faults) as c:
            http = make_http(c.url)
            return [http.batch(identify(i)).status for i in range(60)]

    first = statuses()
    assert first == statuses()
    assert set(first) == {200, 429, 503}


def test_rates_adding_up_past_one_leave_the_later_kinds_what_is_left(collector, http):
    collector.set_faults(fail_rate=1.0, retry_after_rate=1.0, reset_rate=1.0)
    assert [http.batch(identify(i)).status for i in range(5)] == [500] * 5


def test_faults_api_has_the_retry_after_settings(collector, http):
    r = http.post("/api/faults", {"retry_after_rate": 0.25, "retry_after": 2})
    assert r.status == 200
    assert r.json()["retry_after_rate"] == 0.25 and r.json()["retry_after"] == 2
    assert collector.faults.retry_after_rate == 0.25
    assert http.get("/api/faults").json()["retry_after"] == 2
    assert http.post("/api/faults", {"retry_after": -1}).status == 400
    assert http.post("/api/faults", {"retry_after_rate": 2}).status == 400
    assert http.get("/api/stats").json()["fault_settings"]["retry_after_rate"] == 0.25


def test_invalid_retry_after_settings():
    with pytest.raises(ValueError):
        Faults(retry_after_rate=-0.1)
    with pytest.raises(ValueError):
        Faults(retry_after=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Faults(retry_after=True)
    assert Faults(retry_after_rate=0.1).active
    assert not Faults(retry_after=5).active
