"""The built-in plugins of journy_analytics.plugins, each on its own and through a client."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import gzip
import json
import keyword
import logging
import re
import subprocess
import sys
import uuid
from collections.abc import Mapping
from typing import Any, Callable, Dict, Iterator, List, NamedTuple

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journy_analytics import Analytics, ValidationError
from journy_analytics._core._transport import Response
from journy_analytics._message._encoding import (
    SUPPORTED_KEY_TYPES,
    SUPPORTED_TYPES,
    DataclassInstance,
)
from journy_analytics.collector import CollectorThread
from journy_analytics.plugins import (
    EMAIL,
    IPV4,
    IPV6,
    LogDestination,
    OpenTelemetryContext,
    Redact,
    Sample,
    SuperProperties,
)

# -- SuperProperties ---------------------------------------------------------------------------


def test_super_properties_are_added_and_explicit_values_win(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    a = make_client()
    a.register(
        SuperProperties(
            properties={"app_version": "4.2", "plan": "free"},
            context={"app": {"name": "shop", "build": 7}, "locale": "en"},
        )
    )
    a.track(
        user_id="u1", event="Ordered", properties={"plan": "pro"}, context={"app": {"build": 8}}
    )
    a.identify(user_id="u1", traits={"name": "Ann"})
    assert a.flush(timeout=10)
    (track,) = collector.events(type="track")
    assert track["properties"] == {"app_version": "4.2", "plan": "pro"}
    assert track["context"]["app"] == {"name": "shop", "build": 8}
    assert track["context"]["locale"] == "en"
    (identify,) = collector.events(type="identify")
    assert identify["context"]["locale"] == "en"
    assert identify["traits"] == {"name": "Ann"}  # properties are not traits
    assert "properties" not in identify


# -- Sample ------------------------------------------------------------------------------------

_KEPT_SCRIPT = (
    "from journy_analytics.plugins import Sample\n"
    "s = Sample(0.3)\n"
    "print(','.join(u for u in (f'user-{i}' for i in range(500)) if s.keeps(u)))\n"
)


def _kept_in_fresh_process(hash_seed: str) -> List[str]:
    out = subprocess.run(
        [sys.executable, "-c", _KEPT_SCRIPT],
        env={"PYTHONHASHSEED": hash_seed, "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    return out.split(",")


def test_sample_is_deterministic_per_user_across_processes() -> None:
    first = _kept_in_fresh_process("1")
    second = _kept_in_fresh_process("2")
    sample = Sample(0.3)
    here = [f"user-{i}" for i in range(500) if sample.keeps(f"user-{i}")]
    assert first == second == here
    assert 100 < len(here) < 200  # about 30 % of 500


def test_sample_keeps_a_user_in_or_out_for_every_event(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    a = make_client()
    sample = Sample(0.5)
    a.register(sample)
    users = [f"u{i}" for i in range(40)]
    for _ in range(3):
        for user in users:
            a.track(user_id=user, event="Ordered")
    a.track(anonymous_id="anon-1", event="Viewed")  # no userId: sampled by anonymousId
    assert a.flush(timeout=10)
    kept = {u for u in users if sample.keeps(u)}
    assert 0 < len(kept) < len(users)
    received = [e.get("userId") for e in collector.events(type="track") if e.get("userId")]
    assert sorted(received) == sorted(u for u in users for _ in range(3) if u in kept)
    anon_kept = sample.keeps("anon-1")
    assert len(collector.events(anonymous_id="anon-1")) == (1 if anon_kept else 0)
    expected_dropped = 3 * (len(users) - len(kept)) + (0 if anon_kept else 1)
    assert a.stats()["dropped_by_plugin"] == expected_dropped


def test_sample_rate_bounds_and_validation() -> None:
    event = {"type": "track", "userId": "u1"}
    assert Sample(1).process(dict(event)) is not None
    assert Sample(0).process(dict(event)) is None
    assert Sample(0.5).process({"type": "track"}) is not None  # nothing to sample by
    by_group = Sample(0.5, by="groupId")
    assert {by_group.keeps("g1") for _ in range(5)} == {by_group.keeps("g1")}
    for bad in (-0.1, 1.5, "0.5", True):
        with pytest.raises(ValueError, match="rate"):
            Sample(bad)  # type: ignore[arg-type]


# -- Redact ------------------------------------------------------------------------------------


def test_redact_masks_keys_and_patterns_at_any_depth_without_touching_the_caller(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    a = make_client()
    a.register(
        Redact(keys=["password", "SSN"], patterns=[EMAIL, IPV4.pattern, re.compile("tok_\\w+")])
    )
    properties = {
        "note": "write to ann@example.com from 10.1.2.3",
        "nested": {"ssn": "123-45-6789", "list": ["bob@example.org", 5, {"Password": "x"}]},
        "token": "tok_abc123",
        "count": 3,
    }
    snapshot = json.loads(json.dumps(properties))
    a.track(user_id="u1", event="Signed Up", properties=properties, context={"ip": "192.168.0.9"})
    a.identify(user_id="u1", traits={"email": "ann@example.com", "password": "hunter2"})
    assert a.flush(timeout=10)
    (track,) = collector.events(type="track")
    assert track["properties"] == {
        "note": "write to [redacted] from [redacted]",
        "nested": {"ssn": "[redacted]", "list": ["[redacted]", 5, {"Password": "[redacted]"}]},
        "token": "[redacted]",
        "count": 3,
    }
    assert track["context"]["ip"] == "[redacted]"
    (identify,) = collector.events(type="identify")
    assert identify["traits"] == {"email": "[redacted]", "password": "[redacted]"}
    assert properties == snapshot  # the caller's dicts are untouched
    wire = json.dumps(collector.events())
    assert "example.com" not in wire and "hunter2" not in wire and "10.1.2.3" not in wire


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("mail ann.lee+x@mail.example.co.uk now", "mail # now"),
        ("from 192.168.0.9:8080", "from #:8080"),
        ("v6 2001:0db8:85a3:0000:0000:8a2e:0370:7334 and fe80::1", "v6 # and #"),
        ("loopback ::1, route 2001:db8::ff00:42:8329", "loopback #, route #"),
        ("at 10:30:00 on 2024-01-02, version 1.2.3.4.5, std::vector", None),
    ],
)
def test_ready_made_patterns_mask_pii_and_leave_lookalikes(text: str, masked: Any) -> None:
    plugin = Redact(patterns=[EMAIL, IPV4, IPV6], replacement="#")
    event = {"type": "track", "properties": {"text": text}}
    assert plugin.process(event)["properties"]["text"] == (text if masked is None else masked)


def test_redact_with_no_replacement_removes_keys() -> None:
    plugin = Redact(keys=["email"], patterns=[EMAIL], replacement=None)
    event = {"type": "identify", "traits": {"email": "a@b.io", "bio": "mail a@b.io"}}
    assert plugin.process(event)["traits"] == {"bio": "mail "}


def test_redact_masks_matches_that_re_form_after_a_replacement() -> None:
    removing = Redact(patterns=["ab"], replacement=None)
    assert removing.process({"type": "track", "properties": {"t": "aabbx"}})["properties"] == {
        "t": "x"
    }
    # A match completed by the replacement itself at every pass: the text is masked whole.
    looping = Redact(patterns=[r"\](?=x)"], replacement="[redacted]")
    event = looping.process({"type": "track", "properties": {"t": "a]x"}})
    assert event["properties"] == {"t": "[redacted]"}


def test_redact_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"keys=.*patterns="):
        Redact()
    with pytest.raises(ValueError, match="not a valid regex"):
        Redact(patterns=["("])
    with pytest.raises(TypeError, match="lists"):
        Redact(keys="email")  # a str would redact 'e', 'm', ...


def test_redact_sees_every_type_the_encoder_sends(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    from django.utils.safestring import mark_safe
    from markupsafe import Markup

    @dataclasses.dataclass
    class Contact:
        note: str
        password: str

    class Role(enum.Enum):
        ADMIN = "admin ann@example.com"

    class Pair(NamedTuple):
        left: str
        right: str

    a = make_client()
    a.register(Redact(keys=["password"], patterns=[EMAIL]))
    a.track(
        user_id="u1",
        event="Typed",
        properties={
            "contact": Contact(note="mail ann@example.com", password="hunter2"),
            "tags": {"ann@example.com"},
            "frozen": frozenset({"bob@example.org"}),
            "markup": Markup("<b>ann@example.com</b>"),
            "safe": mark_safe("bob@example.org"),
            "raw": b"ann@example.com",
            "role": Role.ADMIN,
            "pair": Pair("ann@example.com", "x"),
            "by_mail": {"ann@example.com": 1, b"password": "hunter2"},
        },
        context={"who": Markup("ann@example.com")},
    )
    a.identify(
        user_id="u1", traits={"nested": [{"deep": (Contact("bob@example.org", "hunter2"),)}]}
    )
    assert a.flush(timeout=10)
    (track,) = collector.events(type="track")
    (identify,) = collector.events(type="identify")
    assert track["properties"] == {
        "contact": {"note": "mail [redacted]", "password": "[redacted]"},
        "tags": ["[redacted]"],
        "frozen": ["[redacted]"],
        "markup": "<b>[redacted]</b>",
        "safe": "[redacted]",
        "raw": "[redacted]",
        "role": "admin [redacted]",
        "pair": ["[redacted]", "x"],
        "by_mail": {"[redacted]": 1, "password": "[redacted]"},
    }
    assert identify["traits"] == {
        "nested": [{"deep": [{"note": "[redacted]", "password": "[redacted]"}]}]
    }
    assert track["context"]["who"] == "[redacted]"
    wire = json.dumps(collector.requests())
    assert "example.com" not in wire and "example.org" not in wire and "hunter2" not in wire


def test_redact_lets_the_encoders_refusal_through_as_validation_error(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    a = make_client()
    a.register(Redact(patterns=[EMAIL]))
    with pytest.raises(ValidationError, match=r"properties\.bad is of type object"):
        a.track(user_id="u1", event="Bad", properties={"bad": object()})
    a.track(user_id="u1", event="Good", properties={"fine": "ann@example.com"})
    assert a.flush(timeout=10)
    assert [e["event"] for e in collector.events()] == ["Good"]
    assert a.stats()["plugins"]["errors"] == {}


# -- Redact, for any value the encoder accepts --------------------------------------------------
#
# One strategy per type the encoder supports, built from the encoder's own list: a type added
# to the encoder without a strategy here fails test_every_supported_type_has_a_strategy, and
# with one, it is nested into every value the property tests draw.

# The secrets: an "@" or a "§" that no number, date, UUID, base64 text or JSON literal holds,
# so whatever contains one on the wire came from a string the test drew; regex specials and
# non-ASCII to test the escaping; no character of "[redacted]".
PATTERN_SECRET = "ann.lee+x@€xample.(co)"
KEY_SECRET = "hunter§2"


class _Str(str):  # SafeString, Markup: the content is sent, whatever __str__ says
    def __str__(self) -> str:
        return "not what is sent"


class _Int(int):
    pass


class _Float(float):
    pass


class _List(list):  # type: ignore[type-arg]
    pass


class _Tuple(tuple):  # type: ignore[type-arg]
    pass


class _Dict(dict):  # type: ignore[type-arg]
    pass


class _Mapping(Mapping):  # type: ignore[type-arg]
    """A Mapping that is not a dict."""

    def __init__(self, items: Dict[Any, Any]) -> None:
        self._items = items

    def __getitem__(self, key: Any) -> Any:
        return self._items[key]

    def __iter__(self) -> Any:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _an_enum(value: Any) -> enum.Enum:
    return enum.Enum("Drawn", {"MEMBER": value}).MEMBER  # type: ignore[return-value]


def _a_dataclass(fields: Dict[str, Any]) -> Any:
    return dataclasses.make_dataclass("Drawn", list(fields))(**fields)


_PLAIN_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=5)


def _carrying(secret: str) -> st.SearchStrategy[str]:
    return _PLAIN_TEXT | st.builds(lambda a, b: a + secret + b, _PLAIN_TEXT, _PLAIN_TEXT)


def _leaves(text: st.SearchStrategy[str]) -> Dict[type, st.SearchStrategy[Any]]:
    """A strategy for every supported type that is not a container; ``text`` draws the
    strings, which carry the secret."""
    scalars = st.one_of(text, st.integers(), st.floats(), st.booleans())
    return {
        str: st.one_of(text, text.map(_Str)),
        int: st.one_of(st.integers(-(2**70), 2**70), st.integers().map(_Int)),
        float: st.one_of(st.floats(), st.floats().map(_Float)),
        bool: st.booleans(),
        type(None): st.none(),
        enum.Enum: scalars.map(_an_enum),
        decimal.Decimal: st.decimals(allow_nan=False),
        dt.datetime: st.datetimes(timezones=st.none() | st.timezones()),
        dt.date: st.dates(),
        dt.time: st.times(),
        dt.timedelta: st.timedeltas(),
        uuid.UUID: st.uuids(),
        bytes: st.one_of(st.binary(max_size=8), text.map(str.encode)),
        bytearray: text.map(lambda t: bytearray(t.encode())),
        memoryview: text.map(lambda t: memoryview(t.encode())),
    }


_FIELD_NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True).filter(
    lambda n: not keyword.iskeyword(n)
) | st.sampled_from(["password", "Password"])


def _containers(
    children: st.SearchStrategy[Any], keys: st.SearchStrategy[Any], hashable: st.SearchStrategy[Any]
) -> Dict[type, st.SearchStrategy[Any]]:
    """A strategy for every supported container type, holding ``children``."""
    mappings = st.dictionaries(keys, children, max_size=3)
    sequences = st.lists(children, max_size=3)
    return {
        Mapping: st.one_of(mappings, mappings.map(_Dict), mappings.map(_Mapping)),
        list: st.one_of(sequences, sequences.map(_List)),
        tuple: st.one_of(sequences.map(tuple), sequences.map(_Tuple)),
        set: st.sets(hashable, max_size=3),
        frozenset: st.frozensets(hashable, max_size=3),
        DataclassInstance: st.dictionaries(_FIELD_NAMES, children, max_size=3).map(_a_dataclass),
    }


def _values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Any value the encoder accepts, containers nested in containers, from SUPPORTED_TYPES."""
    leaves = _leaves(text)
    unhashable = (bytearray, memoryview)
    hashable = st.one_of(
        [leaves[t] for t in SUPPORTED_TYPES if t in leaves and t not in unhashable]
    )
    keys = st.one_of(
        [leaves[t] for t in SUPPORTED_KEY_TYPES if t in leaves and t not in unhashable]
    )

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        containers = _containers(children, keys, hashable)
        return st.one_of([containers[t] for t in SUPPORTED_TYPES if t in containers])

    return st.recursive(
        st.one_of([leaves[t] for t in SUPPORTED_TYPES if t in leaves]), extend, max_leaves=10
    )


