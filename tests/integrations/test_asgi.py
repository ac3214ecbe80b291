"""The ASGI middleware with FastAPI under uvicorn: a scope per request across concurrent
requests on one loop, and the lifespan shutdown flush (the app's client has no exit flush,
so the events that arrive after SIGTERM prove it)."""

from __future__ import annotations

import threading
from typing import Callable, Dict, List

import pytest

from journy_analytics.collector import CollectorThread

from .conftest import Server, app_env, free_port, tool

pytest.importorskip("fastapi")


def test_asgi_middleware_scopes_requests_and_flushes_on_lifespan_shutdown(
    collector: CollectorThread, servers: Callable[..., Server]
) -> None:
    port = free_port()
    server = servers(
        [tool("uvicorn"), "journy_fastapi:app", "--host", "127.0.0.1", "--port", str(port),
         "--lifespan", "on", "--log-level", "warning"],
        port,
        app_env(collector),
    )  # fmt: skip
    server.wait_ready()
    expected: Dict[str, Dict[str, str]] = {}
    failures: List[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(11):  # 66 events: batches of 15 leave 6 queued until shutdown
            mid = f"asgi-{n}-{i:03d}"
            headers = {"X-User-Id": f"user-{n}"}
            if n % 2:
                headers["X-Account"] = f"account-{n}"
            with lock:
                expected[mid] = headers
            status, body = server.get(f"/track?mid={mid}", headers)
            if status != 200:
                with lock:
                    failures.append(f"{mid}: {status} {body[-300:]}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    status, body = server.get("/leaks")
    assert (status, body) == (200, '{"leaks":0}'), body
    before_stop = len(collector.events())
    assert before_stop < len(expected)  # batches of 15, flush interval 60 s: some still queued

    server.stop()
    # uvicorn ends a graceful shutdown by re-raising SIGTERM on itself (newer releases)
    assert server.proc.returncode in (0, -15), server.log[-3000:]
    assert "Traceback" not in server.log and "ERROR" not in server.log, server.log[-3000:]
    events = {e["messageId"]: e for e in collector.events()}
    assert set(events) == set(expected) | {"app-stopping"}
    for mid, headers in expected.items():
        event = events[mid]
        assert event["userId"] == headers["X-User-Id"], (mid, event)
        assert event["context"].get("groupId") == headers.get("X-Account"), (mid, event)
        assert event["context"]["path"] == "/track"
    assert events["app-stopping"]["userId"] == "system"


def test_logged_out_visitors_get_the_journey_cookie_or_a_fresh_anonymous_id() -> None:
    """The middleware alone (it imports no framework), driven as a server drives it."""
    import asyncio

    from journy_analytics.integrations.asgi import JournyMiddleware
    from journy_analytics.testing import Capture

    with Capture() as capture:

        async def app(scope: Dict[str, object], receive: object, send: object) -> None:
            capture.analytics.track(event="Served")

        middleware = JournyMiddleware(app, analytics=capture.analytics)

        async def visit(headers: List[tuple]) -> None:
            await middleware({"type": "http", "headers": headers}, None, None)  # type: ignore[arg-type]

        asyncio.run(visit([]))
        asyncio.run(visit([(b"cookie", b"a=1; __journey=device-3")]))
        asyncio.run(visit([(b"cookie", b"__journey=" + b"x" * 500)]))  # not a device id
        first, with_cookie, overlong = capture.events(event="Served")
    assert len(first["anonymousId"]) == 36 and "userId" not in first
    assert with_cookie["anonymousId"] == "device-3"
    assert len(overlong["anonymousId"]) == 36
