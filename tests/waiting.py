"""One way for a test to wait for something to happen: poll a predicate, never a fixed
sleep, so a busy machine only makes the wait longer, never the test wrong."""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["wait_until"]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    """True as soon as ``predicate()`` holds; ``timeout`` is only an upper bound on the
    wait, after which the predicate gets one last look."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(step)
    return True
