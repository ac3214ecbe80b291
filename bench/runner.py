"""One measurement in a fresh interpreter: ``python -m bench.runner SDK SCENARIO [options]``.

Prints one line ``RESULT {json}`` on stdout. Scenarios:

- ``deliver``: ``--n`` track() calls in a tight loop (each call timed) while the SDK's worker
  delivers to ``--url``, then the SDK's close/flush/shutdown; reports call overhead, end-to-end
  throughput (first call until close returns), process CPU seconds and peak RSS.
- ``memory``: ``--n`` track() calls with the server unreachable (a closed loopback port), then
  RSS growth per queued event. The process exits with ``os._exit`` without draining.

``--plugin enrich|redact`` registers one plugin on ours (SuperProperties or Redact).
- ``import``: a backfill of the JSONL file ``--file`` (one Segment-spec event a line).
  ours: ``journy import FILE`` in a child process (its peak RSS and CPU are the child's);
  segment: the obvious user loop (``json.loads`` each line, ``track()`` it, ``flush()``),
  default settings but the host. Reports events/s (start to last event delivered), CPU
  seconds and peak RSS.

SDK names: ours, segment, rudder, posthog, floor (build the event dict, orjson.dumps, deque.append),
raw (single thread: build, orjson encode, join, POST each batch over one keep-alive connection),
v01 (ours as released in 0.1: the parent puts that tree first on PYTHONPATH and names it in
``JOURNY_BENCH_V01_ROOT``; the adapter refuses to run any other copy).

- ``limit``: the limit the sink and machine allow: one thread POSTs ``--n`` events as batches
  of ``--batch``, encoded before the clock starts, over one keep-alive connection (SDK
  ``limit`` only). Reports events/s and CPU per 100k like ``deliver``.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
from array import array
from typing import Any, Callable, Dict, List, Optional, Tuple

from bench.workload import EVENT, N_USERS, USER_IDS, cpu_seconds, make_props, summarize_ns

WRITE_KEY = "WRITE_KEY"
TrackFn = Callable[[str, Dict[str, Any]], Any]
CloseFn = Callable[[float], Any]


class Skip(Exception):
    """The SDK cannot run this configuration (reported as a skipped row, not a failure)."""


def rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover - psutil is a bench dependency
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# --------------------------------------------------------------------------------------------
# SDK adapters: each returns (track(user_id, props), close(timeout), info())


def make_ours(a: argparse.Namespace) -> Tuple[TrackFn, CloseFn, Callable[[], Dict[str, Any]]]:
    from journy_analytics import Analytics

    kwargs: Dict[str, Any] = {
        "write_key": WRITE_KEY,
        "host": a.url,
        "path": "/backend/v1/batch",
        "max_queue_size": a.queue,
    }
    if not a.defaults:
        kwargs["max_events_in_batch"] = a.batch
        kwargs["flush_interval"] = a.flush_interval
    if a.spool:
        kwargs["spool"] = a.spool
    try:
        client = Analytics(**kwargs)
    except (TypeError, NotImplementedError) as exc:
        raise Skip(f"Analytics({', '.join(kwargs)}) not supported: {exc}") from exc
    if a.plugin:
        try:
            from journy_analytics.plugins import EMAIL, Redact, SuperProperties
        except ImportError as exc:
            raise Skip(f"plugins not available: {exc}") from exc
        if a.plugin == "enrich":
            client.register(SuperProperties(properties={"app_version": "4.2.0", "env": "prod"}))
        else:
            # Keys and a pattern that match nothing in the workload: the cost of looking.
            client.register(Redact(keys=["password", "ssn"], patterns=[EMAIL]))
    track = client.track
    extra: Dict[str, Any] = {}

    if a.scope:
        # A request handler's view: the scope is open, the call names no one.
        from journy_analytics import scope

        extra["scope_enter_exit_us"] = _scope_enter_exit_us(scope)
        scope(user_id="f4ca124298", group_id="tesla", context={"ip": "203.0.113.9"}).__enter__()

        def do_track(uid: str, props: Dict[str, Any]) -> Any:
            return track(event=EVENT, properties=props)

    else:

        def do_track(uid: str, props: Dict[str, Any]) -> Any:
            return track(user_id=uid, event=EVENT, properties=props)

    def close(timeout: float) -> Any:
        return client.close_and_flush(timeout=timeout)

    def info() -> Dict[str, Any]:
        try:
            return {"stats": client.stats(), **extra}
        except Exception as exc:  # pragma: no cover - defensive, stats() is new code
            return {"stats_error": repr(exc)}

    return do_track, close, info


def make_v01(a: argparse.Namespace) -> Tuple[TrackFn, CloseFn, Callable[[], Dict[str, Any]]]:
    """The previous release (the A/B row): the same adapter, on 0.1's code."""
    import journy_analytics

    root = os.environ.get("JOURNY_BENCH_V01_ROOT")
    where = os.path.abspath(journy_analytics.__file__)
    if not root or not where.startswith(os.path.abspath(root) + os.sep):
        raise RuntimeError(f"v01: imported journy_analytics from {where}, not from {root}")
    return make_ours(a)


