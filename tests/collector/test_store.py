"""The store's write path directly: group commits, the profile cache, an older database."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest

from journy_analytics.collector import Store
from journy_analytics.collector._ingest import prepare_batch
from journy_analytics.collector._store.writer import Writer


def batch(*events: dict[str, Any]) -> list[Any]:
    return prepare_batch({"batch": list(events)})


def identify(mid: str, user: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "messageId": mid, "traits": traits}


@pytest.fixture
def store():
    s = Store(":memory:")
    yield s
    s.close()


def test_requests_committed_together_dedupe_and_merge_in_order(store):
    # Queued at once, these share one transaction (group commit).
    futures = [
        store.ingest(batch(identify("a", "u", plan="free", x=1))),
        store.ingest(batch(identify("a", "u", plan="zzz"), identify("b", "u", plan="pro"))),
        store.ingest(batch(identify("c", "u", x=None))),
        store.ingest(batch(identify("b", "u", plan="lost"))),
    ]
    results = [f.result() for f in futures]
    assert [(r.stored, r.duplicates) for r in results] == [(1, 0), (1, 1), (1, 0), (0, 1)]
    user = store.user("u").result()
    assert user["traits"] == {"plan": "pro"} and user["events"] == 3
    stats = store.stats().result()
    assert (stats["received"], stats["stored"], stats["duplicates"]) == (5, 3, 2)


def test_reset_inside_a_group_commit(store):
    futures = [
        store.ingest(batch(identify("a", "u", n=1))),
        store.reset(),
        store.ingest(batch(identify("b", "v", n=2))),
    ]
    for f in futures:
        f.result()
    assert store.user("u").result() is None
    assert store.user("v").result()["events"] == 1
    assert store.message_ids().result() == {"b"}
    assert store.stats().result()["received"] == 1


def test_a_failed_transaction_leaves_neither_rows_nor_cached_changes(store, monkeypatch):
    store.ingest(batch(identify("a", "u", n=1))).result()
    calls = {"n": 0}
    original = Writer.ingest

    def failing(self: Writer, tx: Any, *args: Any) -> Any:
        result = original(self, tx, *args)
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return result

    monkeypatch.setattr(Writer, "ingest", failing)
    with pytest.raises(RuntimeError):
        store.ingest(batch(identify("b", "u", n=2, gone=True))).result()
    monkeypatch.setattr(Writer, "ingest", original)
    assert store.user("u").result()["traits"] == {"n": 1}
    store.ingest(batch(identify("c", "u", m=3))).result()
    assert store.user("u").result()["traits"] == {"n": 1, "m": 3}


def test_one_failing_write_does_not_sink_the_others_of_its_group(store):
    started, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        assert release.wait(30)

    # The database thread waits in `hold` while three writes queue up behind it: they
    # make one group, whose transaction fails on the middle one.
    held = store.rest_read(hold)
    assert started.wait(30)

    def broken(tx: Any) -> None:
        raise ValueError("a write that fails")

    before = store.ingest(batch(identify("a", "u", n=1)))
    failing = store.rest_write(broken)
    after = store.ingest(batch(identify("b", "v", n=2)))
    release.set()
    held.result()
    assert before.result().stored == 1
    with pytest.raises(ValueError, match="a write that fails"):
        failing.result()
    assert after.result().stored == 1
    assert store.message_ids().result() == {"a", "b"}
    assert store.user("u").result()["traits"] == {"n": 1}


def test_counts_profile_events_like_the_event_table(store):
    store.ingest(
        batch(
            {"type": "group", "anonymousId": "acme", "groupId": "acme", "traits": {"n": 1}},
            {"type": "track", "userId": "u", "event": "E", "context": {"groupId": "acme"}},
            {"type": "page", "anonymousId": "acme", "name": "P"},
        )
    ).result()
    # The account-only group call is an event of profile "acme", as its anonymousId says.
    assert store.user("acme").result()["events"] == 2
    assert store.account("acme").result()["events"] == 2
    assert store.account("acme").result()["members"] == []  # no group call linked u
    assert store.account("acme").result()["notGrouped"] == ["u"]


_OLD_SCHEMA = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE,
    generated_id INTEGER NOT NULL DEFAULT 0, type TEXT NOT NULL, received_type TEXT NOT NULL,
    user_id TEXT, anonymous_id TEXT, profile_id TEXT, group_id TEXT, event TEXT, name TEXT,
    timestamp TEXT, received_at TEXT NOT NULL, body BLOB NOT NULL
);
CREATE INDEX events_profile ON events(profile_id);
CREATE INDEX events_group ON events(group_id);
CREATE TABLE users (id TEXT PRIMARY KEY, identified INTEGER NOT NULL DEFAULT 0,
    traits TEXT NOT NULL DEFAULT '{}', first_seen TEXT NOT NULL, last_seen TEXT NOT NULL);
CREATE TABLE accounts (id TEXT PRIMARY KEY, traits TEXT NOT NULL DEFAULT '{}',
    first_seen TEXT NOT NULL, last_seen TEXT NOT NULL);
INSERT INTO events (message_id, type, received_type, user_id, profile_id, group_id,
    received_at, body) VALUES
    ('m1', 'track', 'track', 'u', 'u', 'acme', 't', '{}'),
    ('m2', 'track', 'track', 'u', 'u', NULL, 't', '{}');
INSERT INTO users VALUES ('u', 1, '{"a": 1}', 't', 't');
INSERT INTO accounts VALUES ('acme', '{}', 't', 't');
"""


def test_a_database_of_an_earlier_collector_is_migrated(tmp_path):
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.executescript(_OLD_SCHEMA)
    conn.close()
    store = Store(path)
    try:
        assert store.user("u").result()["events"] == 2
        assert store.account("acme").result()["events"] == 1
        store.ingest(batch(identify("m1", "u", a=2), identify("m3", "u", b=3))).result()
        user = store.user("u").result()
        assert user["events"] == 3 and user["traits"] == {"a": 1, "b": 3}
    finally:
        store.close()
    conn = sqlite3.connect(path)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    conn.close()
    assert not indexes & {"events_profile", "events_group"}
    store = Store(path)  # opening again does not count twice
    try:
        assert store.user("u").result()["events"] == 3
    finally:
        store.close()


def test_a_call_after_close_raises_instead_of_waiting_forever():
    store = Store(":memory:")
    store.close()
    assert store.closed
    for call in (lambda: store.user("u"), lambda: store.ingest(batch(identify("a", "u")))):
        with pytest.raises(RuntimeError, match="the collector store is closed"):
            call()
    store.close()  # a second close is a no-op
