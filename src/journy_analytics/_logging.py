"""The ``journy_analytics`` logger, and a rate limit for lines that can repeat.

A problem is logged the first time it happens, then at most once per ``every`` seconds
with how many times it happened meanwhile: a broken key or a dead server must not write a
line per batch. Records carry no prefix of ours: the logger's name is the prefix.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, Tuple

__all__ = ["RateLimitedLog", "logger"]

# No NullHandler on purpose: an app that configured no logging still sees our warnings
# (Python's last-resort handler prints WARNING and above to stderr). Losses are never
# silent, even there.
logger = logging.getLogger("journy_analytics")


class RateLimitedLog:
    def __init__(self, every: float = 30.0) -> None:
        self._every = every
        self._lock = threading.Lock()
        # key -> (last time logged, occurrences since)
        self._seen: Dict[str, Tuple[float, int]] = {}

    def log(self, key: str, level: int, message: str, *args: Any) -> bool:
        """Log ``message`` for ``key`` now, or count it for the next line. True if logged."""
        now = time.monotonic()
        with self._lock:
            last, skipped = self._seen.get(key, (-1e18, 0))
            if now - last < self._every:
                self._seen[key] = (last, skipped + 1)
                return False
            self._seen[key] = (now, 0)
        if skipped:
            message += " (%d more like this in the last %.0f s)"
            args = (*args, skipped, now - last)
        logger.log(level, message, *args)
        return True
