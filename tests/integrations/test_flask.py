"""Flask's JournyAnalytics under gunicorn: threads (gthread) and greenlets (gevent)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from journy_analytics.collector import CollectorThread

from .conftest import APPS, Server, app_env, free_port, tool
from .conftest import require as _require

pytest.importorskip("flask")

WORKER_CLASSES = [
    pytest.param(["-k", "gthread", "--threads", "4"], id="gthread"),
    pytest.param(["-k", "gevent", "--worker-connections", "50"], id="gevent"),
]


@pytest.mark.parametrize("worker", WORKER_CLASSES)
def test_flask_extension_scopes_concurrent_requests_and_shutdown_flushes(
    collector: CollectorThread, servers: Callable[..., Server], worker: List[str]
) -> None:
    if worker[1] in ("gevent", "eventlet"):
        _require(worker[1])
    port = free_port()
    server = servers(
        [tool("gunicorn"), "-w", "2", *worker, "-b", f"127.0.0.1:{port}",
         "--graceful-timeout", "20", "journy_flask:app"],
        port,
        app_env(collector),
    )  # fmt: skip
    server.wait_ready()
    expected: Dict[str, Dict[str, str]] = {}
    failures: List[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(15):
            mid = f"fl-{n}-{i:03d}"
            headers = {"X-User-Id": f"user-{n}"}
            if n % 2:
                headers["X-Account"] = f"account-{n}"
            with lock:
                expected[mid] = headers
            try:
                status, body = server.get(f"/slow?mid={mid}", headers)
            except Exception as exc:
                status, body = -1, repr(exc)
            if status != 200:
                with lock:
                    failures.append(f"{mid}: {status} {body[-200:]}")

    # 8 concurrent clients: each worker serves several requests at once (threads or
    # greenlets), all sleeping mid-request.
    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    status, body = server.get("/track?mid=plain", {"X-User-Id": "user-plain"})
    assert status == 200, body
    expected["plain"] = {"X-User-Id": "user-plain"}

    stop_s = server.stop()
    assert server.proc.returncode == 0, server.log[-3000:]
    assert "WORKER TIMEOUT" not in server.log and "Traceback" not in server.log, server.log[-3000:]
    assert stop_s < 20, f"shutdown took {stop_s:.1f} s"
    events = {e["messageId"]: e for e in collector.events()}
    assert set(events) == set(expected)
    for mid, headers in expected.items():
        event = events[mid]
        assert event["userId"] == headers["X-User-Id"], (mid, event)
        assert event["context"].get("groupId") == headers.get("X-Account"), (mid, event)
        assert event["properties"] == {"path": "/track" if mid == "plain" else "/slow"}
    assert collector.stats()["duplicates"] == 0


def test_the_readme_recipe_serves_logged_out_visitors(
    collector: CollectorThread, servers: Callable[..., Server]
) -> None:
    # The app is the README's Flask recipe, as written; JOURNY_HOST points it here.
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    recipe = (APPS / "journy_flask_readme.py").read_text(encoding="utf-8")
    assert f"```py\n{recipe}```" in readme
    port = free_port()
    server = servers(
        [tool("gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", "journy_flask_readme:app"],
        port,
        app_env(collector, JOURNY_HOST=collector.url),
    )
    server.wait_ready()
    for headers in ({}, {"Cookie": "__journey=device-9"}, {"X-Account": "initech"}):
        status, body = server.get("/export", headers)
        assert (status, body) == (200, "exported"), body[-2000:]
    server.stop()
    assert server.proc.returncode == 0, server.log[-3000:]
    tracked = collector.events(type="track")
    assert [e["event"] for e in tracked] == ["Report Exported"] * 3
    assert all("userId" not in e for e in tracked)
    first, with_cookie, in_account = tracked
    assert len(first["anonymousId"]) == 36 and with_cookie["anonymousId"] == "device-9"
    assert in_account["anonymousId"] not in (first["anonymousId"], "device-9")
    assert in_account["context"]["groupId"] == "initech"
