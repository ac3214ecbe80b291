"""Shared fixtures: a real local collector on loopback, and clients that are always closed."""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, Iterator, List

import pytest

import journy_analytics
from journy_analytics import Analytics
from journy_analytics.collector import CollectorThread

# Exactly what the README tells users to put in their conftest.py (the journy_capture
# fixture); and tinyproxy, a test CA and a TLS collector (tests/proxy_fixtures.py).
pytest_plugins = ["journy_analytics.testing", "proxy_fixtures"]


@pytest.fixture(autouse=True)
def _no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY (as requests does).
    A developer's or CI's proxy must not carry the tests' loopback requests elsewhere:
    every test starts without them (tests of proxies set their own)."""
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)


# The module-level client's settings (journy_analytics.write_key = ..., as the README
# shows); the environment-backed ones are the names _default.environment_settings reads.
_MODULE_SETTINGS = (
    "write_key",
    "host",
    "path",
    "disable",
    "gzip",
    "max_retries",
    "max_events_in_batch",
    "flush_interval",
    "max_queue_size",
)


@pytest.fixture(autouse=True)
def _module_settings_restored() -> Iterator[None]:
    """A test that sets journy_analytics.host (the README's examples do) must not leave it
    for the next test: each test sees the module settings as they were before it."""
    before = {
        name: getattr(journy_analytics, name)
        for name in _MODULE_SETTINGS
        if hasattr(journy_analytics, name)
    }
    yield
    for name in _MODULE_SETTINGS:
        if name in before:
            setattr(journy_analytics, name, before[name])
        elif hasattr(journy_analytics, name):
            delattr(journy_analytics, name)


# A run started in the background by a script (`make test &` in a shell without job control,
# nohup, some CI runners) begins with SIGINT ignored, and every process a test starts would
# inherit that: Python then installs no KeyboardInterrupt handler, and the tests that press
# Ctrl-C on `journy import` or `journy demo` would find it ignored (the demo then serves
# for ever, the import runs to its end). They test Ctrl-C as a terminal delivers it, so the
# run restores the terminal's disposition: a handler is reset to the default across exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def collector() -> Iterator[CollectorThread]:
    with CollectorThread(db=":memory:") as running:
        yield running


@pytest.fixture
def make_client(collector: CollectorThread) -> Iterator[Callable[..., Analytics]]:
    """Build clients pointed at the collector; every one is closed when the test ends."""
    made: List[Analytics] = []

    def make(**settings: Any) -> Analytics:
        settings.setdefault("write_key", "test-key")
        settings.setdefault("host", collector.url)
        settings.setdefault("flush_interval", 0.05)
        client = Analytics(**settings)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close_and_flush(timeout=2)


class ScriptedServer:
    """A real loopback HTTP server answering each POST with the next scripted step.

    A step is a status int, or a dict with ``status``, ``headers``, ``delay`` (seconds before
    answering) and ``reset`` (close the connection without answering). When the script is
    used up every request gets 200. Received bodies are kept (decoded JSON) in ``bodies``.
    """

    def __init__(self, steps: Any = ()) -> None:
        import http.server
        import socket
        import threading

        import orjson

        self.steps: List[Any] = list(steps)
        self.bodies: List[Any] = []
        self.headers: List[Any] = []
        self.client_ports: List[int] = []  # one per request: equal ports mean one connection
        self.lock = threading.Lock()
        # Set at close: a delayed answer still pending goes out at once, so that a request a
        # test abandoned does not hang on until the client's http_request_timeout and log
        # its timeout into a later test.
        self.released = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip

                    body = gzip.decompress(body)
                with server.lock:
                    step = server.steps.pop(0) if server.steps else 200
                    server.headers.append(dict(self.headers))
                    server.client_ports.append(self.client_address[1])
                step = step if isinstance(step, dict) else {"status": step}
                if step.get("delay"):
                    server.released.wait(step["delay"])
                if step.get("reset"):
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                status = step.get("status", 200)
                if 200 <= status < 300:
                    with server.lock:
                        server.bodies.append(orjson.loads(body))
                payload = b'{"success":true}' if status < 300 else b'{"error":"scripted"}'
                self.send_response(status)
                for key, value in step.get("headers", {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout or close): that is the test's point

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> List[Any]:
        with self.lock:
            return [e for body in self.bodies for e in body["batch"]]

    def received(self) -> int:
        """Requests that reached the server so far (answered or not yet)."""
        with self.lock:
            return len(self.headers)

    def close(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    servers: List[ScriptedServer] = []

    def make(steps: Any = ()) -> ScriptedServer:
        server = ScriptedServer(steps)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
