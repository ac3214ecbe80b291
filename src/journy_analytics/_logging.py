"""The ``journy_analytics`` logger, and a rate limit for lines that can repeat.

A problem is logged the first time it happens, then at most once per ``every`` seconds
with how many times it happened meanwhile: a broken key or a dead server must not write a
line per batch. Records carry no prefix of ours: the logger's name is the prefix.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Dict, Tuple

__all__ = ["RateLimit", "RateLimitedLog", "logger"]

# No NullHandler on purpose: an app that configured no logging still sees our warnings
# (Python's last-resort handler prints WARNING and above to stderr). Losses are never
# silent, even there.
logger = logging.getLogger("journy_analytics")


class RateLimit:
    """When a problem that repeats may be logged: the first time, then at most once per
    ``every`` seconds. The one definition of that rule; the line's words are the caller's."""

    def __init__(self, every: float) -> None:
        self._every = every
        self._lock = threading.Lock()
        # key -> (last time logged, occurrences since, occurrences in all)
        self._seen: Dict[str, Tuple[float, int, int]] = {}

    def check(self, key: str = "") -> Tuple[bool, int, int, float]:
        """Count one occurrence of ``key``: (log it now, how many were held back since the
        last line, how many in all, seconds since the last line)."""
        now = time.monotonic()
        with self._lock:
            last, since, total = self._seen.get(key, (-math.inf, 0, 0))
            total += 1
            if now - last < self._every:
                self._seen[key] = (last, since + 1, total)
                return False, since + 1, total, now - last
            self._seen[key] = (now, 0, total)
        return True, since, total, now - last


class RateLimitedLog:
    """Lines of the ``journy_analytics`` logger under a :class:`RateLimit`."""

    def __init__(self, every: float = 30.0) -> None:
        self._limit = RateLimit(every)

    def log(self, key: str, level: int, message: str, *args: Any) -> bool:
        """Log ``message`` for ``key`` now, or count it for the next line. True if logged."""
        log_now, skipped, _, elapsed = self._limit.check(key)
        if not log_now:
            return False
        if skipped:
            message += " (%d more like this in the last %.0f s)"
            args = (*args, skipped, elapsed)
        logger.log(level, message, *args)
        return True

    def warning(self, message: str, *args: Any) -> None:
        """One kind of problem: a WARNING line now and then, with how many so far."""
        log_now, _, total, _ = self._limit.check()
        if log_now:
            logger.warning(message + " (%d time(s) so far)", *args, total)
