"""asyncio: aflush / aclose / ``async with`` never block the loop, honour their timeout and
survive cancellation; event methods called from coroutines never block the loop.

The loop-lag bound (< 5 ms while awaiting a flush against a server answering in 800 ms) is a
correctness bound, not a speed claim: a flush run on the loop's thread shows up as ~800 ms of
lag. The slow collector runs in its own process so that its work does not compete with the
loop for this interpreter's GIL; the figures are printed (``pytest -s``) with the idle
loop's own lag on the same machine for comparison.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any, Callable, Dict, Iterator, List

import pytest

import journy_analytics
from journy_analytics import Analytics
from journy_analytics._default import set_default_client
from journy_analytics.collector import CollectorThread, Faults

LAG_BOUND_S = 0.005

_COLLECTOR_PROCESS = """
import sys
from journy_analytics.collector import CollectorThread, Faults
with CollectorThread(faults=Faults(latency_ms=float(sys.argv[1]))) as c:
    print(c.url, flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


class SlowCollector:
    """The collector in a subprocess, answering every ingest request after ``latency_ms``."""

    def __init__(self, latency_ms: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _COLLECTOR_PROCESS, str(latency_ms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url

    def stats(self) -> Dict[str, Any]:
        with urllib.request.urlopen(self.url + "/api/stats", timeout=10) as answer:
            result: Dict[str, Any] = json.loads(answer.read())
            return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def slow_collector() -> Iterator[SlowCollector]:
    c = SlowCollector(latency_ms=800)
    try:
        yield c
    finally:
        c.close()


def _runqueue_waits() -> Dict[str, float]:
    """Seconds each thread of this process has spent runnable but waiting for a CPU (Linux
    schedstat, by thread id); empty where the kernel does not say."""
    waits: Dict[str, float] = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return waits
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat") as f:
                waits[task] = int(f.read().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return waits


def _waited_between(before: Dict[str, float], after: Dict[str, float]) -> float:
    """The time this process's threads waited for a CPU between two readings. A thread that
    started meanwhile waited all of its figure in between; one that ended is not counted."""
    return sum(max(0.0, waited - before.get(task, 0.0)) for task, waited in after.items())


async def _measure_lag(until: asyncio.Future[Any], tick: float = 0.001) -> List[tuple]:
    """How late each 1 ms sleep of the loop wakes up, until ``until`` is done: (lag, lag less
    the time the OS kept this process's threads waiting for a CPU meanwhile).

    On a shared 2-core machine other processes can keep a thread off the CPU for many ms at
    any moment: the loop's own thread, and just as well the SDK thread that holds the GIL the
    loop waits for (the loop then waits out another process's time slice, not our code).
    Neither is the loop being blocked, so it is subtracted (both figures are reported). A
    loop blocked on I/O or on a lock is asleep, not waiting for a CPU, and so is a thread
    holding that lock while it waits for the network: such lag stays in the figure. The
    schedstat reads are outside the timed window, so they do not count as lag."""
    lags: List[tuple] = []
    loop = asyncio.get_running_loop()
    while not until.done():
        before = _runqueue_waits()
        start = loop.time()
        await asyncio.sleep(tick)
        lag = max(0.0, loop.time() - start - tick)
        waited = _waited_between(before, _runqueue_waits())
        lags.append((lag, max(0.0, lag - waited)))
    return lags


def _report(name: str, **figures: Any) -> None:
    print(f"\nASYNCIO {json.dumps({'test': name, **figures}, sort_keys=True)}")


def _lag_while(
    client_factory: Callable[[], Analytics], body: Callable[[Analytics], Any]
) -> Dict[str, Any]:
    """Run ``body(client)`` (a coroutine) while measuring the loop's lag."""

    async def main() -> Dict[str, Any]:
        client = client_factory()
        try:
            started = time.monotonic()
            task = asyncio.ensure_future(body(client))
            lags = await _measure_lag(task)
            result = await task
            return {
                "result": result,
                "elapsed_s": time.monotonic() - started,
                "max_raw_lag_ms": max(raw for raw, _ in lags) * 1000,
                "max_lag_ms": max(own for _, own in lags) * 1000,
                "p99_lag_ms": _percentile([own for _, own in lags], 0.99) * 1000,
                "ticks": len(lags),
                "stats": client.stats(),
            }
        finally:
            await client.aclose(timeout=5)

    return asyncio.run(main())


def _idle_lag_ms(seconds: float) -> float:
    async def main() -> float:
        done = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(seconds, done.set_result, None)
        return max(raw for raw, _ in await _measure_lag(done)) * 1000

    return asyncio.run(main())


def _percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _within_bound(
    run: Callable[[], Dict[str, Any]], key: str = "max_lag_ms", attempts: int = 5
) -> Dict[str, Any]:
    """The lag bound is about our code; a shared 2-core machine can deschedule the whole
    process for a few ms at any time. So one of up to five runs must meet it: code that
    blocks the loop (the mutation: flush on the loop) fails all of them by ~800 ms."""
    runs = []
    for _ in range(attempts):
        figures = run()
        runs.append(figures)
        if figures[key] < LAG_BOUND_S * 1000:
            break
    figures = runs[-1]
    figures["attempts_max_lag_ms"] = [round(r["max_lag_ms"], 2) for r in runs]
    figures["attempts_max_raw_lag_ms"] = [round(r["max_raw_lag_ms"], 2) for r in runs]
    return figures


def test_aflush_does_not_block_the_loop_against_a_server_answering_in_800ms(
    slow_collector: SlowCollector,
) -> None:
    def make() -> Analytics:
        return Analytics(write_key="k", host=slow_collector.url, flush_interval=60)

    async def body(client: Analytics) -> bool:
        for i in range(30):
            client.track(user_id=f"u{i}", event="Slow Server")
        return await client.aflush(timeout=10)

    figures = _within_bound(lambda: _lag_while(make, body))
    idle = _idle_lag_ms(1.0)
    _report(
        "aflush_800ms_server",
        max_lag_ms=round(figures["max_lag_ms"], 2),
        attempts=figures["attempts_max_lag_ms"],
        attempts_raw=figures["attempts_max_raw_lag_ms"],
        idle_loop_max_lag_ms=round(idle, 2),
        flush_s=round(figures["elapsed_s"], 2),
        ticks=figures["ticks"],
    )
    assert figures["result"] is True
    assert figures["stats"]["delivered"] == 30
    # the server really was slow: the flush waited for it
    assert figures["elapsed_s"] >= 0.75
    assert figures["max_lag_ms"] < LAG_BOUND_S * 1000, figures


@pytest.fixture
def fast_collector() -> Iterator[SlowCollector]:
    c = SlowCollector(latency_ms=0)
    try:
        yield c
    finally:
        c.close()


def test_event_calls_from_coroutines_under_load_do_not_block_the_loop(
    fast_collector: SlowCollector,
) -> None:
    def make() -> Analytics:
        return Analytics(
            write_key="k", host=fast_collector.url, flush_interval=0.05, max_events_in_batch=100
        )

    async def body(client: Analytics) -> int:
        async def requests(n: int) -> None:
            for i in range(1000):
                with journy_analytics.scope(user_id=f"user-{n}"):
                    client.track(event="Under Load", properties={"i": i})
                await asyncio.sleep(0)

        # A few concurrent "requests" so that each loop iteration does little work of its
        # own: what the ticker measures is then whether a call blocks, not the workload.
        await asyncio.gather(*(requests(n) for n in range(4)))
        assert await client.aflush(timeout=30)
        return 4 * 1000

    figures = _within_bound(lambda: _lag_while(make, body))
    _report(
        "track_from_4_coroutines_while_delivering",
        events=figures["result"],
        max_lag_ms=round(figures["max_lag_ms"], 2),
        p99_lag_ms=round(figures["p99_lag_ms"], 2),
        attempts=figures["attempts_max_lag_ms"],
        attempts_raw=figures["attempts_max_raw_lag_ms"],
        elapsed_s=round(figures["elapsed_s"], 2),
        ticks=figures["ticks"],
    )
    assert figures["stats"]["delivered"] == figures["result"]
    assert fast_collector.stats()["events"] >= figures["result"]
    assert figures["max_lag_ms"] < LAG_BOUND_S * 1000, figures


def test_aflush_honours_its_timeout_and_cancellation_leaves_the_client_consistent(
    slow_collector: SlowCollector,
) -> None:
    async def main() -> None:
        client = Analytics(write_key="k", host=slow_collector.url, flush_interval=60)
        try:
            for i in range(5):
                client.track(user_id=f"u{i}", event="Timeout")
            started = time.monotonic()
            assert await client.aflush(timeout=0.2) is False
            # returned at its timeout, long before the server's 800 ms answer
            assert time.monotonic() - started < 0.7

            client.track(user_id="u9", event="Cancelled Flush")
            task = asyncio.ensure_future(client.aflush())
            await asyncio.sleep(0.05)
            cancelled_at = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - cancelled_at < 0.5  # promptly, not after the server
            assert not client.closed
            # consistent: the next flush settles everything, nothing dropped or duplicated
            assert await client.aflush(timeout=10) is True
            stats = client.stats()
            assert stats["delivered"] == 6 and sum(stats["dropped"].values()) == 0
        finally:
            await client.aclose(timeout=5)

    asyncio.run(main())
    assert slow_collector.stats()["events"] == 6


def test_cancelled_aclose_still_closes_and_delivers(slow_collector: SlowCollector) -> None:
    async def main() -> Analytics:
        client = Analytics(write_key="k", host=slow_collector.url, flush_interval=60)
        for i in range(3):
            client.track(user_id=f"u{i}", event="Closing")
        task = asyncio.ensure_future(client.aclose(timeout=10))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return client

    client = asyncio.run(main())
    assert client.closed
    assert client.close_and_flush(timeout=10) is True  # waits for the close already running
    assert client.stats()["delivered"] == 3
    assert slow_collector.stats()["events"] == 3


def test_async_with_closes_and_delivers(collector: CollectorThread) -> None:
    async def main() -> Analytics:
        async with Analytics(write_key="k", host=collector.url, flush_interval=60) as client:
            client.track(user_id="u1", event="In Async With")
        return client

    client = asyncio.run(main())
    assert client.closed
    assert [e["event"] for e in collector.events()] == ["In Async With"]


def test_aflush_rejects_a_bad_timeout_in_the_caller() -> None:
    async def main() -> None:
        client = Analytics(write_key="k", disable=True)
        try:
            with pytest.raises(ValueError, match="timeout"):
                await client.aflush(timeout="soon")  # type: ignore[arg-type]
        finally:
            await client.aclose()

    asyncio.run(main())


def test_module_level_aflush_and_aclose(collector: CollectorThread) -> None:
    async def main() -> None:
        assert await journy_analytics.aflush() is True  # no client yet: nothing to do
        client = Analytics(write_key="k", host=collector.url, flush_interval=60)
        previous = set_default_client(client)
        try:
            journy_analytics.track(user_id="u1", event="Module Async")
            assert await journy_analytics.aflush(timeout=10) is True
            assert len(collector.events()) == 1
            journy_analytics.track(user_id="u1", event="Module Async Close")
            assert await journy_analytics.aclose(timeout=10) is True
            assert client.closed
        finally:
            set_default_client(previous)

    previous = set_default_client(None)
    try:
        asyncio.run(main())
    finally:
        set_default_client(previous)
    assert len(collector.events()) == 2


def test_slow_faults_fixture_really_is_slow(collector: CollectorThread) -> None:
    """Guard for the tests above: the fault flag they rely on delays ingest."""
    collector.set_faults(Faults(latency_ms=300))
    client = Analytics(write_key="k", host=collector.url, flush_interval=60)
    try:
        client.track(user_id="u", event="Slow")
        started = time.monotonic()
        assert client.flush(timeout=10)
        assert time.monotonic() - started >= 0.29
    finally:
        client.close_and_flush(timeout=5)
