"""Pacing from journy.io's rate-limit headers, so that a bulk job never trips the limit.

journy.io allows a number of requests per sliding window (1,800 a minute by default) and
says on every answer how many are left (``X-RateLimit-Limit``, ``X-RateLimit-Remaining``);
it blocks keys that "consistently hit" the limit. So a 429 is not a plan: the client
keeps ``reserve`` requests of every window unused and waits before it would spend them.

Two estimates, the stricter wins:

* our own: the send times of our requests in the last ``window`` seconds. When our
  budget is spent, the wait is until our oldest request leaves the window;
* the server's: the last ``Remaining`` seen, minus the requests we sent after the one it
  answered (other processes on the same key are counted by the server, not by us). In
  the reserve, one request per ``window / (reserve + 1)``; at zero, until one window
  after that answer.

A 429 pauses every caller of the client (``pause``). One instance serves every thread
of a client; the lock is held for arithmetic only, never across a wait.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import Callable, Deque, Optional

__all__ = ["Pacer"]


class Pacer:
    def __init__(
        self,
        *,
        window: float = 60.0,
        reserve_fraction: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.window = window
        self._reserve_fraction = reserve_fraction
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.limit: Optional[int] = None
        self._remaining: Optional[int] = None
        self._observed_seq = -1  # the request whose answer set _remaining
        self._next_seq = 0
        self._sends: Deque[float] = collections.deque()
        self._paused_until = 0.0
        self._last_sent = -math.inf
        self._observed_at = -math.inf
        self.waited = 0.0  # seconds spent waiting in acquire, for stats and tests

    def reserve(self) -> int:
        if self.limit is None:
            return 0
        return max(1, math.ceil(self.limit * self._reserve_fraction))

    def acquire(self) -> int:
        """Wait until a request may go; returns its sequence number for ``observe``."""
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait(now)
                if wait <= 0:
                    seq = self._next_seq
                    self._next_seq += 1
                    self._sends.append(now)
                    self._last_sent = now
                    return seq
            self.waited += wait
            self._sleep(wait)

    def _wait(self, now: float) -> float:
        if now < self._paused_until:
            return self._paused_until - now
        limit = self.limit
        if limit is None:
            return 0.0
        sends = self._sends
        while sends and sends[0] <= now - self.window:
            sends.popleft()
        budget = max(1, limit - self.reserve())
        if len(sends) >= budget:
            # Our own requests fill the budget: the next may go when the oldest leaves.
            return sends[len(sends) - budget] + self.window - now
        if self._remaining is not None:
            left = self._remaining - (self._next_seq - self._observed_seq - 1)
            if left <= 0:
                # The server's window was full when it answered, with requests we do not
                # know of (another process on the key): all of them have left it one
                # window after that answer.
                until = self._observed_at + self.window
                if now < until:
                    return until - now
            elif left <= self.reserve():
                # Into the reserve: at most one request per window / (reserve + 1), each
                # answer bringing a newer figure (full speed again once it rises).
                due = self._last_sent + self.window / (self.reserve() + 1)
                if now < due:
                    return due - now
        return 0.0

    def observe(self, seq: int, limit: Optional[str], remaining: Optional[str]) -> None:
        """An answer to request ``seq`` came with these header values (either may be None)."""
        parsed_limit = _count(limit)
        parsed_remaining = _count(remaining)
        with self._lock:
            if parsed_limit is not None and parsed_limit > 0:
                self.limit = parsed_limit
            if parsed_remaining is not None and seq >= self._observed_seq:
                self._remaining = parsed_remaining
                self._observed_seq = seq
                self._observed_at = self._clock()

    def pause(self, seconds: float) -> None:
        """The server said 429: nobody sends for ``seconds``."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def until_window_allows(self) -> float:
        """A 429 without Retry-After: until our oldest request in the window leaves it, or
        one steady-rate step when we know of none."""
        with self._lock:
            now = self._clock()
            sends = self._sends
            while sends and sends[0] <= now - self.window:
                sends.popleft()
            if self.limit and len(sends) >= self.limit:
                return max(0.0, sends[0] + self.window - now)
            return self.window / self.limit if self.limit else 1.0


def _count(value: Optional[str]) -> Optional[int]:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None
