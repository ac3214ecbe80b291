"""The rules of the network settings, without a network: proxy variables and NO_PROXY as
urllib and requests read them, the proxy's password kept out of sight, what each failure
means, and 413 as a split (a scripted transport and a fake clock)."""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import List, Mapping

import pytest

from journy_analytics import Analytics, Response, RetryPolicy
from journy_analytics._core._attempt import BatchResult, BatchSender, Split
from journy_analytics._core._network import (
    PROXY_FROM_ENV,
    NameResolutionError,
    NetworkSettings,
    Proxy,
    bypasses_proxy,
    environment_proxies,
)
from journy_analytics._core._transport import StdlibHttpClient, explain_failure
from journy_analytics._handlers import Emitter


def test_lower_case_wins_and_an_empty_lower_case_unsets() -> None:
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}
    assert environment_proxies(env)["https"] == "http://lower:2"
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": ""}
    assert "https" not in environment_proxies(env)
    env = {"ALL_PROXY": "http://all:3", "NO_PROXY": "a.com"}
    assert environment_proxies(env) == {"all": "http://all:3", "no": "a.com"}
    # Inside a CGI request HTTP_PROXY comes from the client (httpoxy): ignored.
    env = {"HTTP_PROXY": "http://evil:1", "REQUEST_METHOD": "GET"}
    assert "http" not in environment_proxies(env)


@pytest.mark.parametrize(
    "host, port, no_proxy, bypassed",
    [
        ("api.example.com", 443, "example.com", True),
        ("example.com", 443, ".example.com", True),
        ("badexample.com", 443, "example.com", False),  # a dot boundary, not a suffix
        ("api.example.com", 443, "example.com:443", True),
        ("api.example.com", 443, "example.com:8443", False),
        ("anything.io", 443, "*", True),
        ("analyze.journy.io", 443, "", False),
        ("10.1.2.3", 443, "10.0.0.0/8", True),
        ("11.1.2.3", 443, "10.0.0.0/8", False),
        ("127.0.0.1", 8765, "localhost, 127.0.0.1", True),
        ("::1", 443, "[::1]", True),
        ("::1", 8080, "[::1]:8080", True),
        ("API.Example.COM", 443, "example.com", True),
    ],
)
def test_no_proxy_matching(host: str, port: int, no_proxy: str, bypassed: bool) -> None:
    assert bypasses_proxy(host, port, no_proxy) is bypassed


def test_explicit_proxy_wins_and_none_ignores_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    from_env = NetworkSettings()
    found = from_env.proxy_for("https", "analyze.journy.io", 443)
    assert found is not None and (found.host, found.port) == ("env-proxy", 3128)
    assert from_env.proxy_for("https", "api.internal.example", 443) is None
    explicit = NetworkSettings(proxy="http://mine:8080")
    chosen = explicit.proxy_for("https", "api.internal.example", 443)
    assert chosen is not None and chosen.host == "mine"
    assert NetworkSettings(proxy=None).proxy_for("https", "analyze.journy.io", 443) is None
    assert repr(PROXY_FROM_ENV) == "PROXY_FROM_ENV"


def test_the_proxy_password_is_kept_out_of_sight() -> None:
    proxy = Proxy("http://al%40ice:p%3Ass@proxy.example.com:3128")
    assert proxy.display == "http://al%40ice@proxy.example.com:3128"
    assert "p%3Ass" not in repr(proxy) and "p:ss" not in str(proxy)
    import base64

    token = (proxy.authorization() or "").split()[1]
    assert base64.b64decode(token) == b"al@ice:p:ss"  # percent-decoded, as requests does
    settings = NetworkSettings(proxy="http://u:topsecret@p:1")
    client = Analytics(write_key="k", proxy="http://u:topsecret@p:1", disable=True)
    shown = repr(settings) + repr(StdlibHttpClient(network=settings)) + repr(client)
    assert "topsecret" not in shown
    with pytest.raises(ValueError) as bad:
        Proxy("socks5://u:topsecret@p:1")
    assert "only http://" in str(bad.value) and "topsecret" not in str(bad.value)
    client.close_and_flush()


def test_settings_refuse_what_they_cannot_use() -> None:
    with pytest.raises(ValueError, match=r"ssl\.SSLContext"):
        NetworkSettings(ssl_context="ca.pem")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="proxy must be a proxy URL"):
        NetworkSettings(proxy=3128)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="own transport"):
        Analytics(write_key="k", proxy=None, http_client=StdlibHttpClient())
    assert Proxy("proxy.example.com:3128").display == "http://proxy.example.com:3128"


def test_what_each_failure_means() -> None:
    lookup = NameResolutionError("cannot resolve x.example: check `host` (Name unknown)")
    assert explain_failure(lookup, "x.example").outage
    certificate = ssl.SSLCertVerificationError(1, "certificate verify failed")
    failure = explain_failure(certificate, "x.example")
    assert not failure.outage and "SSL_CERT_FILE" in failure.text
    garbage = http.client.BadStatusLine("SSH-2.0-OpenSSH")
    failure = explain_failure(garbage, "x.example")
    assert not failure.outage and "not HTTP" in failure.text
    assert explain_failure(http.client.RemoteDisconnected("closed"), "x.example").outage
    assert explain_failure(ConnectionRefusedError(111, "refused"), "x.example").outage
    wrapped = OSError("wrapped")
    wrapped.__cause__ = socket.timeout("timed out")
    assert explain_failure(wrapped, "x.example").outage


class _Scripted:
    def __init__(self, answers: List[Response]) -> None:
        self.answers = answers
        self.bodies: List[bytes] = []

    def send(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
        self.bodies.append(body)
        return self.answers.pop(0)

    def close(self) -> None:
        pass


def _sender(transport: _Scripted) -> BatchSender:
    return BatchSender(
        url="https://analyze.journy.io/backend/v1/batch",
        write_key="secret-key",
        policy=RetryPolicy(),
        timeout=1.0,
        gzip=False,
        emitter=Emitter(),
        transport=lambda: transport,
        aborted=lambda: False,
    )


def test_413_splits_a_batch_and_refuses_a_single_event_as_too_large() -> None:
    transport = _Scripted([Response(413, {}, b"too big")] * 2)
    sender = _sender(transport)
    assert isinstance(sender.attempt(sender.start([b'{"a":1}', b'{"b":2}'])), Split)
    single = sender.attempt(sender.start([b'{"a":1}']))
    assert isinstance(single, BatchResult) and single.outcome == "rejected"
    assert single.status == 413 and "too large for this server" in single.reason


def test_redirect_and_proxy_answers_say_what_to_do() -> None:
    transport = _Scripted(
        [
            Response(308, {"Location": "https://eu.journy.example/backend/v1/batch"}),
            Response(407, {}, b"", proxy="http://bob@proxy:3128"),
        ]
    )
    sender = _sender(transport)
    redirect = sender.attempt(sender.start([b"{}"]))
    assert isinstance(redirect, BatchResult) and redirect.outcome == "rejected"
    assert "set host='https://eu.journy.example'" in redirect.reason
    refused = sender.attempt(sender.start([b"{}"]))
    assert isinstance(refused, BatchResult) and refused.outcome == "rejected"
    assert "the proxy http://bob@proxy:3128 refused" in refused.reason
