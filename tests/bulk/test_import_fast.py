"""The import's fast path: events encoded by the engine and acknowledged a batch at a time.

What must not change with it: a row's content-derived id (a re-import dedupes against
imports made before), plugins and type handlers still see every event, and the public
callback contract ``callback(error, message_dict)`` for everything else in the client.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import journy_analytics
from journy_analytics import Analytics, bulk
from journy_analytics._core._outcomes import BatchAck
from journy_analytics._import._rows import _NAMESPACE, Refusal, RowMapper
from journy_analytics._message._build import build_track
from journy_analytics._message._encoding import encode_event
from journy_analytics.collector import CollectorThread
from journy_analytics.plugins import SuperProperties


def _event(i: int) -> Dict[str, Any]:
    return {
        "type": "track",
        "userId": f"user-{i % 7}",
        "event": "Order Placed",
        "timestamp": "2019-03-01T10:00:00Z",
        "properties": {"row": i},
    }


def test_content_ids_are_the_ones_earlier_imports_used() -> None:
    # Pinned: ids of imports made with earlier versions. A change here would make a
    # re-import send every row again under new ids.
    spec = {
        "type": "track",
        "userId": "user-7",
        "event": "Order Placed",
        "timestamp": "2019-03-01T10:00:00Z",
        "properties": {"row": 7, "total": 10.5},
    }
    assert RowMapper().call(spec)[1]["message_id"] == "8a59d2c7-7dcc-5cd1-8ef9-4279be19a167"
    csv_row = {
        "user_id": "42",
        "action": "Order Placed",
        "created_at": "2019-03-01 10:00:00",
        "plan": "pro",
        "amount": "129.00",
    }
    mapper = RowMapper([("userId", "user_id"), ("event", "action"), ("timestamp", "created_at")])
    assert mapper.call(csv_row)[1]["message_id"] == "89d875e5-6a23-51da-9778-ee8b3a7afca3"
    # And they are what docs/import.md says: uuid5 of the canonical event.
    canonical = orjson.dumps(
        {**spec, "timestamp": "2019-03-01T10:00:00.000Z"}, option=orjson.OPT_SORT_KEYS
    )
    assert str(uuid.uuid5(uuid.UUID(bytes=_NAMESPACE), canonical.decode())) == (
        "8a59d2c7-7dcc-5cd1-8ef9-4279be19a167"
    )


def _both_paths(mapper: RowMapper, row: Dict[str, Any]) -> Tuple[Any, Any]:
    """What ``call`` gives a row (the short path where it applies), and what the general
    path alone gives it: a result or the Refusal's code and reason."""

    def outcome(fn: Callable[[Any], Any]) -> Any:
        try:
            return fn(dict(row))
        except Refusal as exc:
            return ("refused", exc.code, exc.reason)

    return outcome(mapper.call), outcome(mapper._call)


SPEC_ROWS: List[Dict[str, Any]] = [
    _event(1),
    {**_event(2), "name": "Home"},  # not a track field: moved into properties
    {**_event(3), "category": "Docs", "properties": {"category": "kept"}},  # the row's own wins
    {**_event(4), "properties": '{"a": 1}'},  # an object as a JSON string (a CSV cell)
    {**_event(5), "properties": "not json"},
    {**_event(6), "traits": {"a": 1}},  # not a track field, and not data: refused
    {**_event(7), "userId": None, "anonymousId": "anon"},
    {**_event(8), "event": ""},
    {**_event(9), "messageId": 12345},
    {**_event(10), "timestamp": "2019-02-30T10:00:00Z"},
    {"type": "page", "userId": "u", "name": "Home", "category": "Docs"},
    {"type": "identify", "userId": "u", "traits": {"email": "a@b.c"}, "name": "Ada"},
    {"type": "alias", "userId": "u", "previousId": "p", "name": "x"},
    {"userId": "u", "event": "No Type"},
    {"type": "launch", "userId": "u"},
]


@pytest.mark.parametrize("row", SPEC_ROWS, ids=range(len(SPEC_ROWS)))
def test_the_short_path_for_spec_rows_agrees_with_the_general_one(row: Dict[str, Any]) -> None:
    fast, general = _both_paths(RowMapper(), row)
    assert fast == general


_VALUES = st.one_of(
    st.none(),
    st.just(""),
    st.text(max_size=5),
    st.integers(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just('{"k": 1}'),
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "type",
                "userId",
                "anonymousId",
                "event",
                "name",
                "category",
                "properties",
                "traits",
                "context",
                "groupId",
                "previousId",
                "timestamp",
                "messageId",
            ]
        ),
        _VALUES,
    ),
    st.sampled_from(["track", "page", "identify", "group", "alias", "screen", None, 3]),
)
def test_the_short_path_agrees_with_the_general_one_on_any_spec_row(
    row: Dict[str, Any], kind: Any
) -> None:
    if kind is not None:
        row["type"] = kind
    if "timestamp" in row:
        row["timestamp"] = "2020-01-02T03:04:05Z"
    fast, general = _both_paths(RowMapper(), row)
    assert fast == general


