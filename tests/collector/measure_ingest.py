"""Measure the collector's ingest rate (not a test; run it by hand).

    .venv/bin/python tests/collector/measure_ingest.py [--events 100000] [--batch 100]

Starts ``journy collector`` as its own process with a file database (as a user runs it),
then posts batches from client threads over keep-alive loopback connections, and finally
delivers through the SDK itself if it is importable.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import urllib3


def start(db: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "journy_analytics.collector", "--port", "0", "--db", db],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().rsplit(" ", 1)[-1].strip()


def raw_clients(url: str, total: int, batch: int, threads: int) -> float:
    pool = urllib3.PoolManager(maxsize=threads, retries=False)
    headers = {"Content-Type": "application/json", **urllib3.make_headers(basic_auth="k:")}
    per_thread = total // threads // batch

    def work() -> None:
        for _ in range(per_thread):
            events = [
                {
                    "type": "track",
                    "userId": f"user-{i % 500}",
                    "event": "Measured",
                    "messageId": str(uuid.uuid4()),
                    "timestamp": "2026-01-01T00:00:00.000Z",
                    "properties": {"i": i, "plan": "pro"},
                    "context": {"groupId": f"acct-{i % 50}"},
                }
                for i in range(batch)
            ]
            body = json.dumps({"batch": events}).encode()
            r = pool.request("POST", url + "/backend/v1/batch", body=body, headers=headers)
            assert r.status == 200, r.data

    started = time.perf_counter()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return per_thread * threads * batch / (time.perf_counter() - started)


def sdk_client(url: str, total: int) -> float:
    from journy_analytics import Analytics

    analytics = Analytics(write_key="k", host=url, max_queue_size=total + 1)
    started = time.perf_counter()
    for i in range(total):
        analytics.track(user_id=f"user-{i % 500}", event="Measured", properties={"i": i})
    assert analytics.close_and_flush(timeout=120)
    return total / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start(os.path.join(tmp, "measure.db"))
        try:
            rate = raw_clients(url, args.events, args.batch, args.threads)
            label = f"raw HTTP, {args.batch}-event batches, {args.threads} threads"
            print(f"{label}: {rate:,.0f} events/s")
            try:
                rate = sdk_client(url, args.events // 2)
                print(f"through the SDK (defaults): {rate:,.0f} events/s")
            except ImportError:
                print("SDK not importable; skipped")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
