"""Fork safety: a forked child gets its own queue, threads and connections, delivers its
own events (flush works there, and so does exit), and never re-sends the parent's queue."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from typing import Any, Dict

import pytest

from journy_analytics import Analytics, Cause
from journy_analytics.collector import CollectorThread

from .conftest import ids, report, scales

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

ZERO_DROPS = {cause.value: 0 for cause in Cause}


def _wait_child(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError(f"the forked child {pid} hung")


def _sent_then_queued(analytics: Analytics, sent: list, queued: list) -> None:
    """Leave the parent in the state a fork usually finds it in: threads running, a
    keep-alive connection in the pool, and events waiting in the queue."""
    for mid in sent:
        analytics.track(user_id="parent", event="Before Fork", message_id=mid)
    assert analytics.flush(timeout=10) is True
    for mid in queued:
        analytics.track(user_id="parent", event="Queued At Fork", message_id=mid)
    assert analytics.stats()["queued"] == len(queued)
    assert analytics.stats()["senders"] >= 1


def test_os_fork_child_delivers_its_own_events_and_not_the_parents(
    collector: CollectorThread,
) -> None:
    analytics = Analytics(write_key="k", host=collector.url, flush_interval=60.0)
    before, at_fork, child_ids = ids("before", 20), ids("at-fork", 7), ids("child", 10)
    _sent_then_queued(analytics, before, at_fork)

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            for mid in child_ids:
                analytics.track(user_id="child", event="In Child", message_id=mid)
            flushed = analytics.flush(timeout=10)
            result = {"flushed": flushed, "stats": analytics.stats(), "pid": os.getpid()}
            os.write(write_end, json.dumps(result, default=str).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    assert _wait_child(pid, timeout=30) == 0
    with os.fdopen(read_end, "rb") as pipe:
        child = json.loads(pipe.read())

    # The child started from an empty queue and fresh counters, and its flush worked.
    assert child["flushed"] is True
    assert child["stats"]["delivered"] == len(child_ids)
    assert child["stats"]["queued"] == 0 and child["stats"]["dropped"] == ZERO_DROPS
    # The parent is untouched: its queued events are still its own to send.
    assert analytics.stats()["queued"] == len(at_fork)
    assert analytics.close_and_flush(timeout=10) is True
    assert analytics.stats()["delivered"] == len(before) + len(at_fork)

    server = collector.stats()
    total = len(before) + len(at_fork) + len(child_ids)
    assert collector.unique_message_ids() == set(before + at_fork + child_ids)
    # Sent once each: the child did not send the parent's queue a second time.
    assert server["received"] == total and server["duplicates"] == 0
    children = {e["messageId"] for e in collector.events(user_id="child")}
    assert children == set(child_ids)


def _mp_worker(analytics: Analytics, k: int, n: int, flush: bool) -> None:
    for mid in ids(f"proc{k}", n):
        analytics.track(user_id=f"proc{k}", event="In Process", message_id=mid)
    # The child's own counters: it never saw the parent's queue and never overflowed.
    assert analytics.stats()["dropped"] == ZERO_DROPS
    if flush:
        assert analytics.flush(timeout=20) is True
    # Without flush: multiprocessing ends the child with os._exit(); the client's
    # multiprocessing finalizer is what delivers these.


@scales(default=2_000, soak=20_000)
@pytest.mark.parametrize("flush", [True, False], ids=["flush", "exit-only"])
def test_multiprocessing_fork_children_deliver_once(
    collector: CollectorThread, scale: int, flush: bool
) -> None:
    n, procs = scale, 4
    # Each child tracks in a tight loop, faster than it can send: size the queue for it
    # (this test is about fork, not overflow; the child asserts it dropped nothing).
    # The exit-only children deliver from the exit hook, which waits at most
    # exit_flush_timeout (5 s by default): at soak scale 4 children share 2 cores with the
    # collector, so give the exit the time a backlog of n events needs.
    analytics = Analytics(
        write_key="k",
        host=collector.url,
        flush_interval=60.0,
        max_queue_size=max(10_000, n),
        exit_flush_timeout=60.0,
    )
    before, at_fork = ids("before", 20), ids("at-fork", 7)
    _sent_then_queued(analytics, before, at_fork)
    ctx = multiprocessing.get_context("fork")
    started = time.monotonic()
    workers = [ctx.Process(target=_mp_worker, args=(analytics, k, n, flush)) for k in range(procs)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
    elapsed = time.monotonic() - started
    hung = [p.pid for p in workers if p.exitcode is None]
    for p in workers:
        if p.exitcode is None:
            p.kill()
    assert hung == [] and [p.exitcode for p in workers] == [0] * procs
    assert analytics.close_and_flush(timeout=10) is True

    expected = set(before + at_fork)
    for k in range(procs):
        expected.update(ids(f"proc{k}", n))
    server = collector.stats()
    assert collector.unique_message_ids() == expected
    assert server["received"] == len(expected) and server["duplicates"] == 0
    report(
        f"multiprocessing_fork_{'flush' if flush else 'exit_only'}",
        processes=procs,
        events_sent=len(expected),
        events_delivered=server["stored"],
        duplicates=server["duplicates"],
        elapsed_s=round(elapsed, 2),
    )


CHILD_EXIT_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from journy_analytics import Analytics

    analytics = Analytics(write_key="k", host=sys.argv[1], flush_interval=60.0)
    for i in range(20):
        analytics.track(user_id="parent", event="Before Fork", message_id=f"before-{i}")
    assert analytics.flush(timeout=10)
    for i in range(7):
        analytics.track(user_id="parent", event="Queued At Fork", message_id=f"at-fork-{i}")
    pid = os.fork()
    if pid == 0:
        for i in range(10):
            analytics.track(user_id="child", event="In Child", message_id=f"child-{i}")
        sys.exit(0)  # an ordinary exit: no flush call, atexit delivers
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))  # the parent's exit flushes its 7
    """
)


def test_os_fork_child_exit_flushes_without_a_flush_call(collector: CollectorThread) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD_EXIT_SCRIPT, collector.url],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    server: Dict[str, Any] = collector.stats()
    expected = (
        {f"before-{i}" for i in range(20)}
        | {f"at-fork-{i}" for i in range(7)}
        | {f"child-{i}" for i in range(10)}
    )
    assert collector.unique_message_ids() == expected
    assert server["received"] == 37 and server["duplicates"] == 0
