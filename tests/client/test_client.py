"""The client end to end over real loopback HTTP: the collector, or a scripted server."""

from __future__ import annotations

import datetime as dt
import threading
import time
import urllib.request
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import pytest

import journy_analytics
from journy_analytics import Analytics, DeliveryError, Response, RetryPolicy, ValidationError
from journy_analytics._default import set_default_client
from journy_analytics.collector import CollectorThread
from journy_analytics.testing import Capture
from waiting import wait_until

MakeClient = Callable[..., Analytics]
FAST_RETRY = RetryPolicy(max_retries=3, initial_backoff=0.01, max_backoff=0.05)


def test_seed_examples_reach_journy_semantics(
    make_client: MakeClient, collector: CollectorThread
) -> None:
    a = make_client()
    a.identify(anonymous_id="48d213bb-95c3-4f8d-af97-86b2b404dcfe", traits={"friends": 42})
    a.identify(
        user_id="f4ca124298",
        traits={"firstname": "Elon", "lastname": "Musk", "email": "elon@tesla.com", "friends": 42},
    )
    a.identify(user_id="f4ca124298", traits={"friends": None, "plan": "pro"})
    a.group(user_id="f4ca124298", group_id="tesla", traits={"name": "Tesla", "employees": 100})
    a.group(anonymous_id="tesla", group_id="tesla", traits={"industry": "Automotive"})
    a.track(
        user_id="f4ca124298",
        event="Car Sold",
        properties={"revenue": 39999.99, "shipping": "200-day"},
        group_id="tesla",
        timestamp=dt.datetime(2015, 12, 12, 19, 11, tzinfo=dt.timezone.utc),
    )
    a.page(user_id="f4ca124298", category="Docs", name="Pricing", group_id="tesla")
    assert a.flush(timeout=10)
    user = collector.user("f4ca124298")
    assert user is not None
    assert user["traits"] == {
        "firstname": "Elon",
        "lastname": "Musk",
        "email": "elon@tesla.com",
        "plan": "pro",
    }
    assert "tesla" in user["accounts"]
    account = collector.account("tesla")
    assert account is not None
    assert account["traits"] == {"name": "Tesla", "employees": 100, "industry": "Automotive"}
    assert account["members"] == ["f4ca124298"]
    (sold,) = collector.events(type="track", user_id="f4ca124298")
    assert sold["timestamp"] == "2015-12-12T19:11:00.000Z"
    assert sold["context"]["groupId"] == "tesla"
    assert [e["type"] for e in collector.events(user_id="f4ca124298", type="screen")] == ["screen"]
    assert a.stats()["delivered"] == 7


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"write_key": ""}, "write_key"),
        ({"write_key": None}, "write_key"),
        ({"host": "analyze.journy.io"}, "host="),
        ({"host": "ftp://x"}, "host="),
        ({"max_events_in_batch": 0}, "max_events_in_batch"),
        ({"max_queue_size": -1}, "max_queue_size"),
        ({"max_retries": -1}, "max_retries"),
        ({"flush_interval": -1}, "flush_interval"),
        ({"http_request_timeout": 0}, "http_request_timeout"),
        ({"max_concurrent_requests": 0}, "max_concurrent_requests"),
        ({"http_client": object()}, "http_client"),
        ({"spool": 3}, "spool"),
    ],
)
def test_bad_settings_raise_value_error_naming_the_setting(
    settings: Dict[str, Any], needle: str
) -> None:
    settings.setdefault("write_key", "k")
    with pytest.raises(ValueError, match=needle):
        Analytics(**settings)


def test_defaults_match_the_documented_ones() -> None:
    a = Analytics(write_key="k", disable=True)
    assert (a.host, a.path) == ("https://analyze.journy.io", "/backend/v1/batch")
    assert (a.max_retries, a.max_events_in_batch, a.flush_interval) == (3, 15, 10.0)
    assert (a.http_request_timeout, a.max_queue_size, a.gzip) == (10.0, 10_000, False)
    a.close_and_flush(1)


def test_proxy_host_and_custom_path() -> None:
    with CollectorThread(path="/proxy/ingest") as c:
        a = Analytics(write_key="k", host=c.url + "/", path="proxy/ingest", flush_interval=0.05)
        a.track(user_id="u", event="Via Proxy")
        assert a.close_and_flush(10)
        assert [r["path"] for r in c.requests()] == ["/proxy/ingest"]
        assert len(c.events(type="track")) == 1


