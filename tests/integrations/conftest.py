"""Real framework servers in subprocesses over loopback, delivering to a collector thread.

Each test starts the framework's own server (gunicorn, uvicorn, a celery worker, ...) as a
subprocess with the apps in ``apps/`` on its path, drives it over 127.0.0.1, stops it the
way production does (SIGTERM), and reads what arrived at the collector.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

pytest.importorskip("aiohttp")

from journy_analytics.collector import CollectorThread
from waiting import wait_until

APPS = Path(__file__).resolve().parent / "apps"
BIN = Path(sys.executable).parent


@pytest.fixture
def collector() -> Iterator[CollectorThread]:
    with CollectorThread(db=":memory:", max_logged_requests=10_000) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def app_env(collector: CollectorThread, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNY_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APPS), env.get("PYTHONPATH", "")) if p)
    env["JOURNY_TEST_COLLECTOR"] = collector.url
    env.update(extra)
    return env


def django_users(env: Dict[str, str], *names: str) -> Dict[str, str]:
    """Create the test Django app's database with these users: name -> primary key."""
    made = subprocess.run(
        [sys.executable, "-m", "journy_django.setup_db", *names],
        env=env,
        cwd=str(APPS),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    return dict(line.split() for line in made.stdout.splitlines())


class Server:
    """A server subprocess on a loopback port; ``stop()`` sends SIGTERM and waits."""

    def __init__(self, argv: List[str], port: int, env: Dict[str, str], cwd: Path = APPS):
        self.port = port
        # Its own process group: kill() takes the workers down with the master.
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=str(cwd),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.log = ""

    def wait_ready(self, timeout: float = 30) -> None:
        if not wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, timeout):
            self.kill()
            raise AssertionError(f"server did not start: {self.log[-3000:]}")
        if self.proc.poll() is not None:
            self.kill()
            raise AssertionError(f"server exited at start: {self.log[-3000:]}")

    def get(self, path: str, headers: Optional[Dict[str, str]] = None) -> Tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            conn.request("GET", path, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, answer.read().decode()
        finally:
            conn.close()

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM, then wait; returns the seconds the shutdown took."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"server did not stop within {timeout} s: {self.log[-3000:]}"
            ) from None
        self.log = (out + err).decode(errors="replace")
        return time.monotonic() - started

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the master and any worker left
        except ProcessLookupError:
            pass
        out, err = self.proc.communicate(timeout=10)
        self.log = (out + err).decode(errors="replace")


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    started: List[Server] = []

    def start(argv: List[str], port: int, env: Dict[str, str], **kw: Any) -> Server:
        server = Server(argv, port, env, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.kill()


def require(module: str) -> None:
    """Skip unless ``module`` is installed, without importing it here: gevent and eventlet
    change the process that imports them (eventlet hooks fork), and the servers import them
    in their own processes."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (make test installs it)")


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed (make test installs it)")
    return str(path)
