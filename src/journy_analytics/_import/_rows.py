"""From one input row to one event call: mapping, normalisation, the deterministic id.

A row is a dict: a Segment-spec event (``type``, ``userId``, ``event``, ``properties``,
``traits``, ``timestamp``, ...) or a flat row (CSV, Parquet, a dataframe) whose columns a
mapping names (``userId=user_id,event=action``: wire field = source column). Columns that
are neither wire fields nor mapped become ``properties`` (track, page, screen) or ``traits``
(identify, group); a dotted column (``traits.email``) goes where it says.

The message id of a row without one is derived from the event's *content* and the
row's *occurrence* in its input (never the file, its path or the line): the first row with
some content has the id of that content; an identical row after it (two page views in the
same second) is a second event, and its id also takes its number, ``nth`` (1 for the second
one, and so on). So the same rows imported twice, from the same file or a copy elsewhere
in any order, have the same ids and journy.io keeps each once, and identical rows are
not merged into one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from array import array
from bisect import bisect_left, bisect_right
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import orjson

from journy_analytics import _message as m
from journy_analytics._exceptions import ValidationError
from journy_analytics._message import ENCODE_OPTIONS, encode_leaf, to_jsonable
from journy_analytics._types import EVENT_TYPES

__all__ = [
    "COLUMN_TYPES",
    "SKIPPED",
    "TYPES",
    "Occurrences",
    "Refusal",
    "RowMapper",
    "content_message_id",
    "parse_column_types",
    "parse_mapping",
    "timestamp_parser",
]

# A reader yields this for a row a checkpoint says is done: counted, never decoded.
SKIPPED: Any = object()
TYPES = EVENT_TYPES

# Top-level wire fields a row may carry, and the builder keyword each one feeds.
_WIRE = {
    "type": "type",
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "groupId": "group_id",
    "previousId": "previous_id",
    "event": "event",
    "name": "name",
    "category": "category",
    "properties": "properties",
    "traits": "traits",
    "timestamp": "timestamp",
    "context": "context",
    "integrations": "integrations",
    "messageId": "message_id",
}
# Set by a pipeline, not by the event's author (e.g. in a Segment warehouse export): ignored.
# originalTimestamp stands in for timestamp when a row has only that.
_PIPELINE = frozenset(
    {
        "sentAt",
        "receivedAt",
        "originalTimestamp",
        "version",
        "channel",
        "writeKey",
        "projectId",
        "_metadata",
    }
)
# Which keywords each call takes besides user_id, anonymous_id, timestamp, context,
# integrations and message_id; and where the other columns of a flat row go.
_KEYWORDS: Dict[str, Tuple[Tuple[str, ...], Optional[str]]] = {
    "identify": (("traits",), "traits"),
    "group": (("group_id", "traits"), "traits"),
    "track": (("event", "properties", "group_id"), "properties"),
    "page": (("name", "category", "properties", "group_id"), "properties"),
    "screen": (("name", "category", "properties", "group_id"), "properties"),
    "alias": (("previous_id",), None),
}
# Wire fields that are also everyday column names: where the call does not take them, they
# are data (traits.name, properties.category) rather than a mistake.
_PLAIN_WORDS = ("name", "category")
_COMMON = ("user_id", "anonymous_id", "timestamp", "context", "integrations")
_OBJECTS = frozenset({"properties", "traits", "context", "integrations"})
_WIRE_KEYS = frozenset(_WIRE)
_KEYWORD_TO_WIRE = {keyword: wire for wire, keyword in _WIRE.items()}
# Per type, the wire fields a row of that type may carry (its type is already popped).
_ALLOWED = {
    kind: frozenset(_KEYWORD_TO_WIRE[k] for k in (*own, *_COMMON, "message_id"))
    for kind, (own, _) in _KEYWORDS.items()
}
_CANONICAL = ENCODE_OPTIONS | orjson.OPT_SORT_KEYS
# uuid.NAMESPACE_URL-style namespace of our own: ids are uuid5(namespace, canonical event).
_NAMESPACE = bytes.fromhex("6a6f75726e792d696d706f72742d7631")  # b"journy-import-v1"
_NAMESPACE_SHA1 = hashlib.sha1(_NAMESPACE)


class Refusal(Exception):
    """A row that cannot become an event; ``code`` groups the final report."""

    def __init__(self, code: str, reason: str, raw: Any = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.raw = raw  # what could not be read (a line's text, a CSV record), for --rejects

    def __reduce__(self) -> Any:
        # Picklable with its three fields: a parallel import hands refusals to its workers.
        return (Refusal, (self.code, self.reason, self.raw))


def parse_mapping(text: Optional[str]) -> List[Tuple[str, str]]:
    """``"userId=user_id,event=action"`` -> ``[("userId", "user_id"), ("event", "action")]``."""
    if not text:
        return []
    pairs: List[Tuple[str, str]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        wire, sep, column = part.partition("=")
        wire, column = wire.strip(), column.strip()
        if not sep or not wire or not column:
            raise ValueError(
                f"--map entry {part!r} is not WIRE=COLUMN (e.g. userId=user_id,event=action)"
            )
        top = wire.split(".", 1)[0]
        if top not in _WIRE or ("." in wire and top not in _OBJECTS):
            raise ValueError(
                f"--map entry {part!r}: {wire!r} is not a wire field; use one of "
                f"{', '.join(_WIRE)}, or a dotted path under properties/traits/context "
                "(e.g. traits.email=email)"
            )
        pairs.append((wire, column))
    return pairs


_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("not true/false, yes/no or 1/0")


def _to_int(value: Any) -> int:
    if isinstance(value, str):
        value = value.strip()
        number = float(value) if "." in value or "e" in value.lower() else int(value)
    else:
        number = value
    if isinstance(number, float) and not number.is_integer():
        raise ValueError("not a whole number")
    return int(number)


def _to_json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


# A CSV cell is a str: --column-type says what it holds (docs/import.md).
COLUMN_TYPES: Dict[str, Callable[[Any], Any]] = {
    "int": _to_int,
    "float": lambda v: float(v.strip() if isinstance(v, str) else v),
    "bool": _to_bool,
    "str": str,
    "json": _to_json,
}


def parse_column_types(text: Optional[str]) -> Dict[str, str]:
    """``"amount=float,quantity=int"`` -> ``{"amount": "float", "quantity": "int"}``."""
    types: Dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        column, sep, kind = part.partition("=")
        column, kind = column.strip(), kind.strip()
        if not sep or not column or not kind:
            raise ValueError(
                f"--column-type entry {part!r} is not COLUMN=TYPE (e.g. amount=float,quantity=int)"
            )
        if kind not in COLUMN_TYPES:
            raise ValueError(
                f"--column-type entry {part!r}: {kind!r} is not a type; use one of "
                f"{', '.join(COLUMN_TYPES)}"
            )
        types[column] = kind
    return types


_UTC = dt.timezone.utc
_FORMAT_HINT = "give a strptime format such as '%d/%m/%Y %H:%M', or epoch or epoch_ms"


def timestamp_parser(fmt: str) -> Callable[[Any], Any]:
    """``--timestamp-format``: a function from a cell to a datetime (UTC unless the format
    reads an offset) that raises ValueError; ValueError here for a format that is none."""
    if fmt in ("epoch", "epoch_ms"):
        scale = 1000.0 if fmt == "epoch_ms" else 1.0

        def from_epoch(value: Any) -> Any:
            if isinstance(value, dt.datetime):
                return value
            number = float(value.strip()) if isinstance(value, str) else float(value)
            try:
                return dt.datetime.fromtimestamp(number / scale, tz=_UTC)
            except (OverflowError, OSError) as exc:
                raise ValueError(f"out of range ({exc})") from None

        return from_epoch
    if "%" not in fmt:
        raise ValueError(f"--timestamp-format {fmt!r} has no % directive; {_FORMAT_HINT}")
    try:
        dt.datetime.strptime(dt.datetime(2001, 2, 3, 4, 5, 6).strftime(fmt), fmt)
    except ValueError as exc:
        raise ValueError(
            f"--timestamp-format {fmt!r} is not usable ({exc}); {_FORMAT_HINT}"
        ) from None

    def from_format(value: Any) -> Any:
        if not isinstance(value, str):
            return value  # already a date-time (a Parquet column)
        moment = dt.datetime.strptime(value.strip(), fmt)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=_UTC)

    return from_format


def _missing(value: Any) -> bool:
    # An empty CSV cell, a null, a dataframe's NaN: the field is not there.
    return value is None or value == "" or (type(value) is float and math.isnan(value))


def content_message_id(canonical: bytes) -> str:
    """``str(uuid.uuid5(namespace, canonical))``, formatted without building a UUID object:
    the version nibble is 5, the variant's top bits are 10."""
    digest = _NAMESPACE_SHA1.copy()  # the namespace hashed once, not per row
    digest.update(canonical)
    h = digest.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


