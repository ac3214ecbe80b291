"""JSON encoding of one event, done once at call time (the table is in docs/encoding.md).

Two paths produce the same bytes for the same input:

* the fast path hands the whole event to orjson. orjson encodes str, int (64-bit), float,
  bool, None, dict, list, tuple, Enum, UUID and date/time values itself; every other type
  reaches ``_default``, which applies the conversions below. Dataclasses are *passed
  through* to ``_default`` on purpose: orjson's own handling of them (it skips
  ``_private`` fields and adds attributes that are not fields) is not ours, and the two
  paths must agree. Date/time values are passed through too, and both paths format them
  with ``_iso`` (naive datetimes are UTC, written with a Z).
* the slow path (``to_jsonable``) walks the value in Python. It runs only when orjson
  refuses the event (a value with no JSON form, an int beyond 64 bits, a non-str key, a
  str with lone surrogates, a cycle, too deep), converts what it can with the very same
  helpers, and raises ``ValidationError`` naming the key path of what it cannot.

Depth: ``MAX_DEPTH`` is orjson's own recursion limit, so the fast path refuses exactly
what the walk refuses (tests/message/test_hostile_input.py checks both agree, and that the limit
still matches the installed orjson). One gap, orjson's: it does not count tuples, so a
value nested more than ``MAX_DEPTH`` levels deep *through tuples* is accepted by the fast
path (and thousands of such levels crash orjson 3.13; see docs/encoding.md).
"""

from __future__ import annotations

import abc
import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import math
import re
import sys
import uuid
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

import orjson

from journy_analytics._exceptions import ValidationError

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_DEPTH",
    "MAX_EVENT_BYTES",
    "SUPPORTED_KEY_TYPES",
    "SUPPORTED_TYPES",
    "DataclassInstance",
    "compact",
    "encode_event",
    "to_jsonable",
    "wire_form",
]

MAX_EVENT_BYTES = 32 * 1024
# journy.io (like Segment) accepts 500 KB per request; we keep a margin for the envelope.
MAX_BATCH_BYTES = 480 * 1024
# Containers nest at most this many levels, the event object itself being level 1 (so
# ``properties`` is level 2): orjson's own limit, which the fast path enforces for free.
MAX_DEPTH = 254
# orjson up to 3.11 (the last releases for Python 3.9) corrupts memory on values nested
# about 245 to 251 levels deep. With those releases the limit is lower, and an event is
# handed to orjson only after a quick walk has checked its depth (_fits).
_ORJSON_VERSION = tuple(int(p) for p in orjson.__version__.split(".")[:2] if p.isdigit())
_DEPTH_GUARD = _ORJSON_VERSION < (3, 12)
if _DEPTH_GUARD:
    MAX_DEPTH = 240
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1

# Dataclasses and date/time values go to _default (see the module docstring and _iso).
_FAST_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME

_NO_FORM: Any = object()
_CONTAINERS = (Mapping, list, tuple, set, frozenset)


# -- conversions shared by both paths ---------------------------------------------------


