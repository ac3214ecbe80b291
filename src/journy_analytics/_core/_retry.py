"""One immutable retry policy: every retry decision of the SDK is made here.

Like urllib3's ``Retry`` it is a value, not a state machine; unlike it, the decision and
the delay are pure functions of their inputs (the answer, the attempt's history, a random
draw and the clock), so the retry loop is tested with a scripted transport and a fake
clock. The rule, in full:

* 2xx: delivered.
* A status in ``drop_statuses``, or a 4xx not in ``retry_statuses``: dropped at once
  (``rejected``); retrying cannot change the answer.
* A status in ``retry_statuses``, or any other 5xx: retried. These are *answered*
  failures and count against ``max_retries``.
* No answer at all (connection refused or reset, timeout): an outage, not this batch's
  fault. Retried without counting against ``max_retries``, until ``deadline`` seconds after
  the batch's first attempt (``outage_deadline``). A TLS failure is an answered failure: a
  certificate problem does not pass by itself.
* The wait before a retry is the server's ``Retry-After`` (seconds or an HTTP date, capped
  at ``max_retry_after``; a value we cannot read is ignored), otherwise exponential backoff
  with jitter, capped at ``max_backoff``. No retry is scheduled past ``deadline``.
"""

from __future__ import annotations

import email.utils
import enum
import math
import random
from dataclasses import dataclass
from typing import Callable, FrozenSet, Optional, Union

from journy_analytics._types import Cause

__all__ = ["Decision", "Outcome", "RetryPolicy", "parse_retry_after"]


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DROP = "drop"


@dataclass(frozen=True)
class Decision:
    """What to do after one attempt: ``outcome``; for a retry, ``delay`` seconds and whether
    the server asked for the pause itself (``server_asked``: other batches wait too); for a
    final failure, the ``cause`` (a ``Cause`` value) and a sentence saying why."""

    outcome: Outcome
    delay: float = 0.0
    server_asked: bool = False
    cause: Optional[Cause] = None
    why: str = ""


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date).

    A value we cannot read is ignored (None), never raised: a broken proxy must not
    break delivery.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:
            return None
        try:
            seconds = when.timestamp() - now
        except (OverflowError, ValueError, OSError):
            return None
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped, bounded by one overall deadline per batch."""

    max_retries: int = 3
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    multiplier: float = 2.0
    # Each delay is drawn uniformly from [delay * (1 - jitter), delay].
    jitter: float = 0.5
    max_retry_after: float = 300.0
    # No batch spends longer than this between its first attempt and its last.
    deadline: float = 600.0
    # 408 timeout, 410 gone-for-now (as analytics-node reads it), 429 rate limit, 460 client
    # closed; 5xx are retried unless listed in drop_statuses.
    retry_statuses: FrozenSet[int] = frozenset({408, 410, 429, 460})
    # 501 Not Implemented and 505 HTTP Version Not Supported will not change on a retry.
    drop_statuses: FrozenSet[int] = frozenset({501, 505})

    def classify(self, status: Optional[int]) -> Outcome:
        """``None`` stands for no answer at all: a network error or a timeout."""
        if status is None:
            return Outcome.RETRY
        if 200 <= status < 300:
            return Outcome.DELIVERED
        if status in self.drop_statuses:
            return Outcome.DROP
        if status in self.retry_statuses or status >= 500:
            return Outcome.RETRY
        return Outcome.DROP

    def backoff(self, retry_number: int, draw: Callable[[], float] = random.random) -> float:
        """Delay before retry ``retry_number`` (1 for the first retry)."""
        exponent = min(max(0, retry_number - 1), 64)  # 2.0 ** 1000 would overflow
        base = min(self.max_backoff, self.initial_backoff * self.multiplier**exponent)
        return base * (1.0 - self.jitter * draw())

    def delay(
        self,
        retry_number: int,
        retry_after: Optional[str],
        now: float,
        draw: Callable[[], float] = random.random,
    ) -> float:
        """The wait before the next try: the server's ``Retry-After`` (capped) when it sent
        one we can read, otherwise our own backoff."""
        asked = parse_retry_after(retry_after, now)
        if asked is not None:
            return min(asked, self.max_retry_after)
        return self.backoff(retry_number, draw)

    def decide(
        self,
        *,
        status: Optional[int],
        outage: bool,
        answered_failures: int,
        retries: int,
        elapsed: float,
        retry_after: Optional[str],
        wall_now: float,
        draw: Callable[[], float] = random.random,
    ) -> Decision:
        """The decision after one attempt.

        ``outage``: no answer at all (not a TLS failure). ``answered_failures`` counts this
        attempt if it was one. ``retries``: retries made so far. ``elapsed``: seconds since
        the batch's first attempt.
        """
        outcome = self.classify(status)
        if outcome is Outcome.DELIVERED:
            return Decision(Outcome.DELIVERED)
        if outcome is Outcome.DROP:
            return Decision(Outcome.DROP, cause=Cause.REJECTED, why="not retryable")
        if not outage and answered_failures > self.max_retries:
            return Decision(
                Outcome.DROP,
                cause=Cause.RETRIES_EXHAUSTED,
                why=f"gave up after {retries} retries "
                f"(max_retries={self.max_retries} for answered failures)",
            )
        asked = None if outage else parse_retry_after(retry_after, wall_now)
        wait: Union[float, None] = None
        if asked is not None:
            wait = min(asked, self.max_retry_after)
        else:
            wait = self.backoff(retries + 1, draw)
        if elapsed + wait > self.deadline:
            return Decision(
                Outcome.DROP,
                cause=Cause.OUTAGE_DEADLINE if outage else Cause.RETRIES_EXHAUSTED,
                why=f"the next retry would pass the {self.deadline:g}s retry deadline",
            )
        return Decision(Outcome.RETRY, delay=wait, server_asked=asked is not None)
