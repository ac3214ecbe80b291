"""One immutable retry policy: what to do with an answer, and how long to wait.

Like urllib3's ``Retry`` it is a value, not a state machine; unlike it, the decision and
the delay are pure functions of their inputs (attempt number, status, header, a random
draw and the clock), so the worker's retry loop can be tested with a fake clock.
"""

from __future__ import annotations

import email.utils
import enum
import math
import random
from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ["Outcome", "RetryPolicy", "classify", "parse_retry_after"]


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DROP = "drop"


# 501 Not Implemented and 505 HTTP Version Not Supported will not change on a retry.
_NEVER_RETRY_5XX = frozenset({501, 505})
# 408 timeout, 410 gone-for-now (as analytics-node reads it), 429 rate limit, 460 client closed.
_RETRY_4XX = frozenset({408, 410, 429, 460})


def classify(status: Optional[int]) -> Outcome:
    """``None`` stands for no answer at all: a network error or a timeout."""
    if status is None:
        return Outcome.RETRY
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status >= 500:
        return Outcome.DROP if status in _NEVER_RETRY_5XX else Outcome.RETRY
    if status in _RETRY_4XX:
        return Outcome.RETRY
    return Outcome.DROP


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
        seconds = when.timestamp() - now
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

    def backoff(self, retry_number: int, draw: Callable[[], float] = random.random) -> float:
        """Delay before retry ``retry_number`` (1 for the first retry)."""
        base = min(
            self.max_backoff, self.initial_backoff * self.multiplier ** max(0, retry_number - 1)
        )
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
