"""The one rate rule for log lines that repeat (_logging.RateLimit), on a fake clock."""

from __future__ import annotations

import logging
from typing import List

import pytest

from journy_analytics import _logging
from journy_analytics._logging import RateLimit, RateLimitedLog


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> List[float]:
    now = [1000.0]
    monkeypatch.setattr(_logging.time, "monotonic", lambda: now[0])
    return now


def test_first_then_once_per_interval_counting_what_was_held_back(clock: List[float]) -> None:
    limit = RateLimit(10.0)
    assert limit.check("a") == (True, 0, 1, pytest.approx(float("inf")))
    clock[0] += 3
    assert limit.check("a")[:3] == (False, 1, 2)
    assert limit.check("b")[:3] == (True, 0, 1)  # keys are counted apart
    clock[0] += 3
    assert limit.check("a")[:3] == (False, 2, 3)
    clock[0] += 4  # 10 s after the line
    assert limit.check("a") == (True, 2, 4, 10.0)
    clock[0] += 1
    assert limit.check("a")[:3] == (False, 1, 5)


def test_lines_say_how_many_were_held_back_or_how_many_so_far(
    clock: List[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="journy_analytics")
    log = RateLimitedLog(every=30.0)
    for _ in range(3):
        log.log("k", logging.WARNING, "server down")
    clock[0] += 30
    assert log.log("k", logging.WARNING, "server down")
    warnings = RateLimitedLog(every=60.0)
    warnings.warning("bad header %s", "x")
    warnings.warning("bad header %s", "x")
    clock[0] += 60
    warnings.warning("bad header %s", "x")
    assert [r.getMessage() for r in caplog.records] == [
        "server down",
        "server down (2 more like this in the last 30 s)",
        "bad header x (1 time(s) so far)",
        "bad header x (3 time(s) so far)",
    ]