def _scope_enter_exit_us(scope: Any, n: int = 20_000) -> float:
    """Median cost of opening and closing one scope (what a middleware does per request)."""
    lat = array("q", [0]) * n
    pc = time.perf_counter_ns
    uids = USER_IDS
    for i in range(n):
        s = pc()
        with scope(user_id=uids[i % N_USERS], group_id="tesla"):
            pass
        lat[i] = pc() - s
    return float(summarize_ns(lat)["median_us"])


def _segment_like(module: Any, a: argparse.Namespace) -> Tuple[TrackFn, CloseFn, Any]:
    client = module.Client(
        WRITE_KEY,
        host=a.url,
        upload_size=a.batch,
        upload_interval=a.flush_interval,
        max_queue_size=a.queue,
        gzip=False,
    )
    track = client.track

    def do_track(uid: str, props: Dict[str, Any]) -> Any:
        return track(user_id=uid, event=EVENT, properties=props)

    def close(timeout: float) -> Any:
        client.flush()
        client.join()

    def info() -> Dict[str, Any]:
        return {"queue_size": client.queue.qsize()}

    return do_track, close, info


def make_segment(a: argparse.Namespace) -> Any:
    import segment.analytics as m

    return _segment_like(m, a)


def make_rudder(a: argparse.Namespace) -> Any:
    import rudderstack.analytics as m

    return _segment_like(m, a)


def make_posthog(a: argparse.Namespace) -> Any:
    import posthog

    cls = getattr(posthog, "Posthog", None) or posthog.Client
    client = cls(
        "phc_BENCH",
        host=a.url,
        flush_at=a.batch,
        flush_interval=a.flush_interval,
        max_queue_size=a.queue,
        gzip=False,
        disable_geoip=True,
    )
    capture = client.capture

    def do_track(uid: str, props: Dict[str, Any]) -> Any:
        return capture(EVENT, distinct_id=uid, properties=props)

    def close(timeout: float) -> Any:
        client.flush(None)
        client.shutdown()

    def info() -> Dict[str, Any]:
        return {}

    return do_track, close, info


def _cheap_ids_and_times() -> Tuple[Callable[[], str], Callable[[], str]]:
    """Message ids (random per-process prefix + counter) and ISO-8601 ms timestamps (the second
    formatted once per second): the cheap way any SDK can produce the per-event fields."""
    import itertools

    prefix = os.urandom(8).hex()
    counter = itertools.count()
    cache = [-1, ""]
    now = time.time
    gmtime = time.gmtime
    strftime = time.strftime

    def new_id() -> str:
        return f"{prefix}-{next(counter):012x}"

    def timestamp() -> str:
        t = now()
        sec = int(t)
        if sec != cache[0]:
            cache[0], cache[1] = sec, strftime("%Y-%m-%dT%H:%M:%S", gmtime(sec))
        return f"{cache[1]}.{int((t - sec) * 1000):03d}Z"

    return new_id, timestamp


