"""Real networks, with real parts on 127.0.0.1: Debian's tinyproxy in front of the local
collector (plain and TLS with a test CA), a collector with a small body limit (413), a name
lookup that hangs, a port that answers garbage, redirects and TLS trust.

tinyproxy is installed by ``make proxy-deps`` (as root, with apt-get; ``.ci/run`` calls it).
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List

import orjson
import pytest

from journy_analytics import Analytics, DeliveryError, RetryPolicy
from journy_analytics.cli import main as journy
from journy_analytics.collector import CollectorThread
from proxy_fixtures import Tinyproxy
from proxy_fixtures import free_port as _free_port

trustme = pytest.importorskip("trustme")

FAST = RetryPolicy(initial_backoff=0.05, max_backoff=0.2)


@pytest.fixture
def clients() -> Iterator[Callable[..., Analytics]]:
    made: List[Analytics] = []

    def make(**settings: Any) -> Analytics:
        settings.setdefault("write_key", "test-key")
        settings.setdefault("flush_interval", 0.05)
        client = Analytics(**settings)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close_and_flush(timeout=2)


def _errors(client: Analytics) -> List[DeliveryError]:
    found: List[DeliveryError] = []
    client.on("error", found.append)
    return found


def _track(client: Analytics, n: int, start: int = 0, **properties: Any) -> None:
    for i in range(start, start + n):
        client.track(user_id="u", event=f"E{i}", properties=properties, message_id=f"m{i}")


def _ids(collector: CollectorThread) -> List[str]:
    return sorted(e["messageId"] for e in collector.events())


# -- through the proxy --------------------------------------------------------------------


def test_http_through_the_proxy_every_event_arrives(
    proxies: Callable[..., Tinyproxy],
    collector: CollectorThread,
    clients: Callable[..., Analytics],
) -> None:
    proxy = proxies()
    client = clients(host=collector.url, proxy=proxy.url, max_events_in_batch=5)
    _track(client, 40)
    assert client.flush(timeout=30)
    assert _ids(collector) == sorted(f"m{i}" for i in range(40))
    stats = client.stats()
    assert stats["delivered"] == 40 and stats["requests"] >= 8
    # Every request that reached the collector went through the proxy, as an absolute-form
    # request line. (A request the client counted may have died on a keep-alive connection
    # the proxy had just closed, before the proxy logged it: retried, never lost.)
    seen = proxy.requests()
    assert seen == [f"POST {collector.url}/backend/v1/batch HTTP/1.1"] * len(seen)
    assert len(seen) == len(collector.requests()) >= 8
    assert len(seen) <= stats["requests"]


def test_https_from_the_environment_one_tunnel_for_many_batches(
    proxies: Callable[..., Tinyproxy],
    tls_collector: CollectorThread,
    trusting: ssl.SSLContext,
    clients: Callable[..., Analytics],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = proxies()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    client = clients(
        host=tls_collector.url,
        ssl_context=trusting,
        max_events_in_batch=3,
        max_concurrent_requests=1,
    )
    for round_ in range(5):  # five flushes, one batch or more each, on one connection
        _track(client, 6, start=round_ * 6)
        assert client.flush(timeout=30)
    assert _ids(tls_collector) == sorted(f"m{i}" for i in range(30))
    assert client.stats()["requests"] == 10
    # One CONNECT carried all ten requests: the tunnel is kept alive between batches.
    assert proxy.requests() == [f"CONNECT 127.0.0.1:{tls_collector.port} HTTP/1.1"]


def test_the_certificate_is_checked_against_the_server_not_the_proxy(
    proxies: Callable[..., Tinyproxy],
    ca: Any,
    trusting: ssl.SSLContext,
    clients: Callable[..., Analytics],
) -> None:
    proxy = proxies()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.example").configure_cert(context)  # valid, for another name
    with CollectorThread(db=":memory:", ssl_context=context) as wrong_name:
        client = clients(
            host=wrong_name.url, proxy=proxy.url, ssl_context=trusting, retry_policy=FAST
        )
        errors = _errors(client)
        client.track(user_id="u", event="E")
        assert client.flush(timeout=30)
        assert wrong_name.events() == []
    (error,) = errors
    assert error.cause == "retries_exhausted"
    assert "TLS certificate of 127.0.0.1 was not accepted" in error.reason
    assert "127.0.0.1" in error.reason and "SSL_CERT_FILE" in error.reason
    assert proxy.requests()[0].startswith("CONNECT 127.0.0.1:")


def test_no_proxy_bypasses_the_proxy_and_proxy_none_ignores_the_environment(
    proxies: Callable[..., Tinyproxy],
    collector: CollectorThread,
    clients: Callable[..., Analytics],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = proxies()
    monkeypatch.setenv("http_proxy", proxy.url)
    for no_proxy in ("127.0.0.1", "127.0.0.0/8", f"example.com, 127.0.0.1:{collector.port}"):
        monkeypatch.setenv("NO_PROXY", no_proxy)
        client = clients(host=collector.url)
        _track(client, 2)
        assert client.flush(timeout=30) and client.stats()["delivered"] == 2
    monkeypatch.setenv("NO_PROXY", "127.0.0.1:1")  # another port: not bypassed
    client = clients(host=collector.url)
    _track(client, 1)
    assert client.flush(timeout=30) and client.stats()["delivered"] == 1
    assert len(proxy.requests()) == 1
    # proxy=None: never a proxy, whatever the environment says.
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.delenv("NO_PROXY")
    client = clients(host=collector.url, proxy=None)
    _track(client, 1)
    assert client.flush(timeout=30) and client.stats()["delivered"] == 1
    assert len(proxy.requests()) == 1


@pytest.mark.parametrize(
    "scheme, credentials",
    [
        ("http", ""),  # 407 Proxy Authentication Required
        ("https", ""),  # 407 to the CONNECT
        ("https", "alice:wrong-pass@"),  # tinyproxy answers this CONNECT 401
    ],
)
def test_wrong_proxy_password_is_reported_at_once_and_never_shown(
    scheme: str,
    credentials: str,
    proxies: Callable[..., Tinyproxy],
    collector: CollectorThread,
    tls_collector: CollectorThread,
    trusting: ssl.SSLContext,
    clients: Callable[..., Analytics],
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = proxies(auth="alice:s3cret-pass")
    target = collector if scheme == "http" else tls_collector
    client = clients(
        host=target.url,
        proxy=f"http://{credentials}127.0.0.1:{proxy.port}",
        ssl_context=trusting,
        max_retries=3,
    )
    errors = _errors(client)
    reported = threading.Event()
    client.on("error", lambda error: reported.set())
    began = time.monotonic()
    client.track(user_id="u", event="E")
    assert reported.wait(10)
    assert time.monotonic() - began < 5
    (error,) = errors
    assert error.cause == "rejected"
    user = credentials.split(":")[0] + "@" if credentials else ""
    assert f"the proxy http://{user}127.0.0.1:{proxy.port} refused" in error.reason
    assert "user and password" in error.reason
    assert len(proxy.requests()) == 1  # not retried
    transport = client._worker._get_transport()
    shown = " ".join(
        [caplog.text, str(error), repr(error), repr(client), json.dumps(client.stats())]
    ) + repr(transport)
    assert "wrong-pass" not in shown and "s3cret" not in shown
    # The right password goes through.
    good = clients(host=target.url, proxy=proxy.url_with("alice:s3cret-pass"), ssl_context=trusting)
    _track(good, 3)
    assert good.flush(timeout=30) and good.stats()["delivered"] == 3
    assert "s3cret" not in caplog.text


def test_proxy_down_is_an_outage_like_a_server_down(
    proxies: Callable[..., Tinyproxy],
    collector: CollectorThread,
    clients: Callable[..., Analytics],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="journy_analytics")
    proxy = proxies(run=False)  # its port: nothing listens yet
    client = clients(host=collector.url, proxy=proxy.url, max_retries=0, retry_policy=FAST)
    attempts = threading.Semaphore(0)
    client.on("http_response", lambda info: attempts.release())
    client.track(user_id="u", event="E", message_id="m0")
    for _ in range(3):  # max_retries=0, and still retried: an outage
        assert attempts.acquire(timeout=10)
    stats = client.stats()
    assert stats["in_flight"] == 1 and sum(stats["dropped"].values()) == 0
    assert f"cannot connect to the proxy http://127.0.0.1:{proxy.port}" in caplog.text
    assert "the server looks down" in caplog.text
    proxy.start()  # the proxy comes back: the batch goes through it
    assert client.flush(timeout=30)
    assert client.stats()["delivered"] == 1 and _ids(collector) == ["m0"]
    assert len(proxy.requests()) == 1


def test_segment_proxies_and_the_environment(
    proxies: Callable[..., Tinyproxy],
    collector: CollectorThread,
    tls_collector: CollectorThread,
    ca: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from journy_analytics.segment import Client

    proxy = proxies()
    client = Client("k", host=collector.url, proxies={"http": proxy.url}, upload_interval=0.05)
    client.track("u1", "Proxied")
    client.flush()
    client.shutdown()
    assert [e["event"] for e in collector.events()] == ["Proxied"]
    # No proxies entry for https: requests reads HTTPS_PROXY, and so does the drop-in;
    # SSL_CERT_FILE is honoured as the standard library does.
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    client = Client(
        "k", host=tls_collector.url, proxies={"http": "http://127.0.0.1:1"}, upload_interval=0.05
    )
    client.track("u2", "Tunnelled")
    client.flush()
    client.shutdown()
    assert [e["event"] for e in tls_collector.events()] == ["Tunnelled"]
    assert proxy.requests() == [
        f"POST {collector.url}/v1/batch HTTP/1.1",
        f"CONNECT 127.0.0.1:{tls_collector.port} HTTP/1.1",
    ]


def test_journy_import_goes_through_the_proxy_of_the_environment(
    proxies: Callable[..., Tinyproxy],
    collector: CollectorThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = proxies()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(
        b"".join(
            orjson.dumps({"type": "track", "userId": "u", "event": f"E{i}"}) + b"\n"
            for i in range(120)
        )
    )
    code = journy(
        [
            *("import", str(rows), "--write-key", "k", "--host", collector.url),
            *("--checkpoint-dir", str(tmp_path), "--progress", "none"),
        ]
    )
    assert code == 0
    assert len(collector.events()) == 120
    seen = proxy.requests()
    assert seen and all(line.startswith(f"POST {collector.url}/") for line in seen)


# -- 413: split, do not drop ----------------------------------------------------------------


def test_413_splits_down_to_single_events_and_reports_each_oversized_one_once(
    clients: Callable[..., Analytics],
) -> None:
    with CollectorThread(db=":memory:", max_body_bytes=4000) as small:
        client = clients(host=small.url, max_events_in_batch=15)
        errors = _errors(client)
        big = {6, 21, 37}  # each alone is over the server's 4000 bytes
        for i in range(45):
            pad = "x" * (5000 if i in big else 150)
            client.track(user_id="u", event=f"E{i}", properties={"pad": pad}, message_id=f"m{i}")
        assert client.flush(timeout=60)
        stats = client.stats()
        delivered = _ids(small)
    assert delivered == sorted(f"m{i}" for i in range(45) if i not in big)
    assert stats["delivered"] == 42 and stats["dropped"]["rejected"] == 3
    assert stats["batches_split"] >= 3 and stats["requests"] > 3
    assert sorted(e.events[0]["messageId"] for e in errors) == sorted(f"m{i}" for i in big)
    for error in errors:
        assert len(error.events) == 1 and error.status == 413
        assert "too large for this server" in error.reason


def test_collector_max_body_bytes_option(tmp_path: Path) -> None:
    from journy_analytics.cli import _build_parser

    args = _build_parser().parse_args(["collector", "--max-body-bytes", "4000"])
    assert args.max_body_bytes == 4000
    with pytest.raises(SystemExit):
        _build_parser().parse_args(["collector", "--max-body-bytes", "0"])


# -- DNS, odd answers, redirects, trust ------------------------------------------------------


def test_a_name_lookup_that_hangs_is_bounded_by_the_request_timeout(
    clients: Callable[..., Analytics], monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real = socket.getaddrinfo

    def hanging(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "dns-hangs.test":
            release.wait(60)  # a resolver that never answers
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        client = clients(host="https://dns-hangs.test", http_request_timeout=0.5)
        answers: List[Any] = []
        answered = threading.Semaphore(0)
        client.on("http_response", lambda info: (answers.append(info), answered.release()))
        client.track(user_id="u", event="E")
        began = time.monotonic()
        assert answered.acquire(timeout=10)
        assert time.monotonic() - began < 0.5 + 2.0
        assert answered.acquire(timeout=10)  # the retry: the same lookup, still hanging
        assert "cannot resolve dns-hangs.test" in answers[0]["error"]
        assert answers[0]["elapsed"] < 0.5 + 1.0
        # One helper thread waits on the resolver, however many requests wait for it.
        lookups = [t for t in threading.enumerate() if t.name == "journy-analytics-resolve"]
        assert len(lookups) == 1
        assert not client.close_and_flush(timeout=0.5)
    finally:
        release.set()


def test_a_host_that_does_not_resolve_says_check_host(
    clients: Callable[..., Analytics],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="journy_analytics")
    real = socket.getaddrinfo

    def resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "analyze.journy.oi":  # a typo; no query leaves this machine
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    client = clients(host="https://analyze.journy.oi", write_key="wk-secret-123")
    failed = threading.Event()
    client.on("http_response", lambda info: failed.set())
    client.track(user_id="u", event="E")
    assert failed.wait(10)
    client.close_and_flush(timeout=0.2)
    assert "cannot resolve analyze.journy.oi: check `host`" in caplog.text
    assert "looks down" not in caplog.text
    assert "wk-secret-123" not in caplog.text


class _GarbageServer:
    """Accepts connections and answers each with a line that is not HTTP."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")

    def close(self) -> None:
        self.sock.close()


