"""Turning one ingest request body into validated events, or an answer naming the problem.

Pure functions: no I/O, no aiohttp, so the rules can be tested and reused directly.
"""

from __future__ import annotations

import uuid
import zlib
from typing import Any, NamedTuple, Optional

import orjson

from journy_analytics._message import MAX_EVENT_BYTES
from journy_analytics._types import EVENT_TYPES
from journy_analytics.collector._rules import RuleWarning, event_warnings, future_horizon

__all__ = [
    "EVENT_TYPES",
    "MAX_BODY_BYTES",
    "MAX_EVENT_BYTES",
    "IngestError",
    "PreparedEvent",
    "decode_body",
    "prepare_batch",
]

# Segment's (and journy.io's) documented limits, counted in real bytes.
MAX_BODY_BYTES = 500 * 1024

_EVENT_TYPE_SET = frozenset(EVENT_TYPES)

# Reported per invalid batch: enough to fix a client, bounded so an answer stays small.
_MAX_REPORTED_ERRORS = 10


class IngestError(Exception):
    """A request the collector refuses: an HTTP status, a stable code and a readable message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        index: Optional[int] = None,
        errors: Optional[list[dict[str, Any]]] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.index = index
        self.errors = errors

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"success": False, "code": self.code, "message": self.message}
        if self.index is not None:
            body["index"] = self.index
        if self.errors:
            body["errors"] = self.errors
        return body


class PreparedEvent(NamedTuple):
    """One valid event, with the fields the store indexes already extracted.

    A named tuple rather than a frozen dataclass: one is built per event, and a frozen
    dataclass's ``__init__`` costs several times more.
    """

    message_id: str
    generated_message_id: bool
    type: str  # as journy.io records it: a page with a name is a "screen"
    received_type: str
    user_id: Optional[str]
    anonymous_id: Optional[str]
    group_id: Optional[str]  # group: groupId; track/page/screen: context.groupId
    previous_id: Optional[str]
    traits: Optional[dict[str, Any]]
    event: Optional[str]
    name: Optional[str]
    timestamp: Optional[str]
    body: bytes  # the event as received (JSON), with ``type`` as recorded
    warnings: Optional[list[RuleWarning]] = None  # journy.io's rules it breaks (see _rules)

    @property
    def profile_id(self) -> Optional[str]:
        return self.user_id if self.user_id is not None else self.anonymous_id


def decode_body(raw: bytes, content_encoding: Optional[str], limit: int = MAX_BODY_BYTES) -> bytes:
    """Undo ``Content-Encoding`` with the decompressed size capped at ``limit`` bytes."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip"):
        raise IngestError(
            415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported"
        )
    out = bytearray()
    data = raw
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            # Asking for at most one byte over the cap is what defuses a gzip bomb.
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise IngestError(400, "bad_gzip", f"body is not valid gzip: {exc}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise IngestError(413, "body_too_large", f"decompressed body exceeds {limit} bytes")
        if not inflater.eof:
            raise IngestError(400, "bad_gzip", "gzip body is truncated")
        data = inflater.unused_data
        if not data:
            return bytes(out)


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise IngestError(400, "malformed_json", "request body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, "malformed_json", f"body is not valid JSON: {exc}") from None


def write_key_from_body(obj: Any) -> Optional[str]:
    if isinstance(obj, dict):
        key = obj.get("writeKey")
        if isinstance(key, str) and key:
            return key
    return None


def prepare_batch(obj: Any, single_type: Optional[str] = None) -> list[PreparedEvent]:
    """Validate a parsed body; the whole batch is refused if any event is invalid.

    ``single_type`` is set for Segment's single-event endpoints (``/v1/track`` ...), whose
    body is the event itself.
    """
    if not isinstance(obj, dict):
        raise IngestError(400, "invalid_body", "body must be a JSON object")
    if single_type is not None:
        event = dict(obj)
        event.pop("writeKey", None)
        declared = event.get("type")
        if declared is None:
            event["type"] = single_type
        elif declared != single_type:
            raise IngestError(
                400,
                "invalid_event",
                f"type {declared!r} sent to the /v1/{single_type} endpoint",
            )
        events: list[Any] = [event]
    else:
        if "batch" not in obj:
            raise IngestError(400, "invalid_body", 'body has no "batch" array')
        batch = obj["batch"]
        if not isinstance(batch, list):
            raise IngestError(400, "invalid_body", '"batch" must be an array')
        events = batch

    prepared: list[PreparedEvent] = []
    errors: list[IngestError] = []
    append = prepared.append
    horizon = future_horizon()
    for index, event in enumerate(events):
        if not errors:
            fast = _prepare_valid_event(event, horizon)
            if fast is not None:
                append(fast)
                continue
        try:
            append(_prepare_event(event, horizon))
        except IngestError as exc:
            errors.append(exc)
            exc.index = index
            if len(errors) >= _MAX_REPORTED_ERRORS:
                break
    if errors:
        first = errors[0]
        where = f"event {first.index}" if single_type is None else "event"
        raise IngestError(
            first.status,
            first.code,
            f"{where}: {first.message}",
            index=first.index if single_type is None else None,
            errors=[{"index": e.index, "code": e.code, "message": e.message} for e in errors],
        )
    return prepared


def _invalid(message: str) -> IngestError:
    return IngestError(400, "invalid_event", message)


def _id(event: dict[str, Any], key: str) -> Optional[str]:
    """An identifier: a non-empty string, or an integer that journy.io reads as its digits."""
    value = event.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        if not value:
            raise _invalid(f"{key} must not be empty")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _invalid(f"{key} must be a string, got {type(value).__name__}")


def _mapping(event: dict[str, Any], key: str) -> Optional[dict[str, Any]]:
    value = event.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(f"{key} must be an object, got {type(value).__name__}")
    return value


def _text(event: dict[str, Any], key: str) -> Optional[str]:
    value = event.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{key} must be a string, got {type(value).__name__}")
    return value


def _optional_mapping(value: Any) -> bool:
    return value is None or type(value) is dict


def _optional_text(value: Any) -> bool:
    return value is None or type(value) is str


def _present_id(value: Any) -> bool:
    return type(value) is str and value != ""


def _prepare_valid_event(event: Any, horizon: str) -> Optional[PreparedEvent]:
    """The fast path for the events real clients send: the result ``_prepare_event`` would
    give, or None when anything is unusual (``_prepare_event`` then decides, and names
    the problem). Every check here is at least as strict as the one it stands for."""
    if type(event) is not dict:
        return None
    get = event.get
    received_type = get("type")
    user_id = get("userId")
    anonymous_id = get("anonymousId")
    message_id = get("messageId")
    timestamp = get("timestamp")
    context = get("context")
    if (
        type(received_type) is not str
        or received_type not in _EVENT_TYPE_SET
        or (user_id is None and anonymous_id is None)
        or not (user_id is None or _present_id(user_id))
        or not (anonymous_id is None or _present_id(anonymous_id))
        or not _optional_text(message_id)
        or not _optional_text(timestamp)
        or not _optional_mapping(context)
        or not _optional_mapping(get("integrations"))
    ):
        return None
    traits = None
    group_id = None
    previous_id = None
    event_name = None
    name = None
    recorded_type = received_type
    if received_type == "identify":
        traits = get("traits")
        if not _optional_mapping(traits):
            return None
    elif received_type == "group":
        group_id = get("groupId")
        traits = get("traits")
        if not _present_id(group_id) or not _optional_mapping(traits):
            return None
    elif received_type == "alias":
        previous_id = get("previousId")
        if not _present_id(previous_id):
            return None
    else:
        if not _optional_mapping(get("properties")):
            return None
        if received_type == "track":
            event_name = get("event")
            if not _present_id(event_name):
                return None
        else:
            name = get("name")
            if not _optional_text(name) or not _optional_text(get("category")):
                return None
            if received_type == "page" and name:
                recorded_type = "screen"
        if context is not None:
            group_id = context.get("groupId")
            if not (group_id is None or _present_id(group_id)):
                return None
    try:
        if recorded_type != received_type:
            encoded = orjson.dumps({**event, "type": recorded_type})
        else:
            encoded = orjson.dumps(event)
    except orjson.JSONEncodeError:
        return None
    if len(encoded) > MAX_EVENT_BYTES:
        return None
    return PreparedEvent(
        message_id or f"collector-{uuid.uuid4()}",
        not message_id,
        recorded_type,
        received_type,
        user_id,
        anonymous_id,
        group_id,
        previous_id,
        traits,
        event_name,
        name,
        timestamp,
        encoded,
        event_warnings(event, received_type, recorded_type, horizon),
    )


def _prepare_event(event: Any, horizon: str) -> PreparedEvent:
    if not isinstance(event, dict):
        raise _invalid(f"an event must be an object, got {type(event).__name__}")
    try:
        encoded = orjson.dumps(event)
    except orjson.JSONEncodeError:
        # orjson reads deeper nesting than it writes back; such an event cannot be stored.
        raise _invalid("event is nested too deeply") from None
    size = len(encoded)
    if size > MAX_EVENT_BYTES:
        raise IngestError(
            413, "event_too_large", f"event is {size} bytes, over the {MAX_EVENT_BYTES} limit"
        )
    received_type = event.get("type")
    if not isinstance(received_type, str) or not received_type:
        raise _invalid('event has no "type"')
    if received_type not in EVENT_TYPES:
        raise _invalid(f"unknown type {received_type!r}")

    user_id = _id(event, "userId")
    anonymous_id = _id(event, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise _invalid(f"{received_type} has neither userId nor anonymousId")

    received_message_id = _text(event, "messageId")
    generated = not received_message_id
    # Without a messageId the event cannot be deduplicated; it gets a unique one.
    message_id = received_message_id or f"collector-{uuid.uuid4()}"
    timestamp = _text(event, "timestamp")
    context = _mapping(event, "context")
    _mapping(event, "integrations")

    traits: Optional[dict[str, Any]] = None
    group_id: Optional[str] = None
    previous_id: Optional[str] = None
    event_name: Optional[str] = None
    name: Optional[str] = None
    recorded_type = received_type

    if received_type == "identify":
        traits = _mapping(event, "traits")
    elif received_type == "group":
        group_id = _id(event, "groupId")
        if group_id is None:
            raise _invalid('group has no "groupId"')
        traits = _mapping(event, "traits")
    elif received_type == "alias":
        previous_id = _id(event, "previousId")
        if previous_id is None:
            raise _invalid('alias has no "previousId"')
    else:
        _mapping(event, "properties")
        if received_type == "track":
            event_name = _text(event, "event")
            if not event_name:
                raise _invalid('track has no "event" name')
        else:
            name = _text(event, "name")
            _text(event, "category")
            if received_type == "page" and name:
                recorded_type = "screen"
        if context is not None:
            try:
                group_id = _id(context, "groupId")
            except IngestError as exc:
                raise _invalid(f"context.{exc.message}") from None

    if recorded_type != received_type:
        encoded = orjson.dumps({**event, "type": recorded_type})
    return PreparedEvent(
        message_id=message_id,
        generated_message_id=generated,
        type=recorded_type,
        received_type=received_type,
        user_id=user_id,
        anonymous_id=anonymous_id,
        group_id=group_id,
        previous_id=previous_id,
        traits=traits,
        event=event_name,
        name=name,
        timestamp=timestamp,
        body=encoded,
        warnings=event_warnings(event, received_type, recorded_type, horizon),
    )
