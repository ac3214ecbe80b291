"""The collector's REST API (journy.io's api.journy.io paths) over real loopback HTTP.

Every answer is validated against journy.io's OpenAPI document (rest_contract.py).
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import urllib3
from tests.collector.rest_contract import DOCUMENT, RestHttp

from journy_analytics.collector import CollectorThread, Faults, RestSettings
from journy_analytics.collector._rest_auth import OPERATION_PERMISSIONS, PERMISSIONS


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rest_collector(clock: FakeClock) -> Iterator[CollectorThread]:
    settings = RestSettings(
        api_keys=[
            "test-api-key",
            "reader:ReadEvents,ReadProperties",
            "off:disabled",
            "snippets:GetTrackingSnippet",
        ],
        rate_limit="1000/min",
        websites=["acme-inc.com", "journy.io"],
        clock=clock,
    )
    with CollectorThread(rest=settings) as c:
        yield c


@pytest.fixture
def api(rest_collector: CollectorThread) -> RestHttp:
    return RestHttp(rest_collector.url)


@pytest.fixture
def http(rest_collector: CollectorThread, make_http: Any) -> Any:
    """The batch path and the read API of the same collector."""
    return make_http(rest_collector.url)


def user(**ident: str) -> dict[str, Any]:
    return {"identification": ident}


# -- the map of permissions is the document's -------------------------------------------


def test_permission_map_is_the_documents() -> None:
    documented = {
        (method.upper(), path): (op.get("x-key-permissions") or [None])[0]
        for path, item in DOCUMENT["paths"].items()
        for method, op in item.items()
    }
    assert documented == OPERATION_PERMISSIONS
    named = {p for p in documented.values() if p is not None}
    assert named == set(PERMISSIONS)


def test_every_path_of_the_document_is_served(api: RestHttp) -> None:
    for path, item in DOCUMENT["paths"].items():
        for method in item:
            # No key: the path exists (never 404/405) and answers the documented 401.
            answer = api.call(method.upper(), path, key=None)
            assert answer.status == 401, (method, path)
            assert "X-Api-Key" in answer.json()["message"]


# -- writes change the profiles ---------------------------------------------------------


def test_upserts_change_profiles(api: RestHttp, rest_collector: CollectorThread) -> None:
    a = api.post(
        "/users/upsert",
        {
            "identification": {"userId": "u1", "email": "ada@acme-inc.com"},
            "properties": {"plan": "pro", "seats": 3, "beta": True, "tags": ["a", "b"]},
        },
    )
    assert a.status == 201
    assert a.json()["meta"]["status"] == 201
    assert rest_collector.user("u1")["traits"] == {
        "plan": "pro",
        "seats": 3,
        "beta": True,
        "tags": ["a", "b"],
        "email": "ada@acme-inc.com",
    }
    # By email alone: the same user (its email trait), and null deletes a property.
    assert (
        api.post(
            "/users/upsert",
            {"identification": {"email": "ada@acme-inc.com"}, "properties": {"plan": None}},
        ).status
        == 201
    )
    assert "plan" not in rest_collector.user("u1")["traits"]
    assert rest_collector.user("ada@acme-inc.com") is None

    assert (
        api.post(
            "/accounts/upsert",
            {
                "identification": {"accountId": "acme", "domain": "acme-inc.com"},
                "properties": {"mrr": 10},
            },
        ).status
        == 201
    )
    assert rest_collector.account("acme")["traits"] == {"mrr": 10, "domain": "acme-inc.com"}
    # By domain alone: the account whose domain trait it is.
    api.post(
        "/accounts/upsert",
        {"identification": {"domain": "acme-inc.com"}, "properties": {"mrr": 20}},
    )
    assert rest_collector.account("acme")["traits"]["mrr"] == 20
    assert rest_collector.account("acme-inc.com") is None


def test_memberships_add_and_remove(api: RestHttp, rest_collector: CollectorThread) -> None:
    body = {
        "account": {"accountId": "acme"},
        "users": [user(userId="u1"), user(userId="u2"), user(email="c@x.io")],
    }
    assert api.post("/accounts/users/add", body).status == 201
    assert rest_collector.account("acme")["members"] == ["u1", "u2", "c@x.io"]
    assert rest_collector.user("u2")["accounts"] == ["acme"]
    removed = api.post(
        "/accounts/users/remove", {"account": {"accountId": "acme"}, "users": [user(userId="u2")]}
    )
    assert removed.status == 204 and removed.data == b""
    assert rest_collector.account("acme")["members"] == ["u1", "c@x.io"]
    assert rest_collector.user("u2")["accounts"] == []
    # The store's profile cache forgot the membership too: adding u2 again re-creates it.
    assert (
        api.post(
            "/accounts/users/add", {"account": {"accountId": "acme"}, "users": [user(userId="u2")]}
        ).status
        == 201
    )
    assert rest_collector.account("acme")["members"] == ["u1", "c@x.io", "u2"]


def test_more_than_100_users_is_a_field_error(
    api: RestHttp, rest_collector: CollectorThread
) -> None:
    users = [user(userId=f"u{i}") for i in range(101)]
    answer = api.post("/accounts/users/add", {"account": {"accountId": "a"}, "users": users})
    assert answer.status == 400
    assert "at most 100" in answer.json()["errors"]["fields"]["users"]
    assert rest_collector.account("a") is None
    assert (
        api.post(
            "/accounts/users/add", {"account": {"accountId": "a"}, "users": users[:100]}
        ).status
        == 201
    )
    assert len(rest_collector.account("a")["members"]) == 100


def test_track_for_a_user_in_an_account_and_for_an_account_alone(
    api: RestHttp, rest_collector: CollectorThread
) -> None:
    assert (
        api.post(
            "/track",
            {
                "identification": {"user": {"userId": "u1"}, "account": {"accountId": "acme"}},
                "name": "report_created",
                "triggeredAt": "2024-05-01T12:00:00.000Z",
                "metadata": {"pages": 3, "at": "2024-05-01T12:00:00Z", "ok": True},
            },
        ).status
        == 201
    )
    assert (
        api.post(
            "/track", {"identification": {"account": {"accountId": "acme"}}, "name": "renewed"}
        ).status
        == 201
    )
    [event] = rest_collector.events(type="track", user_id="u1")
    assert event["event"] == "report_created"
    assert event["timestamp"] == "2024-05-01T12:00:00.000Z"
    assert event["properties"] == {"pages": 3, "at": "2024-05-01T12:00:00Z", "ok": True}
    assert event["context"]["groupId"] == "acme"
    assert event["context"]["rest"] == "POST /track"
    assert rest_collector.account("acme")["events"] == 2
    assert rest_collector.user("acme") is None  # an account's own event makes no user
    # The deprecated POST /events is served as the document describes it.
    assert (
        api.post("/events", {"identification": {"user": {"userId": "u1"}}, "name": "legacy"}).status
        == 201
    )
    assert [e["event"] for e in rest_collector.events(type="track", user_id="u1")] == [
        "report_created",
        "legacy",
    ]


def test_link_merges_the_anonymous_profile(
    api: RestHttp, rest_collector: CollectorThread, http: Any
) -> None:
    batch = [
        {"type": "identify", "anonymousId": "dev-1", "traits": {"utm": "ad", "plan": "free"}},
        {"type": "page", "anonymousId": "dev-1", "properties": {"path": "/pricing"}},
        {"type": "group", "anonymousId": "dev-1", "groupId": "acme"},
    ]
    assert http.post("/v1/batch", {"batch": batch}).status == 200
    api.post("/users/upsert", {"identification": {"userId": "u1"}, "properties": {"plan": "pro"}})
    assert (
        api.post("/link", {"deviceId": "dev-1", "identification": {"userId": "u1"}}).status == 201
    )
    merged = rest_collector.user("u1")
    assert merged["traits"] == {"utm": "ad", "plan": "pro"}  # the user's own traits win
    assert merged["accounts"] == ["acme"]
    assert merged["aliases"] == ["dev-1"]
    assert merged["events"] == 1 + 3 + 1  # upsert, the device's three, the link
    assert rest_collector.user("dev-1") is None
    assert rest_collector.account("acme")["members"] == ["u1"]


def test_deletes_remove_the_profile_and_its_events(
    api: RestHttp, rest_collector: CollectorThread
) -> None:
    api.post("/users/upsert", {"identification": {"userId": "u1", "email": "a@b.co"}})
    api.post("/users/upsert", {"identification": {"userId": "u2"}})
    api.post(
        "/accounts/users/add", {"account": {"accountId": "acme"}, "users": [user(userId="u1")]}
    )
    api.post(
        "/track",
        {
            "identification": {"user": {"userId": "u1"}, "account": {"accountId": "acme"}},
            "name": "x",
        },
    )
    api.post("/track", {"identification": {"user": {"userId": "u2"}}, "name": "y"})
    deleted = api.delete("/users", {"identification": {"email": "a@b.co"}})
    assert deleted.status == 202
    assert rest_collector.user("u1") is None
    assert rest_collector.events(user_id="u1") == []
    assert rest_collector.account("acme")["members"] == []
    assert rest_collector.account("acme")["events"] == 0  # u1's group and track went
    assert len(rest_collector.events(user_id="u2")) == 2

    api.post("/accounts/upsert", {"identification": {"accountId": "acme"}, "properties": {"a": 1}})
    api.post(
        "/accounts/users/add", {"account": {"accountId": "acme"}, "users": [user(userId="u2")]}
    )
    assert api.delete("/accounts", {"identification": {"accountId": "acme"}}).status == 202
    assert rest_collector.account("acme") is None
    assert rest_collector.events(group_id="acme") == []
    assert rest_collector.user("u2")["accounts"] == []
    assert rest_collector.user("u2")["events"] == 2  # its own, outside the account, stay
    # Deleting what is not there is accepted too (journy.io deletes asynchronously).
    assert api.delete("/users", {"identification": {"userId": "nobody"}}).status == 202


# -- keys, permissions, rate limit --------------------------------------------------------


def test_validate_returns_the_keys_permissions(api: RestHttp) -> None:
    assert api.get("/validate").json()["data"]["permissions"] == list(PERMISSIONS)
    assert api.get("/validate", key="reader").json()["data"]["permissions"] == [
        "ReadEvents",
        "ReadProperties",
    ]


def test_keys_and_permissions(api: RestHttp) -> None:
    body = {"identification": {"userId": "u"}}
    assert api.post("/users/upsert", body, key=None).status == 401
    unknown = api.post("/users/upsert", body, key="nope")
    assert unknown.status == 401 and "unknown API key" in unknown.json()["message"]
    lacking = api.post("/users/upsert", body, key="reader")
    assert lacking.status == 401
    assert "TrackData" in lacking.json()["message"]
    assert api.get("/events", key="reader").status == 200
    assert api.get("/segments/users", key="reader").status == 401
    assert api.get("/validate", key="off").status == 403
    # The document lists no 403 for memberships: a disabled key gets its 401 there.
    members = {"account": {"accountId": "a"}, "users": []}
    assert api.post("/accounts/users/add", members, key="off").status == 401


def test_rate_limit_sliding_window(clock: FakeClock) -> None:
    settings = RestSettings(api_keys=["test-api-key", "reader"], rate_limit="3/min", clock=clock)
    with CollectorThread(rest=settings) as c:
        _check_rate_limit(RestHttp(c.url), clock)


def _check_rate_limit(api: RestHttp, clock: FakeClock) -> None:
    assert [api.get("/validate").remaining for _ in range(3)] == [2, 1, 0]
    refused = api.get("/validate")
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "60"
    assert refused.remaining == 0
    # Other keys have their own window.
    assert api.get("/validate", key="reader").status == 200
    clock.now += 30
    assert api.get("/validate").headers["Retry-After"] == "30"
    clock.now += 30
    assert api.get("/validate").status == 200


# -- validation errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/users/upsert", {}, "identification"),
        ("/users/upsert", {"identification": {}}, "identification"),
        ("/users/upsert", {"identification": {"userId": ""}}, "identification.userId"),
        ("/users/upsert", {"identification": {"email": "nope"}}, "identification.email"),
        (
            "/users/upsert",
            {"identification": {"userId": "u"}, "properties": {"x": {"a": 1}}},
            "properties.x",
        ),
        (
            "/users/upsert",
            {"identification": {"userId": "u"}, "properties": {"x": [1, None]}},
            "properties.x",
        ),
        (
            "/accounts/upsert",
            {"identification": {"domain": "https://acme.com"}},
            "identification.domain",
        ),
        ("/track", {"identification": {"user": {"userId": "u"}}}, "name"),
        (
            "/track",
            {"identification": {"user": {"userId": "u"}}, "name": "x", "triggeredAt": "yesterday"},
            "triggeredAt",
        ),
        (
            "/track",
            {"identification": {"user": {"userId": "u"}}, "name": "x", "metadata": {"a": None}},
            "metadata.a",
        ),
        ("/link", {"identification": {"userId": "u"}}, "deviceId"),
        (
            "/accounts/users/add",
            {"account": {"accountId": "a"}, "users": [{}]},
            "users.0.identification",
        ),
    ],
)
def test_validation_errors_in_the_documents_shape(
    api: RestHttp, path: str, body: Any, field: str
) -> None:
    answer = api.post(path, body)
    assert answer.status == 400
    errors = answer.json()["errors"]
    assert field in errors["fields"], errors
    assert errors["parameters"] == {"header": {}, "query": {}, "path": {}}


def test_large_bodies_are_read_whole_and_oversized_ones_refused(
    api: RestHttp, rest_collector: CollectorThread
) -> None:
    properties = {f"p{i}": "x" * 1000 for i in range(400)}  # about 400 KB
    upsert = {"identification": {"userId": "big"}, "properties": properties}
    assert api.post("/users/upsert", upsert).status == 201
    assert rest_collector.user("big")["traits"]["p399"] == "x" * 1000
    upsert["properties"]["p400"] = "x" * 200_000
    refused = api.post("/users/upsert", upsert)
    assert refused.status == 400
    assert "over 512000 bytes" in refused.json()["errors"]["fields"]["body"]


def test_malformed_bodies_are_400(api: RestHttp) -> None:
    for raw in (b"{", b"[]", b"", b"\xff\xfe"):
        answer = api.post("/users/upsert", raw=raw)
        assert answer.status == 400
        assert "body" in answer.json()["errors"]["fields"]


# -- reads ----------------------------------------------------------------------------------


def test_reads(api: RestHttp) -> None:
    api.post("/users/upsert", {"identification": {"userId": "u"}, "properties": {"plan_name": "x"}})
    api.post("/accounts/upsert", {"identification": {"accountId": "a"}, "properties": {"mrr": 1}})
    api.post("/track", {"identification": {"user": {"userId": "u"}}, "name": "signed_up"})
    events = api.get("/events", key="reader").json()["data"]
    assert [e["name"] for e in events] == ["signed_up"]
    assert api.get("/properties/users", key="reader").json()["data"] == [
        {"name": "plan_name", "label": "Plan name", "isComputed": False}
    ]
    assert [p["name"] for p in api.get("/properties/accounts", key="reader").json()["data"]] == [
        "mrr"
    ]
    assert api.get("/segments/accounts").json()["data"] == [
        {"id": "all-accounts", "name": "All accounts"}
    ]


def test_tracking_snippet(api: RestHttp) -> None:
    found = api.get("/tracking/snippet", key="snippets", query={"domain": "acme-inc.com"})
    assert found.status == 200
    assert found.json()["data"]["domain"] == "acme-inc.com"
    assert "<script>" in found.json()["data"]["snippet"]
    assert "snippets" not in found.json()["data"]["snippet"]  # never the key
    assert api.get("/tracking/snippet", query={"domain": "other.org"}).status == 404
    bad = api.get("/tracking/snippet", query={"domain": "not a domain"})
    assert bad.status == 400
    assert "domain" in bad.json()["errors"]["parameters"]["query"]
    assert api.get("/tracking/snippet").status == 400


# -- the inspector ---------------------------------------------------------------------------


def test_inspector_lists_rest_calls(api: RestHttp, http: Any) -> None:
    api.post("/users/upsert", {"identification": {"userId": "u"}})
    api.post("/track", {}, key="nope")
    calls = http.get("/api/inspector/rest").json()
    assert calls["total"] == 2
    newest, oldest = calls["calls"]
    assert (oldest["method"], oldest["path"], oldest["status"]) == ("POST", "/users/upsert", 201)
    assert (newest["path"], newest["status"]) == ("/track", 401)
    assert "nope" not in str(calls)  # the key is never shown
    # The upsert's event shows its request, with the key redacted.
    [summary] = http.get("/api/inspector/events").json()["events"]
    detail = http.get(f"/api/inspector/events/{summary['seq']}").json()
    assert detail["request"]["path"] == "/users/upsert"
    assert detail["request"]["headers"]["X-Api-Key"] == "[redacted]"


def test_an_api_key_sent_to_the_batch_path_is_redacted_too(http: Any) -> None:
    batch = {"batch": [{"type": "track", "userId": "u", "event": "e"}]}
    assert http.post("/v1/batch", batch, headers={"X-Api-Key": "secret-key"}).status == 200
    [summary] = http.get("/api/inspector/events").json()["events"]
    detail = http.get(f"/api/inspector/events/{summary['seq']}").json()
    assert detail["request"]["headers"]["X-Api-Key"] == "[redacted]"


# -- fault injection ------------------------------------------------------------------------


def _raw_upsert(url: str, body: Any) -> Any:
    """Not contract-checked: injected faults answer what the document does not list."""
    return urllib3.request(
        "POST", url + "/users/upsert", json=body, headers={"X-Api-Key": "k"}, retries=False
    )


def test_fault_injection_applies_to_rest_calls() -> None:
    body = {"identification": {"userId": "u"}, "properties": {"a": 1}}
    with CollectorThread(faults=Faults(retry_after_rate=1.0, retry_after=3)) as c:
        limited = RestHttp(c.url).post("/users/upsert", body)  # contract-checked: a 429
        assert limited.status == 429 and limited.headers["Retry-After"] == "3"
        c.set_faults(fail_rate=1.0, fail_status=503, retry_after_rate=0.0)
        failed = _raw_upsert(c.url, body)
        assert failed.status == 503
        assert failed.json()["message"] == "fault injected by the collector"
        assert "X-RateLimit-Remaining" in failed.headers
        c.set_faults(Faults(reset_rate=1.0, reset_when="before"))
        with pytest.raises(urllib3.exceptions.ProtocolError):
            urllib3.request(
                "POST",
                c.url + "/users/upsert",
                json=body,
                headers={"X-Api-Key": "k"},
                retries=False,
            )
        assert c.user("u") is None  # nothing stored, nothing answered
        c.set_faults(Faults(reset_rate=1.0, reset_when="after"))
        with pytest.raises(urllib3.exceptions.ProtocolError):
            urllib3.request(
                "POST",
                c.url + "/users/upsert",
                json=body,
                headers={"X-Api-Key": "k"},
                retries=False,
            )
        assert c.user("u")["traits"] == {"a": 1}  # stored, then the connection dropped
        assert c.stats()["faults"] == {"failed": 1, "rate_limited": 1, "reset": 2}
