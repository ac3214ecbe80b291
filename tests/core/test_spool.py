"""The durable spool: kill -9 mid-run, replay, one process per path, fallbacks, caps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, List

import pytest

from journy_analytics import Analytics, DeliveryError
from journy_analytics.collector import CollectorThread

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses fork/kill -9")

CHILD = textwrap.dedent(
    """
    import sys, time
    from journy_analytics import Analytics
    url, spool, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    a = Analytics(write_key="k", host=url, spool=spool, flush_interval=0.05,
                  max_events_in_batch=50, max_queue_size=100_000, max_retries=1000)
    for i in range(total):
        a.track(user_id="u", event="E", message_id=f"m{i}")
        if i % 500 == 499:
            print(i, flush=True)
            time.sleep(0.01)
    print("done", flush=True)
    time.sleep(60)
    """
)


def run_child(url: str, spool: Path, total: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(spool), str(total)],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_kill_9_mid_run_then_restart_delivers_every_accepted_event_once(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    total = 20_000
    with CollectorThread() as c:
        # Slow acknowledgements so that plenty is in flight or queued at the kill.
        c.set_faults(latency_ms=40)
        child = run_child(c.url, spool, total)
        assert child.stdout is not None
        accepted = -1
        while accepted < 9_999:
            line = child.stdout.readline()
            assert line, "the child died early"
            accepted = int(line)
        # Everything accepted more than spool_commit_interval (0.2 s) ago must survive.
        time.sleep(0.6)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        before_restart = len(c.unique_message_ids())
        assert before_restart < total, "the kill must land mid-run for this test to mean anything"
        c.set_faults(latency_ms=0)
        a = Analytics(write_key="k", host=c.url, spool=str(spool), flush_interval=0.05)
        replayed = a.stats()["spool"]["replayed"]
        assert a.stats()["spool"]["enabled"]
        assert a.close_and_flush(30)
        ids = c.unique_message_ids()
        must = {f"m{i}" for i in range(accepted + 1)}
        assert must <= ids, f"lost {len(must - ids)} accepted events"
        assert ids <= {f"m{i}" for i in range(total)}
        stats = c.stats()
        print(
            f"\nspool kill -9: accepted>={accepted + 1} before kill, delivered before kill "
            f"{before_restart}, replayed {replayed}, unique after {len(ids)}, "
            f"duplicates {stats['duplicates']}"
        )
        assert replayed > 0
        # Re-sent only what the server may have acknowledged without the spool hearing of it:
        # at most the batches on the wire at the kill (8 senders x 50 events), not everything.
        assert stats["duplicates"] <= 8 * 50, "delivered rows were re-sent after the restart"
        assert replayed <= len(ids) - before_restart + 8 * 50


def test_second_process_on_the_same_spool_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from journy_analytics import Analytics\n"
            "a = Analytics(write_key='k', spool=sys.argv[1], disable=True)\n"
            "print('HOLDING', flush=True)\n"
            "time.sleep(60)\n",
            path,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "HOLDING"
        with pytest.raises(ValueError, match=f"in use by process {holder.pid}"):
            Analytics(write_key="k", spool=path, disable=True)
    finally:
        holder.kill()
        holder.wait(10)
    # The holder is gone (even killed, its lock went with it): the path is free again.
    again = Analytics(write_key="k", spool=path, disable=True)
    assert again.stats()["spool"]["enabled"]
    again.close_and_flush(2)


def test_corrupt_spool_falls_back_to_memory(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a sqlite database" * 100)
    with CollectorThread() as c:
        a = Analytics(write_key="k", host=c.url, spool=str(path), flush_interval=0.01)
        stats = a.stats()["spool"]
        assert not stats["enabled"] and "corrupt.db" in stats["error"]
        a.track(user_id="u", event="Still Delivered")
        assert a.close_and_flush(10)
        assert len(c.events(type="track")) == 1
    assert any("memory only" in r.getMessage() for r in caplog.records)


def test_unwritable_spool_location_falls_back_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    a = Analytics(write_key="k", spool=str(blocker / "spool.db"), disable=True)
    assert not a.stats()["spool"]["enabled"]
    a.track(user_id="u", event="E")
    assert a.close_and_flush(5)
    assert a.stats()["delivered"] == 1


def test_spool_failing_at_run_time_is_reported_and_nothing_is_lost(tmp_path: Path) -> None:
    with CollectorThread() as c:
        a = Analytics(write_key="k", host=c.url, spool=str(tmp_path / "s.db"), flush_interval=0.01)
        errors: List[DeliveryError] = []
        a.on("error", errors.append)
        spool = a._worker._journal._file
        assert spool is not None
        spool._db.close()  # the disk went away under us
        for i in range(10):
            a.track(user_id="u", event="E", message_id=f"r{i}")
        assert a.close_and_flush(10)
        assert any(e.code == "spool_failure" and e.cause == "spool" for e in errors)
        assert not a.stats()["spool"]["enabled"]
        assert c.unique_message_ids() == {f"r{i}" for i in range(10)}


def test_close_timeout_keeps_undelivered_events_for_the_next_run(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with CollectorThread() as c:
        c.stop()
        a = Analytics(write_key="k", host=c.url, spool=path, flush_interval=0.01)
        errors: List[DeliveryError] = []
        a.on("error", errors.append)
        for i in range(25):
            a.track(user_id="u", event="E", message_id=f"k{i}")
        assert a.close_and_flush(timeout=0.5) is False
        reported = [m["messageId"] for e in errors if e.cause == "closed" for m in e.events]
        assert sorted(reported) == sorted(f"k{i}" for i in range(25))
        assert all("in the spool" in e.reason for e in errors if e.cause == "closed")
        assert a.stats()["kept_in_spool"] == 25 and a.stats()["dropped"]["closed"] == 0
        c.start()
        b = Analytics(write_key="k", host=c.url, spool=path, flush_interval=0.01)
        assert b.stats()["spool"]["replayed"] == 25
        assert b.close_and_flush(10)
        assert c.unique_message_ids() == {f"k{i}" for i in range(25)}


def test_spool_size_cap_drops_and_counts_the_excess(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with CollectorThread() as c:
        c.stop()
        a = Analytics(write_key="k", host=c.url, spool=path, max_queue_size=1000)
        for i in range(100):
            a.track(user_id="u", event="E", message_id=f"c{i}")
        assert a.close_and_flush(timeout=0.3) is False
        c.start()
        b = Analytics(write_key="k", host=c.url, spool=path, max_queue_size=40, flush_interval=0.01)
        stats = b.stats()
        assert stats["spool"]["replayed"] == 40 and stats["found_in_spool"] == 100
        assert stats["dropped"]["spool_overflow"] == 60
        assert b.close_and_flush(10)
        assert c.unique_message_ids() == {f"c{i}" for i in range(40)}


def test_forked_child_does_not_touch_the_parents_spool(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with CollectorThread() as c:
        a = Analytics(write_key="k", host=c.url, spool=path, flush_interval=0.01)
        a.track(user_id="parent", event="E")
        assert a.flush(10)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                a.track(user_id="child", event="E")
                ok = a.close_and_flush(10)
                code = 0 if ok and not a.stats()["spool"]["enabled"] else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
        a.track(user_id="parent", event="E2")
        assert a.close_and_flush(10)
        users = sorted(e["userId"] for e in c.events(type="track"))
        assert users == ["child", "parent", "parent"]


def test_a_late_answer_after_close_removes_its_rows(tmp_path: Path, scripted: Any) -> None:
    path = str(tmp_path / "s.db")
    server = scripted([{"delay": 1.0}])
    a = Analytics(write_key="k", host=server.url, spool=path, flush_interval=0.01)
    errors: List[DeliveryError] = []
    a.on("error", errors.append)
    for i in range(5):
        a.track(user_id="u", event="E", message_id=f"late{i}")
    time.sleep(0.2)  # the batch is on the wire
    assert a.close_and_flush(timeout=0.2) is False
    assert a.stats()["kept_in_spool"] == 5
    time.sleep(1.5)  # the server answers 200 after the close
    assert not any(e.code == "spool_failure" for e in errors), [e.reason for e in errors]
    assert [e["messageId"] for e in server.events()] == [f"late{i}" for i in range(5)]
    b = Analytics(write_key="k", host=server.url, spool=path, flush_interval=0.01)
    assert b.stats()["spool"]["replayed"] == 0, "delivered rows stayed in the spool"
    assert b.close_and_flush(5)
    assert len(server.events()) == 5
