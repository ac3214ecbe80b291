"""Ingest over loopback HTTP: answers, auth, gzip, size limits, whole-batch rejection."""

from __future__ import annotations

import gzip
import json

import pytest

from journy_analytics.collector import MAX_BODY_BYTES, MAX_EVENT_BYTES, CollectorThread


def identify(n: int = 1, **extra: object) -> dict[str, object]:
    return {"type": "identify", "userId": f"u{n}", "messageId": f"m{n}", "traits": {}, **extra}


def test_batch_accepted_and_stored(collector, http):
    r = http.batch(identify(1), {"type": "track", "userId": "u1", "event": "E", "messageId": "t"})
    assert r.status == 200
    assert r.json() == {"success": True}
    assert [e["messageId"] for e in collector.events()] == ["m1", "t"]


def test_v1_batch_path_is_served_too(collector, http):
    assert http.post("/v1/batch", {"batch": [identify(1)]}).status == 200
    assert collector.unique_message_ids() == {"m1"}


def test_custom_path(make_http):
    with CollectorThread(path="/custom/ingest") as c:
        http = make_http(c.url)
        assert http.post("/custom/ingest", {"batch": [identify(1)]}).status == 200
        assert http.post("/backend/v1/batch", {"batch": [identify(2)]}).status == 404
        assert c.unique_message_ids() == {"m1"}


@pytest.mark.parametrize(
    ("path", "event", "recorded"),
    [
        ("/v1/identify", {"userId": "u", "traits": {"a": 1}}, "identify"),
        ("/v1/track", {"userId": "u", "event": "Signed Up"}, "track"),
        ("/v1/page", {"userId": "u", "name": "Home"}, "screen"),
        ("/v1/page", {"userId": "u"}, "page"),
        ("/v1/screen", {"userId": "u", "name": "Home"}, "screen"),
        ("/v1/group", {"userId": "u", "groupId": "g"}, "group"),
        ("/v1/alias", {"userId": "u", "previousId": "p"}, "alias"),
    ],
)
def test_single_event_endpoints(collector, http, path, event, recorded):
    r = http.post(path, {**event, "messageId": "x"})
    assert r.status == 200, r.data
    (stored,) = collector.events()
    assert stored["type"] == recorded
    assert stored["messageId"] == "x"


def test_single_event_endpoint_refuses_other_type(collector, http):
    r = http.post("/v1/track", {"type": "identify", "userId": "u"})
    assert r.status == 400
    assert "identify" in r.json()["message"]
    assert collector.events() == []


def test_write_key_in_body_only(collector, http):
    r = http.post("/backend/v1/batch", {"batch": [identify(1)], "writeKey": "k"}, key=None)
    assert r.status == 200
    assert len(collector.events()) == 1


def test_missing_write_key_is_401(collector, http):
    r = http.post("/backend/v1/batch", {"batch": [identify(1)]}, key=None)
    assert r.status == 401
    assert r.json()["code"] == "unauthorized"
    assert collector.stats()["rejected"] == {"unauthorized": 1}
    assert collector.events() == []


def test_empty_basic_user_is_401(http):
    r = http.post("/backend/v1/batch", {"batch": [identify(1)]}, key="")
    assert r.status == 401


def test_known_write_keys_only(make_http):
    with CollectorThread(write_keys=["good"]) as c:
        http = make_http(c.url)
        assert http.batch(identify(1), key="bad").status == 401
        assert http.batch(identify(2), key="good").status == 200
        body = {"batch": [identify(3)], "writeKey": "good"}
        assert http.post("/backend/v1/batch", body, key=None).status == 200
        body = {"batch": [identify(4)], "writeKey": "bad"}
        assert http.post("/backend/v1/batch", body, key=None).status == 401
        assert c.unique_message_ids() == {"m2", "m3"}


def test_gzip_body(collector, http):
    r = http.post("/backend/v1/batch", {"batch": [identify(1)]}, gzip=True)
    assert r.status == 200
    assert collector.unique_message_ids() == {"m1"}
    assert collector.requests()[-1]["headers"]["Content-Encoding"] == "gzip"
    assert collector.requests()[-1]["body"]["batch"][0]["messageId"] == "m1"


