"""Hot paths under pytest-benchmark: the track() call, batch assembly, encoding.

``make test`` runs pytest with ``--benchmark-disable``: each benchmarked function then runs once
and these are correctness checks (no timing assertion). To time them:

    .venv/bin/python -m pytest tests/client/test_bench_hotpaths.py --benchmark-enable

The track and batch tests use only the public API against a loopback HTTP server running in a
thread; the encoding and body tests use ``journy_analytics._message._encoding`` and
``_core._attempt`` (a renamed one fails the test rather than skipping it quietly).
"""

from __future__ import annotations

import importlib
import json
import socket
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List

import pytest

from journy_analytics import Analytics

PROPS = {"revenue": 39999.99, "shipping": "200-day", "sku": "model-s", "quantity": 2}


class _Sink:
    """Loopback batch endpoint: records every received event."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: List[Dict[str, Any]] = []
        self.bodies: List[Dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding", "") == "gzip":
                    raw = zlib.decompress(raw, 16 + zlib.MAX_WBITS)
                doc = json.loads(raw)
                with sink.lock:
                    sink.bodies.append(doc)
                    sink.events.extend(doc.get("batch", []))
                out = b'{"success":true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.events.clear()
            self.bodies.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def sink() -> Iterator[_Sink]:
    s = _Sink()
    try:
        yield s
    finally:
        s.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _counting(fn: Callable[[], Any]) -> Any:
    calls = [0]

    def wrapped() -> Any:
        calls[0] += 1
        return fn()

    wrapped.calls = calls  # type: ignore[attr-defined]
    return wrapped


def test_track_call_delivers_every_event(benchmark: Any, sink: _Sink) -> None:
    """The track() call path; every timed call must arrive once, intact, at the sink."""
    sink.reset()
    client = Analytics(
        write_key="WRITE_KEY",
        host=sink.url,
        path="/backend/v1/batch",
        max_events_in_batch=100,
        flush_interval=0.5,
        max_queue_size=1_000_000,
    )
    try:
        track = _counting(
            lambda: client.track(user_id="f4ca124298", event="Car Sold", properties=PROPS)
        )
        benchmark(track)
        calls = track.calls[0]
        assert calls >= 1
        assert client.close_and_flush(timeout=60) is True
    finally:
        client.close_and_flush(timeout=5)
    events = sink.events
    assert len(events) == calls
    assert len({e["messageId"] for e in events}) == calls
    ev = events[0]
    assert ev["type"] == "track"
    assert ev["event"] == "Car Sold"
    assert ev["userId"] == "f4ca124298"
    assert ev["properties"] == PROPS
    assert ev["timestamp"].endswith("Z")
    assert ev["context"]["library"]["name"] == "journy-analytics"
    assert client.stats()["delivered"] == calls


def test_track_call_queues_when_server_unreachable(benchmark: Any) -> None:
    """The bare enqueue cost with nothing being delivered: each call adds one queued event."""
    client = Analytics(
        write_key="WRITE_KEY",
        host=f"http://127.0.0.1:{_closed_port()}",
        max_events_in_batch=100,
        flush_interval=3600.0,
        max_queue_size=10_000_000,
    )
    try:
        before = client.stats()["queued"]
        results: List[Any] = []
        track = _counting(
            lambda: results.append(
                client.track(user_id="f4ca124298", event="Car Sold", properties=PROPS)
            )
        )
        # At most 50 calls (one when benchmarks are disabled): fewer than a batch of 100 with a
        # flush interval of an hour, so every call is still queued afterwards.
        benchmark.pedantic(track, rounds=50, iterations=1)
        calls = track.calls[0]
        assert 1 <= calls <= 50
        assert False not in results
        st = client.stats()
        assert st["queued"] - before == calls
        assert sum(st["dropped"].values()) == 0
    finally:
        client.close_and_flush(timeout=0.5)


def test_batch_assembly_and_send(benchmark: Any, sink: _Sink) -> None:
    """100 queued events assembled into one request body and sent by flush()."""
    client = Analytics(
        write_key="WRITE_KEY",
        host=sink.url,
        max_events_in_batch=100,
        flush_interval=3600.0,
        max_queue_size=1_000_000,
    )

    def setup() -> Any:
        sink.reset()
        for i in range(100):
            client.track(user_id=f"user-{i}", event="Car Sold", properties=PROPS)
        return (), {}

    try:
        benchmark.pedantic(lambda: client.flush(timeout=30), setup=setup, rounds=3, iterations=1)
        assert len(sink.bodies) == 1
        body = sink.bodies[0]
        assert len(body["batch"]) == 100
        assert [e["userId"] for e in body["batch"]] == [f"user-{i}" for i in range(100)]
        assert body["writeKey"] == "WRITE_KEY"
        assert body["sentAt"].endswith("Z")
    finally:
        client.close_and_flush(timeout=10)


def _internal(module: str, name: str) -> Any:
    # The hot-path pieces must exist: a renamed one fails here instead of skipping quietly.
    return getattr(importlib.import_module(f"journy_analytics.{module}"), name)


def test_encode_event_round_trips(benchmark: Any) -> None:
    encode_event = _internal("_message._encoding", "encode_event")
    event = {
        "type": "track",
        "event": "Car Sold",
        "userId": "f4ca124298",
        "properties": dict(PROPS, nested={"a": [1, 2.5, None, "é"]}),
        "messageId": "0123456789abcdef-000000000001",
        "timestamp": "2015-12-12T19:11:00.000Z",
        "context": {"library": {"name": "journy-analytics", "version": "0"}},
        "integrations": {},
    }
    data = benchmark(encode_event, event)
    assert isinstance(data, bytes)
    assert json.loads(data) == event


def test_batch_body_parses_with_all_events(benchmark: Any) -> None:
    from journy_analytics import Response
    from journy_analytics._core._attempt import BatchSender
    from journy_analytics._handlers import Emitter

    bodies: List[bytes] = []

    class Recorder:
        def send(self, url: str, body: bytes, headers: Any, timeout: float) -> Response:
            bodies.append(body)
            return Response(200)

        def close(self) -> None:
            pass

    recorder = Recorder()
    sender = BatchSender(
        url="http://127.0.0.1:9/backend/v1/batch",
        write_key="WRITE_KEY",
        policy=_internal("_core._retry", "RetryPolicy")(),
        timeout=1.0,
        gzip=False,
        emitter=Emitter(),
        transport=lambda: recorder,
        aborted=lambda: False,
    )
    events = [
        json.dumps({"type": "track", "messageId": f"id-{i}", "properties": PROPS}).encode()
        for i in range(100)
    ]
    benchmark(lambda: sender.attempt(sender.start(events)))
    doc = json.loads(bodies[-1])
    assert [e["messageId"] for e in doc["batch"]] == [f"id-{i}" for i in range(100)]
    assert doc["sentAt"].endswith("Z")
    assert doc["writeKey"] == "WRITE_KEY"
