"""Measure the collector's ingest rate (not a test; run it by hand).

    .venv/bin/python tools/measure_ingest.py [--events 100000] [--batch 100]
        [--threads 4] [--repeat 3] [--only raw|sdk]

Two kinds of client, each on two workloads (``track``: track calls with an account
context; ``mix``: 30% identify with changing and deleted traits, 10% group, 10% page with a
name, 50% track):

- ``raw``: client threads post pre-encoded batches over keep-alive loopback connections
  to ``journy collector --db FILE`` run as its own process (as a user runs it), so the
  figure is the collector's alone.
- ``sdk``: the SDK (``Analytics(max_events_in_batch=100)``) delivers to a
  ``CollectorThread`` in the same process, once with ``db=":memory:"`` and once with a
  file database; the figure is events per second from the first call to the end of
  ``close_and_flush()``, both sides sharing one interpreter.

Every run checks that the collector stored exactly the events sent. ``--repeat`` runs each
measurement several times and prints every figure with the range.

``--inspector`` measures the raw clients twice per repeat, alternately without and with the
inspector open in headless Chromium (Debian's /usr/bin/chromium, through Playwright), and
prints both rates and the drop: the inspector's live stream must cost ingest at most 10%.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import orjson
import urllib3


def start(db: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "journy_analytics.collector", "--port", "0", "--db", db],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().rsplit(" ", 1)[-1].strip()


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# -- workloads: each yields (method name, keyword arguments) of SDK calls ---------------


def track_calls(n: int, run: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for i in range(n):
        yield (
            "track",
            {
                "user_id": f"{run}-user-{i % 500}",
                "event": "Measured",
                "properties": {"i": i, "plan": "pro"},
                "context": {"groupId": f"{run}-acct-{i % 50}"},
            },
        )


def mix_calls(n: int, run: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for i in range(n):
        user = f"{run}-user-{i % 500}"
        account = f"{run}-acct-{i % 50}"
        k = i % 10
        if k < 3:
            traits: dict[str, Any] = {"email": f"{user}@example.com", "seen": i, f"t{i % 7}": i}
            if i % 4 == 0:
                traits[f"t{(i + 3) % 7}"] = None  # a deletion
            yield "identify", {"user_id": user, "traits": traits}
        elif k == 3:
            yield "group", {"user_id": user, "group_id": account, "traits": {"n": i, "plan": "x"}}
        elif k == 4:
            yield "page", {"user_id": user, "name": "Pricing", "properties": {"i": i}}
        else:
            yield (
                "track",
                {
                    "user_id": user,
                    "event": "Measured",
                    "properties": {"i": i},
                    "context": {"groupId": account},
                },
            )


WORKLOADS: dict[str, Callable[[int, str], Iterator[tuple[str, dict[str, Any]]]]] = {
    "track": track_calls,
    "mix": mix_calls,
}

_TYPE_KEYS = {"user_id": "userId", "group_id": "groupId", "event": "event", "name": "name"}


def as_event(method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The wire form of one SDK call, as the SDK would send it."""
    event: dict[str, Any] = {
        "type": method,
        "messageId": str(uuid.uuid4()),
        "timestamp": "2026-01-01T00:00:00.000Z",
        "context": {"library": {"name": "measure", "version": "0"}},
    }
    for key, value in kwargs.items():
        if key == "context":
            event["context"].update(value)
        else:
            event[_TYPE_KEYS.get(key, key)] = value
    return event


# -- clients -----------------------------------------------------------------------------


def raw_clients(url: str, workload: str, total: int, batch: int, threads: int, run: str) -> float:
    pool = urllib3.PoolManager(maxsize=threads, retries=False)
    headers = {"Content-Type": "application/json", **urllib3.make_headers(basic_auth="k:")}
    per_thread = total // threads // batch
    calls = WORKLOADS[workload](per_thread * threads * batch, run)
    bodies = []
    for _ in range(per_thread * threads):
        events = [as_event(*next(calls)) for _ in range(batch)]
        bodies.append(orjson.dumps({"batch": events, "sentAt": "2026-01-01T00:00:00.000Z"}))
    shares = [bodies[t::threads] for t in range(threads)]

    def work(share: list[bytes]) -> None:
        for body in share:
            r = pool.request("POST", url + "/backend/v1/batch", body=body, headers=headers)
            assert r.status == 200, r.data

    started = time.perf_counter()
    workers = [threading.Thread(target=work, args=(s,)) for s in shares]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(bodies) * batch / (time.perf_counter() - started)


def sdk_client(url: str, workload: str, total: int, batch: int, run: str) -> float:
    from journy_analytics import Analytics

    calls = list(WORKLOADS[workload](total, run))
    # The prepared calls are the harness's, not the application's: keep the garbage
    # collector from walking them again and again during the measurement.
    gc.collect()
    gc.freeze()
    analytics = Analytics(
        write_key="k", host=url, max_events_in_batch=batch, max_queue_size=total + 1
    )
    started = time.perf_counter()
    for method, kwargs in calls:
        getattr(analytics, method)(**kwargs)
    assert analytics.close_and_flush(timeout=300)
    elapsed = time.perf_counter() - started
    del calls
    gc.unfreeze()
    assert analytics.stats()["delivered"] == total, analytics.stats()
    return total / elapsed


