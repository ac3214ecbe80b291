"""Real network parts for tests on 127.0.0.1, shared by tests/core/test_proxy.py and tests/api:
Debian's tinyproxy on a loopback port with a config the test writes (``proxies``), a test
CA (``ca``, trustme), a TLS collector it signed (``tls_collector``) and a context that
trusts it (``trusting``). tinyproxy is installed by ``make proxy-deps``."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import pytest

from journy_analytics.collector import CollectorThread

TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tinyproxy:
    """tinyproxy on a loopback port, with a config this test writes and its own log."""

    def __init__(self, workdir: Path, auth: Optional[str] = None, port: Optional[int] = None):
        self.workdir = workdir
        self.auth = auth
        self.port = port or free_port()
        self.log = workdir / f"tinyproxy-{self.port}.log"
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, credentials: str) -> str:
        return f"http://{credentials}@127.0.0.1:{self.port}"

    def start(self) -> Tinyproxy:
        conf = self.workdir / f"tinyproxy-{self.port}.conf"
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            f'LogFile "{self.log}"',
            "LogLevel Info",
            "MaxClients 50",
            "Allow 127.0.0.1",
            "DisableViaHeader Yes",
        ]
        if self.auth:
            lines.append("BasicAuth " + self.auth.replace(":", " ", 1))
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [TINYPROXY, "-d", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:  # ready when the port takes connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tinyproxy did not start: {self.log_text()}") from None
                time.sleep(0.02)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def requests(self) -> List[str]:
        """The request lines the proxy received, in order ("CONNECT host:port HTTP/1.1")."""
        found = []
        for line in self.log_text().splitlines():
            if "]: Request (file descriptor" in line:
                found.append(line.split("): ", 1)[1])
        return found

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[Callable[..., Tinyproxy]]:
    if not os.access(TINYPROXY, os.X_OK):
        pytest.skip(
            "tinyproxy is not installed: run `make proxy-deps` (as root it runs "
            "apt-get install tinyproxy), or `sudo apt-get install tinyproxy`"
        )
    started: List[Tinyproxy] = []

    def start(auth: Optional[str] = None, port: Optional[int] = None, run: bool = True) -> Any:
        proxy = Tinyproxy(tmp_path, auth, port)
        started.append(proxy)
        return proxy.start() if run else proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="module")
def ca() -> Any:
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


@pytest.fixture
def tls_collector(ca: Any) -> Iterator[CollectorThread]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with CollectorThread(db=":memory:", ssl_context=context) as running:
        yield running


@pytest.fixture
def trusting(ca: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context
