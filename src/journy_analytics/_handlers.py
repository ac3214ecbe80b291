"""A tiny event emitter: handlers are snapshotted on emit, so on/off never race an emit."""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, FrozenSet, Tuple

from journy_analytics._lifecycle import user_code
from journy_analytics._logging import logger
from journy_analytics._types import EVENT_TYPES

__all__ = ["EVENT_NAMES", "Emitter", "Handler"]


Handler = Callable[..., Any]

EVENT_NAMES = frozenset(
    {"error", "http_request", "http_response", "drained", "call_after_close", *EVENT_TYPES}
)


class Emitter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Tuples are replaced, never mutated: emit reads one without a lock.
        self._handlers: Dict[str, Tuple[Handler, ...]] = {}

    def on(self, name: str, handler: Handler) -> None:
        self._check(name, handler)
        with self._lock:
            self._handlers[name] = (*self._handlers.get(name, ()), handler)

    def once(self, name: str, handler: Handler) -> None:
        self._check(name, handler)
        fired = threading.Lock()

        def wrapper(*args: Any) -> None:
            if fired.acquire(blocking=False):
                self.off(name, wrapper)
                handler(*args)

        wrapper.__wrapped__ = handler  # type: ignore[attr-defined]
        self.on(name, wrapper)

    def off(self, name: str, handler: Handler) -> None:
        with self._lock:
            current = self._handlers.get(name, ())
            kept = tuple(
                h
                for h in current
                if h is not handler and getattr(h, "__wrapped__", None) is not handler
            )
            if kept:
                self._handlers[name] = kept
            else:
                self._handlers.pop(name, None)

    def has(self, name: str) -> bool:
        return name in self._handlers

    def has_any(self, names: FrozenSet[str]) -> bool:
        """One set test for a group of names (a batch asks for the six event types)."""
        return not names.isdisjoint(self._handlers)

    def emit(self, name: str, *args: Any) -> None:
        handlers = self._handlers.get(name)
        if not handlers:
            return
        with user_code:  # handlers run with a normal thread's signal mask (see _threads)
            for handler in handlers:
                try:
                    handler(*args)
                except BaseException:
                    # A user's handler must never take the worker down with it, even by
                    # raising SystemExit: the accounting around it must go on.
                    logger.exception("a %r handler raised; carrying on", name)

    @staticmethod
    def _check(name: str, handler: Handler) -> None:
        if name not in EVENT_NAMES:
            raise ValueError(
                f"unknown event name {name!r}; expected one of {', '.join(sorted(EVENT_NAMES))}"
            )
        if not callable(handler):
            raise TypeError(f"handler for {name!r} must be callable, not {type(handler).__name__}")