def test_write_key_never_in_repr() -> None:
    a = Analytics(write_key="super-secret-key", disable=True)
    assert "super-secret-key" not in repr(a) and "super-secret-key" not in str(a)
    a.close_and_flush(1)


def test_batches_respect_max_events_in_batch(
    make_client: MakeClient, collector: CollectorThread
) -> None:
    a = make_client(max_events_in_batch=7)
    for i in range(50):
        a.track(user_id="u", event="E", properties={"i": i})
    assert a.close_and_flush(10)
    sizes = [len(r["body"]["batch"]) for r in collector.requests()]
    assert sum(sizes) == 50 and max(sizes) <= 7
    assert len(collector.unique_message_ids()) == 50


def test_batches_respect_480kb_even_with_large_events(
    make_client: MakeClient, collector: CollectorThread
) -> None:
    a = make_client(max_events_in_batch=100)
    for i in range(40):
        a.track(user_id="u", event="Big", properties={"blob": "x" * 30_000, "i": i})
    assert a.close_and_flush(20)
    requests = collector.requests()
    assert all(r["size"] <= 480 * 1024 for r in requests)
    assert len(requests) >= 3
    assert len(collector.unique_message_ids()) == 40


def test_partial_batch_waits_flush_interval_then_goes(
    make_client: MakeClient, collector: CollectorThread
) -> None:
    a = make_client(flush_interval=0.4, max_events_in_batch=100)
    sent_at: List[float] = []
    a.on("http_request", lambda request: sent_at.append(time.monotonic()))
    tracked_at = time.monotonic()
    a.track(user_id="u", event="Lonely")
    assert collector.wait_for_events(1, timeout=10)
    # When the request left, measured from the track() call: load can only make it later.
    assert sent_at[0] - tracked_at >= 0.4, "a partial batch is not sent before flush_interval"
    assert a.flush(5)
    assert a.stats()["delivered"] == 1


def test_full_batch_goes_without_waiting_for_the_interval(
    make_client: MakeClient, collector: CollectorThread
) -> None:
    a = make_client(flush_interval=60, max_events_in_batch=5)
    for _ in range(5):
        a.track(user_id="u", event="E")
    assert collector.wait_for_events(5, timeout=5)


def test_a_burst_of_batches_goes_out_at_once_not_one_behind_another(scripted: Any) -> None:
    # Two full batches cut before the first sender thread has picked up the first: the
    # second must get a sender of its own, not queue behind a request the server holds.
    server = scripted([{"delay": 30}] * 2)
    a = Analytics(write_key="k", host=server.url, max_events_in_batch=2, flush_interval=60)
    for i in range(4):
        a.track(user_id="u", event="E", message_id=f"burst-{i}")
    assert wait_until(lambda: server.received() == 2), "the second batch waited for the first"
    a.close_and_flush(timeout=0)


def test_several_requests_in_flight_against_a_slow_server(
    make_client: MakeClient, collector: CollectorThread
) -> None:
    collector.set_faults(latency_ms=150)
    a = make_client(max_events_in_batch=10, max_concurrent_requests=4, flush_interval=60)
    lock = threading.Lock()
    current = [0, 0]  # in flight now, most seen at once

    def started(_: Any) -> None:
        with lock:
            current[0] += 1
            current[1] = max(current[1], current[0])

    def ended(_: Any) -> None:
        with lock:
            current[0] -= 1

    a.on("http_request", started)
    a.on("http_response", ended)
    for _ in range(120):
        a.track(user_id="u", event="E")
    assert a.close_and_flush(20)
    assert len(collector.unique_message_ids()) == 120
    assert 2 <= current[1] <= 4


def test_500_then_200_delivers_once_with_retry_header(scripted: Any) -> None:
    server = scripted([500, 502])
    a = Analytics(write_key="k", host=server.url, flush_interval=0.01, retry_policy=FAST_RETRY)
    a.track(user_id="u", event="E", message_id="m-1")
    assert a.close_and_flush(10)
    assert [e["messageId"] for e in server.events()] == ["m-1"]
    assert [h.get("X-Retry-Count") for h in server.headers] == [None, "1", "2"]
    assert a.stats()["retried"] == 2 and a.stats()["delivered"] == 1


