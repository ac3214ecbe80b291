"""journy.io's rules: each one fires on the event that breaks it, and only there."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from journy_analytics.collector import CollectorThread
from journy_analytics.collector._ingest import prepare_batch
from journy_analytics.collector._rules import RULES


def rules_of(*events):
    return [[w["rule"] for w in (e.warnings or [])] for e in prepare_batch({"batch": list(events)})]


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_each_stateless_rule_fires_on_its_case_only():
    now = datetime.now(timezone.utc)
    assert rules_of(
        {"type": "identify", "userId": "u"},
        {"type": "identify", "userId": "u", "traits": {}},
        {"type": "identify", "userId": "u", "traits": {"Email": "a", " email ": "b"}},
        {"type": "identify", "userId": "u", "traits": {"email": "a", "name": "b"}},
        {"type": "group", "userId": "u", "groupId": "g", "traits": {"Plan": 1, "plan": 2}},
        {"type": "track", "userId": "u", "event": "E", "properties": {"a": {"b": 1}}},
        {"type": "track", "userId": "u", "event": "E", "properties": {"a": [1, 2], "b": "x"}},
        {"type": "track", "userId": "u", "event": "E", "properties": {"a": 1, "b": None}},
        {"type": "page", "userId": "u", "name": "Pricing"},
        {"type": "page", "userId": "u"},
        {"type": "screen", "userId": "u", "name": "Home"},
        {"type": "track", "userId": "u", "event": "E", "timestamp": iso(now + timedelta(days=1))},
        {"type": "track", "userId": "u", "event": "E", "timestamp": iso(now)},
        {"type": "track", "userId": "u", "event": "E", "timestamp": "2999-01-01T00:00:00+02:00"},
        {"type": "track", "userId": "u", "event": "E", "timestamp": "2015-12-12T19:11:00Z"},
        {"type": "track", "userId": "u", "event": "E", "timestamp": "yesterday"},
    ) == [
        ["identify_without_traits"],
        ["identify_without_traits"],
        ["trait_key_collision"],
        [],
        ["trait_key_collision"],
        ["nested_property"],
        ["nested_property"],
        [],
        ["page_recorded_as_screen"],
        [],
        [],
        ["future_timestamp"],
        [],
        ["future_timestamp"],
        [],
        ["unreadable_timestamp"],
    ]


def test_the_slow_validation_path_checks_the_same_rules():
    # An integer userId takes the thorough path (the fast path only takes strings).
    assert rules_of(
        {"type": "identify", "userId": 7},
        {"type": "track", "userId": 7, "event": "E", "properties": {"x": {}}},
    ) == [["identify_without_traits"], ["nested_property"]]


@pytest.fixture
def store():
    with CollectorThread() as c:
        yield c._require_state().store


def stored_rules(store):
    page = store.inspector_events({}, limit=100).result()
    return [[w["rule"] for w in e["warnings"]] for e in reversed(page["events"])]


def test_account_rule_knows_group_calls_across_requests_and_restarts(tmp_path):
    db = str(tmp_path / "c.db")
    with CollectorThread(db=db) as c:
        store = c._require_state().store
        track = {"type": "track", "userId": "u", "event": "E", "context": {"groupId": "acme"}}
        page = {"type": "page", "userId": "u", "context": {"groupId": "acme"}}
        store.ingest(prepare_batch({"batch": [track, page]})).result()
        store.ingest(
            prepare_batch({"batch": [{"type": "group", "userId": "u", "groupId": "acme"}]})
        ).result()
        store.ingest(prepare_batch({"batch": [track]})).result()
        # An account-only group call (anonymousId == groupId) links no user.
        store.ingest(
            prepare_batch(
                {
                    "batch": [
                        {"type": "group", "anonymousId": "beta", "groupId": "beta"},
                        {
                            "type": "track",
                            "userId": "v",
                            "event": "E",
                            "context": {"groupId": "beta"},
                        },
                    ]
                }
            )
        ).result()
        assert stored_rules(store) == [
            ["account_not_grouped"],
            ["account_not_grouped"],
            [],
            [],
            [],
            ["account_not_grouped"],
        ]
    # The link survives a restart (it is read back from the database, not a cache).
    with CollectorThread(db=db) as c:
        store = c._require_state().store
        store.ingest(prepare_batch({"batch": [track]})).result()
        assert stored_rules(store)[-1] == []


def test_trait_keys_colliding_with_stored_traits(store):
    store.ingest(
        prepare_batch({"batch": [{"type": "identify", "userId": "u", "traits": {"Email": "a"}}]})
    ).result()
    store.ingest(
        prepare_batch(
            {
                "batch": [
                    {"type": "identify", "userId": "u", "traits": {"email": "b"}},
                    {"type": "identify", "userId": "u", "traits": {"Email": "c"}},
                    {"type": "group", "userId": "u", "groupId": "g", "traits": {"Name": 1}},
                    {"type": "group", "userId": "u", "groupId": "g", "traits": {"name ": 2}},
                ]
            }
        )
    ).result()
    assert stored_rules(store) == [
        [],
        ["trait_key_collision"],
        [],
        [],
        ["trait_key_collision"],
    ]


def test_every_rule_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "collector.md").read_text()
    for rule in RULES:
        assert f"`{rule}`" in doc, rule
