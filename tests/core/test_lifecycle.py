"""Delivery core v2: each test names the defect it closes, and fails on the 0.1 core.

Everything delivers over real loopback HTTP, to the local collector or a scripted server.
"""

from __future__ import annotations

import base64
import datetime as dt
import gc
import logging
import socket
import threading
import time
import uuid
from typing import Any, Dict, List, Optional

import pytest

from journy_analytics import Analytics, DeliveryError, RetryPolicy, ValidationError
from journy_analytics._core import _worker
from journy_analytics._core._transport import RequestTimeoutError, StdlibHttpClient
from journy_analytics.collector import CollectorThread
from waiting import wait_until


def journy_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("journy-analytics-")]


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# 1 -------------------------------------------------------------------------------------


def test_flush_waiting_in_another_thread_returns_when_close_times_out(scripted: Any) -> None:
    server = scripted([{"delay": 3}] * 50)
    a = Analytics(write_key="k", host=server.url, max_events_in_batch=1, max_concurrent_requests=1)
    for i in range(5):
        a.track(user_id="u", event="Slow", properties={"i": i})
    returned: List[bool] = []
    waiter = threading.Thread(target=lambda: returned.append(a.flush(timeout=None)), daemon=True)
    waiter.start()
    time.sleep(0.2)
    assert a.close_and_flush(timeout=0.3) is False
    waiter.join(5)
    assert not waiter.is_alive(), "flush() kept waiting after close dropped the queue"
    assert returned == [True]


# 2 -------------------------------------------------------------------------------------


class DrippingServer:
    """Accepts, then answers one byte every ``every`` seconds, forever."""

    def __init__(self, every: float = 0.1) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.every = every
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        payload = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000
        try:
            conn.recv(65536)
            for byte in payload:
                if self.stop.is_set():
                    break
                conn.sendall(bytes([byte]))
                time.sleep(self.every)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_a_dripping_server_cannot_hold_a_request_past_its_timeout() -> None:
    server = DrippingServer()
    try:
        transport = StdlibHttpClient()
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            transport.send(server.url + "/backend/v1/batch", b"{}", {}, timeout=1.0)
        # Bounded by the timeout plus the watchdog's 50 ms granularity, not by the drip.
        assert time.monotonic() - started < 2.0
    finally:
        server.close()


def test_a_dripping_server_is_an_outage_the_client_rides_out() -> None:
    server = DrippingServer()
    try:
        a = Analytics(
            write_key="k",
            host=server.url,
            http_request_timeout=0.5,
            retry_policy=RetryPolicy(deadline=1.5, initial_backoff=0.1),
            flush_interval=0.01,
        )
        errors: List[DeliveryError] = []
        a.on("error", errors.append)
        a.track(user_id="u", event="Dripped")
        started = time.monotonic()
        assert a.flush(timeout=10) is True
        assert time.monotonic() - started < 5.0
        assert [e.cause for e in errors] == ["outage_deadline"]
        assert "http_request_timeout=0.5" in errors[0].reason
        a.close_and_flush(1)
    finally:
        server.close()


# 4 -------------------------------------------------------------------------------------


def test_a_client_nobody_references_delivers_and_stops_its_threads(
    collector: CollectorThread,
) -> None:
    before = set(journy_threads())

    def fire_and_forget() -> None:
        a = Analytics(write_key="k", host=collector.url, flush_interval=60)
        for i in range(10):
            a.track(user_id="u", event="Orphan", message_id=f"orphan-{i}")

    fire_and_forget()
    gc.collect()
    assert collector.wait_for_events(10, timeout=10)
    assert collector.unique_message_ids() >= {f"orphan-{i}" for i in range(10)}
    assert wait_until(lambda: not (set(journy_threads()) - before) - {_deadline_thread()}, 10), (
        f"threads leaked: {set(journy_threads()) - before}"
    )


def _deadline_thread() -> Optional[threading.Thread]:
    # The transport's one watchdog thread is per process, shared by every client.
    for t in threading.enumerate():
        if t.name == "journy-analytics-deadlines":
            return t
    return None


# 5 -------------------------------------------------------------------------------------


