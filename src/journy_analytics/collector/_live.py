"""The inspector's live stream: wakes each open page when events are stored.

A page never gets one message per event. Ingest only sets a flag (``notify``); each
stream, once woken, waits until ``PUSH_INTERVAL`` has passed since its last push and then
asks the store for what is new, at most ``LIVE_ROWS`` summaries and a count. So with a
page open the store answers at most a few small queries a second, whatever the ingest
rate, and the SDK's throughput barely moves (docs/collector.md has the measurement).
"""

from __future__ import annotations

import asyncio

__all__ = ["HEARTBEAT", "LIVE_ROWS", "PUSH_INTERVAL", "LiveFeed"]

PUSH_INTERVAL = 0.75  # seconds between two pushes to one page: new rows show within a second
LIVE_ROWS = 50  # summaries per push; the rest of a burst is only counted
HEARTBEAT = 15.0  # seconds of silence before a comment line keeps proxies from timing out


class LiveFeed:
    """Wake-ups for the open streams of one running server (event loop thread only)."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Event] = set()
        self.closed = False

    def subscribe(self) -> asyncio.Event:
        wake = asyncio.Event()
        self._waiters.add(wake)
        return wake

    def unsubscribe(self, wake: asyncio.Event) -> None:
        self._waiters.discard(wake)

    def notify(self) -> None:
        for wake in self._waiters:
            wake.set()

    def close(self) -> None:
        """The server is stopping: every stream ends."""
        self.closed = True
        self.notify()