def test_a_non_http_answer_counts_under_max_retries(clients: Callable[..., Analytics]) -> None:
    server = _GarbageServer()
    try:
        client = clients(host=f"http://127.0.0.1:{server.port}", max_retries=2, retry_policy=FAST)
        errors = _errors(client)
        client.track(user_id="u", event="E")
        began = time.monotonic()
        assert client.flush(timeout=30)
        assert time.monotonic() - began < 10  # not the 600 s of an outage
    finally:
        server.close()
    (error,) = errors
    assert error.cause == "retries_exhausted" and server.connections == 3
    assert "answered something that is not HTTP" in error.reason
    assert "check `host` and its port" in error.reason


def test_a_redirect_is_reported_with_its_location_not_followed(
    scripted: Callable[..., Any], clients: Callable[..., Analytics]
) -> None:
    location = "https://track.example.com/backend/v1/batch"
    server = scripted([{"status": 301, "headers": {"Location": location}}])
    client = clients(host=server.url)
    errors = _errors(client)
    client.track(user_id="u", event="E")
    assert client.flush(timeout=30)
    (error,) = errors
    assert error.cause == "rejected" and error.status == 301
    assert location in error.reason
    assert "set host='https://track.example.com'" in error.reason
    assert len(server.headers) == 1  # one request: nothing followed


