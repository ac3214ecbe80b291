"""The per-batch retry loop, driven by a scripted transport and a fake clock (no sleeping)."""

from __future__ import annotations

import base64
import gzip
from typing import Dict, List, Mapping, Optional, Sequence, Union

import orjson
import pytest

from journy_analytics import Response, RetryPolicy
from journy_analytics._core._attempt import BatchResult, BatchSender
from journy_analytics._handlers import Emitter

Step = Union[Response, Exception]


class ScriptedTransport:
    """Answers each send with the next scripted step; records what was sent."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)
        self.sent: List[Dict[str, object]] = []

    def send(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
        self.sent.append({"url": url, "body": body, "headers": dict(headers), "timeout": timeout})
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def close(self) -> None:
        pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: List[float] = []
        self.abort_after: Optional[int] = None

    def monotonic(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        """Sleep by advancing time; True (aborted) once abort_after sleeps happened."""
        self.sleeps.append(seconds)
        self.now += seconds
        return self.abort_after is not None and len(self.sleeps) >= self.abort_after


class Driver:
    """The worker's retry loop, run synchronously: attempt, sleep on the fake clock (where
    the worker would park the batch), attempt again."""

    def __init__(self, sender: BatchSender, clock: FakeClock) -> None:
        self.sender = sender
        self.clock = clock

    def send(self, events: List[bytes]) -> BatchResult:
        state = self.sender.start(events)
        while True:
            result = self.sender.attempt(state)
            if isinstance(result, BatchResult):
                return result
            if self.clock.wait(result.delay):
                return self.sender.closed(state, "the client closed while waiting to retry")


def make_sender(
    transport: ScriptedTransport,
    clock: FakeClock,
    policy: Optional[RetryPolicy] = None,
    gzip_on: bool = False,
    emitter: Optional[Emitter] = None,
    aborted: bool = False,
) -> Driver:
    sender = BatchSender(
        url="http://127.0.0.1:9/backend/v1/batch",
        write_key="secret-key",
        policy=policy or RetryPolicy(),
        timeout=7.0,
        gzip=gzip_on,
        emitter=emitter or Emitter(),
        transport=lambda: transport,
        aborted=lambda: aborted,
        clock=clock.monotonic,
        wall_clock=lambda: 1_700_000_000.0,
        draw=lambda: 0.0,
    )
    return Driver(sender, clock)


EVENTS = [orjson.dumps({"type": "track", "event": f"E{i}", "messageId": f"m{i}"}) for i in range(3)]


def ok() -> Response:
    return Response(200, {}, b'{"success":true}')


def test_request_shape_auth_body_and_headers() -> None:
    transport = ScriptedTransport([ok()])
    result = make_sender(transport, FakeClock()).send(EVENTS)
    assert result.outcome == "delivered" and result.retries == 0 and len(transport.sent) == 1
    sent = transport.sent[0]
    headers = sent["headers"]
    assert isinstance(headers, dict)
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"secret-key:").decode()
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("journy-analytics-python/")
    assert "X-Retry-Count" not in headers and "Content-Encoding" not in headers
    assert sent["timeout"] == 7.0
    body = orjson.loads(sent["body"])  # type: ignore[arg-type]
    assert [e["messageId"] for e in body["batch"]] == ["m0", "m1", "m2"]
    assert body["writeKey"] == "secret-key"
    assert body["sentAt"].endswith("Z") and len(body["sentAt"]) == 24


def test_500_then_200_retries_with_backoff_and_retry_count_header() -> None:
    clock = FakeClock()
    transport = ScriptedTransport([Response(500), Response(503), ok()])
    result = make_sender(transport, clock).send(EVENTS)
    assert result.outcome == "delivered" and result.retries == 2 and len(transport.sent) == 3
    assert clock.sleeps == [0.5, 1.0]
    assert [t["headers"].get("X-Retry-Count") for t in transport.sent] == [None, "1", "2"]  # type: ignore[union-attr]
    ids = {tuple(e["messageId"] for e in orjson.loads(t["body"])["batch"]) for t in transport.sent}  # type: ignore[arg-type]
    assert ids == {("m0", "m1", "m2")}, "messageIds are kept across retries"


def test_429_honours_retry_after_seconds_and_date() -> None:
    clock = FakeClock()
    date = "Tue, 14 Nov 2023 22:13:40 GMT"  # 20 s after the fake wall clock
    transport = ScriptedTransport(
        [Response(429, {"retry-after": "3"}), Response(429, {"Retry-After": date}), ok()]
    )
    result = make_sender(transport, clock).send(EVENTS)
    assert result.outcome == "delivered"
    assert clock.sleeps == [3.0, pytest.approx(20.0, abs=1.0)]


def test_garbage_retry_after_falls_back_to_backoff() -> None:
    clock = FakeClock()
    transport = ScriptedTransport([Response(429, {"Retry-After": "whenever"}), ok()])
    assert make_sender(transport, clock).send(EVENTS).outcome == "delivered"
    assert clock.sleeps == [0.5]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 501])
def test_non_retryable_status_dropped_at_once(status: int) -> None:
    clock = FakeClock()
    transport = ScriptedTransport([Response(status, {}, b'{"error":"bad batch"}')])
    result = make_sender(transport, clock).send(EVENTS)
    assert result.outcome == "rejected" and result.status == status
    assert "bad batch" in result.reason and clock.sleeps == []
    assert "secret-key" not in result.reason


def test_answered_failures_exhausted_after_max_retries() -> None:
    clock = FakeClock()
    transport = ScriptedTransport([Response(503)] * 4)
    result = make_sender(transport, clock, RetryPolicy(max_retries=3)).send(EVENTS)
    assert (
        result.outcome == "retries_exhausted" and len(transport.sent) == 4 and result.retries == 3
    )
    assert result.status == 503 and "max_retries=3" in result.reason
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_no_answer_is_an_outage_retried_until_the_deadline_not_max_retries() -> None:
    clock = FakeClock()
    steps: List[Step] = [ConnectionRefusedError("refused")] * 8 + [ok()]
    transport = ScriptedTransport(steps)
    result = make_sender(transport, clock, RetryPolicy(max_retries=3)).send(EVENTS)
    assert result.outcome == "delivered" and result.retries == 8
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_no_answer_gives_up_at_the_deadline_and_says_so() -> None:
    clock = FakeClock()
    transport = ScriptedTransport([ConnectionResetError("reset by peer")] * 50)
    policy = RetryPolicy(max_retries=3, deadline=60.0)
    result = make_sender(transport, clock, policy).send(EVENTS)
    assert result.outcome == "outage_deadline" and "60s retry deadline" in result.reason
    assert "ConnectionResetError" in result.reason
    assert sum(clock.sleeps) <= 60.0 and result.retries > 3


def test_tls_failure_counts_against_max_retries_not_the_deadline() -> None:
    import ssl

    clock = FakeClock()
    failure = ssl.SSLCertVerificationError("certificate verify failed")
    transport = ScriptedTransport([failure] * 10)
    result = make_sender(transport, clock, RetryPolicy(max_retries=2)).send(EVENTS)
    assert result.outcome == "retries_exhausted" and len(transport.sent) == 3
    assert "SSLCertVerificationError" in result.reason


def test_answered_and_unanswered_failures_mix() -> None:
    clock = FakeClock()
    steps: List[Step] = [Response(500), TimeoutError("read timed out"), Response(502), ok()]
    result = make_sender(ScriptedTransport(steps), clock, RetryPolicy(max_retries=2)).send(EVENTS)
    assert result.outcome == "delivered" and result.retries == 3


def test_zero_retries_means_one_attempt() -> None:
    transport = ScriptedTransport([Response(500)])
    result = make_sender(transport, FakeClock(), RetryPolicy(max_retries=0)).send(EVENTS)
    assert result.outcome == "retries_exhausted" and len(transport.sent) == 1


def test_overall_deadline_stops_retrying() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_retries=100, deadline=10.0, max_backoff=4.0)
    transport = ScriptedTransport([Response(503)] * 100)
    result = make_sender(transport, clock, policy).send(EVENTS)
    assert result.outcome == "retries_exhausted" and "deadline" in result.reason
    assert sum(clock.sleeps) <= 10.0


def test_close_cuts_backoff_sleep_short() -> None:
    clock = FakeClock()
    clock.abort_after = 1
    transport = ScriptedTransport([Response(500), ok()])
    result = make_sender(transport, clock).send(EVENTS)
    assert result.outcome == "closed" and len(transport.sent) == 1


def test_gzip_body_and_header() -> None:
    transport = ScriptedTransport([ok()])
    make_sender(transport, FakeClock(), gzip_on=True).send(EVENTS)
    sent = transport.sent[0]
    assert sent["headers"]["Content-Encoding"] == "gzip"  # type: ignore[index]
    body = orjson.loads(gzip.decompress(sent["body"]))  # type: ignore[arg-type]
    assert len(body["batch"]) == 3


def test_http_request_event_is_redacted() -> None:
    seen: List[Dict[str, object]] = []
    emitter = Emitter()
    emitter.on("http_request", seen.append)
    responses: List[Dict[str, object]] = []
    emitter.on("http_response", responses.append)
    transport = ScriptedTransport([Response(500), ok()])
    make_sender(transport, FakeClock(), emitter=emitter).send(EVENTS)
    assert len(seen) == 2 and seen[1]["retry_count"] == 1
    assert "secret-key" not in repr(seen)
    assert seen[0]["headers"]["Authorization"] == "Basic [REDACTED]"  # type: ignore[index]
    assert [r["status"] for r in responses] == [500, 200]
