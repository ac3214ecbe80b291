"""Who may call the collector's REST API, and how often: API keys, permissions, rate limit.

Pure Python, no aiohttp: the rules are tested directly.
"""

from __future__ import annotations

import collections
import math
import re
import time
from typing import Callable, Deque, Iterable, NamedTuple, Optional

__all__ = [
    "DEFAULT_API_RATE_LIMIT",
    "OPERATION_PERMISSIONS",
    "PERMISSIONS",
    "ApiKey",
    "ApiKeys",
    "RateLimit",
    "RateLimiter",
    "parse_api_key",
    "parse_rate_limit",
]

# The permission names of journy.io's OpenAPI document (its ``x-key-permissions``).
PERMISSIONS = ("TrackData", "ReadEvents", "ReadProperties", "ReadSegments", "GetTrackingSnippet")

# (method, path) -> the permission the document's ``x-key-permissions`` names for it.
# ``GET /validate`` names none: any enabled key may ask what it is allowed to do.
# tests/collector/test_rest_contract.py checks this table against the document itself.
OPERATION_PERMISSIONS: dict[tuple[str, str], Optional[str]] = {
    ("DELETE", "/accounts"): "TrackData",
    ("POST", "/accounts/upsert"): "TrackData",
    ("POST", "/accounts/users/add"): "TrackData",
    ("POST", "/accounts/users/remove"): "TrackData",
    ("GET", "/events"): "ReadEvents",
    ("POST", "/events"): "TrackData",
    ("POST", "/link"): "TrackData",
    ("GET", "/properties/accounts"): "ReadProperties",
    ("GET", "/properties/users"): "ReadProperties",
    ("GET", "/segments/accounts"): "ReadSegments",
    ("GET", "/segments/users"): "ReadSegments",
    ("POST", "/track"): "TrackData",
    ("GET", "/tracking/snippet"): "GetTrackingSnippet",
    ("DELETE", "/users"): "TrackData",
    ("POST", "/users/upsert"): "TrackData",
    ("GET", "/validate"): None,
}

# Written after a key instead of permissions: the key exists but is switched off (403).
DISABLED = "disabled"


class ApiKey(NamedTuple):
    """One key given with ``--api-key KEY[:perm,perm]``."""

    key: str
    permissions: tuple[str, ...]
    enabled: bool = True


def parse_api_key(spec: str) -> ApiKey:
    """``KEY`` (every permission), ``KEY:perm,perm``, ``KEY:`` (none) or ``KEY:disabled``.

    Raises ``ValueError`` naming the valid permissions when one is unknown.
    """
    key, colon, perms = spec.partition(":")
    if not key:
        raise ValueError(f"--api-key {spec!r}: the key before ':' is empty")
    if not colon:
        return ApiKey(key, PERMISSIONS)
    names = [p.strip() for p in perms.split(",") if p.strip()]
    if names == [DISABLED]:
        return ApiKey(key, (), enabled=False)
    unknown = [p for p in names if p not in PERMISSIONS]
    if unknown:
        raise ValueError(
            f"--api-key: unknown permission {unknown[0]!r}; use {', '.join(PERMISSIONS)} "
            f"(comma-separated), or '{DISABLED}' for a key that is switched off"
        )
    return ApiKey(key, tuple(dict.fromkeys(names)))


class ApiKeys:
    """The accepted keys; with none given, any non-empty key has every permission."""

    def __init__(self, keys: Optional[Iterable[ApiKey]] = None) -> None:
        self._keys = None if keys is None else {k.key: k for k in keys}

    @property
    def restricted(self) -> bool:
        return self._keys is not None

    def __len__(self) -> int:
        return len(self._keys or ())

    def find(self, key: Optional[str]) -> Optional[ApiKey]:
        if not key:
            return None
        if self._keys is None:
            return ApiKey(key, PERMISSIONS)
        return self._keys.get(key)


class RateLimit(NamedTuple):
    """At most ``limit`` requests per key in any ``window`` seconds (a sliding window)."""

    limit: int
    window: float

    def __str__(self) -> str:
        return f"{self.limit}/{'s' if self.window == 1 else 'min'}"


# journy.io's documented limit: 1800 requests a minute per key.
DEFAULT_API_RATE_LIMIT = RateLimit(1800, 60.0)

_RATE = re.compile(r"^\s*(\d+)\s*(?:/\s*(s|sec|second|m|min|minute))?\s*$", re.IGNORECASE)


def parse_rate_limit(text: str) -> RateLimit:
    """``N`` or ``N/min`` (per minute, as journy.io counts) or ``N/s`` (per second)."""
    match = _RATE.match(text)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(
            f"--api-rate-limit {text!r}: expected N/min (journy.io's window) or N/s, "
            "with N >= 1, e.g. 1800/min"
        )
    unit = (match.group(2) or "min").lower()
    return RateLimit(int(match.group(1)), 1.0 if unit.startswith("s") else 60.0)


class Verdict(NamedTuple):
    allowed: bool
    remaining: int
    retry_after: int  # whole seconds until a request would be allowed; 0 when allowed


class RateLimiter:
    """A sliding-window log per key: the times of the requests of the last window.

    Only the event loop thread calls it, so it needs no lock.
    """

    def __init__(self, rate: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._log: dict[str, Deque[float]] = {}

    def _window(self, key: str, now: float) -> Deque[float]:
        log = self._log.get(key)
        if log is None:
            if len(self._log) > 10_000:  # any key is accepted without --api-key: stay small
                self._log = {
                    k: v for k, v in self._log.items() if v and v[-1] > now - self.rate.window
                }
            log = self._log[key] = collections.deque()
        horizon = now - self.rate.window
        while log and log[0] <= horizon:
            log.popleft()
        return log

    def take(self, key: str) -> Verdict:
        """Count one request of ``key`` if the window allows it."""
        now = self._clock()
        log = self._window(key, now)
        if len(log) >= self.rate.limit:
            wait = log[0] + self.rate.window - now
            return Verdict(False, 0, max(1, math.ceil(wait)))
        log.append(now)
        return Verdict(True, self.rate.limit - len(log), 0)

    def remaining(self, key: Optional[str]) -> int:
        """What is left for ``key`` without counting a request (for answers like 401)."""
        if not key or key not in self._log:
            return self.rate.limit
        return max(0, self.rate.limit - len(self._window(key, self._clock())))
