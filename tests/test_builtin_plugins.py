"""The built-in plugins of journy_analytics.plugins, each on its own and through a client."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from typing import Any, Callable, Dict, List

import pytest

from journy_analytics import Analytics
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


def test_redact_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"keys=.*patterns="):
        Redact()
    with pytest.raises(ValueError, match="not a valid regex"):
        Redact(patterns=["("])
    with pytest.raises(TypeError, match="lists"):
        Redact(keys="email")  # a str would redact 'e', 'm', ...


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
