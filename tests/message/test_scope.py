"""journy_analytics.scope: request-scoped ids, account, properties and context, delivered
over loopback to the collector. Every rule of the README's "Request scope" section."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any, Callable, Dict, List

import pytest

import journy_analytics
from journy_analytics import Analytics, ValidationError, scope
from journy_analytics._default import set_default_client
from journy_analytics._message._scope import Scope, active_scope
from journy_analytics.collector import CollectorThread

LIBRARY_ONLY = {"library"}


def _delivered(client: Analytics, collector: CollectorThread) -> List[Dict[str, Any]]:
    assert client.flush(timeout=10)
    return sorted(collector.events(), key=lambda e: e["messageId"])


def _by_event(events: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {e.get("event") or e.get("name") or e["type"]: e for e in events}


def test_outside_a_scope_nothing_changes(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    client = make_client()
    assert active_scope() is None
    with pytest.raises(ValidationError, match="needs user_id or anonymous_id"):
        client.track(event="Nobody")
    client.track(user_id="u1", event="Plain", properties={"a": 1})
    (event,) = _delivered(client, collector)
    assert set(event["context"]) == LIBRARY_ONLY
    assert event["properties"] == {"a": 1}
    assert "anonymousId" not in event


def test_every_event_method_takes_what_it_leaves_out_from_the_scope(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    client = make_client()
    with scope(
        user_id="f4ca124298",
        anonymous_id="anon-1",
        group_id="tesla",
        properties={"plan": "pro"},
        context={"ip": "203.0.113.9"},
    ):
        client.identify(traits={"email": "elon@tesla.com"})
        client.group(traits={"name": "Tesla"})
        client.track(event="Car Sold")
        client.page(name="Pricing")
        client.screen(name="Home")
        client.alias(previous_id="anon-0")
    events = _delivered(client, collector)
    assert [e["type"] for e in events] == [
        "identify",
        "group",
        "track",
        "screen",  # a page with a name is stored as a screen
        "screen",
        "alias",
    ]
    for e in events:
        assert e["userId"] == "f4ca124298"
        assert e["anonymousId"] == "anon-1"
        assert e["context"]["ip"] == "203.0.113.9"
        assert e["context"]["library"]["name"] == "journy-analytics"
    identify, group, track, page, screen_, alias = events
    assert group["groupId"] == "tesla"
    for e in (track, page, screen_):
        assert e["context"]["groupId"] == "tesla"
        assert e["properties"] == {"plan": "pro"}
    # properties are event properties, never traits; identify/alias have no account
    assert identify["traits"] == {"email": "elon@tesla.com"}
    assert group["traits"] == {"name": "Tesla"}
    assert "groupId" not in identify["context"] and "groupId" not in alias["context"]
    assert alias["previousId"] == "anon-0"
    # the account really got the member from the scope
    account = collector.account("tesla")
    assert account is not None and "f4ca124298" in account["members"]


def test_explicit_arguments_win_key_by_key(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    client = make_client()
    with scope(
        user_id="scoped-user",
        anonymous_id="scoped-anon",
        group_id="scoped-account",
        properties={"plan": "pro", "source": "scope"},
        context={"ip": "203.0.113.9", "locale": "nl-BE"},
    ):
        client.track(
            event="Explicit",
            user_id="someone-else",
            group_id="other-account",
            properties={"source": "call", "extra": 1},
            context={"locale": "en-US"},
        )
        client.track(event="Anon Only", anonymous_id="another-visitor")
        client.track(event="Context Group", context={"groupId": "ctx-account"})
        client.group(group_id="explicit-account", traits={})
    by = _by_event(_delivered(client, collector))
    explicit = by["Explicit"]
    # naming someone means the event is about them: the scope's other id is not paired in
    assert explicit["userId"] == "someone-else" and "anonymousId" not in explicit
    assert explicit["context"]["groupId"] == "other-account"
    assert explicit["properties"] == {"plan": "pro", "source": "call", "extra": 1}
    assert explicit["context"]["ip"] == "203.0.113.9"
    assert explicit["context"]["locale"] == "en-US"
    anon = by["Anon Only"]
    assert anon["anonymousId"] == "another-visitor" and "userId" not in anon
    assert by["Context Group"]["context"]["groupId"] == "ctx-account"
    assert by["group"]["groupId"] == "explicit-account"


def test_scopes_nest_and_the_outer_one_is_restored_even_after_an_exception(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    client = make_client()
    with scope(anonymous_id="visitor", properties={"a": 1, "b": 1}, context={"x": 1}) as outer:
        client.track(event="Before Login")
        with scope(user_id="u1", properties={"b": 2}, context={"y": 2}) as inner:
            assert inner.anonymous_id == "visitor"  # inherited
            client.track(event="Logged In")
            with pytest.raises(RuntimeError), scope(group_id="acme", user_id="u2"):
                client.track(event="Deepest")
                raise RuntimeError("handler failed")
            assert active_scope() is inner
            client.track(event="After Failure")
        assert active_scope() is outer
        client.track(event="After Inner")
    assert active_scope() is None
    by = _by_event(_delivered(client, collector))
    assert by["Before Login"]["anonymousId"] == "visitor" and "userId" not in by["Before Login"]
    assert by["Before Login"]["properties"] == {"a": 1, "b": 1}
    logged = by["Logged In"]
    assert (logged["userId"], logged["anonymousId"]) == ("u1", "visitor")
    assert logged["properties"] == {"a": 1, "b": 2}
    assert logged["context"]["x"] == 1 and logged["context"]["y"] == 2
    deepest = by["Deepest"]
    assert (deepest["userId"], deepest["context"]["groupId"]) == ("u2", "acme")
    after = by["After Failure"]
    assert after["userId"] == "u1" and "groupId" not in after["context"]
    assert "userId" not in by["After Inner"] and "y" not in by["After Inner"]["context"]


def test_decorator_on_plain_and_async_functions(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    client = make_client()

    @scope(group_id="acme", properties={"job": "nightly"})
    def nightly(user: str) -> None:
        client.track(user_id=user, event="Sync Ran")

    @scope(user_id="async-user")
    async def handler() -> str:
        await asyncio.sleep(0)
        client.track(event="Async Handled")
        return "ok"

    nightly("u7")
    with scope(anonymous_id="caller"):
        assert asyncio.run(handler()) == "ok"  # nested in the caller's scope at call time
        nightly("u8")
    assert active_scope() is None
    with pytest.raises(ZeroDivisionError):
        scope(user_id="x")(lambda: 1 / 0)()
    assert active_scope() is None
    events = _delivered(client, collector)
    sync_events = [e for e in events if e["event"] == "Sync Ran"]
    assert {e["userId"] for e in sync_events} == {"u7", "u8"}
    assert all(e["context"]["groupId"] == "acme" for e in sync_events)
    (handled,) = [e for e in events if e["event"] == "Async Handled"]
    assert (handled["userId"], handled["anonymousId"]) == ("async-user", "caller")


def test_decorated_generator_runs_every_step_in_its_scope_interleaved_with_the_callers(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    client = make_client()
    seen: List[Any] = []

    @scope(user_id="alice", properties={"stream": "report"})
    def stream(rows: int) -> Any:
        try:
            for n in range(rows):
                client.track(event=f"Row {n}")
                seen.append(active_scope())
                got = yield n
                if got is not None:
                    client.track(event=f"Got {got}")
        finally:
            client.track(event="Stream Closed")  # close() runs in the scope too

    with scope(user_id="bob", group_id="acme"):
        rows = stream(3)  # the generator's context is taken here, inside bob's request
    assert active_scope() is None
    with scope(user_id="carol"):  # the consumer: another scope, interleaved step by step
        assert next(rows) == 0
        client.track(event="Between 1")
        assert rows.send("ping") == 1
        client.track(event="Between 2")
        assert active_scope() is not None and active_scope().user_id == "carol"
        rows.close()
    assert active_scope() is None
    by_event = _by_event(_delivered(client, collector))
    for name in ("Row 0", "Got ping", "Row 1", "Stream Closed"):
        event = by_event[name]
        assert event["userId"] == "alice", name
        assert event["properties"]["stream"] == "report", name
        assert event["context"]["groupId"] == "acme", name  # inherited from the creator
    for name in ("Between 1", "Between 2"):
        assert by_event[name]["userId"] == "carol", name
        assert "groupId" not in by_event[name]["context"]
    assert [s.user_id for s in seen] == ["alice", "alice"]


def test_decorated_generator_sees_thrown_exceptions_and_returns_its_value() -> None:
    @scope(user_id="alice")
    def body() -> Any:
        try:
            yield 1
        except KeyError:
            assert active_scope().user_id == "alice"
            yield "handled"
        return "done"

    with scope(user_id="bob"):
        steps = body()
        assert next(steps) == 1
        assert steps.throw(KeyError("k")) == "handled"
        with pytest.raises(StopIteration) as stop:
            next(steps)
        assert stop.value.value == "done"
        assert active_scope().user_id == "bob"


def test_decorated_async_generator_runs_every_step_in_its_scope(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    client = make_client()

    @scope(user_id="alice")
    async def stream() -> Any:
        try:
            for n in range(2):
                await asyncio.sleep(0)  # the step is suspended and resumed by the loop
                client.track(event=f"Chunk {n}")
                got = yield n
                if got is not None:
                    client.track(event=f"Got {got}")
        finally:
            client.track(event="Stream Closed")

    async def bob_request() -> List[Any]:
        with scope(user_id="bob"):
            chunks = stream()
            out = [await chunks.__anext__()]
            client.track(event="Between")
            out.append(await chunks.asend("ping"))
            await chunks.aclose()
            client.track(event="After")
            return out

    async def main() -> List[Any]:
        other = asyncio.ensure_future(other_request())
        result = await bob_request()
        await other
        return result

    async def other_request() -> None:
        with scope(user_id="dave"):
            await asyncio.sleep(0)
            client.track(event="Dave")

    assert asyncio.run(main()) == [0, 1]
    by_event = _by_event(_delivered(client, collector))
    for name in ("Chunk 0", "Got ping", "Chunk 1", "Stream Closed"):
        assert by_event[name]["userId"] == "alice", name
    assert by_event["Between"]["userId"] == "bob"
    assert by_event["After"]["userId"] == "bob"
    assert by_event["Dave"]["userId"] == "dave"


def test_decorated_async_generator_under_async_for_and_a_streaming_consumer() -> None:
    @scope(user_id="alice")
    async def stream() -> Any:
        for _ in range(3):
            await asyncio.sleep(0)
            yield active_scope().user_id

    async def main() -> List[Any]:
        with scope(user_id="bob"):
            chunks = stream()
        # Iterated after the creator's scope ended, as a server iterates a streaming body.
        seen = [user async for user in chunks]
        assert active_scope() is None
        return seen

    assert asyncio.run(main()) == ["alice", "alice", "alice"]


def test_async_with_and_reentering_one_scope_object(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    client = make_client()
    account = scope(group_id="acme")

    async def handler() -> None:
        async with scope(user_id="async-with"):
            with account:
                client.track(event="First")
                with account:  # the same object, nested
                    client.track(event="Second")
                assert active_scope() is not None and active_scope().group_id == "acme"
            client.track(event="Third")
        assert active_scope() is None

    asyncio.run(handler())
    by = _by_event(_delivered(client, collector))
    assert {e["userId"] for e in by.values()} == {"async-with"}
    assert by["First"]["context"]["groupId"] == by["Second"]["context"]["groupId"] == "acme"
    assert "groupId" not in by["Third"]["context"]


def test_concurrent_asyncio_tasks_each_see_their_own_scope(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    client = make_client()

    async def request(n: int) -> None:
        with scope(user_id=f"user-{n}", properties={"n": n}):
            for step in range(5):
                await asyncio.sleep(0)  # interleave with the other requests
                client.track(event=f"Step {step}")
            # a task spawned inside the request inherits its scope
            await asyncio.create_task(_child())

    async def _child() -> None:
        client.track(event="Child Task")

    async def main() -> None:
        await asyncio.gather(*(request(n) for n in range(20)))

    asyncio.run(main())
    events = _delivered(client, collector)
    assert len(events) == 20 * 6
    for e in events:
        assert e["userId"] == f"user-{e['properties']['n']}"


def test_scope_crosses_threads_through_copy_context_only(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    client = make_client()
    errors: List[BaseException] = []

    def work(label: str) -> None:
        try:
            client.track(event=label)
        except BaseException as exc:  # a thread without the scope has no ids
            errors.append(exc)

    with scope(user_id="threaded"):
        ctx = contextvars.copy_context()
        copied = threading.Thread(target=ctx.run, args=(work, "Copied Context"))
        plain = threading.Thread(target=work, args=("Plain Thread",))
        copied.start()
        plain.start()
        copied.join()
        plain.join()
    (event,) = _delivered(client, collector)
    assert (event["event"], event["userId"]) == ("Copied Context", "threaded")
    assert len(errors) == 1 and isinstance(errors[0], ValidationError)


def test_module_level_client_uses_the_scope(collector: CollectorThread) -> None:
    client = Analytics(write_key="k", host=collector.url, flush_interval=0.05)
    previous = set_default_client(client)
    try:
        with scope(user_id="module-user", group_id="acme"):
            journy_analytics.track(event="Module Call")
        assert journy_analytics.flush(10)
    finally:
        set_default_client(previous)
        client.close_and_flush(5)
    (event,) = collector.events()
    assert event["userId"] == "module-user" and event["context"]["groupId"] == "acme"


def test_scope_copies_its_arguments_and_is_immutable(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    client = make_client()
    props = {"plan": "pro"}
    with scope(user_id=42, properties=props) as active:
        props["plan"] = "changed-after-entering"
        with pytest.raises(AttributeError):
            active.user_id = "other"  # type: ignore[misc]
        client.track(event="Copied")
    (event,) = _delivered(client, collector)
    assert event["userId"] == "42"  # ints are converted like everywhere else
    assert event["properties"] == {"plan": "pro"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"user_id": ""},
        {"anonymous_id": 1.5},
        {"group_id": ["acme"]},
        {"properties": ["not", "a", "dict"]},
        {"context": "nope"},
    ],
)
def test_bad_scope_arguments_raise_at_once(kwargs: Dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        scope(**kwargs)
    assert active_scope() is None


def test_scope_round_trips_through_a_plain_dict() -> None:
    with scope(user_id="u", group_id="g", properties={"p": 1}, context={"c": [1, 2]}) as s:
        data = s.to_dict()
    assert data == {
        "user_id": "u",
        "group_id": "g",
        "properties": {"p": 1},
        "context": {"c": [1, 2]},
    }
    assert Scope.from_dict(data) == s