def test_429_retry_after_is_honoured(scripted: Any) -> None:
    server = scripted([{"status": 429, "headers": {"Retry-After": "1"}}])
    a = Analytics(write_key="k", host=server.url, flush_interval=0.01, retry_policy=FAST_RETRY)
    started = time.monotonic()
    a.track(user_id="u", event="E")
    assert a.close_and_flush(10)
    assert time.monotonic() - started >= 0.9, "the server asked for one second"
    assert len(server.events()) == 1


def test_400_drops_the_batch_and_reports_it(scripted: Any) -> None:
    server = scripted([400])
    a = Analytics(write_key="k", host=server.url, flush_interval=0.01, retry_policy=FAST_RETRY)
    errors: List[DeliveryError] = []
    a.on("error", errors.append)
    results: List[Tuple[Optional[BaseException], Dict[str, Any]]] = []
    a.track(user_id="u", event="Poison", callback=lambda e, m: results.append((e, m)))
    assert a.close_and_flush(10)
    assert len(server.headers) == 1, "a 400 is not retried"
    (error,) = errors
    assert (error.code, error.status) == ("delivery_failure", 400)
    assert error.events[0]["event"] == "Poison"
    assert results[0][0] is error and results[0][1]["event"] == "Poison"
    assert a.stats()["dropped"]["rejected"] == 1


def test_connection_reset_is_retried(scripted: Any) -> None:
    server = scripted([{"reset": True}, {"reset": True}])
    a = Analytics(write_key="k", host=server.url, flush_interval=0.01, retry_policy=FAST_RETRY)
    a.track(user_id="u", event="E", message_id="m-r")
    assert a.close_and_flush(10)
    assert [e["messageId"] for e in server.events()] == ["m-r"]
    assert a.stats()["retried"] == 2


def test_timeout_abandons_the_request_and_retries(scripted: Any) -> None:
    server = scripted([{"delay": 1.5}])
    a = Analytics(
        write_key="k",
        host=server.url,
        flush_interval=0.01,
        http_request_timeout=0.3,
        retry_policy=FAST_RETRY,
    )
    a.track(user_id="u", event="E", message_id="m-t")
    assert a.close_and_flush(10)
    assert a.stats()["retried"] >= 1
    assert "m-t" in [e["messageId"] for e in server.events()]


def test_close_honours_its_timeout_and_reports_what_was_left(scripted: Any) -> None:
    server = scripted([{"delay": 3}] * 100)
    a = Analytics(
        write_key="k",
        host=server.url,
        flush_interval=0.01,
        max_events_in_batch=2,
        max_concurrent_requests=2,
    )
    errors: List[DeliveryError] = []
    a.on("error", errors.append)
    for _ in range(30):
        a.track(user_id="u", event="E")
    started = time.monotonic()
    assert a.close_and_flush(timeout=0.5) is False
    assert time.monotonic() - started < 1.5
    assert any(e.cause == "closed" for e in errors)
    assert a.stats()["dropped"]["closed"] > 0


def test_close_cuts_a_long_backoff_short(scripted: Any) -> None:
    server = scripted([{"status": 503, "headers": {"Retry-After": "60"}}])
    a = Analytics(write_key="k", host=server.url, flush_interval=0.01)
    a.track(user_id="u", event="E")
    assert wait_until(lambda: a.stats()["waiting_to_retry"] == 1)  # for 60 s
    started = time.monotonic()
    assert a.close_and_flush(timeout=0.5) is False
    assert time.monotonic() - started < 1.5


def test_flush_timeout_zero_returns_at_once(scripted: Any) -> None:
    server = scripted([{"delay": 1}])
    a = Analytics(write_key="k", host=server.url, flush_interval=0.01)
    a.track(user_id="u", event="E")
    started = time.monotonic()
    assert a.flush(timeout=0) is False
    assert time.monotonic() - started < 0.2
    assert a.close_and_flush(5)


