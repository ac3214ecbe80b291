"""``python -m bench``: journy-analytics side by side with the SDKs users would pick instead.

Every SDK runs in its own fresh interpreter (or node process) against one loopback sink that
runs in a separate process (``bench.sink``). Prints a table with the ratio to journy-analytics,
writes ``bench/results/latest.json`` and updates the table in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

from bench import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(ROOT, "bench")
NODE_DIR = os.path.join(BENCH_DIR, "node")
RESULTS = os.path.join(BENCH_DIR, "results", "latest.json")
DOCS = os.path.join(ROOT, "docs", "benchmarks.md")

PY_SDKS = ["ours", "segment", "rudder", "posthog"]
# "enrich" and "redact": ours with one plugin registered (the call cost of the plugin chain).
# "scope": ours with every track() inside a journy_analytics.scope (ids from the scope).
# "import": journy import of a 1,000,000-line JSONL file against segment's obvious loop.
PLUGIN_ROWS = ("enrich", "redact")
# "v01": the previous release, built from its commit (the A/B row). "limit": one thread POSTing
# pre-encoded batches of 100 (what the sink and machine allow). Both run in rounds interleaved
# with ours' batch-100 run; each row keeps the best of its rounds, figure by figure.
AB_ROWS = ("v01", "limit")
V01_COMMIT = "1a6ced2"
ALL_NAMES = [
    *PY_SDKS, "node", "ours15", "spool", *PLUGIN_ROWS, "scope", "floor", "raw", *AB_ROWS, "import"
]  # fmt: skip
RUN_TIMEOUT = 300.0
ROUNDS = (5, 2)  # interleaved rounds of ours / v01 / limit: (full, --quick)

# Event counts: (full, --quick)
COUNTS = {
    "main": (50_000, 10_000),  # batch 100: overhead, throughput, CPU
    "b15": (20_000, 5_000),  # batch 15 (this SDK's default)
    "slow": (10_000, 3_000),  # batch 100, 50 ms per request
    "memory": (100_000, 100_000),  # queued with the server unreachable
    "floor": (100_000, 20_000),
    "sink": (3_000, 1_000),  # requests of 100 events for the sink check
    "import": (1_000_000, 200_000),  # JSONL lines for the import row
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# the sink process


class Sink:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sink", "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(f"sink did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def _get(self, path: str) -> Dict[str, Any]:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            result: Dict[str, Any] = json.loads(r.read())
            return result

    def reset(self, latency_ms: float = 0.0) -> None:
        self._get(f"/_reset?latency_ms={latency_ms}")

    def stats(self) -> Dict[str, Any]:
        return self._get("/_stats")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def child_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONDEVMODE", None)
    env["PYTHONHASHSEED"] = "0"
    return env


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def sink_check(sink: Sink, nreq: int) -> Dict[str, Any]:
    """Drive the sink with pre-encoded batches of 100 from one raw keep-alive loop."""
    import http.client

    import orjson

    from bench.workload import make_props

    events = [
        orjson.dumps(
            {
                "type": "track",
                "event": "Car Sold",
                "userId": "user-1",
                "properties": make_props(i),
                "messageId": f"@@-{i}",
                "timestamp": "2015-12-12T19:11:00.000Z",
                "context": {"library": {"name": "sink-check", "version": "0"}},
                "integrations": {},
            }
        )
        for i in range(100)
    ]
    head, tail = b'{"batch":[', b'],"sentAt":"2015-12-12T19:11:00.000Z","writeKey":"K"}'
    template = head + b",".join(events) + tail
    bodies = [template.replace(b"@@", b"r%d" % r) for r in range(nreq)]
    sink.reset()
    conn = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=30)
    hdrs = {"Content-Type": "application/json"}
    t0 = time.perf_counter()
    for body in bodies:
        conn.request("POST", "/v1/batch", body=body, headers=hdrs)
        resp = conn.getresponse()
        resp.read()
    dt = time.perf_counter() - t0
    conn.close()
    st = sink.stats()
    n = nreq * 100
    return {
        "events": n,
        "unique": st["unique"],
        "achieved_eps": n / dt,
        "sink_cpu_seconds": st["cpu_seconds"],
        "capacity_eps": n / st["cpu_seconds"] if st["cpu_seconds"] > 0 else None,
    }


# --------------------------------------------------------------------------------------------
# one run in a subprocess


def parse_result(out: str) -> Optional[Dict[str, Any]]:
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result: Dict[str, Any] = json.loads(line[7:])
            return result
    return None


def run_child(cmd: List[str], cwd: str, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    try:
        p = subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            env=env or child_env(),
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {RUN_TIMEOUT:.0f}s"}
    res = parse_result(p.stdout)
    if res is None:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        return {"error": f"exit {p.returncode}: " + " | ".join(tail)}
    return res


def run_py(sdk: str, scenario: str, url: str, n: int, batch: int, **kw: Any) -> Dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.runner", sdk, scenario, "--url", url]
    cmd += ["--n", str(n), "--batch", str(batch)]
    if kw.get("flush_interval") is not None:
        cmd += ["--flush-interval", str(kw["flush_interval"])]
    if kw.get("defaults"):
        cmd.append("--defaults")
    if kw.get("spool"):
        cmd += ["--spool", kw["spool"]]
    if kw.get("plugin"):
        cmd += ["--plugin", kw["plugin"]]
    if kw.get("scope"):
        cmd.append("--scope")
    if kw.get("file"):
        cmd += ["--file", kw["file"]]
    env = None
    if kw.get("src"):
        # Another copy of journy_analytics first on the path (the A/B row's previous release).
        env = child_env()
        env["PYTHONPATH"] = kw["src"] + os.pathsep + env["PYTHONPATH"]
        env["JOURNY_BENCH_V01_ROOT"] = kw["src"]
    return run_child(cmd, ROOT, env)


def prepare_v01(into: str) -> Tuple[Optional[str], Optional[str]]:
    """(the directory to put first on PYTHONPATH, None) or (None, why the A/B row is skipped):
    0.1's package, exported from the repository at ``V01_COMMIT`` (pure Python, the same
    dependencies, so the bench's interpreter runs it as it is)."""
    try:
        p = subprocess.run(
            ["git", "-C", ROOT, "archive", "--format=tar", V01_COMMIT, "src/journy_analytics"],
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"git archive {V01_COMMIT} failed: {exc}"
    if p.returncode != 0:
        why = p.stderr.decode(errors="replace").strip()[-200:]
        return None, f"git archive {V01_COMMIT} failed (a shallow clone?): {why}"
    import io

    with tarfile.open(fileobj=io.BytesIO(p.stdout)) as tar:
        # Our own repository's tree; the "data" filter where this Python has it.
        safe: Dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(into, **safe)
    return os.path.join(into, "src"), None


# Per figure, the better end: the best of the interleaved rounds is kept figure by figure.
_BEST_LOW = ("median_us", "mean_us", "p99_us", "max_us", "cpu_seconds", "cpu_per_100k")
_BEST_HIGH = ("throughput_eps",)


def best_of(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One result from several rounds of one run: the best value of each figure, every
    round's figures under ``rounds``; a failed or lossy round makes the whole row so."""
    bad = [r for r in runs if "error" in r or "skipped" in r or r.get("delivered_ok") is False]
    if bad:
        return bad[0]
    out = dict(runs[0])
    for key in _BEST_LOW + _BEST_HIGH:
        values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        if values:
            out[key] = min(values) if key in _BEST_LOW else max(values)
    out["rounds"] = [{k: r.get(k) for k in (*_BEST_LOW, *_BEST_HIGH) if k in r} for r in runs]
    return out


def node_ready(install: bool) -> Optional[str]:
    """None when node can run analytics-node, else the reason to skip."""
    if not shutil.which("node"):
        return "node not found"
    mod = os.path.join(NODE_DIR, "node_modules", "@segment", "analytics-node")
    if not os.path.isdir(mod):
        if not install:
            return "bench/node/node_modules missing (run npm ci in bench/node)"
        npm = shutil.which("npm")
        if not npm:
            return "npm not found"
        verb = "ci" if os.path.exists(os.path.join(NODE_DIR, "package-lock.json")) else "install"
        log(f"  npm {verb} in bench/node ...")
        try:
            p = subprocess.run(
                [npm, verb, "--no-audit", "--no-fund"],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired:
            return f"npm {verb} timed out"
        if p.returncode != 0:
            return f"npm {verb} failed: {p.stderr.strip()[-200:]}"
    return None


def run_node(scenario: str, url: str, n: int, batch: int, flush_s: float) -> Dict[str, Any]:
    cmd = ["node", "run.js", scenario, url, str(n), str(batch), str(int(flush_s * 1000)), "200"]
    return run_child(cmd, NODE_DIR)


def verify(res: Dict[str, Any], sink: Sink, expected: int) -> Dict[str, Any]:
    """Attach the sink's view of the run and whether every unique id arrived."""
    if "error" in res or "skipped" in res:
        return res
    st = sink.stats()
    res["sink"] = {
        k: st[k] for k in ("requests", "events", "unique", "bytes", "cpu_seconds", "paths")
    }
    res["sink"]["user_agents"] = st["user_agents"]
    res["delivered_ok"] = st["unique"] == expected
    if not res["delivered_ok"]:
        res["delivery_note"] = f"sink saw {st['unique']} unique ids of {expected}"
    return res


# --------------------------------------------------------------------------------------------


def machine() -> Dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    node_v = None
    if shutil.which("node"):
        try:
            node_v = subprocess.run(
                ["node", "--version"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            node_v = None
    versions: Dict[str, Optional[str]] = {}
    from importlib.metadata import PackageNotFoundError, version

    for dist in (
        "journy-analytics",
        "segment-analytics-python",
        "rudder-sdk-python",
        "posthog",
        "orjson",
        "urllib3",
        "requests",
    ):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    lock = os.path.join(NODE_DIR, "node_modules", "@segment", "analytics-node", "package.json")
    if os.path.exists(lock):
        with open(lock) as f:
            versions["@segment/analytics-node"] = json.load(f).get("version")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "node": node_v,
        "packages": versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer events (about 2 minutes)")
    p.add_argument(
        "--only",
        default="",
        help="comma-separated subset of: "
        + ",".join(ALL_NAMES)
        + " (ours is always run, except with --only import)",
    )
    p.add_argument("--no-node", action="store_true", help="skip @segment/analytics-node")
    p.add_argument("--no-npm", action="store_true", help="do not run npm ci when missing")
    p.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--json", default=RESULTS, help="where to write the results JSON")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every event count")
    a = p.parse_args(argv)

    q = 1 if a.quick else 0

    def count(key: str) -> int:
        return max(100, int(COUNTS[key][q] * a.scale))

    names = [n.strip() for n in a.only.split(",") if n.strip()] or list(ALL_NAMES)
    unknown = [n for n in names if n not in ALL_NAMES]
    if unknown:
        p.error(f"unknown --only names: {unknown}")
    if "ours" not in names and names != ["import"]:
        names.insert(0, "ours")
    if a.no_node and "node" in names:
        names.remove("node")

    t_start = time.perf_counter()
    info = machine()
    log(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    notes: List[str] = []
    results: Dict[str, Dict[str, Any]] = {}
    sink = Sink()
    try:
        log(f"sink on {sink.url} (pid {sink.proc.pid})")
        sc = sink_check(sink, count("sink"))
        log(
            f"  sink check: {sc['achieved_eps']:,.0f} events/s from one raw client; "
            f"sink capacity {sc['capacity_eps']:,.0f} events per sink CPU-second"
        )
        dead = f"http://127.0.0.1:{closed_port()}"
        node_skip = node_ready(install=not a.no_npm) if "node" in names else None
        if node_skip and "node" in names:
            notes.append(f"@segment/analytics-node skipped: {node_skip}")
            log("  " + notes[-1])
            names.remove("node")

        n_main, n_b15, n_slow, n_mem = count("main"), count("b15"), count("slow"), count("memory")

        def deliver(name: str, n: int, batch: int, latency_ms: float = 0.0) -> Dict[str, Any]:
            sink.reset(latency_ms)
            if name == "node":
                res = run_node("deliver", sink.url, n, batch, 0.5)
            elif name == "ours15":
                res = run_py("ours", "deliver", sink.url, n, batch, defaults=True)
            elif name == "spool":
                d = tempfile.mkdtemp(prefix="journy-bench-")
                try:
                    res = run_py(
                        "ours", "deliver", sink.url, n, batch, flush_interval=0.5,
                        spool=os.path.join(d, "spool.db"),
                    )  # fmt: skip
                finally:
                    shutil.rmtree(d, ignore_errors=True)
            elif name in PLUGIN_ROWS:
                res = run_py("ours", "deliver", sink.url, n, batch, flush_interval=0.5, plugin=name)
            elif name == "scope":
                res = run_py("ours", "deliver", sink.url, n, batch, flush_interval=0.5, scope=True)
            else:
                res = run_py(name, "deliver", sink.url, n, batch, flush_interval=0.5)
            return verify(res, sink, n)

        def memory(name: str) -> Dict[str, Any]:
            if name == "node":
                return run_node("memory", dead, n_mem, 100, 3600.0)
            return run_py(name, "memory", dead, n_mem, 100, flush_interval=3600.0)

        def backfill() -> Dict[str, Any]:
            """The import row: one generated JSONL file, journy import vs a segment loop."""
            n = count("import")
            d = tempfile.mkdtemp(prefix="journy-bench-")
            try:
                path = os.path.join(d, "history.jsonl")
                from bench.workload import write_import_file

                write_import_file(path, n)
                out: Dict[str, Any] = {}
                for sdk in ("ours", "segment"):
                    sink.reset()
                    res = run_py(sdk, "import", sink.url, n, 100, file=path)
                    out[sdk] = verify(res, sink, n)
                return out
            finally:
                shutil.rmtree(d, ignore_errors=True)

        ab = [n for n in AB_ROWS if n in names]
        if ab:
            t0 = time.perf_counter()
            v01_dir = tempfile.mkdtemp(prefix="journy-bench-v01-")
            try:
                v01_src = None
                if "v01" in ab:
                    v01_src, why = prepare_v01(v01_dir)
                    if why:
                        notes.append(f"A/B row skipped: {why}")
                        log("  " + notes[-1])
                        ab.remove("v01")
                rounds: Dict[str, List[Dict[str, Any]]] = {n: [] for n in ["ours", *ab]}
                order = list(rounds)
                for k in range(ROUNDS[q]):
                    for name in order[k % len(order) :] + order[: k % len(order)]:
                        if name == "limit":
                            sink.reset()
                            res = run_child(
                                [sys.executable, "-m", "bench.runner", "limit", "limit", "--url",
                                 sink.url, "--n", str(n_main), "--batch", "100"],
                                ROOT,
                            )  # fmt: skip
                            res = verify(res, sink, n_main)
                        elif name == "v01":
                            sink.reset()
                            res = run_py(
                                "v01", "deliver", sink.url, n_main, 100, flush_interval=0.5,
                                src=v01_src,
                            )  # fmt: skip
                            res = verify(res, sink, n_main)
                        else:
                            res = deliver("ours", n_main, 100)
                        rounds[name].append(res)
                for name, runs in rounds.items():
                    results.setdefault(name, {})["main"] = best_of(runs)
                    if name != "ours":
                        log(f"  {name:8s} {report.row_status(results[name])}")
                log(
                    f"  A/B: {ROUNDS[q]} interleaved rounds of {', '.join(rounds)} "
                    f"in {time.perf_counter() - t0:.1f}s"
                )
            finally:
                shutil.rmtree(v01_dir, ignore_errors=True)

        for name in names:
            if name in AB_ROWS:
                continue
            t0 = time.perf_counter()
            r: Dict[str, Any] = results.get(name, {})
            if name == "import":
                r = backfill()
            elif name == "floor":
                r["main"] = run_py("floor", "deliver", sink.url, count("floor"), 100)
            elif name == "raw":
                r["main"] = deliver("raw", n_main * 2, 100)
            elif name == "ours15":
                r["b15"] = deliver("ours15", n_b15, 15)
            elif name in ("spool", "scope", *PLUGIN_ROWS):
                r["main"] = deliver(name, n_main, 100)
            else:
                if "main" not in r:  # ours' batch-100 run is the A/B rounds' best when they ran
                    r["main"] = deliver(name, n_main, 100)
                r["b15"] = deliver(name, n_b15, 15)
                r["slow"] = deliver(name, n_slow, 100, latency_ms=50.0)
                r["memory"] = memory(name)
            results[name] = r
            status = report.row_status(r)
            log(f"  {name:8s} {time.perf_counter() - t0:6.1f}s  {status}")
    finally:
        sink.close()

    elapsed = time.perf_counter() - t_start
    doc = {
        "machine": info,
        "settings": {
            "events": {
                "main_batch100": n_main,
                "batch15": n_b15,
                "slow_50ms": n_slow,
                "memory_queued": n_mem,
                "floor": count("floor"),
                "import_lines": count("import"),
            },
            "flush_interval_s": 0.5,
            "ab_rounds": ROUNDS[q],
            "v01_commit": V01_COMMIT,
            "gzip": False,
            "quick": a.quick,
        },
        "sink_check": sc,
        "results": results,
        "notes": notes,
        "elapsed_seconds": elapsed,
    }
    table = report.build_table(doc)
    doc["table"] = table
    print(report.render_text(doc))
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=2, default=str)
        f.write("\n")
    log(f"wrote {os.path.relpath(a.json, ROOT)}")
    if not a.no_docs:
        report.update_docs(DOCS, doc)
        log(f"updated {os.path.relpath(DOCS, ROOT)}")
    log(f"total {elapsed:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
