"""Django's JournyMiddleware under gunicorn --preload (2 sync workers), real auth."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
import urllib3

from journy_analytics.collector import CollectorThread

from .conftest import APPS, Server, app_env, django_users, free_port, tool

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


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_recipes() -> List[str]:
    import re

    return re.findall(r"```py\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_recipe_serves_logged_out_visitors_and_groups_at_login(
    collector: CollectorThread, servers: Callable[..., Server], tmp_path: Path
) -> None:
    # The app runs the README's view and login signal as written.
    recipes = "\n".join(readme_recipes())
    views = (APPS / "journy_django" / "views.py").read_text(encoding="utf-8")
    signals = (APPS / "journy_django" / "signals.py").read_text(encoding="utf-8")
    assert views in recipes
    assert signals.split("\n\n# The test app's stand-in")[0] + "\n" in recipes

    env = app_env(collector, JOURNY_TEST_DB=str(tmp_path / "django.sqlite3"))
    pks = django_users(env, "dora")
    port = free_port()
    server = servers(
        [tool("gunicorn"), "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{port}",
         "journy_django.wsgi:application"],
        port,
        env,
    )  # fmt: skip
    server.wait_ready()
    visits = [
        {},  # logged out, no journy.io cookie
        {"Cookie": "csrftoken=x; __journey=device-42"},  # logged out, the snippet's cookie
        {"X-Remote-User": "dora", "X-Account": "globex", "Cookie": "__journey=device-7"},
    ]
    for headers in visits:
        status, body = server.get("/export", headers)
        assert (status, body) == (200, "exported"), body[-2000:]
    server.stop()
    assert server.proc.returncode == 0, server.log[-3000:]
    tracked = collector.events(type="track")
    assert [e["event"] for e in tracked] == ["Report Exported"] * 3
    anonymous, with_cookie, dora = tracked
    assert "userId" not in anonymous and len(anonymous["anonymousId"]) == 36  # a uuid4
    assert "userId" not in with_cookie and with_cookie["anonymousId"] == "device-42"
    assert dora["userId"] == pks["dora"] and dora["anonymousId"] == "device-7"
    assert dora["context"]["groupId"] == "globex"
    # The login's group call made dora a member: no account_not_grouped warning.
    [group] = collector.events(type="group")
    assert (group["userId"], group["groupId"]) == (pks["dora"], "globex")
    flagged = urllib3.request("GET", collector.url + "/api/events?warnings=1").json()
    assert flagged["events"] == [], flagged
    assert collector.account("globex")["members"] == [pks["dora"]]