def make_floor(a: argparse.Namespace) -> Any:
    """The floor: build the wire event dict, encode it with orjson, append the bytes."""
    from collections import deque

    import orjson

    q: Any = deque()
    append = q.append
    dumps = orjson.dumps
    new_id, timestamp = _cheap_ids_and_times()
    library = {"library": {"name": "floor", "version": "0"}}

    def do_track(uid: str, props: Dict[str, Any]) -> Any:
        append(
            dumps(
                {
                    "type": "track",
                    "event": EVENT,
                    "userId": uid,
                    "properties": props,
                    "messageId": new_id(),
                    "timestamp": timestamp(),
                    "context": library,
                    "integrations": {},
                }
            )
        )

    def close(timeout: float) -> Any:
        return None

    def info() -> Dict[str, Any]:
        return {"queued": len(q), "example": q[0].decode() if q else None}

    return do_track, close, info


def make_raw(a: argparse.Namespace) -> Any:
    """Raw reference: one thread encodes and POSTs batches of --batch over one connection."""
    import base64
    import http.client
    from urllib.parse import urlsplit

    import orjson

    u = urlsplit(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(b"WRITE_KEY:").decode(),
        "User-Agent": "bench-raw/0",
    }
    buf: List[bytes] = []
    dumps = orjson.dumps
    new_id, timestamp = _cheap_ids_and_times()
    library = {"library": {"name": "raw", "version": "0"}}
    batch = a.batch
    sent = [0, 0]

    def post() -> None:
        body = b'{"batch":[' + b",".join(buf) + b'],"sentAt":"' + timestamp().encode()
        body += b'","writeKey":"WRITE_KEY"}'
        conn.request("POST", "/v1/batch", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"sink answered {resp.status}")
        sent[0] += len(buf)
        sent[1] += 1
        buf.clear()

    def do_track(uid: str, props: Dict[str, Any]) -> Any:
        buf.append(
            dumps(
                {
                    "type": "track",
                    "event": EVENT,
                    "userId": uid,
                    "properties": props,
                    "messageId": new_id(),
                    "timestamp": timestamp(),
                    "context": library,
                    "integrations": {},
                }
            )
        )
        if len(buf) >= batch:
            post()

    def close(timeout: float) -> Any:
        if buf:
            post()
        conn.close()

    def info() -> Dict[str, Any]:
        return {"sent": sent[0], "requests": sent[1]}

    return do_track, close, info


ADAPTERS: Dict[str, Callable[[argparse.Namespace], Any]] = {
    "ours": make_ours,
    "segment": make_segment,
    "rudder": make_rudder,
    "posthog": make_posthog,
    "floor": make_floor,
    "raw": make_raw,
    "v01": make_v01,
}


def package_version(sdk: str) -> Optional[str]:
    dist = {
        "ours": "journy-analytics",
        "segment": "segment-analytics-python",
        "rudder": "rudder-sdk-python",
        "posthog": "posthog",
        "floor": "orjson",
        "raw": "orjson",
        "limit": "orjson",
    }.get(sdk)
    if sdk == "v01":
        import journy_analytics

        return str(journy_analytics.__version__)
    if dist is None:
        return None
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


# --------------------------------------------------------------------------------------------
# Scenarios


