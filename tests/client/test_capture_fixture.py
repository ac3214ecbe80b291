"""The pytest fixture users get from ``pytest_plugins = ["journy_analytics.testing"]``."""

from __future__ import annotations

import journy_analytics
from journy_analytics.testing import Capture


def signup(user_id: str) -> None:
    """Application code that uses the module-level client, as many apps do."""
    journy_analytics.identify(user_id=user_id, traits={"plan": "trial"})
    journy_analytics.track(user_id=user_id, event="Signed Up", properties={"source": "ads"})


def test_fixture_captures_module_level_calls(journy_capture: Capture) -> None:
    signup("f4ca124298")
    (event,) = journy_capture.events(type="track", event="Signed Up")
    assert event["userId"] == "f4ca124298"
    assert event["properties"] == {"source": "ads"}
    assert journy_capture.events(type="identify")[0]["traits"] == {"plan": "trial"}
    journy_capture.clear()
    assert journy_capture.events() == []


def test_fixture_is_fresh_for_every_test(journy_capture: Capture) -> None:
    assert journy_capture.events() == []
    journy_capture.analytics.group(user_id="u", group_id="tesla", traits={"name": "Tesla"})
    assert journy_capture.events(group_id="tesla")[0]["traits"] == {"name": "Tesla"}


def test_capture_records_even_when_the_environment_disables_clients(monkeypatch) -> None:
    # Analytics(...) reads JOURNY_DISABLE where disable= is not given; Capture must not.
    monkeypatch.setenv("JOURNY_DISABLE", "1")
    monkeypatch.setenv("JOURNY_GZIP", "1")
    with Capture() as capture:
        capture.analytics.track(user_id="u", event="Still Seen")
        assert [e["event"] for e in capture.events(type="track")] == ["Still Seen"]