def test_calls_after_close_are_reported_not_sent(
    make_client: MakeClient, collector: CollectorThread
) -> None:
    a = make_client()
    a.track(user_id="u", event="Before")
    assert a.close_and_flush(10)
    late: List[Dict[str, Any]] = []
    a.on("call_after_close", late.append)
    got: List[Optional[BaseException]] = []
    a.track(user_id="u", event="After", callback=lambda e, m: got.append(e))
    assert [m["event"] for m in late] == ["After"]
    assert isinstance(got[0], DeliveryError) and got[0].cause == "call_after_close"
    assert [e["event"] for e in collector.events(type="track")] == ["Before"]
    assert a.close_and_flush(1), "closing twice is harmless"


def test_context_manager_closes_and_flushes(collector: CollectorThread) -> None:
    with Analytics(write_key="k", host=collector.url, flush_interval=30) as a:
        a.track(user_id="u", event="Inside")
    assert a.closed
    assert [e["event"] for e in collector.events(type="track")] == ["Inside"]


def test_callbacks_and_type_events_on_delivery(
    make_client: MakeClient, collector: CollectorThread
) -> None:
    a = make_client()
    delivered: List[Tuple[Optional[BaseException], Dict[str, Any]]] = []
    tracked: List[Dict[str, Any]] = []
    a.on("track", tracked.append)
    drained: List[bool] = []
    a.on("drained", lambda: drained.append(True))
    a.track(user_id="u", event="E", callback=lambda e, m: delivered.append((e, m)))
    a.identify(user_id="u", traits={"a": 1})
    assert a.flush(10)
    assert delivered[0][0] is None and delivered[0][1]["event"] == "E"
    assert [m["event"] for m in tracked] == ["E"]
    assert drained


def test_raising_handler_and_callback_do_not_kill_the_worker(
    make_client: MakeClient, collector: CollectorThread
) -> None:
    a = make_client()

    def boom(*_: Any) -> None:
        raise RuntimeError("user bug")

    a.on("track", boom)
    a.track(user_id="u", event="One", callback=boom)
    assert a.flush(10)
    a.track(user_id="u", event="Two", callback=boom)
    assert a.flush(10)
    assert a.stats()["worker_alive"]
    assert len(collector.events(type="track")) == 2


def test_once_and_off() -> None:
    capture = Capture()
    seen: List[str] = []

    def handler(m: Dict[str, Any]) -> None:
        seen.append(m["event"])

    capture.analytics.once("track", handler)
    capture.analytics.track(user_id="u", event="A")
    capture.flush()
    capture.analytics.track(user_id="u", event="B")
    capture.flush()
    assert seen == ["A"]
    capture.analytics.on("track", handler)
    capture.analytics.off("track", handler)
    capture.analytics.track(user_id="u", event="C")
    capture.flush()
    assert seen == ["A"]
    with pytest.raises(ValueError, match="unknown event name"):
        capture.analytics.on("nope", handler)
    capture.close()