def fmt(rates: list[float]) -> str:
    each = ", ".join(f"{r:,.0f}" for r in rates)
    return f"{min(rates):,.0f} to {max(rates):,.0f} events/s  ({each})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=("raw", "sdk"), default=None)
    parser.add_argument("--workload", choices=tuple(WORKLOADS), default=None)
    parser.add_argument("--inspector", action="store_true", help="with and without a page open")
    args = parser.parse_args()
    if args.inspector:
        measure_with_inspector(args)
        return
    workloads = [args.workload] if args.workload else list(WORKLOADS)
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()}", flush=True)

    if args.only in (None, "raw"):
        with tempfile.TemporaryDirectory() as tmp:
            db = os.path.join(tmp, "measure.db")
            proc, url = start(db)
            try:
                for workload in workloads:
                    rates = [
                        raw_clients(url, workload, args.events, args.batch, args.threads, f"r{i}")
                        for i in range(args.repeat)
                    ]
                    label = f"raw HTTP {workload}, {args.batch}-event batches, {args.threads} thr"
                    print(f"{label} -> journy collector --db FILE: {fmt(rates)}", flush=True)
            finally:
                stop(proc)

    if args.only in (None, "sdk"):
        from journy_analytics.collector import CollectorThread

        for db_kind in (":memory:", "file"):
            for workload in workloads:
                rates = []
                for _ in range(args.repeat):
                    with tempfile.TemporaryDirectory() as tmp:
                        db = db_kind if db_kind == ":memory:" else os.path.join(tmp, "m.db")
                        with CollectorThread(db=db) as c:
                            rates.append(sdk_client(c.url, workload, args.events, args.batch, "s"))
                            stats = c.stats()
                            assert stats["events"] == args.events, stats
                label = f"SDK {workload}, max_events_in_batch={args.batch}"
                print(f"{label} -> CollectorThread(db={db_kind!r}): {fmt(rates)}", flush=True)


def measure_with_inspector(args: argparse.Namespace) -> None:
    from playwright.sync_api import sync_playwright

    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    workload = args.workload or "track"
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start(os.path.join(tmp, "measure.db"))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", args=flags
                )
                import psutil

                collector_process = psutil.Process(proc.pid)

                seen: dict[int, float] = {}

                def browser_cpu() -> float:
                    # Only this script's Chromium (other programs may run one too), and
                    # processes that ended keep counting what they had used.
                    for child in psutil.Process().children(recursive=True):
                        try:
                            if "chrom" in child.name().lower():
                                times = child.cpu_times()
                                seen[child.pid] = times.user + times.system
                        except psutil.Error:
                            pass
                    return sum(seen.values())

                def collector_cpu() -> float:
                    times = collector_process.cpu_times()
                    return times.user + times.system

                without: list[float] = []
                with_page: list[float] = []
                cpu: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
                for i in range(args.repeat):
                    # Alternate which goes first, so a drifting machine favours neither.
                    for page_open in (False, True) if i % 2 == 0 else (True, False):
                        page = None
                        if page_open:
                            page = browser.new_page()
                            page.goto(url + "/")
                            page.wait_for_selector("#live[data-state=live]")
                        before = collector_cpu(), browser_cpu()
                        rate = raw_clients(
                            url, workload, args.events, args.batch, args.threads, f"i{i}{page_open}"
                        )
                        cpu[page_open].append(
                            (collector_cpu() - before[0], browser_cpu() - before[1])
                        )
                        if page is not None:
                            shown = page.locator("#events tbody tr").count()
                            assert shown > 0, "the page showed nothing"
                            page.close()
                        (with_page if page_open else without).append(rate)
                browser.close()
        finally:
            stop(proc)
    label = f"raw HTTP {workload}, {args.batch}-event batches, {args.threads} thr"
    print(f"{label}, no page open:        {fmt(without)}")
    print(f"{label}, inspector page open: {fmt(with_page)}")
    drop = 1 - (sum(with_page) / len(with_page)) / (sum(without) / len(without))
    print(f"mean drop with the page open: {drop:.1%}")
    # CPU per event barely depends on what else the machine is doing, unlike the rates.
    for page_open in (False, True):
        runs = cpu[page_open]
        server = sum(c for c, _ in runs) / len(runs) / args.events * 1e6
        browser_us = sum(b for _, b in runs) / len(runs) / args.events * 1e6
        label = "inspector page open" if page_open else "no page open"
        print(f"CPU per event, {label}: collector {server:.1f} us, Chromium {browser_us:.1f} us")


if __name__ == "__main__":
    main()
