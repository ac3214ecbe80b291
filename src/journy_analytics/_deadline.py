"""Deadlines: one per flush or close, on ``time.monotonic()``."""

from __future__ import annotations

import time
from typing import Optional, overload

__all__ = ["remaining"]


@overload
def remaining(deadline: Optional[float]) -> Optional[float]: ...


@overload
def remaining(deadline: Optional[float], cap: float) -> float: ...


def remaining(deadline: Optional[float], cap: Optional[float] = None) -> Optional[float]:
    """Seconds left until ``deadline`` (never below 0); None when there is no deadline.
    With ``cap``: at most ``cap``, and ``cap`` when there is no deadline."""
    if deadline is None:
        return cap
    left = max(0.0, deadline - time.monotonic())
    return left if cap is None else min(cap, left)