def test_many_threads_lose_nothing(make_client: MakeClient, collector: CollectorThread) -> None:
    a = make_client(max_events_in_batch=50, max_queue_size=100_000)
    threads_n, per_thread = 8, 1500

    def work(t: int) -> None:
        for i in range(per_thread):
            a.track(user_id=f"user-{t}", event="E", message_id=f"t{t}-{i}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert a.close_and_flush(30)
    ids = collector.unique_message_ids()
    assert ids == {f"t{t}-{i}" for t in range(threads_n) for i in range(per_thread)}
    assert collector.stats()["duplicates"] == 0
    assert a.stats()["delivered"] == threads_n * per_thread


def test_full_queue_drops_new_events_and_reports_without_blocking(scripted: Any) -> None:
    server = scripted([{"delay": 1}] * 3)
    a = Analytics(write_key="k", host=server.url, max_queue_size=10, max_events_in_batch=5)
    errors: List[DeliveryError] = []
    a.on("error", errors.append)
    refused: List[BaseException] = []
    started = time.monotonic()
    for _ in range(10):
        a.track(user_id="u", event="Kept")
    for _ in range(25):
        a.track(user_id="u", event="Dropped", callback=lambda e, m: refused.append(e))
    assert time.monotonic() - started < 0.5, "a full queue never blocks the caller"
    assert len(refused) >= 15 and all(getattr(e, "cause", "") == "queue_full" for e in refused)
    assert a.close_and_flush(10)
    stats = a.stats()
    assert stats["dropped"]["queue_full"] == len(refused)
    assert stats["delivered"] + stats["dropped"]["queue_full"] == 35
    assert any(e.cause == "queue_full" and e.count >= 1 for e in errors)


def test_disable_runs_the_pipeline_but_sends_nothing(collector: CollectorThread) -> None:
    a = Analytics(write_key="k", host=collector.url, disable=True, flush_interval=0.01)
    a.track(user_id="u", event="E")
    with pytest.raises(ValidationError):
        a.track(user_id="u")
    assert a.close_and_flush(5)
    assert a.stats()["delivered"] == 1 and a.stats()["disabled"]
    assert collector.requests() == []


class UrllibClient:
    """A user's own transport on the stdlib, to prove the protocol is enough."""

    def __init__(self) -> None:
        self.calls = 0

    def send(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
        self.calls += 1
        request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Response(answer.status, dict(answer.headers), answer.read())

    def close(self) -> None:
        pass


def test_pluggable_http_client(collector: CollectorThread) -> None:
    client = UrllibClient()
    a = Analytics(write_key="k", host=collector.url, http_client=client, flush_interval=0.01)
    a.track(user_id="u", event="Custom Transport")
    assert a.close_and_flush(10)
    assert client.calls == 1
    assert len(collector.events(type="track")) == 1


def test_gzip_bodies_accepted(make_client: MakeClient, collector: CollectorThread) -> None:
    a = make_client(gzip=True)
    for i in range(20):
        a.track(user_id="u", event="Zipped", properties={"i": i})
    assert a.close_and_flush(10)
    assert all(r["headers"].get("Content-Encoding") == "gzip" for r in collector.requests())
    assert len(collector.unique_message_ids()) == 20


def test_module_level_default_client_from_environment(
    collector: CollectorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNY_WRITE_KEY", "env-key")
    monkeypatch.setenv("JOURNY_HOST", collector.url)
    monkeypatch.setenv("JOURNY_FLUSH_INTERVAL", "0.05")
    previous = set_default_client(None)
    try:
        journy_analytics.track(user_id="u", event="Module Level")
        journy_analytics.identify(user_id="u", traits={"via": "module"})
        assert journy_analytics.flush(10)
        assert journy_analytics.default_client().flush_interval == 0.05
        assert len(collector.events()) == 2
        assert journy_analytics.close_and_flush(5)
    finally:
        set_default_client(previous)


def test_module_level_without_key_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNY_WRITE_KEY", raising=False)
    previous = set_default_client(None)
    try:
        with pytest.raises(ValueError, match="JOURNY_WRITE_KEY"):
            journy_analytics.track(user_id="u", event="E")
    finally:
        set_default_client(previous)


def test_module_write_key_attribute(
    collector: CollectorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journy_analytics, "write_key", "attr-key")
    monkeypatch.setattr(journy_analytics, "host", collector.url)
    previous = set_default_client(None)
    try:
        journy_analytics.track(user_id="u", event="Attr")
        assert journy_analytics.close_and_flush(10)
        assert collector.requests()[0]["body"]["writeKey"] == "attr-key"
    finally:
        set_default_client(previous)


def test_a_batch_waiting_to_retry_does_not_hold_a_sender(scripted: Any) -> None:
    # Our own backoff, not a Retry-After: the server did not ask everyone to pause.
    server = scripted([503])
    a = Analytics(
        write_key="k",
        host=server.url,
        flush_interval=0.01,
        max_events_in_batch=1,
        max_concurrent_requests=1,
        # Far longer than the second batch needs, even on a loaded machine.
        retry_policy=RetryPolicy(initial_backoff=5.0, jitter=0.0),
    )
    a.track(user_id="u", event="First", message_id="m-first")
    assert wait_until(lambda: a.stats()["waiting_to_retry"] == 1)
    a.track(user_id="u", event="Second", message_id="m-second")
    assert wait_until(lambda: len(server.events()) > 0)
    assert [e["messageId"] for e in server.events()] == ["m-second"]
    assert a.flush(timeout=0.2) is False, "the first batch is still waiting for its retry"
    assert a.close_and_flush(15)
    assert [e["messageId"] for e in server.events()] == ["m-second", "m-first"]


def test_during_an_outage_only_retries_probe_the_server(collector: CollectorThread) -> None:
    collector.stop()
    a = Analytics(
        write_key="k",
        host=collector.url,
        flush_interval=0.01,
        max_events_in_batch=5,
        retry_policy=RetryPolicy(initial_backoff=0.2, max_backoff=0.2, jitter=0.0),
    )
    attempts: List[int] = []
    a.on("http_request", lambda r: attempts.append(r["events"]))
    a.track(user_id="u", event="E", message_id="o-0")
    assert wait_until(lambda: a.stats()["last_error"] is not None)  # it found the server down
    for i in range(1, 51):
        a.track(user_id="u", event="E", message_id=f"o-{i}")
    time.sleep(1.0)  # a while to count the requests that hit the dead server meanwhile
    stats = a.stats()
    assert stats["waiting_to_retry"] + stats["in_flight"] <= 5
    assert stats["queued"] >= 45, "new batches wait while the server is down"
    assert len(attempts) <= 10, f"{len(attempts)} requests hit a server that was down"
    collector.start()
    assert a.close_and_flush(10)
    assert collector.unique_message_ids() == {f"o-{i}" for i in range(51)}


def test_calls_racing_close_are_delivered_or_reported(collector: CollectorThread) -> None:
    a = Analytics(write_key="k", host=collector.url, flush_interval=0.01, max_queue_size=1_000_000)
    refused: List[Dict[str, Any]] = []
    a.on("call_after_close", refused.append)
    errors: List[DeliveryError] = []
    a.on("error", errors.append)
    stop = threading.Event()
    made = [0]

    def keep_tracking() -> None:
        while not stop.is_set():
            a.track(user_id="u", event="Race", message_id=f"race-{made[0]}")
            made[0] += 1
            # Pause like a real app between requests: a thread spinning on the client would
            # starve the collector that shares this process (Python 3.9's GIL hands over
            # less readily than 3.11's on sleep(0)).
            time.sleep(0.0002)

    producer = threading.Thread(target=keep_tracking, daemon=True)
    producer.start()
    try:
        time.sleep(0.2)
        assert a.close_and_flush(30)
        assert wait_until(lambda: len(refused) > 0)  # the producer called after the close
    finally:
        stop.set()  # even when an assertion fails: never leave the producer running
        producer.join()
    delivered = collector.unique_message_ids()
    reported = {e["messageId"] for error in errors for e in error.events}
    after_close = {m["messageId"] for m in refused}
    assert after_close, "the producer kept calling after close"
    assert {f"race-{i}" for i in range(made[0])} == delivered | reported | after_close


def test_batches_reuse_one_keep_alive_connection(scripted: Any) -> None:
    server = scripted()
    a = Analytics(write_key="k", host=server.url, flush_interval=0.01)
    for i in range(5):
        a.track(user_id="u", event="E", message_id=f"ka-{i}")
        assert a.flush(10)
    assert a.close_and_flush(10)
    assert len(server.client_ports) == 5
    assert len(set(server.client_ports)) == 1, "every batch went over the same connection"


def test_analytics_reads_the_environment_where_an_argument_is_not_given(
    collector: CollectorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNY_HOST", collector.url)
    monkeypatch.setenv("JOURNY_FLUSH_INTERVAL", "0.05")
    monkeypatch.setenv("JOURNY_MAX_EVENTS_IN_BATCH", "2")
    with Analytics(write_key="k") as analytics:
        assert analytics.host == collector.url and analytics.flush_interval == 0.05
        for i in range(3):
            analytics.track(user_id="u", event="From The Environment", properties={"i": i})
        assert analytics.flush(10)
    assert len(collector.events()) == 3
    # Batches of 2 (JOURNY_MAX_EVENTS_IN_BATCH): the two may arrive in either order, each
    # on its own sender.
    sizes = sorted(r["body"] and len(r["body"]["batch"]) for r in collector.requests())
    assert sizes == [1, 2]


def test_an_explicit_argument_wins_over_the_environment(
    collector: CollectorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens there: an event sent to it would not arrive.
    monkeypatch.setenv("JOURNY_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("JOURNY_DISABLE", "1")
    with Analytics(write_key="k", host=collector.url, disable=False, flush_interval=0.05) as a:
        a.track(user_id="u", event="Explicit")
        assert a.flush(10)
    assert [e["event"] for e in collector.events()] == ["Explicit"]
    monkeypatch.setenv("JOURNY_MAX_RETRIES", "three")
    with pytest.raises(ValueError, match="JOURNY_MAX_RETRIES='three'"):
        Analytics(write_key="k")
