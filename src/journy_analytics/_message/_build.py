"""Build and validate one wire event per call type (pure functions, no I/O).

The wire shape is analytics-node's (which journy.io documents): camelCase keys, a
``messageId``, a millisecond ``Z`` timestamp, ``context.library`` and ``integrations``.
Builders take keyword arguments only, so a swapped ``user_id``/``anonymous_id`` cannot
happen silently.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import os
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from journy_analytics._exceptions import ValidationError
from journy_analytics._lifecycle import fork as _fork
from journy_analytics._version import __version__

__all__ = [
    "LIBRARY",
    "Timestamp",
    "build_alias",
    "build_group",
    "build_identify",
    "build_page",
    "build_track",
    "format_timestamp",
    "now_iso",
    "reseed_message_ids",
]

LIBRARY = {"name": "journy-analytics", "version": __version__}
Timestamp = Union[_dt.datetime, _dt.date, str, None]

# Message ids: a random UUID-shaped prefix per process plus a counter. uuid4() costs
# about 2 us a call; this costs a twentieth of that and is unique as long as the prefix is
# (76 random bits), which is why a forked child must draw a new one (see
# reseed_message_ids). The counter is 12 hex digits, so the id keeps the UUID shape. It is
# itertools.product over the digits, joined to the prefix: each id comes whole from C
# iterators (no Python-level step, no int-to-str conversion: half the cost of str() on a
# count), and one next() cannot be interrupted by another thread's.
_HEX_DIGITS = "0123456789abcdef"
_next_message_id: Callable[[], str] = iter(()).__next__


def reseed_message_ids() -> None:
    global _next_message_id
    r = os.urandom(10).hex()
    variant = "89ab"[int(r[12], 16) & 3]
    prefix = f"{r[0:8]}-{r[8:12]}-4{r[13:16]}-{variant}{r[16:19]}-"
    counter = itertools.product((prefix,), *[_HEX_DIGITS] * 12)
    _next_message_id = map("".join, counter).__next__


reseed_message_ids()
# Before the child's first event: the parent goes on counting from the same value.
_fork.register(reseed_message_ids)


# Formatting "now" through datetime costs ~1.5 us. Within one millisecond every event
# gets the same string (a busy process makes hundreds of calls a millisecond), so the last
# one is kept: [its millisecond, the string]. The seconds part changes once a second, and
# the milliseconds come from a table (a format spec costs more than the lookup). Threads
# share the slots: a race costs a recomputation, never a wrong string (each write is a
# new list holding a matching pair).
_second_cache: Tuple[int, str] = (-1, "")
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))
_last_now: List[Any] = [-1, ""]


def _now_for(ms: int) -> str:
    global _second_cache, _last_now
    sec, milli = divmod(ms, 1000)
    cached_sec, prefix = _second_cache
    if sec != cached_sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second_cache = (sec, prefix)
    text = prefix + _MILLIS[milli]
    _last_now = [ms, text]
    return text


def now_iso() -> str:
    ms = int(time.time() * 1000)
    last = _last_now
    return last[1] if last[0] == ms else _now_for(ms)


# A string already in the wire form (seconds or milliseconds, UTC, Z), as history exported
# from a warehouse usually is: checked and completed, not parsed and re-formatted (strftime
# is most of this function's cost, and a backfill calls it for every row).
_WIRE_FORM = re.compile(r"[1-9]\d{3}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{3})?Z\Z")


# The last string this module returned from format_timestamp. A backfill formats each
# row's timestamp for its content id, then hands that very string to a builder, which
# formats it again: an identity check (never equality: only this object is known to be
# our output) skips the second check, 1.7 us a row. One slot, shared by threads: a race
# costs a miss, never a wrong answer (each value it can hold is a finished wire form).
_last_formatted: List[Optional[str]] = [None]


def format_timestamp(value: Timestamp, field: str = "timestamp") -> str:
    """Normalise a caller's timestamp to ISO-8601 UTC with milliseconds and a Z."""
    if value is None:
        return now_iso()
    last = _last_formatted[0]
    if value is last and last is not None:
        return last  # our own output, the very object
    if type(value) is str and _WIRE_FORM.match(value):
        try:
            _dt.datetime.fromisoformat(value[:19])  # the calendar check: no February 30
        except ValueError:
            pass  # the general path below raises the error
        else:
            text = value if len(value) == 24 else value[:19] + ".000Z"
            _last_formatted[0] = text
            return text
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = _parse_iso(text)
        except ValueError:
            raise ValidationError(
                f"{field}={value!r} is not an ISO-8601 date-time; pass a datetime or a string "
                "like '2015-12-12T19:11:00Z'"
            ) from None
        value = parsed
    elif not isinstance(value, _dt.datetime):
        if isinstance(value, _dt.date):
            value = _dt.datetime(value.year, value.month, value.day)
        else:
            raise ValidationError(
                f"{field} must be a datetime, a date or an ISO-8601 str, not {type(value).__name__}"
            )
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    else:
        try:
            value = value.astimezone(_dt.timezone.utc)
        except (OverflowError, ValueError):
            raise ValidationError(
                f"{field}={value!r} is out of range once converted to UTC (years 1 to 9999)"
            ) from None
    # Not strftime: it writes years before 1000 without their leading zeros.
    text = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:"
        f"{value.minute:02d}:{value.second:02d}.{value.microsecond // 1000:03d}Z"
    )
    _last_formatted[0] = text
    return text


