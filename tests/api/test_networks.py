"""journy.io's REST client on company networks, with real parts on 127.0.0.1: Debian's
tinyproxy in front of the local collector's REST API (plain, and TLS with a test CA through
a CONNECT tunnel), a wrong proxy password, NO_PROXY, redirects, an untrusted certificate, a
name that does not exist and a port that answers garbage. Fixtures: tests/proxy_fixtures.py.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Any, Callable

import pytest

from journy_analytics import Analytics, JournyAPI, JournyAPIError, RetryPolicy
from journy_analytics.cli import main as journy
from journy_analytics.collector import CollectorThread

from .conftest import FAST


def _api(**settings: Any) -> JournyAPI:
    settings.setdefault("api_key", "rest-key-secret")
    settings.setdefault("retry_policy", FAST)
    settings.setdefault("timeout", 5.0)
    return JournyAPI(**settings)


def test_rest_calls_go_through_an_explicit_proxy(
    proxies: Callable[..., Any], collector: CollectorThread
) -> None:
    proxy = proxies()
    with _api(host=collector.url, proxy=proxy.url) as api:
        api.upsert_user(user_id="u1", properties={"plan": "pro"})
        assert api.validate_key().permissions
    assert collector.user("u1") is not None
    assert proxy.requests() == [
        f"POST {collector.url}/users/upsert HTTP/1.1",
        f"GET {collector.url}/validate HTTP/1.1",
    ]


def test_https_through_the_proxy_of_the_environment_with_a_company_ca(
    proxies: Callable[..., Any],
    tls_collector: CollectorThread,
    trusting: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = proxies()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with _api(host=tls_collector.url, ssl_context=trusting) as api:
        api.upsert_user(user_id="u1")
        api.delete_user(user_id="u1")
    assert tls_collector.user("u1") is None
    # One tunnel, the certificate checked against the server (the test CA signed it).
    assert proxy.requests() == [f"CONNECT 127.0.0.1:{tls_collector.port} HTTP/1.1"]


def test_no_proxy_bypasses_the_proxy_and_proxy_none_ignores_the_environment(
    proxies: Callable[..., Any], collector: CollectorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = proxies()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with _api(host=collector.url) as api:
        api.upsert_user(user_id="direct")
    monkeypatch.delenv("NO_PROXY")
    with _api(host=collector.url, proxy=None) as api:
        api.upsert_user(user_id="never-proxied")
    assert proxy.requests() == []
    assert collector.user("direct") and collector.user("never-proxied")
    with _api(host=collector.url) as api:  # and without NO_PROXY, the proxy is used
        api.upsert_user(user_id="proxied")
    assert proxy.requests() == [f"POST {collector.url}/users/upsert HTTP/1.1"]


@pytest.mark.parametrize(
    "scheme, credentials",
    [
        ("http", ""),  # 407 Proxy Authentication Required
        ("https", ""),  # 407 to the CONNECT
        ("https", "alice:wrong-pass@"),  # tinyproxy answers this CONNECT 401
    ],
)
def test_wrong_proxy_password_is_a_clear_error_at_once_and_never_shown(
    scheme: str,
    credentials: str,
    proxies: Callable[..., Any],
    collector: CollectorThread,
    tls_collector: CollectorThread,
    trusting: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    proxy = proxies(auth="alice:s3cret-pass")
    target = collector if scheme == "http" else tls_collector
    api = _api(
        host=target.url,
        proxy=f"http://{credentials}127.0.0.1:{proxy.port}",
        ssl_context=trusting,
        max_retries=3,
    )
    began = time.monotonic()
    with pytest.raises(JournyAPIError) as raised:
        api.delete_user(user_id="u1")
    assert time.monotonic() - began < 5
    user = credentials.split(":")[0] + "@" if credentials else ""
    text = str(raised.value)
    assert f"DELETE /users: the proxy http://{user}127.0.0.1:{proxy.port} refused" in text
    assert "user and password" in text
    assert len(proxy.requests()) == 1  # not retried
    shown = " ".join([caplog.text, text, repr(raised.value), repr(api), str(api.stats())])
    assert "wrong-pass" not in shown and "s3cret" not in shown
    assert "rest-key-secret" not in shown
    api.close()
    # The right password goes through.
    with _api(
        host=target.url, proxy=proxy.url_with("alice:s3cret-pass"), ssl_context=trusting
    ) as ok:
        ok.upsert_user(user_id="u1")
    assert target.user("u1") is not None
    assert "s3cret" not in caplog.text


def test_erase_user_goes_through_the_clients_proxy_and_trust(
    proxies: Callable[..., Any],
    tls_collector: CollectorThread,
    trusting: ssl.SSLContext,
) -> None:
    # The batch endpoint and journy.io's REST API are two hosts; one proxy for both, one
    # company CA for both.
    proxy = proxies()
    client = Analytics(
        write_key="wk",
        host=tls_collector.url,
        api_key="ak",
        api_host=tls_collector.url,
        proxy=proxy.url,
        ssl_context=trusting,
        flush_interval=0.05,
    )
    try:
        client.identify(user_id="gone", traits={"plan": "pro"})
        assert client.flush(10)
        assert tls_collector.user("gone") is not None
        result = client.erase_user(user_id="gone", timeout=10)
        assert result.deleted, result.delete_error
        assert tls_collector.user("gone") is None
    finally:
        client.close_and_flush(5)
    # The batch's tunnel, then the erase's own REST client's tunnel.
    assert proxy.requests() == [f"CONNECT 127.0.0.1:{tls_collector.port} HTTP/1.1"] * 2


def test_journy_erase_and_key_take_the_proxy_from_the_environment(
    proxies: Callable[..., Any],
    collector: CollectorThread,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy = proxies()
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv("JOURNY_API_KEY", "ak")
    assert journy(["key", "--host", collector.url]) == 0
    assert journy(["erase", "--user-id", "u9", "--host", collector.url]) == 0
    assert "permissions:" in capsys.readouterr().out
    assert proxy.requests() == [
        f"GET {collector.url}/validate HTTP/1.1",
        f"DELETE {collector.url}/users HTTP/1.1",
    ]


def test_proxy_and_ssl_context_are_refused_with_http_client() -> None:
    class Transport:
        def request(self, *args: Any) -> Any:
            raise AssertionError("never called")

    with pytest.raises(ValueError, match="with http_client= configure them"):
        JournyAPI(api_key="k", http_client=Transport(), proxy="http://127.0.0.1:3128")
    with pytest.raises(ValueError, match="with http_client= configure them"):
        JournyAPI(api_key="k", http_client=Transport(), ssl_context=ssl.create_default_context())
    with pytest.raises(ValueError, match="proxy must be a proxy URL"):
        JournyAPI(api_key="k", proxy=3128)  # type: ignore[arg-type]


def test_a_redirect_is_not_followed_and_names_its_location(
    scripted: Callable[..., Any],
) -> None:
    location = "https://eu.api.journy.io/users/upsert"
    server = scripted([{"status": 308, "headers": {"Location": location}}])
    with _api(host=server.url, max_retries=3) as api, pytest.raises(JournyAPIError) as raised:
        api.upsert_user(user_id="u1")
    text = str(raised.value)
    assert raised.value.status == 308 and location in text
    assert "set host='https://eu.api.journy.io'" in text
    assert len(server.headers) == 1  # one request: not followed, not retried


def test_an_untrusted_certificate_fails_at_once_with_the_hint(
    tls_collector: CollectorThread,
) -> None:
    with _api(host=tls_collector.url, max_retries=3) as api:
        began = time.monotonic()
        with pytest.raises(JournyAPIError) as raised:
            api.upsert_user(user_id="u1")
        assert time.monotonic() - began < 5
        assert api.stats()["requests"] == 1  # not retried as an outage
    text = str(raised.value)
    assert "TLS certificate of 127.0.0.1 was not accepted" in text
    assert "ssl_context=" in text and "SSL_CERT_FILE" in text


def test_a_host_that_does_not_resolve_says_check_host(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "api.journy.oi":  # a typo; no query leaves this machine
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with _api(host="https://api.journy.oi", max_retries=3) as api:
        with pytest.raises(JournyAPIError) as raised:
            api.validate_key()
        assert api.stats()["requests"] == 1
    assert "GET /validate: cannot resolve api.journy.oi: check `host`" in str(raised.value)


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


def test_a_non_http_answer_counts_under_max_retries() -> None:
    server = _GarbageServer()
    policy = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)  # the 600 s outage deadline
    try:
        with _api(
            host=f"http://127.0.0.1:{server.port}", max_retries=2, retry_policy=policy
        ) as api:
            began = time.monotonic()
            with pytest.raises(JournyAPIError) as raised:
                api.upsert_user(user_id="u1")
            assert time.monotonic() - began < 10
    finally:
        server.sock.close()
    assert server.connections == 3
    assert "answered something that is not HTTP" in str(raised.value)
