"""gevent and eventlet monkey-patching: events delivered, flush and close return on time
(a flush against a server answering in 800 ms with a 0.3 s timeout returns at its timeout),
no deadlock (the process ends by itself). gunicorn -k gevent is covered in test_flask."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Iterator

import pytest

from journy_analytics.collector import CollectorThread, Faults

from .conftest import APPS, app_env
from .conftest import require as _require


@pytest.fixture
def slow_collector() -> Iterator[CollectorThread]:
    with CollectorThread(faults=Faults(latency_ms=800)) as c:
        yield c


@pytest.mark.parametrize("library", ["gevent", "eventlet"])
def test_green_threads_deliver_and_flush_returns_on_time(
    collector: CollectorThread, slow_collector: CollectorThread, library: str
) -> None:
    _require(library)
    run = subprocess.run(
        [sys.executable, str(APPS / "green_script.py"), library, collector.url, slow_collector.url],
        env=app_env(collector),
        capture_output=True,
        text=True,
        timeout=60,  # a deadlock fails here
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("GREEN ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    results = json.loads(lines[0][len("GREEN ") :])
    print(f"\n{library}: {results}")
    assert results["flush_ok"] is True and results["delivered"] == 200
    ids = {e["messageId"]: e["userId"] for e in collector.events()}
    assert len(ids) == 200
    assert all(uid == f"green-{mid.split('-')[1]}" for mid, uid in ids.items())
    # the timeout is honoured: back at 0.3 s, long before the server's 800 ms answer
    assert results["slow_flush_ok"] is False and results["slow_flush_s"] < 0.75
    assert results["slow_close_ok"] is True and results["close_ok"] is True
    assert len(slow_collector.events()) == 1
