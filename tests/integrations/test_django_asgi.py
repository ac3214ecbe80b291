"""Django's JournyMiddleware under ASGI (uvicorn, Django's own ASGI handler), real auth.

Concurrent clients, each a different user, call a sync view and an async view; the async
view holds every client's request open at once on the loop before it tracks, so their
scopes are all open together. Django's ASGI handler has no lifespan: the events still
queued at SIGTERM arrive through the SDK's own SIGTERM / exit flush."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from journy_analytics.collector import CollectorThread

from .conftest import Server, app_env, django_users, free_port, tool

pytest.importorskip("django")

ROUNDS = 6


def test_django_middleware_under_asgi_scopes_sync_and_async_views_and_sigterm_flushes(
    collector: CollectorThread, servers: Callable[..., Server], tmp_path: Path
) -> None:
    env = app_env(collector, JOURNY_TEST_DB=str(tmp_path / "django.sqlite3"))
    pks = django_users(env, "alice", "bob", "carol")

    port = free_port()
    server = servers(
        [tool("uvicorn"), "journy_django.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--lifespan", "off", "--log-level", "warning"],
        port,
        env,
    )  # fmt: skip
    server.wait_ready()

    # What each client sends, and the ids its events must carry.
    visitors = [
        ({"X-Remote-User": "alice", "X-Account": "acme"},
         {"userId": pks["alice"], "groupId": "acme"}),
        ({"X-Remote-User": "bob"}, {"userId": pks["bob"]}),
        ({"X-Anonymous-Id": "visitor-2"}, {"anonymousId": "visitor-2"}),
        ({"X-Remote-User": "carol", "X-Anonymous-Id": "visitor-3", "X-Account": "globex"},
         {"userId": pks["carol"], "anonymousId": "visitor-3", "groupId": "globex"}),
    ]  # fmt: skip
    expected: Dict[str, Dict[str, str]] = {}
    failures: List[str] = []
    lock = threading.Lock()

    def call(path: str, headers: Dict[str, str], want_status: int, want_body: str = "") -> None:
        try:
            status, body = server.get(path, headers)
        except OSError as exc:  # a timeout too: a client thread must not die unnoticed
            status, body = 0, repr(exc)
        if status != want_status or not body.startswith(want_body):
            with lock:
                failures.append(f"{path}: {status} {body[-300:]}")

    def client(n: int) -> None:
        headers, ids = visitors[n]
        for r in range(ROUNDS):
            mid = f"async-{n}-{r}"
            with lock:
                expected[f"{mid}-a"] = expected[f"{mid}-b"] = ids
            # every client's request of this round is inside the async view at once
            call(f"/track-async?mid={mid}&group=round-{r}&n={len(visitors)}", headers,
                 200, "together")  # fmt: skip
            mid = f"sync-{n}-{r}"
            with lock:
                expected[mid] = ids
            call(f"/track?mid={mid}", headers, 200)
            if r == 2:  # failing views mid-run: the next requests start clean
                with lock:
                    expected[f"fail-{n}"] = expected[f"fail-async-{n}"] = ids
                call(f"/fail?mid=fail-{n}", headers, 500)
                call(f"/fail-async?mid=fail-async-{n}", headers, 500)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(len(visitors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    # and an anonymous request after the others: no user or account left over from them
    expected["last"] = {"anonymousId": "visitor-last"}
    call("/track?mid=last", {"X-Anonymous-Id": "visitor-last"}, 200)
    assert failures == []
    before_stop = len(collector.events())
    assert before_stop < len(expected)  # batches of 15, flush interval 60 s: some still queued

    server.stop()
    # uvicorn ends a graceful shutdown by re-raising SIGTERM on itself (newer releases)
    assert server.proc.returncode in (0, -15), server.log[-3000:]
    assert "Traceback" not in server.log, server.log[-3000:]
    events = {e["messageId"]: e for e in collector.events()}
    assert set(events) == set(expected)
    for mid, want in expected.items():
        event = events[mid]
        assert event.get("userId") == want.get("userId"), (mid, event)
        assert event.get("anonymousId") == want.get("anonymousId"), (mid, event)
        assert event["context"].get("groupId") == want.get("groupId"), (mid, event)
    assert collector.stats()["duplicates"] == 0
