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
from waiting import wait_until

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


def test_a_full_disk_is_reported_as_such_and_nothing_is_lost(tmp_path: Path) -> None:
    # The disk fills while the client runs: SQLite answers SQLITE_FULL and rolls the
    # transaction back itself. The report used to be our own failing ROLLBACK ("cannot
    # rollback - no transaction is active"), hiding the cause. A full disk is simulated
    # deterministically by capping the file at its current size (max_page_count).
    with CollectorThread() as c:
        a = Analytics(write_key="k", host=c.url, spool=str(tmp_path / "s.db"), flush_interval=0.01)
        errors: List[DeliveryError] = []
        a.on("error", errors.append)
        a.track(user_id="u", event="E", message_id="before")
        assert a.flush(10)
        spool = a._worker._journal._file
        assert spool is not None
        with spool._lock:
            pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
            spool._db.execute(f"PRAGMA max_page_count = {pages}")
        big = "x" * 20_000  # more than the free room in the capped file
        for i in range(10):
            a.track(user_id="u", event="E", message_id=f"f{i}", properties={"blob": big})
        assert a.close_and_flush(10)
        failures = [e for e in errors if e.code == "spool_failure"]
        assert len(failures) == 1, [e.reason for e in errors]
        reason = failures[0].reason
        assert "disk is full" in reason and "free space" in reason, reason
        assert "no transaction is active" not in reason, reason
        assert "disk is full" in a.stats()["spool"]["error"]
        # Nothing is lost: the events stay in memory and are delivered.
        assert c.unique_message_ids() == {"before"} | {f"f{i}" for i in range(10)}


def test_disk_full_errors_are_told_apart_from_other_spool_failures() -> None:
    import errno
    import sqlite3

    from journy_analytics._core._spool_file import describe_failure

    assert "disk is full" in describe_failure("p", OSError(errno.ENOSPC, "No space left"))
    assert "disk is full" in describe_failure(
        "p", sqlite3.OperationalError("database or disk is full")
    )
    other = describe_failure("p", sqlite3.OperationalError("database is locked"))
    assert "disk is full" not in other and "database is locked" in other


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
        # Under load an attempt of the closed client may still be under way: wait until it
        # is over (it closes the file then), so that it cannot reach the restarted server
        # and deliver, which would leave fewer rows for the next client than asserted.
        assert wait_until(lambda: not a.stats()["spool"]["enabled"], 20)
        c.start()
        b = Analytics(write_key="k", host=c.url, spool=path, flush_interval=0.01)
        assert b.stats()["spool"]["replayed"] == 25
        assert b.close_and_flush(10)
        assert c.unique_message_ids() == {f"k{i}" for i in range(25)}


class _HeldServer:
    """A loopback server that holds every request until ``release`` is set, then answers
    200; ``received`` counts requests as they arrive, ``ids`` the events it stored."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        self.release = threading.Event()
        self.received = threading.Semaphore(0)
        self.ids: List[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.received.release()
                server.release.wait(60)
                server.ids.extend(e["messageId"] for e in body["batch"])
                payload = b'{"success":true}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_client_reopened_on_the_path_takes_over_from_one_whose_close_timed_out(
    tmp_path: Path,
) -> None:
    # The closed client keeps its spool open while its request is on the wire (a late 200
    # must remove its rows). A new client on the same path in this process waits
    # HANDOVER_WAIT for that answer, then takes the file over; the late answer is ignored.
    import sqlite3

    from journy_analytics._core._spool import HANDOVER_WAIT

    path = str(tmp_path / "s.db")
    server = _HeldServer()
    try:
        a = Analytics(
            write_key="k",
            host=server.url,
            spool=path,
            flush_interval=0.01,
            http_request_timeout=60,
        )
        errors: List[DeliveryError] = []
        a.on("error", errors.append)
        for i in range(5):
            a.track(user_id="u", event="E", message_id=f"h{i}")
        assert server.received.acquire(timeout=20)  # the batch is on the wire, held
        assert a.close_and_flush(timeout=0.1) is False
        assert a.stats()["kept_in_spool"] == 5

        started = time.monotonic()
        b = Analytics(write_key="k", host=server.url, spool=path, flush_interval=60)
        took = time.monotonic() - started
        assert HANDOVER_WAIT <= took < HANDOVER_WAIT + 10, took
        assert b.stats()["spool"]["replayed"] == 5 and b.stats()["spool"]["enabled"]

        # The old request is answered now, while b still holds the rows (flush_interval=60):
        # the late answer must not remove them (same positions, renumbered by b) nor be
        # reported as a spool failure.
        server.release.set()
        assert wait_until(lambda: sorted(server.ids) == [f"h{i}" for i in range(5)], 20)
        assert wait_until(lambda: a._worker._outcomes.quiet(), 20)
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT COUNT(*) FROM spool").fetchone() == (5,)
        assert not [e for e in errors if e.code == "spool_failure"], [e.reason for e in errors]

        assert b.close_and_flush(10)
        # At least once: the late answer delivered them, b re-sent them; none lost.
        assert sorted(server.ids) == sorted([f"h{i}" for i in range(5)] * 2)
        c = Analytics(write_key="k", host=server.url, spool=path)
        assert c.stats()["spool"]["replayed"] == 0
        assert c.close_and_flush(5)
    finally:
        server.close()


def test_a_live_client_on_the_path_in_this_process_is_still_refused(tmp_path: Path) -> None:
    from journy_analytics import SpoolLockedError

    path = str(tmp_path / "s.db")
    a = Analytics(write_key="k", host="http://127.0.0.1:9", spool=path)
    try:
        with pytest.raises(SpoolLockedError, match="another client in this process"):
            Analytics(write_key="k", host="http://127.0.0.1:9", spool=path)
    finally:
        a.close_and_flush(0)


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
    # One full batch of five: a short flush_interval could split it on a loaded machine.
    a = Analytics(
        write_key="k", host=server.url, spool=path, flush_interval=60, max_events_in_batch=5
    )
    errors: List[DeliveryError] = []
    a.on("error", errors.append)
    for i in range(5):
        a.track(user_id="u", event="E", message_id=f"late{i}")
    assert wait_until(lambda: server.received() == 1)  # the batch is on the wire
    assert a.close_and_flush(timeout=0.2) is False
    assert a.stats()["kept_in_spool"] == 5
    # The server answers 200 after the close; the sender settles that answer, then ends.
    assert wait_until(lambda: a.stats()["senders"] == 0)
    assert not any(e.code == "spool_failure" for e in errors), [e.reason for e in errors]
    assert [e["messageId"] for e in server.events()] == [f"late{i}" for i in range(5)]
    b = Analytics(write_key="k", host=server.url, spool=path, flush_interval=0.01)
    assert b.stats()["spool"]["replayed"] == 0, "delivered rows stayed in the spool"
    assert b.close_and_flush(5)
    assert len(server.events()) == 5
