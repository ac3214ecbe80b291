"""JournyAPI against a loopback stand-in of api.journy.io that checks every request
against journy.io's OpenAPI document."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any, Callable

import pytest

from journy_analytics import AsyncJournyAPI, JournyAPI, JournyAPIError, KeyInfo, ValidationError

from . import contract
from .conftest import FAST
from .server import ApiServer

MakeApi = Callable[..., JournyAPI]


def test_every_path_of_the_document_is_called_and_conforms(
    server: ApiServer, make_api: MakeApi
) -> None:
    api = make_api()
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)
    assert (
        api.upsert_user(
            user_id="u1",
            email="a@b.co",
            properties={
                "plan": "pro",
                "seats": 3,
                "trial": False,
                "tags": ["a", "b"],
                "gone": None,
                "signed_up_at": when,
            },
        )
        == {}
    )
    api.upsert_account(
        account_id="acc1",
        domain="acme-inc.com",
        properties={"mrr": 9.5},
        members=[{"user_id": "u1"}, {"email": "c@d.co"}],
    )
    api.add_users_to_account(account_id="acc1", users=[{"user_id": "u2"}])
    api.remove_users_from_account(domain="acme-inc.com", users=[{"email": "c@d.co"}])
    api.track(
        event="signed_up",
        user_id="u1",
        account_id="acc1",
        metadata={"plan": "pro", "at": when, "n": 1, "ok": True},
        timestamp=when,
    )
    api.link(device_id="dev-123", user_id="u1")
    api.delete_user(email="a@b.co")
    api.delete_account(account_id="acc1")
    assert api.validate_key() == KeyInfo(
        frozenset(
            ["TrackData", "ReadEvents", "ReadProperties", "ReadSegments", "GetTrackingSnippet"]
        )
    )
    assert "acme-inc.com" in api.tracking_snippet(domain="acme-inc.com")
    assert api.events()[0]["name"] == "signed_up"
    assert api.user_properties()[0]["name"] == "plan"
    assert api.account_properties()[0]["isComputed"] is False
    assert api.user_segments()[0]["name"] == "Active"
    assert api.account_segments()[0]["id"] == "s1"

    assert server.problems() == []
    called = {(s.method, s.path) for s in server.seen}
    document = contract.load_document()
    paths = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    # Every path of the document but the deprecated POST /events (see _client.py).
    assert paths - called == {("POST", "/events")}
    assert all(s.headers["x-api-key"] == "test-api-key" for s in server.seen)
    track = server.calls("POST", "/track")[0].body
    assert track == {
        "identification": {"user": {"userId": "u1"}, "account": {"accountId": "acc1"}},
        "name": "signed_up",
        "metadata": {"plan": "pro", "at": "2024-05-01T12:30:00.000Z", "n": 1, "ok": True},
        "triggeredAt": "2024-05-01T12:30:00.000Z",
    }
    upsert = server.calls("POST", "/users/upsert")[0].body
    assert upsert["properties"]["signed_up_at"] == "2024-05-01T12:30:00.000Z"
    assert upsert["properties"]["gone"] is None
    members = server.calls("POST", "/accounts/users/add")[0].body
    assert members == {
        "account": {"accountId": "acc1", "domain": "acme-inc.com"},
        "users": [{"identification": {"userId": "u1"}}, {"identification": {"email": "c@d.co"}}],
    }


def test_the_document_flaws_are_real() -> None:
    """The unpatched document refuses a /track with a datetime in metadata (oneOf with two
    string branches): contract.py patches exactly that, and nothing else."""
    body = (
        b'{"identification":{"user":{"userId":"u"}},"name":"x",'
        b'"metadata":{"at":"2024-01-01T00:00:00Z"}}'
    )
    assert contract.request_problem(
        contract.validator(patch_flaws=False), "POST", "/track", "", body
    )
    assert contract.request_problem(contract.validator(), "POST", "/track", "", body) is None
    # The validator is not a rubber stamp: a body without identification is refused.
    assert contract.request_problem(contract.validator(), "POST", "/track", "", b'{"name":"x"}')


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda api: api.upsert_user(properties={"a": 1}), "user_id, email"),
        (lambda api: api.upsert_user(user_id="", email=None), "user_id"),
        (lambda api: api.upsert_user(email="not-an-email"), "email"),
        (
            lambda api: api.upsert_user(user_id="u", properties={"x": {"nested": 1}}),
            "properties['x']",
        ),
        (lambda api: api.upsert_user(user_id="u", properties={"x": [1, 2]}), "properties['x']"),
        (
            lambda api: api.upsert_user(user_id="u", properties={"x": float("nan")}),
            "properties['x']",
        ),
        (lambda api: api.upsert_account(domain="https://acme.com/x"), "domain"),
        (lambda api: api.upsert_account(account_id="a", members=[{"id": "u"}]), "members[0]"),
        (lambda api: api.add_users_to_account(account_id="a", users=[]), "users"),
        (lambda api: api.add_users_to_account(account_id="a", users="u1"), "users"),
        (lambda api: api.add_users_to_account(users=[{"user_id": "u"}]), "account_id, domain"),
        (lambda api: api.track(event="", user_id="u"), "event"),
        (lambda api: api.track(event="x"), "user"),
        (lambda api: api.track(event="x", user_id="u", metadata={"l": ["a"]}), "metadata['l']"),
        (lambda api: api.track(event="x", user_id="u", timestamp="yesterday"), "timestamp"),
        (lambda api: api.link(device_id="", user_id="u"), "device_id"),
        (lambda api: api.delete_user(), "user_id, email"),
        (lambda api: api.tracking_snippet(domain="not a domain"), "domain"),
    ],
)
def test_bad_input_raises_before_any_request(
    server: ApiServer, make_api: MakeApi, call: Callable[[JournyAPI], Any], field: str
) -> None:
    api = make_api()
    with pytest.raises(ValidationError, match=field.replace("[", r"\[").replace("]", r"\]")):
        call(api)
    assert server.seen == []


def test_keyword_arguments_only(make_api: MakeApi) -> None:
    api = make_api()
    with pytest.raises(TypeError, match="keyword"):
        api.upsert_user("u1")  # type: ignore[misc]


def test_more_than_100_users_are_split(server: ApiServer, make_api: MakeApi) -> None:
    api = make_api()
    users = [{"user_id": f"u{i}"} for i in range(250)]
    api.add_users_to_account(account_id="a", users=users)
    api.remove_users_from_account(account_id="a", users=users[:100])
    sizes = [len(s.body["users"]) for s in server.calls("POST", "/accounts/users/add")]
    assert sizes == [100, 100, 50]
    sent = [
        u["identification"]["userId"]
        for s in server.calls("POST", "/accounts/users/add")
        for u in s.body["users"]
    ]
    assert sent == [u["user_id"] for u in users]
    assert [len(s.body["users"]) for s in server.calls("POST", "/accounts/users/remove")] == [100]
    assert server.problems() == []


def test_5xx_is_retried_then_succeeds(server: ApiServer, make_api: MakeApi) -> None:
    server.then("POST", "/users/upsert", 503, times=2)
    api = make_api(max_retries=3)
    api.upsert_user(user_id="u1")
    assert [s.status for s in server.calls("POST", "/users/upsert")] == [503, 503, 201]
    assert api.stats()["retried"] == 2


def test_5xx_past_max_retries_raises(server: ApiServer, make_api: MakeApi) -> None:
    server.then("POST", "/users/upsert", 500, times=5)
    api = make_api(max_retries=2)
    with pytest.raises(JournyAPIError, match="HTTP 500") as raised:
        api.upsert_user(user_id="u1")
    assert raised.value.status == 500
    assert len(server.calls("POST", "/users/upsert")) == 3


def test_no_answer_is_retried_until_the_server_is_back(
    server: ApiServer, make_api: MakeApi
) -> None:
    api = make_api(max_retries=0)
    server.stop()
    outcome: list[Any] = []
    import threading

    def call() -> None:
        try:
            api.upsert_user(user_id="u1")
            outcome.append("ok")
        except BaseException as exc:  # pragma: no cover - reported below
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 10
    while api.stats()["retried"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert api.stats()["retried"] >= 2  # refused connections were retried, not raised
    server.start()
    thread.join(10)
    assert outcome == ["ok"]
    assert len(server.calls("POST", "/users/upsert")) == 1


def test_429_waits_for_retry_after_and_never_counts_as_a_retry(
    server: ApiServer, make_api: MakeApi
) -> None:
    server.then("POST", "/track", 429, {"Retry-After": "0.2"}, times=4)
    api = make_api(max_retries=0)
    started = time.monotonic()
    api.track(event="e", user_id="u")
    assert time.monotonic() - started >= 0.8  # four waits of 0.2 s
    assert [s.status for s in server.calls("POST", "/track")] == [429] * 4 + [201]
    assert api.stats()["rate_limited"] == 4


def test_400_carries_the_field_errors(server: ApiServer, make_api: MakeApi) -> None:
    server.then(
        "POST",
        "/users/upsert",
        400,
        body={
            "meta": {"requestId": "req-9", "status": 400},
            "message": "Bad request",
            "errors": {
                "fields": {"properties.plan": "must be a string"},
                "parameters": {"header": {}, "query": {}, "path": {}},
            },
        },
    )
    api = make_api()
    with pytest.raises(JournyAPIError, match=r"properties\.plan: must be a string") as raised:
        api.upsert_user(user_id="u")
    assert raised.value.fields == {"properties.plan": "must be a string"}
    assert raised.value.request_id == "req-9"
    assert len(server.calls("POST", "/users/upsert")) == 1  # a 400 is never retried


def test_401_names_the_missing_permission(server: ApiServer, make_api: MakeApi) -> None:
    server.keys["read-only"] = ["ReadEvents"]
    api = make_api(api_key="read-only")
    with pytest.raises(
        JournyAPIError, match=r"lacks the TrackData permission.*has: ReadEvents"
    ) as raised:
        api.delete_user(user_id="u")
    assert raised.value.status == 401 and raised.value.permission == "TrackData"
    bad = make_api(api_key="nobody-knows-me")
    with pytest.raises(JournyAPIError, match="not valid"):
        bad.track(event="e", user_id="u")


def test_403_says_the_key_is_disabled(server: ApiServer, make_api: MakeApi) -> None:
    server.then("GET", "/events", 403)
    with pytest.raises(JournyAPIError, match="not enabled"):
        make_api().events()


def test_204_with_or_without_a_body(server: ApiServer, make_api: MakeApi) -> None:
    server.then(
        "POST",
        "/accounts/users/remove",
        204,
        body=b'{"meta":{"requestId":"r","status":204},"message":"x"}',
    )
    api = make_api()
    api.remove_users_from_account(account_id="a", users=[{"user_id": "u"}])
    api.remove_users_from_account(account_id="a", users=[{"user_id": "u"}])
    assert len(server.calls("POST", "/accounts/users/remove")) == 2


def test_the_key_is_never_in_a_repr_or_a_log(
    server: ApiServer, make_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-very-secret-key-123"
    server.keys[secret] = ["TrackData"]
    api = make_api(api_key=secret, max_retries=1)
    server.then("POST", "/track", 500, times=2)
    caplog.set_level(logging.DEBUG, logger="journy_analytics")
    with pytest.raises(JournyAPIError) as raised:
        api.track(event="e", user_id="u")
    texts = [
        repr(api),
        str(raised.value),
        repr(raised.value),
        caplog.text,
        repr(AsyncJournyAPI(api_key=secret, host=server.url)),
    ]
    assert caplog.text  # the retry was logged
    assert not [t for t in texts if secret in t]


def test_pacing_keeps_a_burst_under_the_limit(make_api: MakeApi) -> None:
    # Four a second: far fewer than an unpaced client sends, however loaded the machine.
    limited = ApiServer(rate_limit=4, rate_window=1.0)
    try:
        api = make_api(host=limited.url, rate_window=1.0)
        for i in range(12):
            api.upsert_user(user_id=f"u{i}")
        assert limited.rate_limited == 0
        assert api.stats()["paced_seconds"] > 0
        assert len(limited.seen) == 12
    finally:
        limited.stop()


def test_pacing_reads_the_servers_remaining_count(make_api: MakeApi) -> None:
    # Another process on the same key spent 8 of the window's 10 requests: only the
    # server's X-RateLimit-Remaining tells us.
    limited = ApiServer(rate_limit=10, rate_window=1.0)
    try:
        other = make_api(host=limited.url, rate_window=1.0)
        for i in range(8):
            other.upsert_user(user_id=f"x{i}")
        api = make_api(host=limited.url, rate_window=1.0)
        for i in range(6):
            api.upsert_user(user_id=f"u{i}")
        assert limited.rate_limited == 0
        assert len(limited.seen) == 14
    finally:
        limited.stop()


def test_429_without_retry_after_waits_until_the_window_allows(make_api: MakeApi) -> None:
    # A key shared with another process: the server's window is full before we start.
    limited = ApiServer(rate_limit=5, rate_window=0.5, send_retry_after=False)
    try:
        other = make_api(host=limited.url, rate_window=0.5)
        other._pacer.acquire = lambda: 0  # type: ignore[method-assign]  # no pacing
        for i in range(5):
            other.upsert_user(user_id=f"x{i}")
        api = make_api(host=limited.url, rate_window=0.5, max_retries=0)
        for i in range(10):
            api.upsert_user(user_id=f"u{i}")
        delivered = {s.body["identification"]["userId"] for s in limited.seen if s.status == 201}
        assert {f"u{i}" for i in range(10)} <= delivered
        # Waited, not hammered: each 429 in a row waits longer, and the pacing reads the
        # server's X-RateLimit-Remaining (the other process's requests count there).
        assert 1 <= limited.rate_limited <= 6, limited.rate_limited
    finally:
        limited.stop()


def test_async_client_has_the_same_methods(server: ApiServer) -> None:
    sync_methods = {n for n in dir(JournyAPI) if not n.startswith("_")} - {"close"}
    async_methods = {n for n in dir(AsyncJournyAPI) if not n.startswith("_")} - {"aclose"}
    assert sync_methods - {"requests", "retried", "rate_limited", "timeout"} <= async_methods

    async def main() -> None:
        async with AsyncJournyAPI(
            api_key="test-api-key", host=server.url, retry_policy=FAST
        ) as api:
            await asyncio.gather(*(api.upsert_user(user_id=f"u{i}") for i in range(50)))
            await api.track(event="e", user_id="u1", metadata={"at": dt.datetime(2024, 1, 1)})
            assert (await api.validate_key()).allows("TrackData")
            assert await api.user_segments()
            with pytest.raises(ValidationError):
                await api.delete_user()
            server.then(
                "POST",
                "/link",
                400,
                body={
                    "meta": {"requestId": "r", "status": 400},
                    "message": "Bad request",
                    "errors": {"fields": {"deviceId": "required"}, "parameters": {}},
                },
            )
            with pytest.raises(JournyAPIError) as raised:
                await api.link(device_id="d", user_id="u1")
            assert raised.value.fields == {"deviceId": "required"}

    asyncio.run(main())
    assert len(server.calls("POST", "/users/upsert")) == 50
    assert server.problems() == []


@pytest.mark.parametrize(
    "setting",
    [
        {"timeout": 0},
        {"timeout": float("nan")},
        {"max_retries": -1},
        {"max_retries": True},
        {"rate_window": 0},
        {"rate_window": float("inf")},
    ],
)
def test_bad_settings_are_refused_naming_the_setting(setting: dict) -> None:
    (name,) = setting
    for cls in (JournyAPI, AsyncJournyAPI):
        with pytest.raises(ValueError, match=name):
            cls(api_key="k", host="http://127.0.0.1:9", **setting)