def run_deliver(a: argparse.Namespace) -> Dict[str, Any]:
    n = a.n
    track, close, info = ADAPTERS[a.sdk](a)
    uids = USER_IDS
    lat = array("q", [0]) * n
    pc = time.perf_counter_ns
    rss0 = rss_bytes()
    # Warm the call path (imports, first allocations) on a few events that are delivered too.
    warm = min(a.warmup, n)
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    for i in range(warm):
        track(uids[i % N_USERS], make_props(i))
    for i in range(warm, n):
        props = make_props(i)
        uid = uids[i % N_USERS]
        s = pc()
        track(uid, props)
        lat[i] = pc() - s
    t_calls = time.perf_counter() - t0
    close(a.close_timeout)
    t_total = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    out: Dict[str, Any] = summarize_ns(lat[warm:])
    out.update(
        {
            "events": n,
            "warmup": warm,
            "calls_seconds": t_calls,
            "total_seconds": t_total,
            "throughput_eps": n / t_total if t_total > 0 else None,
            "cpu_seconds": cpu,
            "cpu_per_100k": cpu / max(1, n) * 100_000,
            "rss_start": rss0,
            "peak_rss": peak_rss_bytes(),
            "info": info(),
        }
    )
    return out


def run_limit(a: argparse.Namespace) -> Dict[str, Any]:
    """POST pre-encoded batches from one thread: what the sink and machine allow."""
    import base64
    import http.client
    from urllib.parse import urlsplit

    import orjson

    if a.sdk != "limit":
        raise Skip("the limit scenario runs the limit loop only")
    n, batch = a.n, a.batch
    new_id, timestamp = _cheap_ids_and_times()
    library = {"library": {"name": "limit", "version": "0"}}
    uids = USER_IDS
    bodies: List[bytes] = []
    for start in range(0, n, batch):
        events = [
            orjson.dumps(
                {
                    "type": "track",
                    "event": EVENT,
                    "userId": uids[i % N_USERS],
                    "properties": make_props(i),
                    "messageId": new_id(),
                    "timestamp": timestamp(),
                    "context": library,
                    "integrations": {},
                }
            )
            for i in range(start, min(n, start + batch))
        ]
        bodies.append(
            b'{"batch":[' + b",".join(events) + b'],"sentAt":"' + timestamp().encode()
            + b'","writeKey":"WRITE_KEY"}'
        )  # fmt: skip
    u = urlsplit(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(b"WRITE_KEY:").decode(),
        "User-Agent": "bench-limit/0",
    }
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    for body in bodies:
        conn.request("POST", "/v1/batch", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"sink answered {resp.status}")
    total = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    conn.close()
    return {
        "events": n,
        "total_seconds": total,
        "throughput_eps": n / total if total > 0 else None,
        "cpu_seconds": cpu,
        "cpu_per_100k": cpu / max(1, n) * 100_000,
        "info": {"requests": len(bodies)},
    }


def run_memory(a: argparse.Namespace) -> Dict[str, Any]:
    n = a.n
    track, _close, info = ADAPTERS[a.sdk](a)
    uids = USER_IDS
    for i in range(min(a.warmup, n)):
        track(uids[i % N_USERS], make_props(i))
    gc.collect()
    time.sleep(0.2)
    rss0 = rss_bytes()
    peak0 = peak_rss_bytes()
    t0 = time.perf_counter()
    for i in range(n):
        track(uids[i % N_USERS], make_props(i))
    t_calls = time.perf_counter() - t0
    time.sleep(0.2)
    rss1 = rss_bytes()
    peak1 = peak_rss_bytes()
    peak_growth = max(rss1, peak1 if peak1 > peak0 else rss1) - rss0
    return {
        "events": n,
        "calls_seconds": t_calls,
        "rss_before": rss0,
        "rss_after": rss1,
        "peak_rss": peak1,
        "rss_growth": rss1 - rss0,
        "peak_growth": peak_growth,
        "bytes_per_event": peak_growth / n,
        "info": info(),
    }


_processes_seen = 0


