"""The read API over HTTP: events, users, accounts, stats, 404s, fault control."""

from __future__ import annotations


def seed(http):
    assert (
        http.batch(
            {"type": "identify", "userId": "u", "traits": {"a": 1}, "messageId": "1"},
            {
                "type": "group",
                "userId": "u",
                "groupId": "g",
                "traits": {"n": "G"},
                "messageId": "2",
            },
            {
                "type": "track",
                "userId": "u",
                "event": "E",
                "context": {"groupId": "g"},
                "messageId": "3",
            },
            {"type": "page", "anonymousId": "anon", "name": "P", "messageId": "4"},
            {"type": "track", "anonymousId": "anon", "event": "F", "messageId": "5"},
        ).status
        == 200
    )


def ids(answer):
    return [e["messageId"] for e in answer.json()["events"]]


def test_events_filters(http):
    seed(http)
    assert ids(http.get("/api/events")) == ["1", "2", "3", "4", "5"]
    assert ids(http.get("/api/events", type="track")) == ["3", "5"]
    assert ids(http.get("/api/events", type="screen")) == ["4"]
    assert ids(http.get("/api/events", userId="u")) == ["1", "2", "3"]
    assert ids(http.get("/api/events", anonymousId="anon")) == ["4", "5"]
    assert ids(http.get("/api/events", groupId="g")) == ["2", "3"]
    assert ids(http.get("/api/events", userId="u", type="track")) == ["3"]
    assert ids(http.get("/api/events", limit=2)) == ["4", "5"]
    assert ids(http.get("/api/events", limit=0)) == []


def test_events_are_returned_as_received(http):
    event = {
        "type": "track",
        "userId": "u",
        "event": "E",
        "messageId": "m",
        "timestamp": "2015-12-12T19:11:00.000Z",
        "properties": {"revenue": 39999.99, "nested": {"list": [1, "two", None]}},
        "context": {"library": {"name": "x", "version": "1"}},
        "integrations": {},
    }
    http.batch(event)
    assert http.get("/api/events").json() == {"events": [event]}


def test_bad_limit_is_400(http):
    assert http.get("/api/events", limit="many").status == 400
    assert http.get("/api/events", limit=-1).status == 400


def test_user_and_account(http):
    seed(http)
    user = http.get("/api/users/u").json()
    assert user["id"] == "u"
    assert user["traits"] == {"a": 1}
    assert user["accounts"] == ["g"]
    assert user["events"] == 3
    account = http.get("/api/accounts/g").json()
    assert account["id"] == "g"
    assert account["traits"] == {"n": "G"}
    assert account["members"] == ["u"]


def test_ids_with_slashes_and_spaces(http):
    http.batch({"type": "identify", "userId": "a/b c", "traits": {"x": 1}})
    assert http.get("/api/users/a%2Fb%20c").json()["traits"] == {"x": 1}


def test_unknown_ids_are_json_404(http):
    for path in ("/api/users/nobody", "/api/accounts/nothing", "/api/nope", "/missing"):
        r = http.get(path)
        assert r.status == 404, path
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json()["success"] is False


def test_wrong_method_is_json_405(http):
    r = http.get("/backend/v1/batch")
    assert r.status == 405
    assert r.json()["code"] == "method_not_allowed"


def test_stats(http):
    seed(http)
    http.batch({"type": "nope", "userId": "u"})
    http.post("/backend/v1/batch", {"batch": []}, key=None)
    stats = http.get("/api/stats").json()
    assert stats["requests"] == 3
    assert stats["received"] == 5
    assert stats["duplicates"] == 0
    assert stats["rejected"] == {"invalid_event": 1, "unauthorized": 1}
    assert stats["events"] == 5
    assert stats["users"] == 2
    assert stats["accounts"] == 1
    assert stats["fault_settings"]["fail_rate"] == 0.0


def test_message_ids(http):
    seed(http)
    seed(http)
    answer = http.get("/api/messageids").json()
    assert answer == {"count": 5, "messageIds": ["1", "2", "3", "4", "5"]}


def test_requests_endpoint(http):
    seed(http)
    (request,) = http.get("/api/requests").json()["requests"]
    assert request["status"] == 200
    assert len(request["body"]["batch"]) == 5


def test_faults_api(collector, http):
    r = http.post("/api/faults", {"fail_rate": 1.0, "fail_status": 503}, key=None)
    assert r.status == 200
    assert r.json()["fail_status"] == 503
    assert collector.faults.fail_rate == 1.0
    assert http.batch({"type": "identify", "userId": "u"}).status == 503
    assert http.get("/api/faults").json()["fail_rate"] == 1.0
    assert http.post("/api/faults", {"fail_rate": 2}, key=None).status == 400
    assert http.post("/api/faults", {"bogus": 1}, key=None).status == 400
    assert http.post("/api/faults", raw=b"[", key=None).status == 400
    assert http.pool.request("DELETE", http.base_url + "/api/faults").status == 200
    assert http.batch({"type": "identify", "userId": "u"}).status == 200


def test_reset(collector, http):
    seed(http)
    assert http.post("/api/reset", {}, key=None).status == 200
    assert collector.events() == []
    assert collector.stats()["requests"] == 0
    assert collector.requests() == []
