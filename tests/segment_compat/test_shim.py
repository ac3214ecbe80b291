"""journy_analytics.segment: segment-analytics-python's API, each setting honoured or refused."""

from __future__ import annotations

import datetime as dt
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
import urllib3

import journy_analytics.segment as analytics
from journy_analytics import DeliveryError
from journy_analytics.collector import CollectorThread
from journy_analytics.plugins import Redact, SuperProperties
from journy_analytics.segment import Client, SegmentValidationError
from journy_analytics.segment.client import _endpoint

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def clients(collector: CollectorThread) -> Iterator[Callable[..., Client]]:
    made: List[Client] = []

    def make(*args: Any, **kwargs: Any) -> Client:
        kwargs.setdefault("host", collector.url)
        kwargs.setdefault("upload_interval", 0.05)
        client = Client(*args or ("test-key",), **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.analytics.close_and_flush(timeout=2)


@pytest.fixture
def module(collector: CollectorThread, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The module-level API with fresh settings, pointed at the collector."""
    for name in ("write_key", "host", "send", "sync_mode", "debug", "on_error", "upload_interval"):
        monkeypatch.setattr(analytics, name, getattr(analytics, name))
    monkeypatch.setattr(analytics, "default_client", None)
    analytics.write_key = "module-key"
    analytics.host = collector.url
    analytics.upload_interval = 0.05
    yield analytics
    if analytics.default_client is not None:
        analytics.default_client.analytics.close_and_flush(timeout=2)


def _by_id(collector: CollectorThread) -> Dict[str, Dict[str, Any]]:
    return {e["messageId"]: e for e in collector.events()}


T = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
T_WIRE = "2020-01-02T03:04:05.000Z"


def test_all_six_calls_take_segments_positional_order(
    module: Any, collector: CollectorThread
) -> None:
    ctx, integ = {"locale": "fr"}, {"Amplitude": False}
    module.identify("u1", {"plan": "pro"}, ctx, T, "anon-1", integ, "m-identify")
    module.track("u1", "Bought", {"n": 1}, ctx, T, "anon-1", integ, "m-track")
    module.alias("anon-0", "u1", ctx, T, integ, "m-alias")
    module.group("u1", "acme", {"name": "Acme"}, ctx, T, "anon-1", integ, "m-group")
    module.page("u1", "Docs", "Install", {"path": "/i"}, ctx, T, "anon-1", integ, "m-page")
    module.screen("u1", "App", "Home", {"tab": 2}, ctx, T, "anon-1", integ, "m-screen")
    module.flush()
    got = _by_id(collector)
    assert set(got) == {f"m-{t}" for t in ("identify", "track", "alias", "group", "page", "screen")}
    for event in got.values():
        assert event["timestamp"] == T_WIRE
        assert event["context"]["locale"] == "fr"
        assert event["integrations"] == integ
        assert event["userId"] == "u1"
    assert got["m-identify"]["traits"] == {"plan": "pro"}
    assert got["m-identify"]["anonymousId"] == "anon-1"
    assert (got["m-track"]["event"], got["m-track"]["properties"]) == ("Bought", {"n": 1})
    assert got["m-alias"]["previousId"] == "anon-0"
    assert (got["m-group"]["groupId"], got["m-group"]["traits"]) == ("acme", {"name": "Acme"})
    assert (got["m-page"]["category"], got["m-page"]["name"]) == ("Docs", "Install")
    assert got["m-page"]["properties"]["path"] == "/i"
    assert (got["m-screen"]["category"], got["m-screen"]["name"]) == ("App", "Home")
    assert got["m-screen"]["properties"] == {"tab": 2}


def test_calls_return_success_and_the_message_as_segment_does(
    clients: Callable[..., Client],
) -> None:
    client = clients()
    client.register(SuperProperties(properties={"app": "shop"}))
    ok, msg = client.track(157963456373623802, "Ordered")
    assert ok is True
    assert msg["userId"] == "157963456373623802"  # ids are stringified, as segment does
    assert msg["anonymousId"] is None  # segment's message always carries its keys
    assert msg["properties"] == {"app": "shop"}  # the event as queued, plugins included
    assert isinstance(msg["timestamp"], str) and isinstance(msg["messageId"], str)
    client.join()
    ok, msg = client.track("u1", "After Join")
    assert ok is False and msg["event"] == "After Join"


def test_a_full_queue_returns_false(clients: Callable[..., Client]) -> None:
    client = clients(max_queue_size=1, upload_interval=30)
    results = [client.identify("u1", {"n": i})[0] for i in range(5)]
    assert results == [True, False, False, False, False]


def test_malformed_calls_raise_assertion_error_like_segment(clients: Callable[..., Client]) -> None:
    client = clients()
    with pytest.raises(AssertionError, match="user_id or anonymous_id"):
        client.track(event="No User")
    with pytest.raises(AssertionError, match="event"):
        client.track("u1")
    with pytest.raises(AssertionError, match="traits"):
        client.identify("u1", ["not", "a", "dict"])
    with pytest.raises(SegmentValidationError, match="group_id"):
        client.group("u1")
    with pytest.raises(AssertionError, match="write_key"):
        Client()
    # It is also journy-analytics' ValidationError (a ValueError): either except works.
    with pytest.raises(ValueError):
        client.track("u1", "E", timestamp="not a date")


def test_send_false_sends_nothing(
    clients: Callable[..., Client], collector: CollectorThread
) -> None:
    client = clients(send=False)
    for i in range(20):
        assert client.track(f"u{i}", "Ordered")[0] is True
    client.flush()
    client.shutdown()
    assert collector.stats()["requests"] == 0
    assert collector.requests() == []


def test_send_false_at_module_level(module: Any, collector: CollectorThread) -> None:
    module.send = False
    module.track("u1", "Ordered")
    module.shutdown()
    assert collector.stats()["requests"] == 0


def test_on_error_gets_the_error_and_the_events(
    scripted: Callable[..., Any], clients: Callable[..., Client]
) -> None:
    server = scripted([400])
    failures: List[Any] = []
    client = clients(host=server.url, on_error=lambda error, items: failures.append((error, items)))
    client.track("u1", "Refused")
    client.flush()
    assert len(failures) == 1
    error, items = failures[0]
    assert "400" in str(error) or getattr(error, "status", None) == 400
    assert [item["event"] for item in items] == ["Refused"]


def test_sync_mode_delivers_before_the_call_returns(
    clients: Callable[..., Client], collector: CollectorThread
) -> None:
    client = clients(sync_mode=True, upload_interval=30)
    assert client.consumers is None  # as segment's sync client
    client.track("u1", "Now")
    assert [e["event"] for e in collector.events(type="track")] == ["Now"]
    assert client.queue.empty()


def test_upload_size_is_the_batch_size(
    clients: Callable[..., Client], collector: CollectorThread
) -> None:
    client = clients(upload_size=10, upload_interval=30)
    for i in range(20):
        client.identify(f"u{i}", {"n": i})
    assert collector.wait_for_events(20, timeout=10)  # two full batches, no flush needed
    sizes = [len(r["body"]["batch"]) for r in collector.requests()]
    assert sizes == [10, 10]


def test_upload_interval_gzip_timeout_retries_queue_size_thread_are_passed_on(
    clients: Callable[..., Client], collector: CollectorThread
) -> None:
    client = clients(
        gzip=True, timeout=3, max_retries=4, max_queue_size=77, thread=2, upload_interval=0.05
    )
    a = client.analytics
    assert (a.gzip, a.http_request_timeout, a.max_retries, a.max_queue_size) == (True, 3, 4, 77)
    assert a.flush_interval == 0.05
    assert a._config.max_concurrent_requests == 2
    assert client.queue.maxsize == 77 and [c.retries for c in client.consumers or []] == [4]
    client.track("u1", "Zipped")
    assert collector.wait_for_events(1, timeout=10)  # sent on the interval, without flush()
    (request,) = collector.requests()
    assert request["headers"].get("Content-Encoding") == "gzip"


def test_host_keeps_segments_shape_and_reaches_journys_batch_path() -> None:
    assert _endpoint(None) == ("https://analyze.journy.io", "/backend/v1/batch")
    assert _endpoint("https://analyze.journy.io/") == (
        "https://analyze.journy.io",
        "/backend/v1/batch",
    )
    assert _endpoint("https://analyze.journy.io/backend") == (
        "https://analyze.journy.io",
        "/backend/v1/batch",
    )
    assert _endpoint("https://track.example.com") == ("https://track.example.com", "/v1/batch")
    with pytest.raises(AssertionError, match="http"):
        _endpoint("analyze.journy.io")


def test_host_with_a_path_prefix_over_http(
    clients: Callable[..., Client], collector: CollectorThread
) -> None:
    client = clients(host=collector.url + "/backend")
    client.track("u1", "Prefixed")
    client.flush()
    assert [r["path"] for r in collector.requests()] == ["/backend/v1/batch"]


def test_debug_is_visible_with_pythons_default_logging(collector: CollectorThread) -> None:
    code = (
        "import journy_analytics.segment as analytics\n"
        "analytics.write_key = 'k'\n"
        f"analytics.host = {collector.url!r}\n"
        "analytics.debug = DEBUG\n"
        "analytics.track('u1', 'Debugged')\n"
        "analytics.shutdown()\n"
    )
    outputs = {}
    for debug in (True, False):
        proc = subprocess.run(
            [sys.executable, "-c", code.replace("DEBUG", str(debug))],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        outputs[debug] = proc.stderr
    assert "queueing" in outputs[True] and "Debugged" in outputs[True]
    assert "queueing" not in outputs[False]


def test_naive_now_is_local_time(
    clients: Callable[..., Client], collector: CollectorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(time, "tzset"):
        pytest.skip("needs time.tzset")
    monkeypatch.setenv("TZ", "Etc/GMT+5")  # UTC-5, whatever the machine's zone
    time.tzset()
    try:
        client = clients()
        now = dt.datetime.now()
        client.track("u1", "Local", timestamp=now)
        client.track("u1", "Old", timestamp=dt.datetime(2014, 9, 3))  # long ago: UTC
        client.flush()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    got = {e["event"]: e["timestamp"] for e in collector.events(type="track")}
    expected = (now + dt.timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S")
    assert got["Local"].startswith(expected)
    assert got["Old"] == "2014-09-03T00:00:00.000Z"


def test_oauth_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="OAuth"):
        Client("k", oauth_client_id="id", oauth_client_key="key", oauth_key_id="kid")
    with pytest.raises(ValueError, match="OAuth"):
        Client("k", oauth_scope="other")


def test_other_unsupported_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_rate_limit_duration"):
        Client("k", max_rate_limit_duration=60)
    with pytest.raises(ValueError, match="max_total_backoff_duration"):
        Client("k", max_total_backoff_duration=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_error"):
        Client("k", on_error="print")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="thread"):
        Client("k", thread=0)
    with pytest.raises(ValueError, match="proxies key 'ftp'"):
        Client("k", proxies={"ftp": "http://p:1"})
    with pytest.raises(ValueError, match="SOCKS"):
        Client("k", proxies={"https": "socks5://p:1"})
    with pytest.raises(ValueError, match="upload_size"):
        Client("k", upload_size=0)
    with pytest.raises(ValueError, match="upload_interval"):
        Client("k", upload_interval=-1)
    with pytest.raises(ValueError, match="timeout"):
        Client("k", timeout=0)


def test_max_total_backoff_duration_is_the_retry_deadline() -> None:
    client = Client("k", max_total_backoff_duration=12, send=False)
    assert client.analytics._config.policy.deadline == 12
    client.shutdown()


class _ForwardProxy:
    """A loopback HTTP forward proxy: records each request line, relays it to the target."""

    def __init__(self) -> None:
        self.seen: List[str] = []
        proxy = self
        upstream = urllib3.PoolManager(retries=False)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                proxy.seen.append(f"{self.command} {self.path}")
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = upstream.request("POST", self.path, body=body, headers=headers)
                self.send_response(answer.status)
                self.send_header("Content-Length", str(len(answer.data)))
                self.end_headers()
                self.wfile.write(answer.data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_proxies_route_through_proxy(
    clients: Callable[..., Client], collector: CollectorThread
) -> None:
    proxy = _ForwardProxy()
    try:
        # requests' format: 'host:port' without a scheme means http://host:port.
        client = clients(proxies={"http": proxy.address})
        client.track("u1", "Proxied")
        client.flush()
    finally:
        proxy.close()
    assert proxy.seen == [f"POST {collector.url}/v1/batch"]
    assert [e["event"] for e in collector.events(type="track")] == ["Proxied"]


def test_module_level_settings_and_plugins(module: Any, collector: CollectorThread) -> None:
    failures: List[Any] = []
    module.on_error = lambda error, items: failures.append(error)
    module.register(Redact(keys=["email"]))
    module.identify("u1", {"email": "a@example.com", "plan": "pro"})
    module.flush()
    assert module.default_client.write_key == "module-key"
    assert module.stats()["delivered"] == 1
    (event,) = collector.events(type="identify")
    assert event["traits"] == {"email": "[redacted]", "plan": "pro"}
    module.deregister("redact")
    assert failures == []


# -- migration snippets: the same code as docs/migrating.md, only the import changed -----------

SEGMENT_SNIPPET = """\
import os
import segment.analytics as analytics

analytics.write_key = os.environ["WRITE_KEY"]
analytics.on_error = lambda error, items: print("failed:", error)

analytics.identify("f4ca124298", {"email": "peter@example.com", "plan": "premium"})
analytics.track("f4ca124298", "Signed Up", {"plan": "Enterprise"})
analytics.group("f4ca124298", "tesla", {"name": "Tesla"})
analytics.page("f4ca124298", "Docs", "Python Library", {"url": "https://example.com/docs"})
analytics.flush()
"""

SEGMENT_CLIENT_SNIPPET = """\
import os
from segment.analytics import Client

client = Client(os.environ["WRITE_KEY"], upload_size=50, max_queue_size=5000)
success, message = client.track("f4ca124298", "Car Sold", {"revenue": 39999.99})
assert success, message
client.shutdown()
"""

RUDDER_SNIPPET = """\
import os
import rudderstack.analytics as rudder_analytics

rudder_analytics.write_key = os.environ["WRITE_KEY"]
rudder_analytics.dataPlaneUrl = os.environ["DATA_PLANE_URL"]

rudder_analytics.identify("1hKOmRA4GRlm", {"email": "alex@example.com", "name": "Alex"})
rudder_analytics.track("1hKOmRA4GRlm", "Order Completed", {"revenue": 30, "currency": "USD"})
rudder_analytics.screen("1hKOmRA4GRlm", "App", "Checkout", {"step": 2})
rudder_analytics.flush()
"""

_SWAPS = {
    "import segment.analytics as analytics": "import journy_analytics.segment as analytics",
    "from segment.analytics import Client": "from journy_analytics.segment import Client",
    "import rudderstack.analytics as rudder_analytics": (
        "import journy_analytics.segment as rudder_analytics"
    ),
}


def _swap_import(snippet: str) -> str:
    lines = snippet.splitlines()
    swapped = [_SWAPS.get(line, line) for line in lines]
    assert sum(a != b for a, b in zip(lines, swapped)) == 1  # only the import changes
    return "\n".join(swapped) + "\n"


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            SEGMENT_SNIPPET,
            {("identify", None), ("track", "Signed Up"), ("group", None), ("screen", None)},
        ),
        (SEGMENT_CLIENT_SNIPPET, {("track", "Car Sold")}),
        (RUDDER_SNIPPET, {("identify", None), ("track", "Order Completed"), ("screen", None)}),
    ],
    ids=["segment-module", "segment-client", "rudder"],
)
def test_migration_snippet_works_with_only_the_import_changed(
    snippet: str, expected: Any, collector: CollectorThread
) -> None:
    assert snippet in (ROOT / "docs" / "migrating.md").read_text(), "docs/migrating.md differs"
    env = {
        **os.environ,
        "WRITE_KEY": "snippet-key",
        "DATA_PLANE_URL": collector.url,
        "JOURNY_HOST": collector.url,  # segment's snippets leave host unset: journy.io's
    }
    proc = subprocess.run(
        [sys.executable, "-c", _swap_import(snippet)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "failed:" not in proc.stdout
    got = {(e["type"], e.get("event")) for e in collector.events()}
    assert got == expected


class _SilentServer:
    """A loopback server that accepts every connection, reads, and never answers."""

    def __init__(self) -> None:
        import socket

        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.accepted = threading.Event()
        self._held: List[Any] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._held.append(conn)  # kept open, never answered
            self.accepted.set()

    def close(self) -> None:
        self._listener.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[_SilentServer]:
    server = _SilentServer()
    yield server
    server.close()


def test_sync_mode_raises_within_timeout_like_segment_when_the_server_never_answers(
    clients: Callable[..., Client], silent_server: _SilentServer
) -> None:
    segment = pytest.importorskip("segment.analytics")
    theirs = segment.Client("k", host=silent_server.url, sync_mode=True, timeout=1)
    started = time.monotonic()
    requests = pytest.importorskip("requests")
    with pytest.raises(requests.exceptions.Timeout):  # segment raises; nothing is queued
        theirs.track("u1", "Lost")
    assert time.monotonic() - started < 5

    failures: List[Any] = []
    ours = clients(
        host=silent_server.url,
        sync_mode=True,
        timeout=1,
        on_error=lambda error, items: failures.append(error),
    )
    started = time.monotonic()
    with pytest.raises(DeliveryError) as raised:
        ours.track("u1", "Lost")
    elapsed = time.monotonic() - started
    assert silent_server.accepted.is_set()
    assert 0.9 <= elapsed < 1 + 2.0  # the request's timeout plus the hand-off, never 30 s
    assert raised.value.cause == "outage_deadline"  # no answer, and no retry in sync mode
    assert "no answer from 127.0.0.1" in raised.value.reason
    # Settled, not in flight: nothing is left queued or waiting to retry behind the call.
    assert ours.queue.empty()
    stats = ours.analytics.stats()
    assert stats["in_flight"] == 0 and stats["queued"] == 0
    assert [e.cause for e in failures] == [raised.value.cause]


def test_sync_mode_raises_a_refusal_like_segment() -> None:
    with CollectorThread(write_keys=["right"]) as c:
        client = Client("wrong", host=c.url, sync_mode=True, timeout=5)
        try:
            started = time.monotonic()
            with pytest.raises(DeliveryError) as raised:
                client.track("u1", "Refused")
            assert time.monotonic() - started < 5
            assert raised.value.status == 401 and raised.value.cause == "rejected"
            assert client.queue.empty()
            # Delivered events return (True, message) without raising.
            accepted = Client("right", host=c.url, sync_mode=True, timeout=5)
            try:
                ok, message = accepted.track("u1", "Fine")
                assert ok and message["event"] == "Fine"
                assert [e["event"] for e in c.events(type="track")] == ["Fine"]
            finally:
                accepted.analytics.close_and_flush(timeout=2)
        finally:
            client.analytics.close_and_flush(timeout=2)
