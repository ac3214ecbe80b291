"""Built-in plugins for ``Analytics.register()`` (the contract is in docs/plugins.md).

    from journy_analytics.plugins import Redact, Sample, SuperProperties
    analytics.register(
        Redact(keys=["password"], patterns=[EMAIL]),
        Sample(0.25),
        SuperProperties(properties={"app_version": "4.2.0"}),
    )

A plugin of your own is any object with ``name``, ``type`` (``"before"``,
``"enrichment"`` or ``"destination"``) and a ``process(event)`` method (or methods named
after event types: ``track(event)``, ``identify(event)`` ...). Subclass :class:`Plugin`
for the defaults.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from typing import Any, Dict, Iterable, List, Optional, Pattern, Set, Tuple, Union

import orjson

from journy_analytics._message import wire_form

__all__ = [
    "EMAIL",
    "IPV4",
    "IPV6",
    "LogDestination",
    "OpenTelemetryContext",
    "Plugin",
    "Redact",
    "Sample",
    "SuperProperties",
]

Event = Dict[str, Any]

# Patterns for Redact(patterns=...): the common kinds of PII in free text.
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)"
    r"(?!\.?\d)"  # not part of a longer dotted number (a version like 1.2.3.4.5)
)
IPV6 = re.compile(
    r"(?<![\w:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}"  # full form
    r"|(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?::[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})"
    r"(?![\w:])"  # compressed (::), never a clock time like 10:30:00
)


class Plugin:
    """Base class: set ``name`` and ``type`` and override ``process`` (or per-type methods)."""

    name: str = ""
    type: str = "enrichment"

    def process(self, event: Event) -> Optional[Event]:
        return event


def _merge(defaults: Mapping[str, Any], explicit: Any) -> Dict[str, Any]:
    """``defaults`` under ``explicit``; nested dicts merge the same way, explicit winning.

    Walks the defaults (the plugin's few keys), not the caller's dict: this runs per call."""
    if type(explicit) is not dict and not isinstance(explicit, Mapping):
        return dict(defaults)
    merged = {**defaults, **explicit}
    for key, base in defaults.items():
        if type(base) is dict and key in explicit:
            value = explicit[key]
            if type(value) is dict or isinstance(value, Mapping):
                merged[key] = _merge(base, value)
    return merged


def _plain(value: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy with every nested mapping as a plain dict (what ``_merge`` looks for)."""
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in value.items()}


class SuperProperties(Plugin):
    """Adds ``properties`` (to track, page and screen events) and ``context`` (to every
    event) unless the call set the same key itself: explicit values win."""

    type = "enrichment"

    def __init__(
        self,
        properties: Optional[Mapping[str, Any]] = None,
        context: Optional[Mapping[str, Any]] = None,
        name: str = "super-properties",
    ) -> None:
        if properties is not None and not isinstance(properties, Mapping):
            raise TypeError("SuperProperties(properties=...) must be a dict")
        if context is not None and not isinstance(context, Mapping):
            raise TypeError("SuperProperties(context=...) must be a dict")
        self.name = name
        self.properties = _plain(properties or {})
        self.context = _plain(context or {})

    def process(self, event: Event) -> Event:
        if self.properties and event.get("type") in ("track", "page", "screen"):
            event["properties"] = _merge(self.properties, event.get("properties"))
        if self.context:
            event["context"] = _merge(self.context, event.get("context"))
        return event


class Sample(Plugin):
    """Keeps a ``rate`` fraction of events, decided by a stable hash of ``event[by]``.

    The same id is always in or always out, in every process and on every machine (the
    hash is BLAKE2b, not Python's per-process ``hash()``). An event without ``by`` falls
    back to its ``anonymousId``; an event with neither is kept.
    """

    type = "before"

    def __init__(self, rate: float, by: str = "userId", name: str = "sample") -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(f"Sample(rate={rate!r}): rate must be a number from 0 to 1")
        if not isinstance(by, str) or not by:
            raise ValueError("Sample(by=...) must name an event field, e.g. 'userId'")
        self.name = name
        self.rate = float(rate)
        self.by = by
        self._threshold = int(self.rate * 2**64)

    def keeps(self, value: Any) -> bool:
        digest = hashlib.blake2b(str(value).encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "big") < self._threshold

    def process(self, event: Event) -> Optional[Event]:
        value = event.get(self.by)
        if value is None:
            value = event.get("anonymousId")
            if value is None:
                return event
        return event if self.keeps(value) else None


PatternLike = Union[str, Pattern[str]]
_REDACTED_PARTS = ("traits", "properties", "context")
# A text whose matches keep re-forming (a replacement completing a match with what follows
# it) is masked whole after this many passes.
_MAX_PASSES = 8
_CLEAN_KEYS_KEPT = 4096


