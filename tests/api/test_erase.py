"""GDPR erase on the batch client, against the local collector (batch and REST paths)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, List

import pytest

from journy_analytics import Analytics, DeliveryError, RetryPolicy, ValidationError
from journy_analytics.collector import CollectorThread

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, deadline=3.0)


@pytest.fixture
def rest_collector() -> Any:
    with CollectorThread(db=":memory:") as running:
        yield running


def _client(collector: CollectorThread, **settings: Any) -> Analytics:
    settings.setdefault("write_key", "wk")
    settings.setdefault("host", collector.url)
    settings.setdefault("api_key", "ak")
    settings.setdefault("api_host", collector.url)
    settings.setdefault("retry_policy", FAST)
    return Analytics(**settings)


def test_erase_purges_the_queue_fences_and_deletes(rest_collector: CollectorThread) -> None:
    # Delivered first: the profile exists at the collector.
    first = _client(rest_collector, flush_interval=0.05)
    first.identify(user_id="gone", traits={"email": "gone@x.io"})
    first.track(user_id="gone", event="before")
    assert first.flush(10)
    assert rest_collector.user("gone") is not None
    first.close_and_flush(5)

    # Then queued (a long flush interval keeps them in the queue), and erased.
    client = _client(rest_collector, flush_interval=3600, max_events_in_batch=1000)
    assert "ak" not in repr(client).replace("host", "")
    errors: List[BaseException] = []
    for i in range(300):
        client.track(user_id="gone", event="queued", properties={"i": i})
        client.track(user_id="stays", event="queued", properties={"i": i})
    client.track(user_id="gone", event="cb", callback=lambda e, m: errors.append(e))
    client.identify(user_id="anon-but-email", traits={"email": "gone@x.io"})
    result = client.erase_user(user_id="gone", email="gone@x.io")
    assert result.purged_from_queue == 302
    assert result.purged_from_spool == 0  # no spool
    assert result.in_flight == 0
    assert result.deleted and result.ok and result.delete_error is None
    assert result.fenced_until is not None and not result.fence_persisted
    assert isinstance(errors[0], DeliveryError) and errors[0].cause == "erased"

    # The fence: new events for the id are refused and counted, others go.
    client.track(user_id="gone", event="late")
    client.identify(user_id="someone", traits={"email": "gone@x.io"})
    client.track(user_id="stays", event="after")
    assert client.stats()["erase_fence"] == {"active": 2, "refused": 2}
    assert client.flush(10)
    assert rest_collector.user("gone") is None
    assert rest_collector.events(user_id="gone") == []
    assert rest_collector.events(user_id="anon-but-email") == []
    assert len(rest_collector.events(user_id="stays")) == 301
    client.close_and_flush(5)


def test_erase_account_and_no_api_key(rest_collector: CollectorThread) -> None:
    client = _client(rest_collector, flush_interval=3600, api_key=None)
    client.group(user_id="u1", group_id="acc-1", traits={"domain": "acme-inc.com"})
    client.track(user_id="u1", event="x", group_id="acc-1")
    client.track(user_id="u1", event="y")
    result = client.erase_account(account_id="acc-1", domain="acme-inc.com")
    assert result.purged_from_queue == 2
    assert not result.deleted and "no api_key" in (result.delete_error or "")
    assert client.flush(10)
    assert [e["event"] for e in rest_collector.events(user_id="u1")] == ["y"]
    with pytest.raises(ValidationError, match="account_id, domain"):
        client.erase_account()
    with pytest.raises(ValidationError, match="domain"):
        client.erase_account(domain="not a domain")
    client.close_and_flush(5)


def test_no_fence_costs_nothing_and_expires(rest_collector: CollectorThread) -> None:
    client = _client(rest_collector, flush_interval=3600, erase_fence_seconds=0.2)
    assert client._fence is None  # the event path's only test while no erase stands
    client.erase_user(user_id="gone")
    assert client._fence is not None
    client.track(user_id="gone", event="refused")
    deadline = time.monotonic() + 10
    while client.stats()["erase_fence"]["active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    client.track(user_id="gone", event="accepted again")
    assert client._fence is None
    assert client.stats()["queued"] == 1
    client.close_and_flush(5)


# -- the done test: outage, spool, erase, kill -9, restart ---------------------------------

_CHILD = r"""
import json, sys, time
from journy_analytics import Analytics, RetryPolicy
host, spool, phase = sys.argv[1], sys.argv[2], sys.argv[3]
client = Analytics(
    write_key="wk", host=host, spool=spool, api_key="ak", api_host=host,
    flush_interval=0.05, retry_policy=RetryPolicy(initial_backoff=0.05, max_backoff=0.2,
    deadline=600), http_request_timeout=2.0, handle_sigterm=False,
)
if phase == "erase":
    for i in range(1000):
        client.track(user_id="erased-user", event="e", properties={"i": i})
        if i % 10 == 0:
            client.track(user_id="kept-user", event="k", properties={"i": i})
    # Let some batches be taken (on the wire, then parked) and committed to the spool.
    time.sleep(0.5)
    result = client.erase_user(user_id="erased-user", timeout=2)  # the server is down
    client.track(user_id="erased-user", event="late")
    print(json.dumps({"purged_queue": result.purged_from_queue,
                      "purged_spool": result.purged_from_spool,
                      "purged_retry": result.purged_from_retry,
                      "in_flight": result.in_flight, "deleted": result.deleted,
                      "fence_persisted": result.fence_persisted,
                      "refused": client.stats()["erase_fence"]["refused"]}), flush=True)
    time.sleep(3600)  # killed with SIGKILL by the test