def _watch_tree_rss(proc: Any, every: float = 0.05) -> int:
    """Peak of the summed RSS of ``proc`` and its descendants, sampled until it exits."""
    global _processes_seen
    import psutil

    peak = 0
    seen = set()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            total = 0
            for q in tree:
                try:
                    total += q.memory_info().rss
                    seen.add(q.pid)
                except psutil.Error:
                    pass
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(every)
    _processes_seen = len(seen)
    return peak


def run_import(a: argparse.Namespace) -> Dict[str, Any]:
    import subprocess
    import tempfile

    n = a.n
    t0 = time.perf_counter()
    if a.sdk == "ours":
        journy = os.path.join(os.path.dirname(sys.executable), "journy")
        with tempfile.TemporaryDirectory(prefix="journy-bench-import-") as cwd:
            p = subprocess.Popen(
                [journy, "import", a.file, "--host", a.url, "--progress", "none"],
                cwd=cwd,
                env={**os.environ, "JOURNY_WRITE_KEY": WRITE_KEY},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            # The import runs in several processes (a reader and a worker per core): its
            # memory is the sum over the tree, sampled, not the largest one's peak.
            peak = _watch_tree_rss(p)
            out, err = p.communicate()
        total = time.perf_counter() - t0
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every process, once reaped
        if p.returncode != 0:
            raise RuntimeError(f"journy import exited {p.returncode}: {err[-300:]}")
        return {
            "events": n,
            "total_seconds": total,
            "throughput_eps": n / total,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss": max(peak, usage.ru_maxrss * 1024),
            "processes": _processes_seen,
            "info": {"report": out.strip().splitlines()},
        }
    if a.sdk != "segment":
        raise Skip("the import scenario runs ours and segment only")
    import datetime as dt
    import json

    import segment.analytics as sa

    client = sa.Client(WRITE_KEY, host=a.url)
    track = client.track
    fromiso = dt.datetime.fromisoformat
    cpu0 = cpu_seconds()
    with open(a.file) as f:
        for line in f:
            e = json.loads(line)
            ts = fromiso(e["timestamp"].replace("Z", "+00:00"))
            track(e["userId"], e["event"], e["properties"], timestamp=ts)
    client.flush()
    client.join()
    total = time.perf_counter() - t0
    return {
        "events": n,
        "total_seconds": total,
        "throughput_eps": n / total,
        "cpu_seconds": cpu_seconds() - cpu0,
        "peak_rss": peak_rss_bytes(),
        "info": {"queue_size": client.queue.qsize()},
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.runner")
    p.add_argument("sdk", choices=[*sorted(ADAPTERS), "limit"])
    p.add_argument("scenario", choices=["deliver", "memory", "import", "limit"])
    p.add_argument("--file", default=None, help="import: the JSONL file")
    p.add_argument("--url", required=True)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--flush-interval", type=float, default=0.5)
    p.add_argument("--queue", type=int, default=1_000_000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--defaults", action="store_true", help="ours: batch size and interval default")
    p.add_argument("--spool", default=None)
    p.add_argument(
        "--plugin", choices=["enrich", "redact"], default=None, help="ours: register one"
    )
    p.add_argument("--scope", action="store_true", help="ours: track() inside a scope")
    p.add_argument("--close-timeout", type=float, default=120.0)
    a = p.parse_args(argv)
    import json

    result: Dict[str, Any] = {"sdk": a.sdk, "scenario": a.scenario, "version": None}
    try:
        if a.scenario == "deliver":
            result.update(run_deliver(a))
        elif a.scenario == "import":
            result.update(run_import(a))
        elif a.scenario == "limit":
            result.update(run_limit(a))
        else:
            result.update(run_memory(a))
        result["version"] = package_version(a.sdk)
    except Skip as exc:
        result["skipped"] = str(exc)
    except ImportError as exc:
        result["skipped"] = f"not importable: {exc}"
    sys.stdout.write("RESULT " + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    if a.scenario == "memory":
        os._exit(0)  # do not wait on retries against the unreachable server
    return 0


if __name__ == "__main__":
    sys.exit(main())
