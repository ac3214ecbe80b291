"""A fork Python did not see (libc ``fork()`` from a C extension, uWSGI without its hook).

``os.register_at_fork`` hooks do not run, so the child starts with the parent's queue,
spool connection and thread objects. Every entry point (the event methods, flush, close,
stats, the exit flush) must notice it and start the child fresh, as after a normal fork.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List

import pytest

from journy_analytics.collector import CollectorThread

EXIT_FLUSH_TIMEOUT = 10.0

SCRIPT = """
    import ctypes, json, os, sys, time
    from journy_analytics import Analytics

    host, spool, report, action = sys.argv[1], sys.argv[2] or None, sys.argv[3], sys.argv[4]

    def note(**record):
        with open(report, "a") as out:
            out.write(json.dumps(dict(record, pid=os.getpid())) + "\\n")

    a = Analytics(
        write_key="k", host=host, flush_interval=60, spool=spool,
        spool_commit_interval=60, exit_flush_timeout=%(exit)r,
    )
    a.on("error", lambda error: note(kind="error", count=len(error.events), reason=str(error)))
    if spool:
        db = a._worker._journal._file._db
        db.set_trace_callback(lambda statement: note(kind="sql", statement=statement))
    for i in range(10):
        a.track(user_id="parent", event="Before Fork", message_id=f"parent-{i}")
    # Fork once the parent's worker is parked (its first step committed what was queued
    # then; the next commit is a minute away): a libc fork while another thread is in C
    # code holding a lock (SQLite's, the GIL's) can hang the child whatever the SDK does;
    # that is what os.register_at_fork is for, and not what is tested here.
    while not a._worker._wake._cond._waiters:
        time.sleep(0.01)
    time.sleep(0.05)  # it blocks in its lock right after it joins the waiters
    # libc's fork, as a C extension would call it: no Python at-fork hook runs.
    started = time.monotonic()
    pid = ctypes.PyDLL(None).fork()
    if pid == 0:
        note(kind="child")
        import faulthandler  # a hang ends with the child's threads on record
        faulthandler.dump_traceback_later(40, exit=True, file=open(report + ".child-tb", "w"))
        if action == "stats":
            stats = a.stats()
            note(kind="stats", queued=stats["queued"], dropped=sum(stats["dropped"].values()))
        elif action == "flush":
            note(kind="flushed", ok=a.flush(%(exit)r), took=time.monotonic() - started)
        elif action == "track":
            for i in range(3):
                a.track(user_id="child", event="In Child", message_id=f"child-{i}")
        sys.exit(0)  # the exit flush: the child's events if any, never the parent's
    _, status = os.waitpid(pid, 0)
    took = time.monotonic() - started
    parent_ok = a.close_and_flush(20)
    print(json.dumps({
        "child_exit": os.waitstatus_to_exitcode(status),
        "child_took": took,
        "parent_ok": parent_ok,
        "parent_stats": a.stats(),
    }), flush=True)
"""


def _records(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libc fork via ctypes")
@pytest.mark.parametrize("action", ["exit", "stats", "flush", "track"])
@pytest.mark.parametrize("with_spool", [False, True], ids=["memory", "spool"])
def test_a_child_forked_behind_pythons_back_starts_fresh(
    tmp_path: Path, with_spool: bool, action: str
) -> None:
    spool = tmp_path / "spool.db" if with_spool else None
    report = tmp_path / "report.jsonl"
    with CollectorThread() as c:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                textwrap.dedent(SCRIPT % {"exit": EXIT_FLUSH_TIMEOUT}),
                c.url,
                str(spool or ""),
                str(report),
                action,
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
        for dump in tmp_path.glob("*-tb"):
            print(dump.read_text())
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        events = c.events()
    records = _records(report)
    child_pids = {r["pid"] for r in records if r["kind"] == "child"}
    assert len(child_pids) == 1, records
    child = [r for r in records if r["pid"] in child_pids]
    parent = [r for r in records if r["pid"] not in child_pids]

    assert result["child_exit"] == 0, proc.stderr[-3000:]
    # The child's exit is not held waiting for the parent's events (it was held for the
    # whole exit_flush_timeout), nor is its flush: it delivers its own events and ends.
    assert result["child_took"] < EXIT_FLUSH_TIMEOUT / 2, result
    for flushed in [r for r in child if r["kind"] == "flushed"]:
        assert flushed["ok"] is True and flushed["took"] < EXIT_FLUSH_TIMEOUT / 2, flushed
    # The parent's events are not the child's: not queued there, never reported dropped.
    for stats in [r for r in child if r["kind"] == "stats"]:
        assert stats["queued"] == 0 and stats["dropped"] == 0, stats
    assert [r for r in child if r["kind"] == "error"] == [], child
    # The child never writes through the parent's SQLite connection.
    assert [r for r in child if r["kind"] == "sql"] == [], child
    # The parent delivers all of its events, the child its own, each exactly once.
    assert result["parent_ok"] is True, result
    assert [r for r in parent if r["kind"] == "error"] == [], parent
    ids = sorted(e["messageId"] for e in events)
    childs = [f"child-{i}" for i in range(3)] if action == "track" else []
    assert ids == sorted([f"parent-{i}" for i in range(10)] + childs)
    assert result["parent_stats"]["delivered"] == 10
    if spool is not None:
        assert result["parent_stats"]["spool"]["error"] is None, result["parent_stats"]
        with sqlite3.connect(str(spool)) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            # Settled, so nothing is left for a next run to send again.
            assert db.execute("SELECT COUNT(*) FROM spool").fetchone() == (0,)


def test_a_spool_refuses_writes_from_a_process_that_did_not_open_it(tmp_path: Path) -> None:
    from journy_analytics._core._spool_file import SpoolError, SpoolFile

    spool = SpoolFile(str(tmp_path / "s.db"))
    try:
        spool.append(0, [b"{}"])
        spool._owner = -1  # as seen from a forked child
        with pytest.raises(SpoolError, match="forked child"):
            spool.append(1, [b"{}"])
        with pytest.raises(SpoolError, match="forked child"):
            spool.remove(0, 1)
        spool.close()  # the child's close leaves the parent's connection alone
        assert spool._db.execute("SELECT COUNT(*) FROM spool").fetchone() == (1,)
    finally:
        spool._owner = os.getpid()
        spool._db.close()
        if spool._lock_file is not None:
            spool._lock_file.close()