_STRIDE = 32  # one fence per 32 hashes of the sorted array: about 1.3 bytes per row


class Occurrences:
    """How many rows of one input came before a row with the same content: its ``nth``.

    The readers count in input order, in the one process that reads, skipped rows too (a
    resumed run numbers the rows as the first run did), whatever the number of workers.
    ``key`` is the row as read (a JSONL line's bytes, a CSV record's cells). Only a 64-bit
    hash of each distinct row is kept, and compactly: the hashes of recent rows in a small
    set, the others in a sorted array of 8-byte integers that the recent ones are merged
    into once they number a sixteenth of it; a bitmap of the array's hashes (8 to 32 bits
    each) spares most new rows the search of the array. About 10 to 15 bytes per distinct
    row, up to 25 while a merge runs (a set of them all takes 70). Two different rows
    whose hashes collide (odds about 1 in 400,000 for 10 million rows) still get different
    ids (the id is of the content), one with a wrong ``nth``, which may differ in another
    run (the hash is seeded per process): at worst that one row is sent again by a
    re-import.

    ``recent_limit`` is the least number of recent hashes that triggers a merge (tests
    make it tiny to merge often)."""

    def __init__(self, recent_limit: int = 1 << 14) -> None:
        self._recent_limit = max(1, recent_limit)
        self._merge_at = self._recent_limit
        self._recent: set[int] = set()
        self._older = array("q")  # sorted, disjoint from _recent
        self._fences: List[int] = []  # every _STRIDE-th hash of _older
        self._bits = bytearray(1)  # bit h & _mask set for each h of _older
        self._mask = 7
        self._again: Dict[int, int] = {}

    def _in_older(self, h: int) -> bool:
        """A bisect of the fences (a list: cheap compares), then of one stride of the array
        (each probe of an array makes an int)."""
        j = bisect_right(self._fences, h)
        if not j:
            return False
        older = self._older
        lo = (j - 1) * _STRIDE
        hi = min(lo + _STRIDE, len(older))
        i = bisect_left(older, h, lo, hi)
        return i < hi and older[i] == h

    def __call__(self, key: Any) -> int:
        h = hash(key)
        i = h & self._mask
        if h not in self._recent and (
            not self._bits[i >> 3] >> (i & 7) & 1 or not self._in_older(h)
        ):
            self._recent.add(h)
            if len(self._recent) >= self._merge_at:
                self._merge()
            return 0
        n = self._again.get(h, 0) + 1
        self._again[h] = n
        return n

    def block(self, keys: Sequence[Any]) -> Optional[Dict[int, int]]:
        """``{index: nth}`` for the keys of ``keys`` seen before (None: none was)."""
        hashes = list(map(hash, keys))
        recent = self._recent
        if recent.isdisjoint(hashes) and len(set(hashes)) == len(hashes):
            bits, mask, in_older = self._bits, self._mask, self._in_older
            for h in hashes:
                i = h & mask
                if bits[i >> 3] >> (i & 7) & 1 and in_older(h):
                    break
            else:  # the common case: every row of the block is new
                recent.update(hashes)
                if len(recent) >= self._merge_at:
                    self._merge()
                return None
        repeats = {}
        for i, key in enumerate(keys):
            n = self(key)
            if n:
                repeats[i] = n
        return repeats or None

    def _merge(self) -> None:
        """The recent hashes into the sorted array, streamed: the old array is copied a
        run at a time into one of the final size, with no list of all the hashes."""
        fresh = sorted(self._recent)
        self._recent = set()
        older = self._older
        size = len(older)
        merged = array("q", [0]) * (size + len(fresh))
        with memoryview(older) as source, memoryview(merged) as target:
            start = end = 0  # the next run of older, and where it goes in merged
            for h in fresh:
                # the hashes are uniform: the next one is a few places on, rarely more
                hi = start + 4 * _STRIDE if start + 4 * _STRIDE < size else size
                stop = bisect_left(older, h, start, hi)
                if stop == hi:
                    stop = bisect_left(older, h, hi)
                end_of_run = end + stop - start
                target[end:end_of_run] = source[start:stop]
                merged[end_of_run] = h
                start, end = stop, end_of_run + 1
            target[end:] = source[start:]
        self._older = merged
        self._fences = merged[::_STRIDE].tolist()
        self._merge_at = max(self._recent_limit, len(merged) >> 4)
        marked: Iterable[int] = fresh
        if len(merged) * 8 > self._mask + 1:  # 8 to 32 bits a hash: rebuilt rarely
            self._bits = bytearray(1 << max(0, (len(merged) * 32 - 1).bit_length() - 3))
            self._mask = len(self._bits) * 8 - 1
            marked = merged
        bits, mask = self._bits, self._mask
        for h in marked:
            i = h & mask
            bits[i >> 3] |= 1 << (i & 7)