# Python < 3.11's fromisoformat takes only 3 or 6 fraction digits and "+HH:MM" offsets.
_FRACTION = re.compile(r"\.(\d+)")
_OFFSET = re.compile(r"([+-]\d\d)(\d\d)$")


def _parse_iso(text: str) -> _dt.datetime:
    try:
        return _dt.datetime.fromisoformat(text)
    except ValueError:
        fixed = _FRACTION.sub(lambda f: "." + (f.group(1) + "000000")[:6], text, count=1)
        fixed = _OFFSET.sub(r"\1:\2", fixed)
        return _dt.datetime.fromisoformat(fixed)


def checked_id(value: Any, field: str) -> Optional[str]:
    """str, int (not bool) and uuid.UUID ids, as str; empty or blank ones are refused."""
    if value is None:
        return None
    if isinstance(value, str):
        text = str.__str__(value)
    elif isinstance(value, uuid.UUID):
        return str(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    else:
        raise ValidationError(
            f"{field} must be a str, an int or a uuid.UUID, not {type(value).__name__}"
        )
    if not text.strip():
        raise ValidationError(
            f"{field} is {'empty' if not text else 'blank'}; pass a non-empty id or leave it out"
        )
    return text


def _mapping(value: Any, field: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if type(value) is dict:
        return value
    if isinstance(value, Mapping):
        return dict(value)
    raise ValidationError(f"{field} must be a dict, not {type(value).__name__}")


def _base(
    kind: str,
    user_id: Any,
    anonymous_id: Any,
    timestamp: Timestamp,
    context: Any,
    integrations: Any,
    message_id: Any,
    group_id: Any = None,
    require_user: bool = True,
) -> Dict[str, Any]:
    # The checks are inlined for the common case (str ids, dicts or None): this runs on
    # every call in the user's request path. Anything unusual takes the general helpers.
    msg: Dict[str, Any] = {"type": kind}
    if user_id is not None:
        msg["userId"] = (
            user_id
            if type(user_id) is str and user_id and not user_id[0].isspace()
            else checked_id(user_id, "user_id")
        )
    if anonymous_id is not None:
        msg["anonymousId"] = (
            anonymous_id
            if type(anonymous_id) is str and anonymous_id and not anonymous_id[0].isspace()
            else checked_id(anonymous_id, "anonymous_id")
        )
    if require_user and len(msg) == 1:
        raise ValidationError(
            f"{kind}() needs user_id or anonymous_id (at least one); "
            "use anonymous_id for visitors you do not know yet"
        )
    if message_id is None:
        msg["messageId"] = _next_message_id()
    else:
        msg["messageId"] = checked_id(message_id, "message_id")
    if timestamp is None:
        # now_iso() inlined (a call is a sizeable share of this function's cost).
        ms = int(time.time() * 1000)
        last = _last_now
        msg["timestamp"] = last[1] if last[0] == ms else _now_for(ms)
    else:
        msg["timestamp"] = format_timestamp(timestamp)
    if context is None:
        ctx: Dict[str, Any] = {"library": LIBRARY}
    else:
        # A new dict: the caller's context is never mutated.
        ctx = {**_mapping(context, "context"), "library": LIBRARY}
    if group_id is not None:
        ctx["groupId"] = checked_id(group_id, "group_id")
    msg["context"] = ctx
    msg["integrations"] = {} if integrations is None else _mapping(integrations, "integrations")
    return msg


def build_identify(
    *,
    user_id: Any = None,
    anonymous_id: Any = None,
    traits: Any = None,
    timestamp: Timestamp = None,
    context: Any = None,
    integrations: Any = None,
    message_id: Any = None,
) -> Dict[str, Any]:
    msg = _base("identify", user_id, anonymous_id, timestamp, context, integrations, message_id)
    msg["traits"] = _mapping(traits, "traits")
    return msg


def build_group(
    *,
    user_id: Any = None,
    anonymous_id: Any = None,
    group_id: Any = None,
    traits: Any = None,
    timestamp: Timestamp = None,
    context: Any = None,
    integrations: Any = None,
    message_id: Any = None,
) -> Dict[str, Any]:
    gid = checked_id(group_id, "group_id")
    if gid is None:
        raise ValidationError(
            "group() needs group_id (the account's id); to update an account without a user, "
            "pass anonymous_id equal to group_id"
        )
    msg = _base("group", user_id, anonymous_id, timestamp, context, integrations, message_id)
    msg["groupId"] = gid
    msg["traits"] = _mapping(traits, "traits")
    return msg


def build_track(
    # Positional too: the client's track() passes them in this order, which costs less
    # than matching nine keywords by name on every call.
    user_id: Any = None,
    anonymous_id: Any = None,
    event: Any = None,
    properties: Any = None,
    timestamp: Timestamp = None,
    context: Any = None,
    integrations: Any = None,
    message_id: Any = None,
    group_id: Any = None,
) -> Dict[str, Any]:
    if type(event) is not str or not event:
        raise ValidationError(
            "track() needs event, the action's name as a non-empty str (e.g. 'Car Sold')"
        )
    msg = _base(
        "track", user_id, anonymous_id, timestamp, context, integrations, message_id, group_id
    )
    msg["event"] = event
    # _mapping() inlined for the common case (a dict, or none).
    if type(properties) is dict:
        msg["properties"] = properties
    else:
        msg["properties"] = _mapping(properties, "properties")
    return msg


def _optional_str(value: Any, field: str) -> Optional[str]:
    if value is None or type(value) is str:
        return value
    raise ValidationError(f"{field} must be a str, not {type(value).__name__}")


def build_page(
    *,
    user_id: Any = None,
    anonymous_id: Any = None,
    category: Any = None,
    name: Any = None,
    properties: Any = None,
    timestamp: Timestamp = None,
    context: Any = None,
    integrations: Any = None,
    message_id: Any = None,
    group_id: Any = None,
    kind: str = "page",
) -> Dict[str, Any]:
    msg = _base(kind, user_id, anonymous_id, timestamp, context, integrations, message_id, group_id)
    name = _optional_str(name, "name")
    category = _optional_str(category, "category")
    props = _mapping(properties, "properties")
    if name is not None:
        msg["name"] = name
    if category is not None:
        msg["category"] = category
        if kind == "page":
            # analytics-node copies the category into the properties too; journy.io reads it there.
            props = {**props, "category": category}
    msg["properties"] = props
    return msg


def build_alias(
    *,
    user_id: Any = None,
    previous_id: Any = None,
    timestamp: Timestamp = None,
    context: Any = None,
    integrations: Any = None,
    message_id: Any = None,
    anonymous_id: Any = None,
) -> Dict[str, Any]:
    if checked_id(user_id, "user_id") is None:
        raise ValidationError("alias() needs user_id, the id the user is known by from now on")
    prev = checked_id(previous_id, "previous_id")
    if prev is None:
        raise ValidationError(
            "alias() needs previous_id, the id (often an anonymous id) to link to user_id"
        )
    msg = _base("alias", user_id, anonymous_id, timestamp, context, integrations, message_id)
    msg["previousId"] = prev
    return msg