def _iso(value: _dt.datetime | _dt.date | _dt.time) -> str:
    """RFC 3339: a naive datetime is UTC, a zero offset is ``Z``, microseconds only when
    non-zero, an offset that is not a whole number of minutes rounded to the nearest minute.

    Formatted here, in Python, for both paths: calling orjson from inside its own
    ``default=`` hook is not safe on every release, and orjson 3.13 gets two cases wrong
    (``time(0, 0, 0, 10000)`` as ``.10000``; an offset of -15:59:57 as ``-15:60``).
    """
    if isinstance(value, _dt.datetime):
        text = (
            f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
        )
        if value.microsecond:
            text += f".{value.microsecond:06d}"
        return text + _offset(value.utcoffset())
    if isinstance(value, _dt.date):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _offset(offset: Optional[_dt.timedelta]) -> str:
    if offset is None or not offset:
        return "Z"
    seconds = offset.total_seconds()
    minutes = int((abs(seconds) + 30) // 60)
    sign = "+" if seconds > 0 else "-"
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _float(value: float) -> Optional[float]:
    number = float.__float__(value)  # a float subclass (orjson takes exact floats itself)
    return number if math.isfinite(number) else None


def _decimal(value: decimal.Decimal) -> Optional[float]:
    if not value.is_finite():
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _bytes(value: Union[bytes, bytearray, memoryview]) -> str:
    raw = bytes(value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii")


# Every value type that is not a container and that orjson does not encode natively, with
# its conversion. The encoder knows no other: this table is the one place to add a type
# (SUPPORTED_TYPES below and the tests' strategies are built from it).
_LEAF_TYPES: Tuple[Tuple[Tuple[type, ...], Callable[[Any], Any]], ...] = (
    ((float,), _float),
    ((decimal.Decimal,), _decimal),
    ((_dt.datetime, _dt.date, _dt.time), _iso),
    ((_dt.timedelta,), _dt.timedelta.total_seconds),
    ((uuid.UUID,), uuid.UUID.__str__),
    ((bytes, bytearray, memoryview), _bytes),
)


def _leaf(value: Any) -> Any:
    """The JSON form of a value that is not a container, or ``_NO_FORM``.

    Handles everything orjson does not encode natively; str, int, exact float, bool and
    None are the slow path's business (see ``to_jsonable``).
    """
    for kinds, convert in _LEAF_TYPES:
        if isinstance(value, kinds):
            return convert(value)
    return _NO_FORM


class DataclassInstance(abc.ABC):  # noqa: B024 (a virtual base: nothing to implement)
    """Stands for "an instance of any dataclass" in SUPPORTED_TYPES (dataclasses share no
    base class): ``isinstance(value, DataclassInstance)`` is true for exactly those."""

    @classmethod
    def __subclasshook__(cls, subclass: type) -> bool:
        return dataclasses.is_dataclass(subclass)


# What the encoder sends: instances of these types and of their subclasses, containers
# nested to MAX_DEPTH (docs/encoding.md has the JSON form of each). The one definition:
# plugins that must see every value the way it is sent (Redact, through wire_form) and the
# property test that proves they do are built from it.
SUPPORTED_TYPES: Tuple[type, ...] = tuple(
    dict.fromkeys(
        (
            *(str, int, float, bool, type(None), enum.Enum),  # orjson's own (to_jsonable's)
            *_CONTAINERS,
            DataclassInstance,
            *(kind for kinds, _ in _LEAF_TYPES for kind in kinds),
        )
    )
)


def _dataclass_items(value: Any) -> Dict[str, Any]:
    """A dataclass instance's fields by name, in definition order (unset ones left out)."""
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(value):
        try:
            out[f.name] = getattr(value, f.name)
        except AttributeError:  # a field(init=False) never assigned
            continue
    return out


def _is_dataclass_instance(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _text(value: str) -> str:
    """An exact str; lone surrogates (which UTF-8 cannot carry) become U+FFFD."""
    text = str.__str__(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Through UTF-16 a well-formed surrogate pair becomes its character again.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


# Dict keys have a narrower set (``_key``): the non-str keys json.dumps spells, and the
# leaf types whose JSON form is a string.
_LEAF_KEY_TYPES = (_dt.date, _dt.time, uuid.UUID, bytes, bytearray, memoryview)
SUPPORTED_KEY_TYPES: Tuple[type, ...] = (
    *(str, type(None), bool, int, float, enum.Enum, decimal.Decimal),
    *_LEAF_KEY_TYPES,
)


# -- the fast path ------------------------------------------------------------------------

# The common exact types, dispatched without the isinstance chain (same results).
_EXACT: Dict[type, Callable[[Any], Any]] = {
    decimal.Decimal: _leaf,
    _dt.timedelta: _leaf,
    bytes: _leaf,
    set: list,
    frozenset: list,
}


def _default(value: Any) -> Any:
    """orjson's ``default``: what it cannot encode natively, converted like the walk does."""
    convert = _EXACT.get(type(value))
    if convert is not None:
        return convert(value)
    if isinstance(value, (set, frozenset, tuple)):  # a tuple here is a subclass
        return list(value)
    if isinstance(value, Mapping):
        return dict(value.items())
    if _is_dataclass_instance(value):
        return _dataclass_items(value)
    converted = _leaf(value)
    if converted is _NO_FORM:
        raise TypeError
    return converted


def _encode_slow(event: Any) -> bytes:
    try:
        return orjson.dumps(to_jsonable(event))
    except (RecursionError, orjson.JSONEncodeError):
        # Only if the caller's own stack is already deep, or a future orjson lowers its
        # recursion limit below MAX_DEPTH (a test watches for that).
        raise ValidationError(
            "the event is nested too deeply to encode here; flatten traits/properties/context"
        ) from None


def encode_event(event: Dict[str, Any]) -> bytes:
    """Encode one wire event; raise ValidationError naming the offending key path."""
    try:
        # orjson first: this runs on every call in the caller's thread.
        if _DEPTH_GUARD and not _fits(event, MAX_DEPTH):
            raise TypeError  # deeper than the guard allows, or not plain: the walk decides
        data = orjson.dumps(event, default=_default, option=_FAST_OPTIONS)
    except Exception:
        data = _encode_slow(event)
    if len(data) > MAX_EVENT_BYTES:
        raise ValidationError(_too_large(event, data))
    # orjson's bytes keep their whole write buffer (about 4 KB) allocated. The worker makes
    # an exact-size copy (compact()) of the ones that are going to wait in a long queue.
    return data


_NESTING = (dict, list, tuple)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _fits(value: Any, room: int) -> bool:
    """True when ``value`` nests dicts, lists and tuples at most ``room`` levels deep and
    holds no other container (which would reach _default and nest further). Only with an
    orjson that needs the guard (see MAX_DEPTH)."""
    if room <= 0:
        return False
    items = value.values() if type(value) is dict else value
    for item in items:
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind in _NESTING:
            if not _fits(item, room - 1):
                return False
        elif isinstance(item, _CONTAINERS) or dataclasses.is_dataclass(item):
            return False
    return True


def wire_form(value: Any, path: str = "") -> Any:
    """``value`` as the encoder writes it, in plain JSON types (dict with str keys, list,
    str, int, float, bool, None): what a reader of the sent event gets back. Raises
    ValidationError, naming the key path under ``path``, for what the encoder refuses."""
    try:
        if _DEPTH_GUARD and not _fits(value, MAX_DEPTH):
            raise TypeError
        return orjson.loads(orjson.dumps(value, default=_default, option=_FAST_OPTIONS))
    except Exception:
        return to_jsonable(value, path)


def compact(data: bytes) -> bytes:
    """An exact-size copy: a queue of orjson's own bytes would hold ten times the memory.
    ``%b`` formatting makes it in a third of the time ``memoryview(data).tobytes()`` takes
    (it runs in the caller's thread for every event that has to wait)."""
    return b"%b" % data


def _too_large(event: Dict[str, Any], data: bytes) -> str:
    kind = event.get("type", "event") if isinstance(event, dict) else "event"
    message = (
        f"the {kind} event is {len(data)} bytes once encoded; journy.io accepts at most "
        f"{MAX_EVENT_BYTES} bytes per event"
    )
    path, size = _bulk(orjson.loads(data), "", len(data))
    if path:
        message += f"; most of it is {path} ({size} bytes)"
    return message + (
        ": send fewer or shorter traits/properties, or keep large values (documents, "
        "blobs) elsewhere and send a reference"
    )


def _bulk(value: Any, path: str, size: int) -> tuple[str, int]:
    """Follow the largest child while it holds at least half of its parent's bytes."""
    while True:
        if isinstance(value, dict):
            children = [(_join(path, k), v) for k, v in value.items()]
        elif isinstance(value, list):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        else:
            return path, size
        best: Optional[tuple[str, Any, int]] = None
        for child_path, child in children:
            child_size = len(orjson.dumps(child))
            if best is None or child_size > best[2]:
                best = (child_path, child, child_size)
        if best is None or best[2] * 2 < size:
            return path, size
        path, value, size = best


# -- the slow path ------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"[^\s.\[\]'\"]+\Z")


def _join(path: str, key: str) -> str:
    if not _PLAIN_KEY.match(key):
        return f"{path}[{key!r}]"
    return f"{path}.{key}" if path else key


def _where(path: str) -> str:
    return path or "the event"


def _key(key: Any, path: str) -> str:
    """The wire name of a dict key (docs/encoding.md, "Keys")."""
    if isinstance(key, str):
        return _text(key)
    if key is None:
        return "null"
    if key is True:
        return "true"
    if key is False:
        return "false"
    if isinstance(key, int):
        return _digits(key, path, "has a key that is")
    if isinstance(key, float):
        # json.dumps's spelling of float keys.
        if math.isnan(key):
            return "NaN"
        if math.isinf(key):
            return "Infinity" if key > 0 else "-Infinity"
        return float.__repr__(key)
    if isinstance(key, enum.Enum):
        return _key(key.value, path)
    if isinstance(key, decimal.Decimal):
        return str(key)
    if isinstance(key, _LEAF_KEY_TYPES):
        name: str = _leaf(key)
        return name
    raise ValidationError(
        f"{_where(path)} has a key of type {_type_name(key)} ({key!r:.40}); JSON object keys "
        "must be strings: convert the key with str() first"
    )


def _int(value: int, path: str) -> Any:
    number = int.__int__(value)
    if _INT64_MIN <= number <= _UINT64_MAX:
        return number
    # JSON parsers disagree beyond 64 bits; a decimal string keeps every digit.
    return _digits(number, path)


def _digits(value: int, path: str, what: str = "is") -> str:
    try:
        return int.__repr__(value)
    except ValueError:  # beyond sys.get_int_max_str_digits() (4300 by default)
        raise ValidationError(
            f"{_where(path)} {what} an int too long to write in decimal "
            f"(over {sys.get_int_max_str_digits()} digits); send it as a str or a float"
        ) from None


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def to_jsonable(
    value: Any, path: str = "", _depth: int = 0, _seen: Optional[Set[int]] = None
) -> Any:
    """Convert ``value`` to plain JSON types (dict, list, str, int, float, bool, None)
    exactly as the fast path encodes it, or raise ValidationError naming the key path.

    ``_depth`` is the number of containers around ``value``.
    """
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int):  # subclasses (IntEnum too): their int content, like orjson
        return _int(value, path)
    if type(value) is float:
        return value if math.isfinite(value) else None
    if not isinstance(value, _CONTAINERS) and not _is_dataclass_instance(value):
        if isinstance(value, enum.Enum):
            return to_jsonable(value.value, path, _depth, _seen)
        converted = _leaf(value)
        if converted is _NO_FORM:
            raise ValidationError(
                f"{_where(path)} is of type {_type_name(value)}, which has no JSON form; "
                "convert it to a str, number, bool, None, list or dict before sending"
            )
        return converted

    if _depth >= MAX_DEPTH:
        raise ValidationError(
            f"{_where(path)} is nested more than {MAX_DEPTH} levels deep (the event itself "
            "is level 1); flatten it, or send it as a JSON string"
        )
    seen = _seen if _seen is not None else set()
    marker = id(value)
    if marker in seen:
        raise ValidationError(
            f"{_where(path)} contains itself (a cyclic reference); events must be trees: "
            "send a copy without the back-reference"
        )
    seen.add(marker)
    depth = _depth + 1
    try:
        if isinstance(value, dict):
            items: Any = dict.items(value)  # what orjson reads, even in a subclass
        elif isinstance(value, Mapping):
            items = value.items()
        elif _is_dataclass_instance(value):
            items = _dataclass_items(value).items()
        else:
            if isinstance(value, list):
                elements: Any = list.__iter__(value)  # what orjson reads
            else:
                elements = value
            out_list: List[Any] = []
            for i, element in enumerate(elements):
                out_list.append(to_jsonable(element, f"{path}[{i}]", depth, seen))
            return out_list
        out: Dict[str, Any] = {}
        for k, v in items:
            name = _key(k, path)
            if name in out:
                raise ValidationError(
                    f"{_where(path)} has two keys that are both {name!r} once converted "
                    f"to JSON text (one of them is {k!r:.40}); rename one"
                )
            out[name] = to_jsonable(v, _join(path, name), depth, seen)
        return out
    finally:
        seen.discard(marker)
