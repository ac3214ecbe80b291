"""A real prefork server: gunicorn --preload with 4 sync workers, one Analytics created in
the master before the fork, one event per request. Every event arrives once, no worker
hangs, and stopping gunicorn (SIGTERM) delivers what the workers still held."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

import pytest

from journy_analytics.collector import CollectorThread
from waiting import wait_until

from .conftest import report, scales

HERE = Path(__file__).resolve().parent
GUNICORN = Path(sys.executable).with_name("gunicorn")

pytestmark = pytest.mark.skipif(
    not GUNICORN.exists() and shutil.which("gunicorn") is None, reason="gunicorn not installed"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, mid: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/track?mid={mid}")
        answer = conn.getresponse()
        return answer.status, answer.read().decode()
    finally:
        conn.close()


@scales(default={"requests": 2_000, "clients": 4}, soak={"requests": 20_000, "clients": 8})
def test_gunicorn_preload_every_event_once_and_shutdown_flushes(
    collector: CollectorThread, scale: Dict[str, int]
) -> None:
    port = _free_port()
    gunicorn = str(GUNICORN) if GUNICORN.exists() else str(shutil.which("gunicorn"))
    env = {**os.environ, "JOURNY_TEST_COLLECTOR": collector.url}
    server = subprocess.Popen(
        [
            gunicorn,
            "--preload",
            "-w",
            "4",
            "-k",
            "sync",
            "-b",
            f"127.0.0.1:{port}",
            "--timeout",
            "20",
            "--graceful-timeout",
            "20",
            "--chdir",
            str(HERE),
            "gunicorn_app:app",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: _port_open(port), timeout=20), "gunicorn did not start"
        total, clients = scale["requests"], scale["clients"]
        mids = [f"req-{i:06d}" for i in range(total)]
        answers: List[tuple[str, int, str]] = []
        failures: List[str] = []
        lock = threading.Lock()

        def load(part: List[str]) -> None:
            for mid in part:
                try:
                    status, pid = _get(port, mid)
                except Exception as exc:  # a hung or dead worker shows up here
                    with lock:
                        failures.append(f"{mid}: {exc!r}")
                    continue
                with lock:
                    answers.append((mid, status, pid))

        started = time.monotonic()
        threads = [threading.Thread(target=load, args=(mids[k::clients],)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        load_elapsed = time.monotonic() - started
        assert not any(t.is_alive() for t in threads), "the load did not finish in time"
        assert failures == []
        assert len(answers) == total and all(status == 200 for _, status, _ in answers)
        pids = {pid for _, _, pid in answers}
        assert len(pids) == 4, f"expected 4 workers to serve, saw {pids}"

        # Before shutdown, each worker still holds its last partial batch (flush_interval
        # is 60 s): what arrives after SIGTERM is what shutdown flushed.
        before_stop = collector.stats()["events"]
        assert before_stop < total

        stop_started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        _out, err = server.communicate(timeout=40)
        stop_elapsed = time.monotonic() - stop_started
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=10)
    log = err.decode(errors="replace")
    assert server.returncode == 0, log[-3000:]
    assert "WORKER TIMEOUT" not in log and "Traceback" not in log, log[-3000:]
    assert log.count("Worker exiting") == 4, log[-3000:]

    server_stats = collector.stats()
    assert collector.unique_message_ids() == set(mids)
    assert server_stats["received"] == total and server_stats["duplicates"] == 0
    served_by = {e["messageId"]: e["properties"]["pid"] for e in collector.events()}
    assert {str(p) for p in served_by.values()} == pids
    report(
        "gunicorn_preload_4_sync",
        requests=total,
        answered_200=len(answers),
        workers=len(pids),
        events_delivered=len(served_by),
        delivered_at_shutdown=total - before_stop,
        duplicates=server_stats["duplicates"],
        load_s=round(load_elapsed, 1),
        shutdown_s=round(stop_elapsed, 1),
    )


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