def test_retry_after_pauses_new_batches_and_memory_respects_max_queue_size(
    scripted: Any,
) -> None:
    # A pause far longer than the test: a retry within it would be the bug, not the load.
    server = scripted([{"status": 429, "headers": {"Retry-After": "30"}}] * 1000)
    a = Analytics(
        write_key="k",
        host=server.url,
        max_events_in_batch=5,
        max_queue_size=50,
        max_concurrent_requests=1,
        flush_interval=0.01,
    )
    for i in range(200):
        a.track(user_id="u", event="Storm", properties={"i": i})
        if i == 10:  # the first batch meets its 429
            assert wait_until(lambda: a.stats()["waiting_to_retry"] > 0)
    time.sleep(1.0)  # a while to see that nothing else is sent meanwhile
    stats = a.stats()
    held = stats["queued"] + stats["in_flight"]
    assert held <= 50, f"{held} events held in memory with max_queue_size=50"
    assert stats["dropped"]["queue_full"] >= 150
    # One request, then the server's pause: no new batch hits it meanwhile.
    assert stats["requests"] == 1, f"{stats['requests']} requests during a Retry-After pause"
    a.close_and_flush(0.2)


# 7 -------------------------------------------------------------------------------------


def test_queue_full_is_reported_while_every_sender_is_busy_and_at_close(scripted: Any) -> None:
    # The only sender stays busy far longer than the report may take (once a second).
    server = scripted([{"delay": 30}] * 100)
    a = Analytics(
        write_key="k",
        host=server.url,
        max_events_in_batch=1,
        max_queue_size=3,
        max_concurrent_requests=1,
        flush_interval=0,
    )
    errors: List[DeliveryError] = []
    a.on("error", errors.append)
    for i in range(10):
        a.track(user_id="u", event="Full", properties={"i": i})
    assert wait_until(lambda: any(e.cause == "queue_full" for e in errors), 20), (
        "queue_full not reported while the only sender was busy"
    )
    a.close_and_flush(timeout=0.1)
    reported = sum(e.count for e in errors if e.cause == "queue_full")
    assert reported == a.stats()["dropped"]["queue_full"] > 0
    assert all(e.code == "delivery_failure" for e in errors)


# 9 -------------------------------------------------------------------------------------


def test_close_and_flush_from_a_callback_drops_nothing(collector: CollectorThread) -> None:
    a = Analytics(write_key="k", host=collector.url, flush_interval=0.01, max_events_in_batch=1)
    results: List[Any] = []
    errors: List[DeliveryError] = []
    a.on("error", errors.append)

    def close_from_callback(error: Any, message: Dict[str, Any]) -> None:
        results.append(a.close_and_flush(timeout=10))

    a.track(user_id="u", event="First", callback=close_from_callback)
    for i in range(20):
        a.track(user_id="u", event="Queued", message_id=f"q{i}")
    assert collector.wait_for_events(21, timeout=10)
    assert wait_until(lambda: a.stats()["delivered"] == 21, 5)
    assert errors == []
    assert a.stats()["dropped"]["closed"] == 0
    assert results == [False]


# 10 ------------------------------------------------------------------------------------


def test_an_event_racing_close_is_reported_not_left_in_a_dead_queue(
    collector: CollectorThread,
) -> None:
    a = Analytics(write_key="k", host=collector.url)
    a.close_and_flush(2)
    seen: List[Any] = []
    # A track() that passed the client's closed check just before close finished:
    a._worker.put(
        b'{"type":"track","messageId":"late","event":"Late"}', lambda e, m: seen.append(e)
    )
    stats = a.stats()
    assert stats["queued"] == 0
    assert len(seen) == 1 and isinstance(seen[0], DeliveryError) and seen[0].cause == "closed"
    assert stats["dropped"]["closed"] == 1


# 11 ------------------------------------------------------------------------------------


def test_a_callback_raising_system_exit_does_not_corrupt_the_accounting(
    collector: CollectorThread,
) -> None:
    a = Analytics(write_key="k", host=collector.url, flush_interval=0.01)

    def hostile(error: Any, message: Dict[str, Any]) -> None:
        raise SystemExit(3)

    a.on("track", hostile)
    a.track(user_id="u", event="Hostile", callback=hostile)
    assert a.flush(timeout=5) is True, "the batch stayed in flight"
    assert a.stats()["in_flight"] == 0
    a.track(user_id="u", event="After")
    assert a.close_and_flush(5) is True
    assert a.stats()["delivered"] == 2


# 12 ------------------------------------------------------------------------------------


