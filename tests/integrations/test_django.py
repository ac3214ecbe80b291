"""Django's JournyMiddleware under gunicorn --preload (2 sync workers), real auth."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

from journy_analytics.collector import CollectorThread

from .conftest import Server, app_env, django_users, free_port, tool

pytest.importorskip("django")


def test_django_middleware_scopes_each_request_and_shutdown_flushes(
    collector: CollectorThread, servers: Callable[..., Server], tmp_path: Path
) -> None:
    env = app_env(collector, JOURNY_TEST_DB=str(tmp_path / "django.sqlite3"))
    pks = django_users(env, "alice", "bob")

    port = free_port()
    server = servers(
        [
            tool("gunicorn"),
            "--preload",
            "-w",
            "2",
            "-k",
            "sync",
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "20",
            "journy_django.wsgi:application",
        ],
        port,
        env,
    )
    server.wait_ready()
    expected: Dict[str, Dict[str, str]] = {}
    clients: List[Tuple[str, str]] = []
    for i in range(60):
        mid = f"dj-{i:04d}"
        kind = i % 3
        if kind == 0:
            headers = {"X-Remote-User": "alice", "X-Account": "acme"}
            expected[mid] = {"userId": pks["alice"], "groupId": "acme"}
        elif kind == 1:
            headers = {"X-Remote-User": "bob"}
            expected[mid] = {"userId": pks["bob"]}
        else:
            headers = {"X-Anonymous-Id": f"visitor-{i}"}
            expected[mid] = {"anonymousId": f"visitor-{i}"}
        status, body = server.get(f"/track?mid={mid}", headers)
        assert status == 200, body
        pid, client_id = body.split()
        clients.append((pid, client_id))
        if i % 10 == 0:  # a failing view in the middle: the next request starts clean
            status, _ = server.get(f"/fail?mid=fail-{i}", {"X-Remote-User": "alice"})
            assert status == 500
            expected[f"fail-{i}"] = {"userId": pks["alice"]}

    pids = {pid for pid, _ in clients}
    assert len(pids) == 2, f"both workers should have served: {pids}"
    # one client per process, built once (in the master, before the fork)
    assert len({client_id for _, client_id in clients}) == 1
    before_stop = len(collector.events())
    assert before_stop < len(expected)

    server.stop()
    assert server.proc.returncode == 0, server.log[-3000:]
    assert "WORKER TIMEOUT" not in server.log
    events = {e["messageId"]: e for e in collector.events()}
    assert set(events) == set(expected)
    for mid, want in expected.items():
        event = events[mid]
        assert event.get("userId") == want.get("userId"), (mid, event)
        assert event.get("anonymousId") == want.get("anonymousId"), (mid, event)
        assert event["context"].get("groupId") == want.get("groupId"), (mid, event)
    assert collector.stats()["duplicates"] == 0
