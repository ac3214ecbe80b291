"""The plugin chain behind ``Analytics.register()`` / ``deregister()`` (contract: docs/plugins.md).

Order: every ``before`` plugin, then every ``enrichment`` plugin, each kind in the order it
was registered, run in the caller's thread on the event dict before it is encoded. A
``destination`` gets the final event (decoded from the very bytes queued for journy.io) on
the chain's own thread through its own bounded queue, so a slow or stuck destination never
slows a call nor delays delivery to journy.io.

The client holds a chain only while at least one plugin is registered: with none, the
event path is exactly what it was (one ``is not None`` test).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import orjson

from journy_analytics._exceptions import DeliveryError, ValidationError
from journy_analytics._handlers import Emitter
from journy_analytics._lifecycle import fork as _fork
from journy_analytics._lifecycle import signal_free, user_code
from journy_analytics._logging import RateLimit, logger
from journy_analytics._types import EVENT_TYPES

__all__ = ["DESTINATION_QUEUE_SIZE", "PLUGIN_TYPES", "PluginChain"]


PLUGIN_TYPES = ("before", "enrichment", "destination")
# Top-level containers of an event that a plugin may change in place: the chain hands it
# copies, so the caller's own dicts are never changed behind its back.
_OWN_COPIES = ("properties", "traits", "context", "integrations")
DESTINATION_QUEUE_SIZE = 10_000
_REPORT_EVERY = 10.0

Handler = Callable[[Dict[str, Any]], Any]


class _Entry:
    __slots__ = ("handlers", "kind", "name", "plugin")

    def __init__(self, plugin: Any) -> None:
        name = getattr(plugin, "name", None)
        kind = getattr(plugin, "type", None)
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"a plugin needs a non-empty str attribute 'name' ({type(plugin).__name__} has "
                f"{name!r})"
            )
        if kind not in PLUGIN_TYPES:
            raise ValueError(
                f"plugin {name!r} has type={kind!r}; it must be one of {', '.join(PLUGIN_TYPES)}"
            )
        default = getattr(plugin, "process", None)
        handlers: Dict[str, Handler] = {}
        for event_type in EVENT_TYPES:
            method = getattr(plugin, event_type, None)
            if callable(method):
                handlers[event_type] = method
            elif callable(default):
                handlers[event_type] = default
        if not handlers:
            raise ValueError(
                f"plugin {name!r} handles no event: give it a process(event) method, or "
                f"methods named after event types ({', '.join(EVENT_TYPES)})"
            )
        self.plugin = plugin
        self.name = name
        self.kind: str = kind
        self.handlers = handlers


class PluginChain:
    """Owns the registered plugins, their counters and the destination thread."""

    def __init__(self, emitter: Emitter) -> None:
        self._emitter = emitter
        self._lock = threading.Lock()
        # Replaced, never mutated: run() reads one snapshot without a lock.
        self._entries: Tuple[_Entry, ...] = ()
        self._in_thread: Tuple[_Entry, ...] = ()
        self._destinations: Tuple[_Entry, ...] = ()
        self._local = threading.local()
        self._limiter = RateLimit(_REPORT_EVERY)
        self._dropped: Dict[str, int] = {}
        self._errors: Dict[str, int] = {}
        self._dispatcher = _DestinationDispatcher(self)

    def _after_fork(self) -> None:
        # Another thread may have held these at the fork; in the child it never releases them.
        self._lock = threading.Lock()
        self._limiter = RateLimit(_REPORT_EVERY)

    # -- registry --------------------------------------------------------------------------

    def register(self, plugins: Tuple[Any, ...], owner: Any) -> None:
        entries = [_Entry(p) for p in plugins]
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise ValueError(f"plugin names must be unique; got {names}")
        with self._lock:
            taken = {e.name for e in self._entries}.intersection(names)
            if taken:
                raise ValueError(
                    f"a plugin named {sorted(taken)[0]!r} is already registered; "
                    "deregister it first or give the new one another name"
                )
            for entry in entries:
                load = getattr(entry.plugin, "load", None)
                if callable(load):
                    load(owner)
            self._set(self._entries + tuple(entries))

    def deregister(self, name: str) -> Any:
        with self._lock:
            found = [e for e in self._entries if e.name == name]
            if not found:
                raise KeyError(
                    f"no plugin named {name!r} is registered "
                    f"(registered: {', '.join(e.name for e in self._entries) or 'none'})"
                )
            self._set(tuple(e for e in self._entries if e.name != name))
        entry = found[0]
        if entry.kind == "destination":
            # Events already handed to it are still delivered before it is unloaded.
            self._dispatcher.drain(timeout=5.0)
        self._unload(entry)
        return entry.plugin

    def _set(self, entries: Tuple[_Entry, ...]) -> None:
        self._entries = entries
        self._in_thread = tuple(e for e in entries if e.kind == "before") + tuple(
            e for e in entries if e.kind == "enrichment"
        )
        self._destinations = tuple(e for e in entries if e.kind == "destination")

    @property
    def empty(self) -> bool:
        return not self._entries

    def names(self) -> List[str]:
        return [e.name for e in self._entries]

    # -- the caller's thread ---------------------------------------------------------------

    def run(self, event: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """``before`` then ``enrichment`` plugins; the event to encode, or None if dropped."""
        entries = self._in_thread
        if entries:
            event = dict(event)
            for key in _OWN_COPIES:
                value = event.get(key)
                if type(value) is dict:
                    event[key] = dict(value)
        for entry in entries:
            handler = entry.handlers.get(event.get("type", ""))
            if handler is None:
                continue
            try:
                result = handler(event)
            except ValidationError:
                # A value the encoder cannot send (Redact reads the event in its JSON
                # form): the call raises, exactly as encoding it would have.
                self._local.final = None
                raise
            except Exception as exc:
                if entry.kind == "before":
                    # A before plugin is a gate (redaction, consent, sampling): when it
                    # fails, sending the event unfiltered could leak what it should stop.
                    self._count(self._errors, entry.name)
                    self._report(entry, exc, event, "the event was dropped")
                    self._local.final = None
                    return None
                self._count(self._errors, entry.name)
                self._report(entry, exc, event, "the event went on without this plugin")
                continue
            if result is None:
                self._count(self._dropped, entry.name)
                self._local.final = None
                return None
            if type(result) is not dict:
                if isinstance(result, Mapping):
                    result = dict(result)
                else:
                    self._count(self._errors, entry.name)
                    error = TypeError(
                        f"returned {type(result).__name__}; return the event dict or None"
                    )
                    if entry.kind == "before":
                        self._report(entry, error, event, "the event was dropped")
                        self._local.final = None
                        return None
                    self._report(entry, error, event, "the event went on without this plugin")
                    continue
            event = result
        self._local.final = event
        return event

    def last_final(self) -> Optional[Dict[str, Any]]:
        """What ``run`` last returned in this thread (used by the Segment-compatible API,
        whose calls return the event as queued)."""
        final: Optional[Dict[str, Any]] = getattr(self._local, "final", None)
        return final

    def deliver(self, data: bytes) -> None:
        """Hand the encoded event to the destinations; never blocks."""
        if self._destinations:
            self._dispatcher.put(data)

    # -- reporting and figures ---------------------------------------------------------------

    def _count(self, table: Dict[str, int], name: str) -> None:
        with self._lock:
            table[name] = table.get(name, 0) + 1

    def _report(self, entry: _Entry, exc: BaseException, event: Any, fate: str) -> None:
        log, suppressed, _, _ = self._limiter.check(entry.name)
        reason = f"plugin {entry.name!r} ({entry.kind}) raised {type(exc).__name__}: {exc}; {fate}"
        if log:
            more = (
                f" ({suppressed} more such failure(s) since the last report)" if suppressed else ""
            )
            logger.error("journy_analytics: %s%s", reason, more, exc_info=exc)
        snapshot = event if isinstance(event, dict) else {}
        self._emitter.emit(
            "error", DeliveryError("plugin", reason, [snapshot], code="plugin_error")
        )

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            dropped = dict(self._dropped)
            errors = dict(self._errors)
        return {
            "registered": self.names(),
            "dropped_by": dropped,
            "errors": errors,
            "destination_queue": self._dispatcher.queued(),
            "destination_dropped": self._dispatcher.overflow,
        }

    def dropped_total(self) -> int:
        with self._lock:
            return sum(self._dropped.values())

    # -- lifecycle -------------------------------------------------------------------------

    def flush(self, timeout: Optional[float]) -> bool:
        return self._dispatcher.drain(timeout)

    def close(self, timeout: Optional[float]) -> bool:
        drained = self._dispatcher.drain(timeout)
        self._dispatcher.stop()
        with self._lock:
            entries, self._entries = self._entries, ()
            self._set(())
        for entry in entries:
            self._unload(entry)
        return drained

    def _unload(self, entry: _Entry) -> None:
        unload = getattr(entry.plugin, "unload", None)
        if callable(unload):
            try:
                unload()
            except Exception:
                logger.exception("journy_analytics: plugin %r raised in unload()", entry.name)

    # -- called on the destination thread ----------------------------------------------------

    def _run_destinations(self, data: bytes) -> None:
        # Destinations are user code: a normal thread's signal mask (see _threads).
        with user_code:
            for entry in self._destinations:
                # Each destination decodes its own copy: one cannot change what the next sees.
                event = orjson.loads(data)
                handler = entry.handlers.get(event.get("type", ""))
                if handler is None:
                    continue
                try:
                    handler(event)
                except Exception as exc:
                    self._count(self._errors, entry.name)
                    self._report(entry, exc, event, "journy.io delivery is not affected")


_live: weakref.WeakSet[_DestinationDispatcher] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for dispatcher in list(_live):
        dispatcher.reset()
        dispatcher._chain._after_fork()


# Through _fork: it runs for a fork Python saw (os.register_at_fork) and for one it did not
# (noticed by flush, close, stats, the exit flush and the event methods).
_fork.register(_after_fork_in_child)


class _DestinationDispatcher:
    """One daemon thread, started on first use, draining a bounded queue of encoded events.

    When the queue is full the event is dropped for the destinations only (counted in
    ``stats()["plugins"]["destination_dropped"]``); journy.io still gets it.
    """

    def __init__(self, chain: PluginChain) -> None:
        self._chain = chain
        self._maxsize = DESTINATION_QUEUE_SIZE
        self.overflow = 0
        self._overflow_logged = 0.0
        self.reset()
        _live.add(self)

    def reset(self) -> None:
        """Fresh state: at start, and in a forked child (the parent's thread is not there,
        and its lock may have been held at the fork)."""
        self._pid = os.getpid()
        self._queue: Deque[bytes] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._busy = 0
        self._thread: Optional[threading.Thread] = None
        self._stopped = False

    def queued(self) -> int:
        return len(self._queue) + self._busy

    def put(self, data: bytes) -> None:
        if self._pid != os.getpid():
            self.reset()
        if self._stopped:
            return
        if len(self._queue) >= self._maxsize:
            self.overflow += 1
            now = time.monotonic()
            if now - self._overflow_logged >= _REPORT_EVERY:
                self._overflow_logged = now
                logger.warning(
                    "journy_analytics: destination plugins are %d event(s) behind; %d event(s) "
                    "skipped for them so far (journy.io still gets every one)",
                    self._maxsize,
                    self.overflow,
                )
            return
        self._queue.append(data)
        if self._thread is None:
            self._start()
        with self._cond:
            self._cond.notify()

    def _start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            thread = threading.Thread(
                target=signal_free(self._loop), name="journy-analytics-destinations", daemon=True
            )
            self._thread = thread
        thread.start()

    def _loop(self) -> None:
        q = self._queue
        while True:
            with self._cond:
                while not q and not self._stopped:
                    self._cond.wait()
                if not q and self._stopped:
                    self._cond.notify_all()
                    return
                data = q.popleft()
                self._busy += 1
            try:
                self._chain._run_destinations(data)
            except BaseException:  # pragma: no cover - a bug; never die silently
                logger.exception("journy_analytics: the destination thread failed")
            finally:
                with self._cond:
                    self._busy -= 1
                    if not q:
                        self._cond.notify_all()

    def drain(self, timeout: Optional[float]) -> bool:
        """Wait until every event handed over so far went through the destinations."""
        if self._thread is None or self._thread is threading.current_thread():
            return not self._queue
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._queue or self._busy:
                if deadline is None:
                    self._cond.wait(1.0)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