else:
    client.track(user_id="erased-user", event="after restart")
    settled = client.flush(60)
    result = client.erase_user(user_id="erased-user")  # the DELETE, now the server is up
    print(json.dumps({"settled": settled, "deleted": result.deleted,
                      "refused": client.stats()["erase_fence"]["refused"]}), flush=True)
    client.close_and_flush(10)
"""


def _spool_rows(path: Path, user: str) -> int:
    db = sqlite3.connect(str(path), timeout=5)
    try:
        rows = db.execute("SELECT body FROM spool").fetchall()
    finally:
        db.close()
    return sum(1 for (body,) in rows if json.loads(body).get("userId") == user)


def test_erase_sticks_across_kill_9(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    with CollectorThread(db=str(tmp_path / "collector.db")) as collector:
        url = collector.url
        collector.stop()  # the outage
        child = subprocess.Popen(
            [sys.executable, str(script), url, str(spool), "erase"],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        try:
            assert child.stdout is not None
            lines: List[str] = []
            reader = threading.Thread(target=lambda: lines.append(child.stdout.readline()))
            reader.start()
            reader.join(120)
            line = lines[0] if lines else ""
            assert line, "the child died before it erased"
            erased = json.loads(line)
            # The kept user's events reach the spool (group commits every 0.2 s).
            deadline = time.monotonic() + 30
            while _spool_rows(spool, "kept-user") < 100 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _spool_rows(spool, "kept-user") == 100
            assert _spool_rows(spool, "erased-user") == 0
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        assert erased["purged_queue"] + erased["purged_retry"] + erased["in_flight"] == 1000
        # Some were in batches already (parked for retry: re-cut; on the wire: waited for);
        # their spool rows went.
        assert erased["purged_retry"] + erased["in_flight"] > 0
        assert erased["purged_spool"] > 0
        assert not erased["deleted"]  # the server was down
        assert erased["fence_persisted"] and erased["refused"] == 1

        collector.start()  # the server is back; the next run replays the spool
        second = subprocess.run(
            [sys.executable, str(script), url, str(spool), "restart"],
            capture_output=True,
            env=env,
            text=True,
            timeout=120,
        )
        assert second.returncode == 0, second.stderr
        after = json.loads(second.stdout.strip().splitlines()[-1])
        assert after["settled"] and after["deleted"]
        assert after["refused"] == 1  # the fence came back from the spool
        assert collector.events(user_id="erased-user") == []
        assert collector.user("erased-user") is None
        assert len(collector.events(user_id="kept-user")) == 100


def test_the_delete_comes_after_events_in_flight() -> None:
    from journy_analytics.collector import Faults

    # Every batch takes 1.5 s to be stored; the DELETE (a REST call) is not delayed.
    with CollectorThread(db=":memory:", faults=Faults(latency_ms=1500)) as collector:
        client = _client(collector, flush_interval=0.01)
        client.track(user_id="gone", event="on the wire")
        deadline = time.monotonic() + 10
        while client.stats()["in_flight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        result = client.erase_user(user_id="gone")
        assert result.in_flight == 0 and result.deleted  # waited for it, then deleted
        assert client.flush(10)
        assert collector.user("gone") is None  # the late batch did not re-create it
        assert collector.events(user_id="gone") == []
        client.close_and_flush(5)


def test_bad_erase_settings_are_refused_before_anything_starts(tmp_path: Path) -> None:
    spool = tmp_path / "s.db"
    with pytest.raises(ValueError, match="api_key"):
        Analytics(write_key="wk", api_key="  ", spool=spool)
    with pytest.raises(ValueError, match="erase_fence_seconds"):
        Analytics(write_key="wk", erase_fence_seconds=-1, spool=spool)
    # Nothing holds the spool: a client can open it now.
    Analytics(write_key="wk", spool=spool, disable=True).close_and_flush(1)


def test_erase_while_other_threads_track(rest_collector: CollectorThread) -> None:
    """Events keep coming from other threads during the erase: none of the kept user's is
    lost or reordered into oblivion, and none of the erased user's made after the erase
    returned gets through."""
    # enqueue_timeout: the producers wait for room rather than overflow the queue.
    client = _client(
        rest_collector, flush_interval=0.01, max_events_in_batch=50, enqueue_timeout=30
    )
    erased = threading.Event()
    sent_kept: List[int] = []

    def producer() -> None:
        for i in range(2000):
            after = erased.is_set()
            client.track(user_id="gone", event="after" if after else "before")
            client.track(user_id="kept", event="k", properties={"i": i})
            sent_kept.append(i)

    threads = [threading.Thread(target=producer) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(sent_kept) < 2000 and time.monotonic() < deadline:
        time.sleep(0.005)
    result = client.erase_user(user_id="gone")
    erased.set()
    for t in threads:
        t.join(10)
    assert client.flush(30)
    assert [e for e in rest_collector.events(user_id="gone") if e["event"] == "after"] == []
    assert len(sent_kept) == 6000 and client.stats()["dropped"]["queue_full"] == 0
    assert len(rest_collector.events(user_id="kept")) == 6000
    assert result.deleted and client.stats()["erase_fence"]["refused"] > 0
    client.close_and_flush(5)


def _spool_bodies(path: Path) -> List[bytes]:
    with sqlite3.connect(str(path)) as db:
        return [bytes(row[0]) for row in db.execute("SELECT body FROM spool ORDER BY position")]


def test_erase_takes_the_id_out_of_batches_parked_for_retry(
    rest_collector: CollectorThread, tmp_path: Path
) -> None:
    # An outage of the batch endpoint that answers (503): every batch is sent once, then
    # parked for its retry. journy.io's REST API is another host (api.journy.io): up.
    rest_collector.set_faults(fail_rate=1.0, fail_status=503)
    api = CollectorThread(db=":memory:").start()
    spool = tmp_path / "spool.db"
    client = _client(
        rest_collector,
        api_host=api.url,
        flush_interval=0.01,
        max_events_in_batch=7,
        max_retries=10_000,
        http_request_timeout=1.0,
        spool=spool,
        spool_commit_interval=0.01,
        retry_policy=RetryPolicy(initial_backoff=0.3, max_backoff=0.6, deadline=120.0),
    )
    told: List[BaseException] = []
    for i in range(40):
        client.track(user_id="ann", event="a", message_id=f"a{i}")
        client.track(user_id="bob", event="b", message_id=f"b{i}")
    client.track(user_id="ann", event="a", message_id="a-cb", callback=lambda e, m: told.append(e))
    deadline = time.monotonic() + 30
    while client.stats()["waiting_to_retry"] < 81:  # every batch has been answered 503
        assert time.monotonic() < deadline, client.stats()
        time.sleep(0.01)
    assert rest_collector.events() == []

    result = client.erase_user(user_id="ann", timeout=10)
    assert result.deleted
    # A batch on the wire at that moment is waited for (it settles as another retry) and
    # then re-cut too: every event of ann was in a parked batch.
    assert result.purged_from_retry == 41 and result.in_flight == 0
    assert result.purged_from_queue == 0
    assert len(told) == 1 and getattr(told[0], "cause", None) == "erased"
    stats = client.stats()
    assert stats["waiting_to_retry"] == 40 and stats["in_flight"] == 40
    bodies = _spool_bodies(spool)
    assert len(bodies) == 40 and not any(b'"ann"' in body for body in bodies)

    rest_collector.set_faults(fail_rate=0.0)  # the server is back
    assert client.flush(30)
    sent = rest_collector.events()
    assert sorted(e["messageId"] for e in sent) == sorted(f"b{i}" for i in range(40))
    stats = client.stats()
    assert stats["delivered"] == 40 and stats["in_flight"] == 0
    assert sum(stats["dropped"].values()) == 0
    # The re-cut batches covered their rows: none is left to be sent again after a restart.
    assert _spool_bodies(spool) == []
    client.close_and_flush(5)
    api.stop()
