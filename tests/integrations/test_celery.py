"""Celery: the sender's scope travels in the message headers to a real prefork worker
(filesystem broker, no server), and the worker processes flush at shutdown."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import pytest

from journy_analytics import scope
from journy_analytics.collector import CollectorThread
from waiting import wait_until

from .conftest import APPS, Server, app_env, tool

pytest.importorskip("celery")


@pytest.fixture
def celery_module(
    collector: CollectorThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    for sub in ("queue", "processed", "results", "control"):
        (tmp_path / sub).mkdir()
    monkeypatch.setenv("JOURNY_TEST_CELERY_DIR", str(tmp_path))
    monkeypatch.setenv("JOURNY_TEST_COLLECTOR", collector.url)
    monkeypatch.syspath_prepend(str(APPS))
    sys.modules.pop("journy_celery", None)
    module = importlib.import_module("journy_celery")
    try:
        yield module
    finally:
        module.analytics.close_and_flush(timeout=1)  # the sender's copy tracks nothing
        sys.modules.pop("journy_celery", None)


def test_scope_travels_with_the_task_and_worker_shutdown_flushes(
    collector: CollectorThread, servers: Callable[..., Server], celery_module: Any, tmp_path: Path
) -> None:
    env = app_env(collector, JOURNY_TEST_CELERY_DIR=str(tmp_path))
    worker = servers(
        [tool("celery"), "-A", "journy_celery", "worker", "--pool", "prefork",
         "--concurrency", "2", "--without-heartbeat", "--without-gossip", "--without-mingle",
         "--loglevel", "INFO"],
        0,
        env,
    )  # fmt: skip
    expected: Dict[str, Dict[str, Any]] = {}
    results = []
    for n in range(12):
        mid = f"celery-{n:03d}"
        context = {"request_id": f"req-{n}"}
        with scope(user_id=f"user-{n}", group_id=f"account-{n % 3}", context=context):
            results.append(celery_module.export.delay(mid))
        expected[mid] = {"userId": f"user-{n}", "groupId": f"account-{n % 3}", **context}
    with scope(user_id="outer-user", properties={"plan": "pro"}):
        results.append(celery_module.explicit.delay("celery-nested"))
        seen = celery_module.scope_seen.delay()
    expected["celery-nested"] = {"userId": "outer-user", "groupId": "inner-account"}
    unscoped = celery_module.scope_seen.delay()  # sent outside any scope: nothing travels

    pids = {r.get(timeout=60) for r in results}
    assert seen.get(timeout=30) == {"user_id": "outer-user", "properties": {"plan": "pro"}}
    assert unscoped.get(timeout=30) is None
    before_stop = len(collector.events())
    assert before_stop < len(expected)  # flush interval 60 s: the children still hold events

    worker.stop(timeout=60)
    assert worker.proc.returncode == 0, worker.log[-3000:]
    assert wait_until(lambda: len(collector.events()) >= len(expected), timeout=5)
    events = {e["messageId"]: e for e in collector.events()}
    assert set(events) == set(expected)
    for mid, want in expected.items():
        event = events[mid]
        assert event["userId"] == want["userId"], (mid, event)
        assert event["context"]["groupId"] == want["groupId"], (mid, event)
        if "request_id" in want:
            assert event["context"]["request_id"] == want["request_id"]
    assert events["celery-nested"]["properties"] == {"plan": "pro"}
    assert all(pid != worker.proc.pid for pid in pids), "tasks ran in the prefork children"
    # The broker's files stay in the test's folder, none in the checkout.
    assert list((tmp_path / "control").glob("*.exchange"))
    for where in (Path.cwd(), APPS, Path(__file__).resolve().parents[2]):
        assert not (where / "control").exists(), where / "control"