class _Owner:
    """Records how the client told it about its rows."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: List[List[Any]] = []
        self.one_by_one: List[Tuple[Any, Optional[BaseException], Dict[str, Any]]] = []

    def batch_delivered(self, rows: List[Any]) -> None:
        with self.lock:
            self.batches.append(list(rows))

    def event_settled(
        self, row: Any, error: Optional[BaseException], message: Dict[str, Any]
    ) -> None:
        with self.lock:
            self.one_by_one.append((row, error, message))

    def settled_rows(self) -> List[Any]:
        return sorted([r for b in self.batches for r in b] + [r for r, _, _ in self.one_by_one])


def _put(client: Analytics, owner: _Owner, row: int) -> Dict[str, Any]:
    message = build_track(user_id="u", event="Row", properties={"row": row})
    client._enqueue_encoded(message, encode_event(message), BatchAck(owner, row))
    return message


def test_a_delivered_batch_of_one_owners_rows_is_acknowledged_in_one_call(
    collector: CollectorThread, make_client: Callable[..., Analytics]
) -> None:
    client = make_client(max_events_in_batch=10, flush_interval=60)
    owner = _Owner()
    for row in range(30):
        _put(client, owner, row)
    assert client.flush(timeout=10)
    assert owner.settled_rows() == list(range(30))
    assert owner.one_by_one == []  # no event was decoded for it
    assert len(owner.batches) <= client.stats()["batches_sent"]
    assert len(collector.events()) == 30


def test_mixed_batches_keep_each_owner_its_rows_and_user_callbacks_their_contract(
    collector: CollectorThread, make_client: Callable[..., Analytics]
) -> None:
    client = make_client(max_events_in_batch=10, flush_interval=60)
    first, second = _Owner(), _Owner()
    seen: List[Tuple[Optional[BaseException], Dict[str, Any]]] = []
    # Two owners sharing batches (two imports through one client).
    for row in range(5):
        _put(client, first, 50 + row)
        _put(client, second, 150 + row)
    assert client.flush(timeout=10)
    assert first.settled_rows() == [50, 51, 52, 53, 54]
    assert second.settled_rows() == [150, 151, 152, 153, 154]
    for owner in (first, second):
        owner.batches.clear()
        owner.one_by_one.clear()
    # A user's callback in the same batches.
    for row in range(4):
        _put(client, first, row)
    client.track(
        user_id="u", event="Mine", message_id="mine-1", callback=lambda e, m: seen.append((e, m))
    )
    sent = {row: _put(client, second, row) for row in range(100, 105)}
    assert client.flush(timeout=10)
    # The user's callback: (None, the event as sent), as always.
    assert len(seen) == 1 and seen[0][0] is None
    assert seen[0][1]["messageId"] == "mine-1" and seen[0][1]["event"] == "Mine"
    # Each owner is told of its own rows only, each row once.
    assert first.settled_rows() == [0, 1, 2, 3]
    assert second.settled_rows() == [100, 101, 102, 103, 104]
    for row, error, message in second.one_by_one:
        assert error is None and message["messageId"] == sent[row]["messageId"]


def test_bulk_send_through_a_client_with_plugins_and_type_handlers(
    collector: CollectorThread, make_client: Callable[..., Analytics]
) -> None:
    client = make_client(max_events_in_batch=25)
    client.register(SuperProperties(properties={"source": "backfill"}))
    handled: List[str] = []
    client.on("track", lambda message: handled.append(message["messageId"]))
    rows = [_event(i) for i in range(200)]
    report = bulk.send(rows, client, window=100)
    assert report.ok and report.delivered == 200, report.summary()
    events = collector.events()
    assert len(events) == 200
    assert all(e["properties"]["source"] == "backfill" for e in events)  # the plugin ran
    expected = {RowMapper().call(row)[1]["message_id"] for row in rows}
    assert {e["messageId"] for e in events} == expected  # ids are still the content's
    assert sorted(handled) == sorted(expected)  # every event reached the type handler


def test_bulk_send_inside_a_scope_merges_it_as_the_event_methods_do(
    collector: CollectorThread, make_client: Callable[..., Analytics]
) -> None:
    client = make_client()
    with journy_analytics.scope(properties={"imported_by": "job-7"}):
        report = bulk.send([_event(i) for i in range(20)], client)
    assert report.ok, report.summary()
    events = collector.events()
    assert len(events) == 20
    assert all(e["properties"]["imported_by"] == "job-7" for e in events)


def test_bulk_send_to_a_closed_client_stops_as_an_event_method_would(
    collector: CollectorThread, make_client: Callable[..., Analytics]
) -> None:
    client = make_client()
    client.close_and_flush(timeout=2)
    after_close: List[Dict[str, Any]] = []
    client.on("call_after_close", after_close.append)
    report = bulk.send([_event(i) for i in range(3)], client)
    assert report.stopped is not None and "call_after_close" in report.stopped
    # It stops at the first row the client would not take: no later row is handed over.
    assert report.delivered == 0 and len(after_close) == report.rows_read == 1
    assert collector.events() == []