def test_gzip_bomb_is_413(collector, http):
    bomb = gzip.compress(b"[" + b" " * (20 * 1024 * 1024) + b"]")
    assert len(bomb) < MAX_BODY_BYTES
    r = http.post("/backend/v1/batch", raw=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status == 413
    assert r.json()["code"] == "body_too_large"


def test_invalid_gzip_is_400(http):
    r = http.post("/backend/v1/batch", raw=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert r.status == 400
    assert r.json()["code"] == "bad_gzip"


def test_truncated_gzip_is_400(http):
    data = gzip.compress(json.dumps({"batch": [identify(1)]}).encode())[:-10]
    r = http.post("/backend/v1/batch", raw=data, headers={"Content-Encoding": "gzip"})
    assert r.status == 400


def test_unknown_encoding_is_415(http):
    r = http.post("/backend/v1/batch", {"batch": []}, headers={"Content-Encoding": "br"})
    assert r.status == 415


def test_body_over_500kb_is_413(collector, http):
    events = [identify(i, traits={"pad": "x" * 20_000}) for i in range(30)]
    body = json.dumps({"batch": events}).encode()
    assert len(body) > MAX_BODY_BYTES
    r = http.post("/backend/v1/batch", raw=body)
    assert r.status == 413
    assert collector.events() == []


def test_body_just_under_limit_is_accepted(collector, http):
    events = [identify(i, traits={"pad": "x" * 30_000}) for i in range(16)]
    body = json.dumps({"batch": events}).encode()
    assert len(body) < MAX_BODY_BYTES
    assert http.post("/backend/v1/batch", raw=body).status == 200
    assert len(collector.events()) == 16


def test_event_over_32kb_is_413(collector, http):
    big = identify(2, traits={"pad": "x" * MAX_EVENT_BYTES})
    r = http.batch(identify(1), big)
    assert r.status == 413
    assert r.json()["code"] == "event_too_large"
    assert r.json()["index"] == 1
    assert collector.events() == []


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "object"),
        (b'{"sentAt": "x"}', "batch"),
        (b'{"batch": {}}', "array"),
        (b'{"batch": [42]}', "object"),
        (b'{"batch": [{"userId": "u"}]}', "type"),
        (b'{"batch": [{"type": "teleport", "userId": "u"}]}', "unknown type"),
        (b'{"batch": [{"type": "identify"}]}', "neither userId nor anonymousId"),
        (b'{"batch": [{"type": "identify", "userId": ""}]}', "userId"),
        (b'{"batch": [{"type": "identify", "userId": ["u"]}]}', "userId"),
        (b'{"batch": [{"type": "track", "userId": "u"}]}', "event"),
        (b'{"batch": [{"type": "track", "userId": "u", "event": 3}]}', "event"),
        (b'{"batch": [{"type": "group", "userId": "u"}]}', "groupId"),
        (b'{"batch": [{"type": "alias", "userId": "u"}]}', "previousId"),
        (b'{"batch": [{"type": "identify", "userId": "u", "traits": [1]}]}', "traits"),
        (
            b'{"batch": [{"type": "track", "userId": "u", "event": "e", "properties": 1}]}',
            "properties",
        ),
        (b'{"batch": [{"type": "track", "userId": "u", "event": "e", "context": "c"}]}', "context"),
        (
            b'{"batch": [{"type": "page", "userId": "u", "context": {"groupId": {}}}]}',
            "context.groupId",
        ),
        (b'{"batch": [{"type": "identify", "userId": "u", "messageId": 5}]}', "messageId"),
    ],
)
def test_400_names_the_problem(collector, http, body, needle):
    r = http.post("/backend/v1/batch", raw=body)
    assert r.status == 400, r.data
    answer = r.json()
    assert answer["success"] is False
    assert needle in answer["message"]
    assert collector.stats()["requests"] == 1
    assert sum(collector.stats()["rejected"].values()) == 1


def test_one_invalid_event_rejects_the_whole_batch(collector, http):
    r = http.batch(identify(1), identify(2), {"type": "track", "userId": "u3"}, identify(4))
    assert r.status == 400
    answer = r.json()
    assert answer["index"] == 2
    assert answer["message"].startswith("event 2:")
    assert answer["errors"] == [
        {"index": 2, "code": "invalid_event", "message": 'track has no "event" name'}
    ]
    assert collector.events() == []
    assert collector.user("u1") is None


def test_duplicates_are_stored_once_and_counted(collector, http):
    assert http.batch(identify(1), identify(2)).status == 200
    assert http.batch(identify(2), identify(3)).status == 200
    assert sorted(collector.unique_message_ids()) == ["m1", "m2", "m3"]
    stats = collector.stats()
    assert stats["received"] == 4
    assert stats["stored"] == 3
    assert stats["duplicates"] == 1
    assert stats["accepted_requests"] == 2


def test_event_without_message_id_gets_one(collector, http):
    assert http.batch({"type": "identify", "userId": "u"}).status == 200
    assert http.batch({"type": "identify", "userId": "u"}).status == 200
    assert len(collector.events()) == 2
    assert collector.unique_message_ids() == set()


def test_requests_log_keeps_wire_details(collector, http):
    http.batch(identify(1))
    http.batch({"type": "bogus", "userId": "u"})
    first, second = collector.requests()
    assert first["method"] == "POST"
    assert first["path"] == "/backend/v1/batch"
    assert first["status"] == 200
    assert first["headers"]["Authorization"].startswith("Basic ")
    assert first["body"] == {"batch": [identify(1)]}
    assert second["status"] == 400
    assert "bogus" in second["error"]


def test_deeply_nested_event_is_400_not_500(collector, http):
    deep = "[" * 400 + "]" * 400
    raw = '{"batch": [{"type": "identify", "userId": "u", "traits": {"x": ' + deep + "}}]}"
    r = http.post("/backend/v1/batch", raw=raw.encode())
    assert r.status == 400
    assert "nested" in r.json()["message"]
    assert http.get("/api/requests").status == 200