class Redact(Plugin):
    """Removes or masks PII in ``traits``, ``properties`` and ``context`` (at any depth).

    ``keys``: field names (case-insensitive) whose values are replaced by ``replacement``,
    or removed when ``replacement`` is None. ``patterns``: regexes (str or compiled, e.g.
    :data:`EMAIL`, :data:`IPV4`) whose matches inside strings, values and keys alike, are
    replaced by ``replacement`` (or by ``""`` when it is None).

    It works on those parts as they will be sent: their JSON form, as the encoder writes
    it (a dataclass is an object, a set a list, a ``str`` subclass such as ``Markup`` or
    ``SafeString`` a plain string, bytes text, a non-str key its text). So whatever the
    encoder can send, Redact sees; the caller's objects are never changed. A value the
    encoder refuses raises ``ValidationError`` from the call, as it does without Redact.
    """

    type = "before"

    def __init__(
        self,
        keys: Iterable[str] = (),
        patterns: Iterable[PatternLike] = (),
        replacement: Optional[str] = "[redacted]",
        name: str = "redact",
    ) -> None:
        if isinstance(keys, str) or isinstance(patterns, (str, re.Pattern)):
            raise TypeError("Redact(keys=..., patterns=...) take lists, e.g. keys=['email']")
        self.name = name
        self.keys = frozenset(k.lower() for k in keys)
        compiled: List[Pattern[str]] = []
        for p in patterns:
            if isinstance(p, str):
                try:
                    compiled.append(re.compile(p))
                except re.error as exc:
                    raise ValueError(f"Redact pattern {p!r} is not a valid regex: {exc}") from None
            elif isinstance(p, re.Pattern):
                compiled.append(p)
            else:
                raise TypeError(
                    f"Redact patterns must be str or re.Pattern, not {type(p).__name__}"
                )
        if not self.keys and not compiled:
            raise ValueError("Redact needs keys=[...] or patterns=[...] (or both)")
        self.patterns: Tuple[Pattern[str], ...] = tuple(compiled)
        self.replacement = replacement
        self._mask = "" if replacement is None else replacement
        # Keys no pattern matches: an app sends the same few keys again and again, and
        # looking each one up is cheaper than running every pattern over it per event.
        self._clean_keys: Set[str] = set()

    def process(self, event: Event) -> Event:
        parts = {part: event[part] for part in _REDACTED_PARTS if event.get(part)}
        if not parts:
            return event
        # One orjson round trip gives fresh plain containers: the walk below changes them
        # in place, and never meets a type the encoder would turn into something else.
        for part, value in wire_form(parts).items():
            event[part] = self._clean(value)
        return event

    def _clean(self, value: Any) -> Any:
        kind = type(value)
        if kind is str:
            return self._text(value) if self.patterns else value
        if kind is dict:
            return self._clean_dict(value)
        if kind is list:
            for index, item in enumerate(value):
                value[index] = self._clean(item)
        return value

    def _clean_dict(self, value: Dict[str, Any]) -> Dict[str, Any]:
        keys = self.keys
        redacted: List[str] = []
        renamed = False
        for key, item in value.items():
            if keys and key.lower() in keys:
                redacted.append(key)
                continue
            value[key] = self._clean(item)
            if self.patterns and not renamed and key not in self._clean_keys:
                renamed = self._text(key) != key
                if not renamed and len(self._clean_keys) < _CLEAN_KEYS_KEPT:
                    self._clean_keys.add(key)
        for key in redacted:
            if self.replacement is None:
                del value[key]
            else:
                value[key] = self.replacement
        if renamed:
            return {self._text(key): item for key, item in value.items()}
        return value

    def _text(self, text: str) -> str:
        mask = self._mask
        for _ in range(_MAX_PASSES):
            changed = False
            for pattern in self.patterns:
                new, count = pattern.subn(mask, text)
                if count and new != text:
                    text = new
                    changed = True
            if not changed:
                return text
        return mask


class OpenTelemetryContext(Plugin):
    """Adds the active OpenTelemetry span's ids to ``context`` as ``traceId`` (32 hex
    digits) and ``spanId`` (16), so an event can be found from a trace and back. Needs
    ``pip install 'journy-analytics[otel]'``. No active span: the event is unchanged."""

    type = "enrichment"

    def __init__(self, name: str = "opentelemetry") -> None:
        try:
            from opentelemetry import trace
        except ImportError:
            raise ImportError(
                "OpenTelemetryContext needs opentelemetry-api: pip install 'journy-analytics[otel]'"
            ) from None
        self.name = name
        self._current_span = trace.get_current_span

    def process(self, event: Event) -> Event:
        span_context = self._current_span().get_span_context()
        if not span_context.is_valid:
            return event
        context = event.get("context")
        context = dict(context) if isinstance(context, Mapping) else {}
        context.setdefault("traceId", format(span_context.trace_id, "032x"))
        context.setdefault("spanId", format(span_context.span_id, "016x"))
        event["context"] = context
        return event


class LogDestination(Plugin):
    """A destination writing each final event as one JSON line to ``logger`` (default:
    the ``journy_analytics.events`` logger) at ``level``."""

    type = "destination"

    def __init__(
        self,
        logger: Optional[logging.Logger] = None,
        level: int = logging.INFO,
        name: str = "log",
    ) -> None:
        self.name = name
        self.logger = logger or logging.getLogger("journy_analytics.events")
        self.level = level

    def process(self, event: Event) -> Event:
        if self.logger.isEnabledFor(self.level):
            self.logger.log(self.level, "%s", orjson.dumps(event).decode())
        return event
