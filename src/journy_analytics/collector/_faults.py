"""Fault injection settings and the per-request decision made from them."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["Decision", "FaultInjector", "Faults"]

_RESET_WHEN = ("before", "after")


@dataclass(frozen=True)
class Faults:
    """How the collector misbehaves on ingest requests. The default is no fault at all.

    Faults apply to the ingest endpoints only (never to ``/api/...``), in this order:
    ``latency_ms`` (every request waits), ``rate_limit`` (beyond ``rate_limit`` requests
    in the current one-second window: ``429`` with ``Retry-After: <retry_after>``), then
    one random draw per request picks at most one of:

    - ``fail_rate``: answer ``fail_status`` without storing;
    - ``retry_after_rate``: answer ``429`` with ``Retry-After: <retry_after>`` (seconds)
      without storing;
    - ``reset_rate``: close the connection without any answer.

    Each rate is the fraction of all (not rate-limited) requests that get that fault, so
    ``Faults(fail_rate=0.3, retry_after_rate=0.1, reset_rate=0.05)`` answers 30% of
    requests 500, 10% 429 and resets 5%, and accepts the other 55%. Should the rates add
    up to more than 1, the later kinds in that list get only what is left.

    ``reset_when`` says whether a reset happens ``"after"`` the batch was stored (the
    client sees a failure although the server accepted the batch, so its retry produces
    duplicates that the collector deduplicates by ``messageId``) or ``"before"`` (nothing
    stored). ``seed`` makes the random draws repeatable.
    """

    fail_rate: float = 0.0
    fail_status: int = 500
    rate_limit: Optional[int] = None
    latency_ms: float = 0.0
    reset_rate: float = 0.0
    reset_when: str = "after"
    seed: Optional[int] = None
    retry_after_rate: float = 0.0
    retry_after: int = 1

    def __post_init__(self) -> None:
        for name in ("fail_rate", "reset_rate", "retry_after_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number between 0 and 1")
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if isinstance(self.fail_status, bool) or not isinstance(self.fail_status, int):
            raise ValueError("fail_status must be an int")
        if not 400 <= self.fail_status <= 599:
            raise ValueError(f"fail_status must be a 4xx or 5xx status, got {self.fail_status}")
        if self.rate_limit is not None and (
            isinstance(self.rate_limit, bool)
            or not isinstance(self.rate_limit, int)
            or self.rate_limit < 0
        ):
            raise ValueError("rate_limit must be a non-negative int (requests per second) or None")
        if (
            isinstance(self.retry_after, bool)
            or not isinstance(self.retry_after, int)
            or self.retry_after < 0
        ):
            raise ValueError("retry_after must be a non-negative int (seconds)")
        if isinstance(self.latency_ms, bool) or not isinstance(self.latency_ms, (int, float)):
            raise ValueError("latency_ms must be a number")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.reset_when not in _RESET_WHEN:
            raise ValueError(f"reset_when must be one of {_RESET_WHEN}, got {self.reset_when!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError("seed must be an int or None")

    @property
    def active(self) -> bool:
        """True when at least one fault is switched on."""
        return bool(
            self.fail_rate
            or self.rate_limit
            or self.latency_ms
            or self.reset_rate
            or self.retry_after_rate
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Faults:
        """A copy with ``changes`` applied (unknown names raise ``ValueError``)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Decision:
    """What to do with one ingest request."""

    delay: float = 0.0
    rate_limited: bool = False
    retry_after: int = 1  # the Retry-After of a rate-limited answer, in seconds
    fail_status: Optional[int] = None
    reset: bool = False
    reset_after_store: bool = True


class FaultInjector:
    """Thread-safe holder of the current ``Faults`` and its seeded random source."""

    def __init__(self, faults: Optional[Faults] = None) -> None:
        self._lock = threading.Lock()
        self._faults = faults or Faults()
        self._random = random.Random(self._faults.seed)
        self._window = 0
        self._window_count = 0

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def set(self, faults: Faults) -> None:
        with self._lock:
            self._faults = faults
            # A new seed must restart the sequence, otherwise a test cannot replay it.
            self._random = random.Random(faults.seed)
            self._window_count = 0

    def decide(self) -> Decision:
        with self._lock:
            f = self._faults
            if not f.active:
                return Decision()
            if f.rate_limit:
                window = int(time.monotonic())
                if window != self._window:
                    self._window = window
                    self._window_count = 0
                self._window_count += 1
                if self._window_count > f.rate_limit:
                    return Decision(
                        delay=f.latency_ms / 1000.0,
                        rate_limited=True,
                        retry_after=f.retry_after,
                    )
            # One draw per request, whatever the settings, so that a seed replays the same
            # sequence and each rate is exactly the fraction of requests it names.
            draw = self._random.random()
            delay = f.latency_ms / 1000.0
            if draw < f.fail_rate:
                return Decision(delay=delay, fail_status=f.fail_status)
            draw -= f.fail_rate
            if draw < f.retry_after_rate:
                return Decision(delay=delay, rate_limited=True, retry_after=f.retry_after)
            draw -= f.retry_after_rate
            if draw < f.reset_rate:
                return Decision(delay=delay, reset=True, reset_after_store=f.reset_when == "after")
            return Decision(delay=delay)