def test_a_401_is_logged_once_as_not_retryable(
    scripted: Callable[..., Any],
    clients: Callable[..., Analytics],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="journy_analytics")
    server = scripted([401])
    client = clients(host=server.url)
    client.track(user_id="u", event="E")
    assert client.flush(timeout=30)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("journy_analytics")]
    assert len(lines) == 1, lines
    assert "401" in lines[0] and "not retryable" in lines[0]
    assert "retried" not in lines[0]


def test_an_untrusted_certificate_is_reported_with_a_hint_not_as_an_outage(
    tls_collector: CollectorThread,
    ca: Any,
    clients: Callable[..., Analytics],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = clients(host=tls_collector.url, max_retries=1, retry_policy=FAST)
    errors = _errors(client)
    client.track(user_id="u", event="E")
    began = time.monotonic()
    assert client.flush(timeout=30)
    assert time.monotonic() - began < 10
    (error,) = errors
    assert error.cause == "retries_exhausted"
    assert "TLS certificate of 127.0.0.1 was not accepted" in error.reason
    assert "ssl_context=" in error.reason and "SSL_CERT_FILE" in error.reason
    # SSL_CERT_FILE is honoured as the standard library does.
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))
    trusted = clients(host=tls_collector.url)
    trusted.track(user_id="u", event="E")
    assert trusted.flush(timeout=30) and trusted.stats()["delivered"] == 1
