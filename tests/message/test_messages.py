"""Building one wire event per call type: shape, validation, timestamps, no mutation."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Dict, List

import orjson
import pytest

from journy_analytics import ValidationError, __version__
from journy_analytics._message import _build as m
from journy_analytics._message._encoding import encode_event

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID_SHAPE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
LIB = {"name": "journy-analytics", "version": __version__}


def test_identify_wire_shape() -> None:
    msg = m.build_identify(user_id="f4ca124298", traits={"email": "elon@tesla.com", "friends": 42})
    assert msg["type"] == "identify"
    assert msg["userId"] == "f4ca124298"
    assert "anonymousId" not in msg
    assert msg["traits"] == {"email": "elon@tesla.com", "friends": 42}
    assert msg["context"] == {"library": LIB}
    assert msg["integrations"] == {}
    assert UUID_SHAPE.match(msg["messageId"])
    assert ISO_MS_Z.match(msg["timestamp"])


def test_group_track_page_screen_alias_shapes() -> None:
    group = m.build_group(user_id="u", group_id="tesla", traits={"name": "Tesla"})
    assert (group["groupId"], group["traits"]) == ("tesla", {"name": "Tesla"})
    track = m.build_track(
        user_id="u", event="Car Sold", properties={"revenue": 39999.99}, group_id="tesla"
    )
    assert track["event"] == "Car Sold"
    assert track["properties"] == {"revenue": 39999.99}
    assert track["context"] == {"library": LIB, "groupId": "tesla"}
    page = m.build_page(user_id="u", category="Docs", name="Pricing", properties={"url": "x"})
    assert page["name"] == "Pricing" and page["category"] == "Docs"
    assert page["properties"] == {"url": "x", "category": "Docs"}
    screen = m.build_page(user_id="u", name="Home", category="App", kind="screen")
    assert screen["type"] == "screen" and screen["properties"] == {}
    alias = m.build_alias(user_id="u", previous_id="anon-1")
    assert alias["previousId"] == "anon-1" and alias["userId"] == "u"


def test_anonymous_only_identify_and_int_ids() -> None:
    msg = m.build_identify(anonymous_id="48d213bb-95c3-4f8d-af97-86b2b404dcfe")
    assert msg["anonymousId"] == "48d213bb-95c3-4f8d-af97-86b2b404dcfe"
    assert "userId" not in msg
    assert m.build_track(user_id=42, event="E")["userId"] == "42"


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: m.build_identify(traits={"a": 1}), "user_id or anonymous_id"),
        (lambda: m.build_track(user_id="u"), "needs event"),
        (lambda: m.build_track(user_id="u", event=""), "needs event"),
        (lambda: m.build_track(user_id="", event="E"), "user_id is empty"),
        (
            lambda: m.build_track(user_id=1.5, event="E"),
            "user_id must be a str, an int or a uuid.UUID",
        ),
        (
            lambda: m.build_track(user_id="u", event="E", properties=[1]),
            "properties must be a dict",
        ),
        (lambda: m.build_identify(user_id="u", traits="x"), "traits must be a dict"),
        (lambda: m.build_track(user_id="u", event="E", context=3), "context must be a dict"),
        (lambda: m.build_group(user_id="u"), "needs group_id"),
        (lambda: m.build_alias(user_id="u"), "needs previous_id"),
        (lambda: m.build_alias(previous_id="p"), "needs user_id"),
        (lambda: m.build_track(user_id="u", event="E", timestamp="yesterday"), "ISO-8601"),
        (lambda: m.build_track(user_id="u", event="E", timestamp=12), "must be a datetime"),
        (lambda: m.build_page(user_id="u", name=5), "name must be a str"),
    ],
)
def test_bad_calls_raise_validation_error_saying_what_to_fix(call: Any, needle: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(needle)):
        call()


def test_validation_error_is_a_value_error() -> None:
    assert issubclass(ValidationError, ValueError)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (dt.datetime(2015, 12, 12, 19, 11), "2015-12-12T19:11:00.000Z"),
        (
            dt.datetime(2015, 12, 12, 19, 11, 0, 123999, tzinfo=dt.timezone.utc),
            "2015-12-12T19:11:00.123Z",
        ),
        (
            dt.datetime(2015, 12, 12, 20, 11, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            "2015-12-12T19:11:00.000Z",
        ),
        ("2015-12-12T19:11:00Z", "2015-12-12T19:11:00.000Z"),
        ("2015-12-12T21:11:00.5+02:00", "2015-12-12T19:11:00.500Z"),
        ("2015-12-12 19:11", "2015-12-12T19:11:00.000Z"),
        ("2015-12-12T19:11:00.5Z", "2015-12-12T19:11:00.500Z"),
        ("2015-12-12T21:11:00+0200", "2015-12-12T19:11:00.000Z"),
        (dt.date(2015, 12, 12), "2015-12-12T00:00:00.000Z"),
    ],
)
def test_timestamps_normalised_to_utc_milliseconds_z(given: Any, expected: str) -> None:
    assert m.build_track(user_id="u", event="E", timestamp=given)["timestamp"] == expected


def test_now_timestamp_is_current() -> None:
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    stamp = m.build_track(user_id="u", event="E")["timestamp"]
    parsed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before <= parsed <= before + dt.timedelta(seconds=3)


def test_callers_dicts_never_mutated_and_snapshot_at_call_time() -> None:
    context: Dict[str, Any] = {"ip": "1.2.3.4"}
    properties: Dict[str, Any] = {"plan": "pro", "nested": {"a": 1}}
    msg = m.build_page(
        user_id="u", category="Docs", properties=properties, context=context, group_id="g"
    )
    assert context == {"ip": "1.2.3.4"}
    assert properties == {"plan": "pro", "nested": {"a": 1}}
    data = encode_event(msg)
    properties["nested"]["a"] = 2
    properties["plan"] = "free"
    decoded = orjson.loads(data)
    assert decoded["properties"] == {"plan": "pro", "nested": {"a": 1}, "category": "Docs"}
    assert decoded["context"] == {"ip": "1.2.3.4", "library": LIB, "groupId": "g"}


def test_message_ids_unique_and_caller_given_id_kept() -> None:
    ids = {m.build_track(user_id="u", event="E")["messageId"] for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(UUID_SHAPE.match(i) for i in list(ids)[:50])
    assert m.build_track(user_id="u", event="E", message_id="mine-1")["messageId"] == "mine-1"


def test_oversize_event_rejected_with_size() -> None:
    msg = m.build_track(user_id="u", event="E", properties={"blob": "x" * 40_000})
    with pytest.raises(ValidationError, match=r"at most 32768 bytes"):
        encode_event(msg)


def test_the_timestamp_is_the_calls_own_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    # The string is kept for the millisecond it was made in: each new millisecond, second,
    # or a clock that steps back gets its own.
    clock = iter([1700000000.0004, 1700000000.0009, 1700000000.0011, 1700000001.9995, 1699999999.5])
    monkeypatch.setattr(m.time, "time", lambda: next(clock))
    stamps = [m.build_track(user_id="u", event="E")["timestamp"] for _ in range(5)]
    assert stamps == [
        "2023-11-14T22:13:20.000Z",
        "2023-11-14T22:13:20.000Z",
        "2023-11-14T22:13:20.001Z",
        "2023-11-14T22:13:21.999Z",
        "2023-11-14T22:13:19.500Z",
    ]


def test_message_ids_from_many_threads_never_repeat() -> None:
    import threading

    ids: List[str] = []

    def make() -> None:
        ids.extend(m.build_track(user_id="u", event="E")["messageId"] for _ in range(5000))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == len(ids) == 40_000