PATTERN_VALUES = _values(_carrying(PATTERN_SECRET))
KEY_VALUES = _values(_carrying(KEY_SECRET))


def test_every_supported_type_has_a_strategy() -> None:
    text = st.just("x")
    covered = set(_leaves(text)) | set(_containers(text, text, text))
    assert covered == set(SUPPORTED_TYPES)
    assert set(SUPPORTED_KEY_TYPES) <= set(_leaves(text))


class _RawHttpClient:
    """Keeps the exact bytes of every request body and answers 200."""

    def __init__(self) -> None:
        self.bodies: List[bytes] = []

    def send(self, url: str, body: bytes, headers: Any, timeout: float) -> Response:
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.bodies.append(body)
        return Response(200, {}, b'{"success":true}')

    def close(self) -> None:
        pass


def _sent(client: Analytics, http: _RawHttpClient) -> List[bytes]:
    assert client.flush(timeout=10)
    bodies, http.bodies = http.bodies, []
    return bodies


def _wire_strings(body: Any) -> Iterator[str]:
    if isinstance(body, str):
        yield body
    elif isinstance(body, dict):
        for key, value in body.items():
            yield key
            yield from _wire_strings(value)
    elif isinstance(body, list):
        for value in body:
            yield from _wire_strings(value)


@pytest.fixture
def raw_client() -> Iterator[Any]:
    http = _RawHttpClient()
    client = Analytics(write_key="k", http_client=http, flush_interval=30, gzip=True)
    yield client, http
    client.close_and_flush(timeout=5)


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("replacement", ["[redacted]", None])
def test_no_value_the_encoder_accepts_carries_a_pattern_to_the_wire(
    raw_client: Any, replacement: Any
) -> None:
    client, http = raw_client
    client.register(Redact(patterns=[re.escape(PATTERN_SECRET)], replacement=replacement))

    @PROPERTY
    @given(value=PATTERN_VALUES)
    def check(value: Any) -> None:
        try:
            client.track(user_id="u1", event="E", properties={"v": value}, context={"c": value})
            client.identify(user_id="u1", traits={"t": [value]})
        except ValidationError:
            pass  # the encoder refuses it: nothing of that event is sent
        for body in _sent(client, http):
            assert PATTERN_SECRET.encode() not in body
            assert not [s for s in _wire_strings(orjson.loads(body)) if PATTERN_SECRET in s]

    check()


