"""The plugin chain: order, threads, drops, errors, destinations, fork (docs/plugins.md)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, Dict, List, Optional

import pytest

from journy_analytics import Analytics, DeliveryError
from journy_analytics._message import _chain as _plugins
from journy_analytics.collector import CollectorThread
from journy_analytics.plugins import Plugin

Event = Dict[str, Any]


class Recorder(Plugin):
    """Records what it sees (and on which thread); then applies ``change``."""

    def __init__(
        self,
        name: str,
        type: str,
        log: Optional[List[str]] = None,
        change: Optional[Callable[[Event], Any]] = None,
    ) -> None:
        self.name = name
        self.type = type
        self.log = log if log is not None else []
        self.change = change
        self.events: List[Event] = []
        self.threads: List[int] = []

    def process(self, event: Event) -> Optional[Event]:
        self.log.append(self.name)
        self.events.append(event)
        self.threads.append(threading.get_ident())
        if self.change is not None:
            result: Optional[Event] = self.change(event)
            return result
        return event


def test_before_plugins_run_before_enrichment_each_kind_in_registration_order(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    a = make_client()
    order: List[str] = []
    a.register(
        Recorder("enrich-1", "enrichment", order),
        Recorder("before-1", "before", order),
    )
    a.register(Recorder("enrich-2", "enrichment", order), Recorder("before-2", "before", order))
    a.track(user_id="u1", event="Ordered")
    assert order == ["before-1", "before-2", "enrich-1", "enrich-2"]


def test_plugins_change_the_event_in_the_callers_thread_before_it_is_sent(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    def add_plan(event: Event) -> Event:
        event["properties"]["plan"] = "pro"
        event["context"]["region"] = "eu"
        return event

    a = make_client()
    enrich = Recorder("plan", "enrichment", change=add_plan)
    a.register(enrich)
    props = {"revenue": 10}
    a.track(user_id="u1", event="Ordered", properties=props)
    assert enrich.threads == [threading.get_ident()]
    assert a.flush(timeout=10)
    (sent,) = collector.events(type="track")
    assert sent["properties"] == {"revenue": 10, "plan": "pro"}
    assert sent["context"]["region"] == "eu"
    # The plugin changed the event's own copy, never the caller's dict.
    assert props == {"revenue": 10}


def test_a_plugin_may_return_a_new_dict(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    a = make_client()
    a.register(Recorder("rename", "before", change=lambda e: {**e, "event": "Renamed"}))
    a.track(user_id="u1", event="Original")
    assert a.flush(timeout=10)
    assert [e["event"] for e in collector.events(type="track")] == ["Renamed"]


def test_returning_none_drops_the_event_counted_as_plugin_not_reported_as_error(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    a = make_client()
    errors: List[Any] = []
    a.on("error", errors.append)
    later = Recorder("later", "enrichment")
    a.register(
        Recorder("drop-bots", "before", change=lambda e: None if e["userId"] == "bot" else e)
    )
    a.register(later)
    called: List[Any] = []
    a.track(user_id="bot", event="Crawl", callback=lambda err, msg: called.append(err))
    a.track(user_id="bot", event="Crawl")
    a.track(user_id="human", event="Buy")
    assert a.flush(timeout=10)
    assert [e["userId"] for e in collector.events(type="track")] == ["human"]
    stats = a.stats()
    assert stats["dropped_by_plugin"] == 2
    assert stats["plugins"]["dropped_by"] == {"drop-bots": 2}
    assert stats["delivered"] == 1
    assert errors == [] and called == []
    # A dropped event goes no further down the chain.
    assert [e["userId"] for e in later.events] == ["human"]


def test_a_raising_enrichment_plugin_is_reported_and_the_event_goes_on(
    make_client: Callable[..., Analytics],
    collector: CollectorThread,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(event: Event) -> Event:
        event["properties"]["half"] = "done"
        raise RuntimeError("enrichment bug")

    a = make_client()
    errors: List[DeliveryError] = []
    a.on("error", errors.append)
    a.register(Recorder("broken", "enrichment", change=boom))
    with caplog.at_level(logging.ERROR, logger="journy_analytics"):
        for i in range(20):
            a.track(user_id=f"u{i}", event="Ordered")
    assert a.flush(timeout=10)
    assert len(collector.events(type="track")) == 20
    assert len(errors) == 20 and errors[0].code == "plugin_error"
    assert "broken" in errors[0].reason and "enrichment bug" in errors[0].reason
    assert a.stats()["plugins"]["errors"] == {"broken": 20}
    assert a.stats()["dropped_by_plugin"] == 0
    # Logged once (with the traceback), then rate-limited: not 20 log records.
    logged = [r for r in caplog.records if "broken" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


def test_a_raising_before_plugin_drops_the_event_so_nothing_leaks_unfiltered(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    def failing_filter(event: Event) -> Event:
        raise ValueError("filter bug")

    a = make_client()
    errors: List[DeliveryError] = []
    a.on("error", errors.append)
    a.register(Recorder("gate", "before", change=failing_filter))
    a.track(user_id="u1", event="Ordered", properties={"email": "a@example.com"})
    a.track(user_id="u2", event="Ordered")
    assert a.flush(timeout=10)
    assert collector.events(type="track") == []
    assert [e.code for e in errors] == ["plugin_error", "plugin_error"]
    assert "the event was dropped" in errors[0].reason
    assert a.stats()["plugins"]["errors"] == {"gate": 2}
    # Then it is deregistered and the path is the plain one again.
    a.deregister("gate")
    assert a._plugins is None
    a.track(user_id="u3", event="Ordered")
    assert a.flush(timeout=10)
    assert [e["userId"] for e in collector.events(type="track")] == ["u3"]


def test_per_type_methods_handle_only_their_type(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    seen: List[str] = []

    class OnlyTrack:
        name = "only-track"
        type = "enrichment"

        def track(self, event: Event) -> Event:
            seen.append(event["type"])
            event["properties"]["tagged"] = True
            return event

    a = make_client()
    a.register(OnlyTrack())
    a.identify(user_id="u1", traits={"plan": "pro"})
    a.track(user_id="u1", event="Ordered")
    assert seen == ["track"]
    assert a.flush(timeout=10)
    assert collector.events(type="track")[0]["properties"] == {"tagged": True}


def test_register_refuses_what_it_cannot_run(make_client: Callable[..., Analytics]) -> None:
    a = make_client()
    with pytest.raises(ValueError, match="type="):
        a.register(Recorder("x", "after"))
    with pytest.raises(ValueError, match="name"):
        a.register(Recorder("", "before"))

    class NoHandler:
        name = "nothing"
        type = "before"

    with pytest.raises(ValueError, match="process"):
        a.register(NoHandler())
    a.register(Recorder("dup", "before"))
    with pytest.raises(ValueError, match="already registered"):
        a.register(Recorder("dup", "enrichment"))
    with pytest.raises(KeyError, match="no plugin named 'missing'"):
        a.deregister("missing")
    with pytest.raises(ValueError, match="at least one"):
        a.register()


def test_without_plugins_the_event_path_has_no_chain(make_client: Callable[..., Analytics]) -> None:
    a = make_client()
    assert a._plugins is None
    a.register(Recorder("r", "before"))
    assert a._plugins is not None
    assert a.deregister("r").name == "r"
    assert a._plugins is None
    assert a.stats()["dropped_by_plugin"] == 0


# -- destinations -----------------------------------------------------------------------------


def test_destination_gets_the_final_event_as_sent_on_its_own_thread(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    a = make_client()
    dest = Recorder("dest", "destination")
    a.register(dest, Recorder("enrich", "enrichment", change=lambda e: {**e, "event": "Final"}))
    a.track(user_id="u1", event="First", properties={"n": 1})
    assert a.flush(timeout=10)
    (sent,) = collector.events(type="track")
    assert dest.events == [sent]
    assert dest.threads[0] != threading.get_ident()


def test_a_stuck_destination_slows_neither_calls_nor_delivery(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    release = threading.Event()
    entered = threading.Event()

    def stuck(event: Event) -> Event:
        entered.set()
        release.wait(30)
        return event

    a = make_client()
    dest = Recorder("stuck", "destination", change=stuck)
    a.register(dest)
    try:
        for i in range(50):
            a.track(user_id=f"u{i}", event="Ordered")
        assert entered.wait(10)
        # The destination is blocked on its first event; journy.io still gets every one.
        assert collector.wait_for_events(50, timeout=10)
        assert a.stats()["plugins"]["destination_queue"] >= 49
    finally:
        release.set()
    assert a.flush(timeout=10)
    assert len(dest.events) == 50


def test_a_raising_destination_is_reported_and_delivery_goes_on(
    make_client: Callable[..., Analytics], collector: CollectorThread
) -> None:
    def fail(event: Event) -> Event:
        raise OSError("disk full")

    a = make_client()
    errors: List[DeliveryError] = []
    a.on("error", errors.append)
    a.register(Recorder("broken-dest", "destination", change=fail))
    for i in range(3):
        a.track(user_id=f"u{i}", event="Ordered")
    assert a.flush(timeout=10)
    assert len(collector.events(type="track")) == 3
    assert [e.code for e in errors] == ["plugin_error"] * 3
    assert a.stats()["plugins"]["errors"] == {"broken-dest": 3}


def test_a_full_destination_queue_skips_events_for_destinations_only(
    monkeypatch: pytest.MonkeyPatch,
    make_client: Callable[..., Analytics],
    collector: CollectorThread,
) -> None:
    monkeypatch.setattr(_plugins, "DESTINATION_QUEUE_SIZE", 5)
    release = threading.Event()
    a = make_client()
    dest = Recorder("slow", "destination", change=lambda e: release.wait(30) and e)
    a.register(dest)
    try:
        for i in range(30):
            a.track(user_id=f"u{i}", event="Ordered")
        assert collector.wait_for_events(30, timeout=10)
    finally:
        release.set()
    assert a.flush(timeout=10)
    skipped = a.stats()["plugins"]["destination_dropped"]
    assert skipped >= 30 - 5 - 1
    assert len(dest.events) == 30 - skipped


def test_close_delivers_what_destinations_were_handed_and_unloads_them(
    collector: CollectorThread,
) -> None:
    unloaded: List[str] = []

    class Dest(Recorder):
        def unload(self) -> None:
            unloaded.append(self.name)

    a = Analytics("k", host=collector.url, flush_interval=0.05)
    dest = Dest("d", "destination")
    a.register(dest)
    for i in range(100):
        a.track(user_id=f"u{i}", event="Ordered")
    assert a.close_and_flush(timeout=10)
    assert len(dest.events) == 100
    assert unloaded == ["d"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_destinations_work_in_a_forked_child(collector: CollectorThread, tmp_path: Any) -> None:
    out = tmp_path / "child.txt"

    class FileDest(Plugin):
        name = "file"
        type = "destination"

        def process(self, event: Event) -> Event:
            with open(out, "a") as f:
                f.write(f"{os.getpid()} {event['event']}\n")
            return event

    a = Analytics("k", host=collector.url, flush_interval=0.05)
    a.register(FileDest())
    a.track(user_id="parent", event="InParent")
    assert a.flush(timeout=10)  # the destination thread now runs in the parent
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            a.track(user_id="child", event="InChild")
            ok = a.flush(timeout=10)
        finally:
            os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lines = out.read_text().splitlines()
    assert f"{pid} InChild" in lines
    assert f"{os.getpid()} InParent" in lines
    a.close_and_flush(timeout=5)


def test_module_level_client_takes_plugins(
    collector: CollectorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    import journy_analytics
    from journy_analytics._default import set_default_client

    monkeypatch.setenv("JOURNY_WRITE_KEY", "env-key")
    monkeypatch.setenv("JOURNY_HOST", collector.url)
    previous = set_default_client(None)
    try:
        journy_analytics.register(
            Recorder("tag", "enrichment", change=lambda e: {**e, "event": "T"})
        )
        journy_analytics.track(user_id="u", event="Module Level")
        assert journy_analytics.flush(10)
        assert [e["event"] for e in collector.events(type="track")] == ["T"]
        assert journy_analytics.deregister("tag").name == "tag"
        assert journy_analytics.close_and_flush(5)
    finally:
        set_default_client(previous)
