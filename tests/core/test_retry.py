"""The retry policy as a value: classification, Retry-After, backoff bounds."""

from __future__ import annotations

import email.utils

import pytest

from journy_analytics._core._retry import Outcome, RetryPolicy, parse_retry_after

classify = RetryPolicy().classify


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_delivered(status: int) -> None:
    assert classify(status) is Outcome.DELIVERED


@pytest.mark.parametrize("status", [None, 500, 502, 503, 504, 599, 408, 410, 429, 460])
def test_retryable(status: int) -> None:
    assert classify(status) is Outcome.RETRY


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422, 501, 505, 301, 302])
def test_dropped(status: int) -> None:
    assert classify(status) is Outcome.DROP


def test_retry_after_seconds_and_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 2.5 ", now) == 2.5
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30.0, abs=1.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now) == 0.0


@pytest.mark.parametrize("garbage", ["", "soon", "nan", "-", "Mon, 99 Foo 2020", "\x00", "1e999x"])
def test_garbage_retry_after_ignored_never_raised(garbage: str) -> None:
    assert parse_retry_after(garbage, 0.0) is None


def test_retry_after_capped_and_preferred_over_backoff() -> None:
    policy = RetryPolicy(max_retry_after=300.0)
    assert policy.delay(1, "100000", 0.0, lambda: 0.0) == 300.0
    assert policy.delay(1, "3", 0.0, lambda: 0.0) == 3.0
    assert policy.delay(1, "junk", 0.0, lambda: 0.0) == policy.backoff(1, lambda: 0.0)


def test_backoff_is_exponential_jittered_and_capped() -> None:
    policy = RetryPolicy(initial_backoff=0.5, multiplier=2.0, max_backoff=4.0, jitter=0.5)
    top = [policy.backoff(n, lambda: 0.0) for n in range(1, 7)]
    assert top == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    bottom = [policy.backoff(n, lambda: 1.0) for n in range(1, 4)]
    assert bottom == [0.25, 0.5, 1.0]


def test_policy_is_immutable() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_retries = 5  # type: ignore[misc]


def test_status_sets_are_configurable() -> None:
    policy = RetryPolicy(retry_statuses=frozenset({409}), drop_statuses=frozenset({503}))
    assert policy.classify(409) is Outcome.RETRY
    assert policy.classify(429) is Outcome.DROP, "429 is no longer listed as retryable"
    assert policy.classify(503) is Outcome.DROP
    assert policy.classify(502) is Outcome.RETRY


def test_decide_outage_ignores_max_retries_until_the_deadline() -> None:
    policy = RetryPolicy(max_retries=1, deadline=10.0, jitter=0.0)
    common = {"retry_after": None, "wall_now": 0.0, "draw": lambda: 0.0}
    d = policy.decide(
        status=None, outage=True, answered_failures=0, retries=2, elapsed=1.0, **common
    )
    assert d.outcome is Outcome.RETRY
    d = policy.decide(
        status=None, outage=True, answered_failures=0, retries=2, elapsed=9.9, **common
    )
    assert d.outcome is Outcome.DROP and d.cause == "outage_deadline"
    d = policy.decide(
        status=500, outage=False, answered_failures=2, retries=1, elapsed=1.0, **common
    )
    assert d.outcome is Outcome.DROP and d.cause == "retries_exhausted"


def test_decide_retry_after_is_a_server_asked_pause() -> None:
    policy = RetryPolicy()
    d = policy.decide(
        status=429,
        outage=False,
        answered_failures=1,
        retries=0,
        elapsed=0.0,
        retry_after="7",
        wall_now=0.0,
    )
    assert d.outcome is Outcome.RETRY and d.delay == 7.0 and d.server_asked
    d = policy.decide(
        status=429,
        outage=False,
        answered_failures=1,
        retries=0,
        elapsed=0.0,
        retry_after="garbage",
        wall_now=0.0,
        draw=lambda: 0.0,
    )
    assert d.outcome is Outcome.RETRY and not d.server_asked and d.delay == policy.initial_backoff


def test_huge_retry_numbers_do_not_overflow() -> None:
    assert RetryPolicy().backoff(10_000, lambda: 0.0) == RetryPolicy().max_backoff