_WRAPPERS: List[Callable[[Any], Any]] = [
    lambda inner: {"outer": inner},
    lambda inner: _Mapping({1: inner}),
    lambda inner: [inner],
    lambda inner: (0, inner),
    lambda inner: _Tuple((inner,)),
    lambda inner: _a_dataclass({"field": inner}),
]
_HOLDERS: List[Callable[[Any, Any], Any]] = [
    lambda key, v: {key: v},
    lambda key, v: _Mapping({key: v}),
    lambda key, v: _Dict({key: v}),
    lambda key, v: _a_dataclass({key.decode() if isinstance(key, bytes) else str.__str__(key): v}),
]


def test_no_value_under_a_redacted_key_reaches_the_wire_whatever_holds_it(
    raw_client: Any,
) -> None:
    client, http = raw_client
    client.register(Redact(keys=["password"], replacement=None))

    @PROPERTY
    @given(
        hidden=KEY_VALUES,
        key=st.sampled_from(["password", "PASSWORD", "Password", b"password", _Str("password")]),
        holder=st.sampled_from(_HOLDERS),
        wrappers=st.lists(st.sampled_from(_WRAPPERS), max_size=4),
    )
    def check(hidden: Any, key: Any, holder: Any, wrappers: List[Any]) -> None:
        value = holder(key, hidden)
        for wrap in wrappers:
            value = wrap(value)
        try:
            client.track(user_id="u1", event="E", properties={"v": value})
        except ValidationError:
            pass  # e.g. two keys with one JSON spelling: refused, nothing of it is sent
        for body in _sent(client, http):
            assert KEY_SECRET.encode() not in body

    check()


