"""@flush_after: events are delivered before the handler returns (the process is killed the
instant it does), bounded by the invocation's remaining time, and the client serves the
next (warm) invocation."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Dict, List

import pytest

from journy_analytics.collector import CollectorThread, Faults

from .conftest import APPS, app_env


def _run(collector: CollectorThread, scenario: str, budget_ms: int) -> List[Dict[str, Any]]:
    env = app_env(collector, JOURNY_FLUSH_INTERVAL="60")
    run = subprocess.run(
        [sys.executable, str(APPS / "lambda_runtime.py"), scenario, str(budget_ms)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_events_are_delivered_before_return_and_the_warm_invocation_reuses_the_client(
    collector: CollectorThread,
) -> None:
    outcomes = _run(collector, "warm", budget_ms=10_000)
    assert [o["outcome"] for o in outcomes] == [{"statusCode": 200}] * 2
    ids = {e["messageId"]: e["userId"] for e in collector.events()}
    assert ids == {
        **{f"cold-{i}": "u1" for i in range(3)},
        **{f"warm-{i}": "u2" for i in range(4)},
    }
    # one client served both invocations, open between them
    assert outcomes[0]["client"] == outcomes[1]["client"]
    assert not outcomes[0]["client_closed"] and not outcomes[1]["client_closed"]
    assert collector.stats()["duplicates"] == 0


def test_a_raising_handler_still_flushes(collector: CollectorThread) -> None:
    (outcome,) = _run(collector, "raises", budget_ms=10_000)
    assert outcome["outcome"] == {"raised": "handler failed"}
    assert {e["messageId"] for e in collector.events()} == {"raised-0", "raised-1"}


def test_the_flush_is_bounded_by_the_remaining_time(collector: CollectorThread) -> None:
    collector.set_faults(Faults(latency_ms=1500))  # slower than the invocation's budget
    (outcome,) = _run(collector, "deadline", budget_ms=600)
    # flush_after gave up before the deadline, keeping its 0.25 s reserve for the answer
    assert outcome["outcome"] == {"statusCode": 200}
    assert outcome["remaining_ms_at_return"] > 0
    assert outcome["returned_after_s"] < 0.6


@pytest.mark.parametrize("keyword", ["analytics", "client"])
def test_flush_after_in_process_with_a_given_client(
    collector: CollectorThread, keyword: str
) -> None:
    """``analytics=`` / ``client=`` (the subprocess tests use the bare decorator), on an
    async handler too."""
    import asyncio

    from journy_analytics import Analytics
    from journy_analytics.integrations.aws_lambda import flush_after

    client = Analytics(write_key="k", host=collector.url, flush_interval=60)
    try:

        class Context:
            def get_remaining_time_in_millis(self) -> int:
                return 5000

        decorate = flush_after(**{keyword: client})

        @decorate
        def handler(event: Dict[str, Any], context: Any) -> str:
            client.track(user_id="u", event="Sync Handler")
            return "sync"

        @decorate
        async def async_handler(event: Dict[str, Any], context: Any) -> str:
            client.track(user_id="u", event="Async Handler")
            return "async"

        assert handler({}, Context()) == "sync"
        assert len(collector.events()) == 1  # delivered before the handler returned
        assert asyncio.run(async_handler({}, Context())) == "async"
        assert len(collector.events()) == 2
        assert not client.closed
    finally:
        client.close_and_flush(timeout=5)
