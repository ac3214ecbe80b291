"""JSON encoding of one event, done once at call time.

The fast path hands the whole event to orjson. Only when orjson refuses a value do we
walk the structure in Python, so that the error can name the key path and so that the
values orjson cannot take natively get the documented conversions (see docs/encoding.md).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import math
import uuid
from collections.abc import Mapping
from typing import Any, Dict, List, Set

import orjson

from journy_analytics._errors import ValidationError

__all__ = ["MAX_BATCH_BYTES", "MAX_EVENT_BYTES", "encode_event", "to_jsonable"]

MAX_EVENT_BYTES = 32 * 1024
# journy.io (like Segment) accepts 500 KB per request; we keep a margin for the envelope.
MAX_BATCH_BYTES = 480 * 1024
MAX_DEPTH = 200
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1

# Naive datetimes are taken as UTC everywhere in this SDK; UTC is written with a Z.
_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


def _default(value: Any) -> Any:
    """What orjson cannot encode natively but we convert without a full walk."""
    if isinstance(value, decimal.Decimal):
        if value.is_finite():
            return float(value)
        return None
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError


def encode_event(event: Dict[str, Any]) -> bytes:
    """Encode one wire event; raise ValidationError naming the offending key path."""
    try:
        data = orjson.dumps(event, default=_default, option=_OPTIONS)
    except (orjson.JSONEncodeError, TypeError, RecursionError):
        data = orjson.dumps(to_jsonable(event, ""), option=_OPTIONS)
    if len(data) > MAX_EVENT_BYTES:
        raise ValidationError(
            f"the {event.get('type', 'event')} event is {len(data)} bytes once encoded; "
            f"journy.io accepts at most {MAX_EVENT_BYTES} bytes per event: send fewer or "
            "shorter traits/properties"
        )
    return data


def _key(key: Any, path: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, enum.Enum):
        key = key.value
        if isinstance(key, str):
            return key
    if key is None or isinstance(key, (bool, int, float)):
        # The same spelling json.dumps gives non-str keys.
        return {None: "null", True: "true", False: "false"}.get(key, str(key))  # type: ignore[arg-type]
    if isinstance(key, (uuid.UUID, _dt.date, _dt.time, decimal.Decimal)):
        return str(key)
    raise ValidationError(
        f"{_where(path)}has a key of type {type(key).__name__} ({key!r:.40}); "
        "JSON object keys must be strings: convert the key with str() first"
    )


def _where(path: str) -> str:
    return f"{path} " if path else ""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def to_jsonable(value: Any, path: str, _depth: int = 0, _seen: Set[int] | None = None) -> Any:
    """Convert ``value`` into plain JSON types, raising ValidationError with the key path."""
    if _depth > MAX_DEPTH:
        raise ValidationError(
            f"{_where(path)}is nested more than {MAX_DEPTH} levels deep; flatten it"
        )
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int) and not isinstance(value, enum.Enum):
        if _INT64_MIN <= value <= _UINT64_MAX:
            return int(value)
        # Beyond 64 bits JSON parsers disagree; a decimal string keeps every digit.
        return str(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, path, _depth + 1, _seen)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    seen = _seen if _seen is not None else set()
    if isinstance(value, Mapping):
        return _container(value, path, _depth, seen, mapping=True)
    if isinstance(value, (list, tuple, set, frozenset)):
        return _container(value, path, _depth, seen, mapping=False)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _container(fields, path, _depth, seen, mapping=True)
    raise ValidationError(
        f"{_where(path) or 'a value '}is a {type(value).__name__}, which has no JSON form; "
        "convert it to a str, number, bool, None, list or dict before sending"
    )


def _container(value: Any, path: str, depth: int, seen: Set[int], *, mapping: bool) -> Any:
    marker = id(value)
    if marker in seen:
        raise ValidationError(
            f"{_where(path)}contains itself (a cyclic reference); events must be trees"
        )
    seen.add(marker)
    try:
        if mapping:
            out: Dict[str, Any] = {}
            for k, v in value.items():
                name = _key(k, path)
                out[name] = to_jsonable(v, _join(path, name), depth + 1, seen)
            return out
        items: List[Any] = []
        for i, v in enumerate(value):
            items.append(to_jsonable(v, f"{path}[{i}]", depth + 1, seen))
        return items
    finally:
        seen.discard(marker)