def test_every_stats_snapshot_accounts_for_every_accepted_event(scripted: Any) -> None:
    server = scripted([500, 400, {"delay": 0.05}, 429] * 30)
    a = Analytics(
        write_key="k",
        host=server.url,
        max_events_in_batch=7,
        max_queue_size=300,
        flush_interval=0.001,
        retry_policy=RetryPolicy(max_retries=1, initial_backoff=0.01, max_retry_after=0.05),
    )
    snapshots: List[Dict[str, Any]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            snapshots.append(a.stats())

    reader = threading.Thread(target=read)
    reader.start()
    writers = [
        threading.Thread(
            target=lambda k=k: [a.track(user_id=f"u{k}", event="S") for _ in range(400)]
        )
        for k in range(4)
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    a.close_and_flush(timeout=3)
    stop.set()
    reader.join()
    snapshots.append(a.stats())
    assert len(snapshots) > 20
    for s in snapshots:
        total = s["delivered"] + sum(s["dropped"].values()) + s["queued"] + s["in_flight"]
        assert s["accepted"] == total, s
    final = snapshots[-1]
    assert final["accepted"] == 1600 and final["queued"] == 0 and final["in_flight"] == 0


# 13 ------------------------------------------------------------------------------------


def test_in_flight_events_at_a_close_timeout_are_reported_once(scripted: Any) -> None:
    server = scripted([{"delay": 1.0}] * 10)
    # Two full batches of two, whatever the load (a short flush_interval could split them).
    a = Analytics(write_key="k", host=server.url, flush_interval=60, max_events_in_batch=2)
    calls: Dict[str, int] = {}
    errors: List[DeliveryError] = []
    a.on("error", errors.append)

    def count(error: Any, message: Dict[str, Any]) -> None:
        calls[message["messageId"]] = calls.get(message["messageId"], 0) + 1

    for i in range(4):
        a.track(user_id="u", event="InFlight", message_id=f"f{i}", callback=count)
    assert wait_until(lambda: server.received() >= 1)  # the first batch is on the wire
    assert a.close_and_flush(timeout=0.2) is False
    # The server answers meanwhile; the sender settles the late answer, then ends.
    assert wait_until(lambda: a.stats()["senders"] == 0)
    assert len(server.events()) >= 2
    assert calls == {f"f{i}": 1 for i in range(4)}
    assert sum(len(e.events) for e in errors) == 4


# 15 ------------------------------------------------------------------------------------


def test_timestamps_before_year_1000_are_iso_and_range_ends_are_validation_errors() -> None:
    from journy_analytics._message._build import format_timestamp

    assert format_timestamp(dt.datetime(999, 1, 2, 3, 4, 5)) == "0999-01-02T03:04:05.000Z"
    assert format_timestamp(dt.datetime(5, 1, 1)) == "0005-01-01T00:00:00.000Z"
    east = dt.timezone(dt.timedelta(hours=5))
    west = dt.timezone(dt.timedelta(hours=-5))
    with pytest.raises(ValidationError, match="out of range"):
        format_timestamp(dt.datetime(1, 1, 1, tzinfo=east))
    with pytest.raises(ValidationError, match="out of range"):
        format_timestamp(dt.datetime(9999, 12, 31, 23, tzinfo=west))


# 16 ------------------------------------------------------------------------------------


def test_with_block_and_flush_are_bounded_by_flush_timeout_against_a_dead_port() -> None:
    started = time.monotonic()
    with Analytics(write_key="k", host=closed_port(), flush_timeout=1.0) as a:
        a.track(user_id="u", event="Nowhere")
        assert a.flush() is False
    assert time.monotonic() - started < 4.0


def test_a_slow_flush_says_once_what_it_waits_for(
    monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setattr(_worker, "_SLOW_FLUSH_NOTICE", 0.3)
    monkeypatch.setattr(_worker, "_notices", _worker.RateLimitedLog())
    caplog.set_level(logging.WARNING, logger="journy_analytics")
    a = Analytics(write_key="k", host=closed_port())
    a.track(user_id="u", event="Nowhere")
    assert a.flush(timeout=1.0) is False
    lines = [r.getMessage() for r in caplog.records if "has waited" in r.getMessage()]
    assert len(lines) == 1 and "1 event(s)" in lines[0] and "last error" in lines[0], lines
    a.close_and_flush(0)


def test_flush_timeout_none_explicitly_means_until_settled(scripted: Any) -> None:
    server = scripted([500, 500])
    a = Analytics(
        write_key="k",
        host=server.url,
        flush_timeout=0.01,
        retry_policy=RetryPolicy(initial_backoff=0.3, jitter=0),
    )
    a.track(user_id="u", event="Eventually")
    assert a.flush() is False
    assert a.flush(timeout=None) is True
    assert a.stats()["delivered"] == 1
    a.close_and_flush()


# 18, 19 --------------------------------------------------------------------------------


def test_an_outage_is_visible_while_it_happens(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="journy_analytics")
    a = Analytics(
        write_key="k",
        host=closed_port(),
        flush_interval=0.01,
        retry_policy=RetryPolicy(initial_backoff=0.05, max_backoff=0.1),
    )
    a.track(user_id="u", event="Dark")
    assert wait_until(lambda: a.stats()["retried"] >= 3, 5)
    stats = a.stats()
    assert stats["requests"] >= 4 and stats["last_error"] is not None
    assert "no answer" in stats["last_error"]["text"] and stats["last_success"] is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "delivery attempt failed" in warnings[0].getMessage()
    a.close_and_flush(0)


def test_a_wrong_key_logs_a_line_not_a_line_per_batch(caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="journy_analytics")
    with CollectorThread(write_keys=["right"]) as c:
        a = Analytics(write_key="wrong", host=c.url, flush_interval=0.001)
        for _ in range(1500):
            a.track(user_id="u", event="Refused")
        assert a.close_and_flush(10)
        assert a.stats()["dropped"]["rejected"] == 1500
    lines = [r.getMessage() for r in caplog.records]
    assert 1 <= len(lines) <= 3, lines
    assert not any(line.startswith("journy_analytics:") for line in lines), lines


# 20, 21 --------------------------------------------------------------------------------


def test_uuid_and_int_ids_are_accepted_bool_and_blank_ids_are_not(
    collector: CollectorThread,
) -> None:
    a = Analytics(write_key="k", host=collector.url, flush_interval=0.01)
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    a.identify(user_id=uid, traits={"a": 1})
    a.group(user_id=7, group_id=uuid.UUID(int=1))
    a.track(anonymous_id=uid, event="E", group_id=uid)
    a.alias(user_id=uid, previous_id=uuid.UUID(int=2))
    for bad in (True, "   ", "", 1.5, object()):
        with pytest.raises(ValidationError):
            a.track(user_id=bad, event="E")
    with pytest.raises(ValidationError):
        a.group(user_id="u", group_id=" \t")
    assert a.close_and_flush(5)
    stored = collector.events()
    assert str(uid) in {e.get("userId") for e in stored}
    assert "7" in {e.get("userId") for e in stored}


def test_a_positional_call_says_to_pass_keywords() -> None:
    a = Analytics(write_key="k", disable=True)
    with pytest.raises(TypeError, match=r"keyword arguments only.*user_id="):
        a.track("u", "Signed Up", {"plan": "pro"})  # type: ignore[misc]
    a.close_and_flush(1)


@pytest.mark.parametrize(
    "host",
    [
        "https://x.example/backend/v1/batch",
        "https://x.example/backend/v1/batch/",
        "https://x/v1/batch",
    ],
)
def test_a_host_that_already_has_the_path_is_refused_at_construction(host: str) -> None:
    with pytest.raises(ValueError, match="already ends with an API path"):
        Analytics(write_key="k", host=host)


def test_a_proxy_host_with_a_prefix_is_fine() -> None:
    a = Analytics(write_key="k", host="https://proxy.example/journy", disable=True)
    assert a._config.url == "https://proxy.example/journy/backend/v1/batch"
    a.close_and_flush(1)


def test_redaction_of_a_short_key_keeps_other_words_whole() -> None:
    from journy_analytics import _handlers as _events
    from journy_analytics._core._attempt import BatchSender

    sender = BatchSender(
        url="http://127.0.0.1:9/backend/v1/batch",
        write_key="k",
        policy=RetryPolicy(),
        timeout=1,
        gzip=False,
        emitter=_events.Emitter(),
        transport=lambda: StdlibHttpClient(),
        aborted=lambda: False,
    )
    assert sender.redact("/backend bad key k here") == "/backend bad key [REDACTED] here"
    # Inside or at the end of a word the key is part of that word, not the key.
    assert sender.redact("ok; look: k.") == "ok; look: [REDACTED]."
    token = base64.b64encode(b"k:").decode()
    assert sender.redact(f"Basic {token}") == "Basic [REDACTED]"


def test_a_forked_child_does_not_inherit_the_parents_oldest_event_time() -> None:
    # The dispatcher sends a batch once its oldest event is flush_interval old; a child
    # that kept its parent's timestamp would send its first event at once, whatever the
    # interval. _after_fork is what the fork hook runs in the child.
    client = Analytics(write_key="k", host="http://127.0.0.1:9", flush_interval=3600)
    worker = client._worker
    try:
        worker._oldest = time.monotonic() - 7200
        worker._after_fork()
        assert worker._oldest is None
    finally:
        client.close_and_flush(timeout=0)


def test_the_worker_lifecycle_only_moves_forward() -> None:
    # A close after a retire must not turn "the dispatcher finishes" into "close finishes",
    # and nothing may reopen a finished worker (put() would queue where nobody reads).
    client = Analytics(write_key="k", host="http://127.0.0.1:9")
    worker = client._worker
    try:
        assert worker._lifecycle is _worker.Lifecycle.OPEN
        worker._move(_worker.Lifecycle.RETIRING)
        worker._move(_worker.Lifecycle.CLOSING)
        assert worker._lifecycle is _worker.Lifecycle.RETIRING
        worker._move(_worker.Lifecycle.FINISHED)
        worker._move(_worker.Lifecycle.OPEN)
        assert worker._lifecycle is _worker.Lifecycle.FINISHED
    finally:
        client.close_and_flush(timeout=0)


def test_terminating_sends_each_event_before_the_call_returns(
    make_client: Any, collector: CollectorThread
) -> None:
    # SIGTERM chained to an app handler moves the worker to TERMINATING: the app's own
    # graceful shutdown may still track, and each event goes out before its call returns
    # (a batch of 100 and an hour's interval would otherwise keep it). The dispatcher
    # keeps running while idle in this state, and close_and_flush() still ends it.
    client = make_client(flush_interval=3600, max_events_in_batch=100)
    worker = client._worker
    client.track(user_id="u", event="Before")
    worker.terminating(10.0)
    assert worker._lifecycle is _worker.Lifecycle.TERMINATING
    for i in range(3):
        client.track(user_id="u", event=f"During {i}")
        assert len(collector.events()) == i + 2, "the call returned before its delivery"
    time.sleep(0.2)
    assert worker._dispatcher is not None and worker._dispatcher.is_alive()
    assert client.close_and_flush(5)
    assert worker._lifecycle is _worker.Lifecycle.FINISHED


def test_a_close_that_gives_up_cuts_a_backoff_short(scripted: Any) -> None:
    # GIVING_UP is what an attempt waiting to retry checks: close_and_flush(timeout) ends
    # near its timeout, not after the backoff (60 s here).
    server = scripted([503] * 5)
    client = Analytics(
        write_key="k",
        host=server.url,
        flush_interval=0.01,
        retry_policy=RetryPolicy(max_retries=5, initial_backoff=60.0, max_backoff=60.0),
    )
    client.track(user_id="u", event="E")
    assert wait_until(lambda: server.received() >= 1)
    assert server.received() == 1
    started = time.monotonic()
    assert not client.close_and_flush(timeout=0.5)
    assert time.monotonic() - started < 5.0
    assert client._worker._lifecycle is _worker.Lifecycle.FINISHED


def test_an_answer_that_comes_after_a_close_gave_up_is_not_retried(scripted: Any) -> None:
    # The request is on the wire when close_and_flush() gives up; its 503 arrives later.
    # In GIVING_UP the attempt ends there (closed): it is not parked for a retry that no
    # dispatcher would ever send.
    server = scripted([{"status": 503, "delay": 1.0}])
    client = Analytics(write_key="k", host=server.url, flush_interval=0.01)
    client.track(user_id="u", event="E")
    assert wait_until(lambda: server.received() >= 1)
    assert not client.close_and_flush(timeout=0.2)
    assert client._worker._lifecycle is _worker.Lifecycle.FINISHED
    time.sleep(1.5)  # the late answer arrives and the attempt ends
    assert client.stats()["waiting_to_retry"] == 0
    assert server.received() == 1