# -- OpenTelemetryContext -----------------------------------------------------------------------


def test_opentelemetry_context_adds_the_active_span_ids(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    a = make_client()
    a.register(OpenTelemetryContext())
    with tracer.start_as_current_span("checkout") as span:
        a.track(user_id="u1", event="In Span")
        ids = span.get_span_context()
    a.track(user_id="u1", event="No Span")
    assert a.flush(timeout=10)
    in_span, no_span = collector.events(type="track")
    assert in_span["context"]["traceId"] == format(ids.trace_id, "032x")
    assert in_span["context"]["spanId"] == format(ids.span_id, "016x")
    assert "traceId" not in no_span["context"] and "spanId" not in no_span["context"]


def test_opentelemetry_context_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=re.escape("journy-analytics[otel]")):
        OpenTelemetryContext()


# -- LogDestination ----------------------------------------------------------------------------


def test_log_destination_writes_one_json_line_per_final_event(
    make_client: Callable[..., Analytics],
    collector: CollectorThread,
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.events")
    a = make_client()
    a.register(LogDestination(logger=logger), Redact(keys=["email"]))
    with caplog.at_level(logging.INFO, logger="test.events"):
        a.track(user_id="u1", event="Ordered", properties={"email": "a@b.io", "n": 1})
        a.identify(user_id="u1", traits={"plan": "pro"})
        assert a.flush(timeout=10)
    lines = [r.getMessage() for r in caplog.records if r.name == "test.events"]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    logged: List[Dict[str, Any]] = [json.loads(line) for line in lines]
    sent = {e["messageId"]: e for e in collector.events()}
    for event in logged:
        assert event == sent[event["messageId"]]
    assert logged[0]["properties"] == {"email": "[redacted]", "n": 1}