def _canonical(fields: Dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(fields, default=encode_leaf, option=_CANONICAL)
    except Exception:
        # What orjson refuses (a huge int, a non-str key): the walk converts it or raises
        # ValidationError naming the key path.
        return orjson.dumps(to_jsonable(fields), option=orjson.OPT_SORT_KEYS)


class RowMapper:
    """Turn rows into ``(method name, keyword arguments)`` for ``Analytics``."""

    def __init__(
        self,
        mapping: Sequence[Tuple[str, str]] = (),
        default_type: Optional[str] = None,
        *,
        timestamp_format: Optional[str] = None,
        column_types: Optional[Mapping[str, str]] = None,
    ) -> None:
        if default_type is not None and default_type not in TYPES:
            raise ValueError(f"type {default_type!r} is not one of {', '.join(TYPES)}")
        self.mapping = list(mapping)
        self.default_type = default_type
        self._mapped_columns = frozenset(column for _, column in self.mapping)
        self.timestamp_format = timestamp_format
        self._parse_time = None if timestamp_format is None else timestamp_parser(timestamp_format)
        self.column_types = dict(column_types or {})
        for column, kind in self.column_types.items():
            if kind not in COLUMN_TYPES:
                raise ValueError(
                    f"column type {column}={kind}: use one of {', '.join(COLUMN_TYPES)}"
                )
        self._converters = [(c, k, COLUMN_TYPES[k]) for c, k in self.column_types.items()]

    def _typed(self, row: Any) -> Any:
        """The row with its typed columns converted (a copy); raises Refusal."""
        if not isinstance(row, Mapping):
            return row
        typed = dict(row)
        for column, kind, convert in self._converters:
            value = typed.get(column)
            if _missing(value):
                continue
            try:
                typed[column] = convert(value)
            except (ValueError, TypeError, OverflowError, orjson.JSONDecodeError):
                raise Refusal(
                    "invalid",
                    f"column {column}={value!r} is not a {kind} (column types: {column}={kind})",
                ) from None
        return typed

    def _fields(self, row: Mapping[str, Any]) -> Dict[str, Any]:
        """The row as wire fields (``userId``, ``properties``, ...) plus ``_extra`` columns."""
        fields: Dict[str, Any] = {}
        extra: Dict[str, Any] = {}
        for wire, column in self.mapping:
            value = row.get(column)
            if not _missing(value):
                _put(fields, wire, value)
        mapped = self._mapped_columns
        for key, value in row.items():
            if key in mapped or _missing(value):
                continue
            if not isinstance(key, str):
                raise Refusal("invalid", f"column name {key!r} is not a str")
            if key in _WIRE:
                if key not in fields:
                    fields[key] = value
            elif key in _PIPELINE:
                if key == "originalTimestamp":
                    fields.setdefault("_original_timestamp", value)
            elif "." in key and key.split(".", 1)[0] in _OBJECTS:
                _put(fields, key, value)
            else:
                extra[key] = value
        if extra:
            fields["_extra"] = extra
        return fields

    def call(self, row: Any, nth: int = 0) -> Tuple[str, Dict[str, Any]]:
        """``(type, kwargs)`` with a ``message_id``; raises Refusal. ``nth``: the rows with
        the same content before this one in its input (see :class:`Occurrences`)."""
        if self._converters:
            row = self._typed(row)
        if (
            type(row) is dict
            and not self.mapping
            and self._parse_time is None
            and _WIRE_KEYS.issuperset(row)
        ):
            fast = self._spec_row(row, nth)
            if fast is not None:
                return fast
        return self._call(row, nth)

    def _spec_row(self, row: Dict[str, Any], nth: int) -> Optional[Tuple[str, Dict[str, Any]]]:
        """The common case, a Segment-spec row holding only what its type takes, with its
        objects as objects: what :meth:`_call` does for it, without the per-column steps
        it cannot need (a backfill spends most of its time here). None: anything else,
        which takes the general path (it also explains what is wrong)."""
        fields = dict(row)
        values = fields.values()
        if None in values or "" in values:
            return None
        kind = fields.pop("type", None) or self.default_type
        if kind is None and "event" in fields:
            kind = "track"
        allowed = _ALLOWED.get(kind) if type(kind) is str else None
        if allowed is None or not allowed.issuperset(fields):
            return None
        for key in _OBJECTS:
            if type(fields.get(key)) is str:
                return None
        return _finish(kind, fields, nth)  # type: ignore[arg-type]

    def _call(self, row: Any, nth: int = 0) -> Tuple[str, Dict[str, Any]]:
        if type(row) is not dict and not isinstance(row, Mapping):
            raise Refusal("not_an_object", f"a row must be an object, not {type(row).__name__}")
        if not self.mapping and _WIRE_KEYS.issuperset(row):
            # The common case (a Segment-spec row): one pass, no per-column decisions.
            fields = dict(row)
            values = fields.values()
            if None in values or "" in values:
                fields = {k: v for k, v in fields.items() if v is not None and v != ""}
        else:
            fields = self._fields(row)
        kind = fields.pop("type", None) or self.default_type
        if kind is None:
            kind = "track" if "event" in fields else None
        if type(kind) is not str or kind not in _KEYWORDS:  # a dict is no type, nor a key
            raise Refusal(
                "bad_type",
                f"type {kind!r} is not one of {', '.join(TYPES)}"
                if kind is not None
                else "the row has no type (add a type column, --type, or an event for track)",
            )
        own, extra_goes_to = _KEYWORDS[kind]
        original = fields.pop("_original_timestamp", None)
        if "timestamp" not in fields and original is not None:
            fields["timestamp"] = original
        if self._parse_time is not None and "timestamp" in fields:
            value = fields["timestamp"]
            try:
                fields["timestamp"] = self._parse_time(value)
            except (ValueError, TypeError) as exc:
                why = "" if "does not match" in str(exc) else f" ({exc})"
                raise Refusal(
                    "invalid",
                    f"timestamp={value!r} does not match the timestamp format "
                    f"{self.timestamp_format!r}{why}",
                ) from None
        for word in _PLAIN_WORDS:
            if word in fields and word not in own and extra_goes_to is not None:
                # A "name" column of a users export is a trait, not a page name.
                fields.setdefault("_extra", {})[word] = fields.pop(word)
        extra = fields.pop("_extra", None)
        if extra:
            if extra_goes_to is None:
                raise Refusal(
                    "invalid", f"alias takes no other fields; unexpected: {', '.join(extra)}"
                )
            target = fields.get(extra_goes_to)
            if isinstance(target, str) and target.startswith("{"):
                target = fields[extra_goes_to] = _json_object(target, extra_goes_to)
            if target is None:
                fields[extra_goes_to] = extra
            elif isinstance(target, Mapping):
                fields[extra_goes_to] = {**extra, **target}
        for key in _OBJECTS:
            if type(fields.get(key)) is str:
                fields[key] = _json_object(fields[key], key)
        if not _ALLOWED[kind].issuperset(fields):
            wrong = sorted(set(fields) - _ALLOWED[kind])
            raise Refusal("invalid", f"{kind} takes no {', '.join(map(repr, wrong))} field")
        return _finish(kind, fields, nth)


def _finish(kind: str, fields: Dict[str, Any], nth: int = 0) -> Tuple[str, Dict[str, Any]]:
    """The last steps for every row: the timestamp in wire form, the keyword arguments,
    and the message id (the row's own, or one derived from its content and ``nth``)."""
    timestamp = fields.get("timestamp")
    if timestamp is not None:
        try:
            fields["timestamp"] = m.format_timestamp(timestamp)
        except ValidationError as exc:
            raise Refusal("invalid", str(exc)) from None
    kwargs = {_WIRE[wire]: value for wire, value in fields.items()}
    message_id = kwargs.get("message_id")
    if message_id is None:
        fields["type"] = kind
        try:
            canonical = _canonical(fields)
        except ValidationError as exc:
            raise Refusal("invalid", str(exc)) from None
        if nth:
            # Not JSON after the canonical event: no single row's content gives these bytes.
            canonical += b"\n%d" % nth
        kwargs["message_id"] = content_message_id(canonical)
    elif type(message_id) is not str:
        kwargs["message_id"] = str(message_id)
    return kind, kwargs


def _json_object(text: str, field: str) -> Any:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise Refusal("invalid", f"{field} is a str that is not a JSON object") from None
    if not isinstance(value, dict):
        raise Refusal("invalid", f"{field} must be a JSON object")
    return value


def _put(fields: Dict[str, Any], path: str, value: Any) -> None:
    top, dot, rest = path.partition(".")
    if not dot:
        fields[path] = value
        return
    node = fields.get(top)
    if isinstance(node, str) and node.startswith("{"):
        node = _json_object(node, top)
    if not isinstance(node, dict):
        node = {} if node is None else dict(node) if isinstance(node, Mapping) else None
        if node is None:
            raise Refusal("invalid", f"{top} is not an object, cannot set {path}")
    fields[top] = node
    *parents, leaf = rest.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value
