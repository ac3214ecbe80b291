"""Tables for ``python -m bench``: text for the terminal, markdown for docs/benchmarks.md."""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Tuple

LABELS = {
    "ours": "journy-analytics",
    "segment": "segment-analytics-python",
    "rudder": "rudder-sdk-python",
    "posthog": "posthog",
    "node": "@segment/analytics-node (node)",
    "ours15": "journy-analytics defaults (15 / 10 s)",
    "spool": "journy-analytics + spool",
    "enrich": "journy-analytics + 1 enrichment plugin",
    "redact": "journy-analytics + Redact plugin",
    "scope": "journy-analytics, ids from a scope",
    "floor": "floor: dict + orjson + deque",
    "raw": "raw: 1 thread encode + POST",
    "v01": "journy-analytics 0.1 (A/B, commit 1a6ced2)",
    "limit": "limit: 1 thread POSTs pre-encoded batches of 100",
}
ORDER = [
    "ours",
    "v01",
    "segment",
    "rudder",
    "posthog",
    "node",
    "ours15",
    "spool",
    "enrich",
    "redact",
    "scope",
    "floor",
    "raw",
    "limit",
]

# (key, header, run, field, lower_is_better, format)
COLUMNS: List[Tuple[str, str, str, str, bool, str]] = [
    ("median", "call median us", "main", "median_us", True, "{:.1f}"),
    # The mean and p99 while the worker delivers: the median hides GIL contention.
    ("mean", "call mean us", "main", "mean_us", True, "{:.1f}"),
    ("p99", "call p99 us", "main", "p99_us", True, "{:.1f}"),
    ("thr100", "events/s batch 100", "main", "throughput_eps", False, "{:,.0f}"),
    ("thr15", "events/s batch 15", "b15", "throughput_eps", False, "{:,.0f}"),
    ("slow", "events/s 50 ms server", "slow", "throughput_eps", False, "{:,.0f}"),
    ("mem", "bytes per queued event", "memory", "bytes_per_event", True, "{:,.0f}"),
    ("cpu", "CPU s per 100k", "main", "cpu_per_100k", True, "{:.2f}"),
]

MARK_START = "<!-- bench:table:start -->"
MARK_END = "<!-- bench:table:end -->"


def _num(x: Any) -> Optional[float]:
    if isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x)):
        return float(x)
    return None


def row_status(r: Dict[str, Any]) -> str:
    parts = []
    for run, res in r.items():
        if "skipped" in res:
            parts.append(f"{run}: skipped ({res['skipped'][:80]})")
        elif "error" in res:
            parts.append(f"{run}: ERROR {res['error'][:160]}")
        elif res.get("delivered_ok") is False:
            parts.append(f"{run}: LOST {res.get('delivery_note')}")
        else:
            v = _num(res.get("throughput_eps"))
            m = _num(res.get("median_us"))
            b = _num(res.get("bytes_per_event"))
            s = f"{run}: ok"
            if m is not None:
                s += f" {m:.1f}us"
            if v is not None:
                s += f" {v:,.0f}/s"
            if b is not None:
                s += f" {b:,.0f}B/ev"
            parts.append(s)
    return "; ".join(parts)


def build_table(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per SDK: value and advantage (how many times better journy-analytics is)."""
    results = doc["results"]
    ours = results.get("ours", {})
    rows = []
    for name in ORDER:
        if name not in results:
            continue
        r = results[name]
        row: Dict[str, Any] = {"name": name, "label": LABELS[name], "cells": {}, "notes": []}
        for key, _h, run, field, lower, _fmt in COLUMNS:
            res = r.get(run)
            if not res:
                continue
            if "skipped" in res or "error" in res:
                row["notes"].append(f"{run}: {res.get('skipped') or res.get('error')}")
                continue
            v = _num(res.get(field))
            if v is None:
                continue
            ref = _num((ours.get(run) or {}).get(field))
            adv: Optional[float] = None
            if ref and v and name != "ours":
                adv = v / ref if lower else ref / v
            ok = res.get("delivered_ok")
            row["cells"][key] = {"value": v, "advantage": adv, "delivered_ok": ok}
            if ok is False:
                row["notes"].append(f"{run}: {res.get('delivery_note')}")
        enter_exit = _num(((r.get("main") or {}).get("info") or {}).get("scope_enter_exit_us"))
        if enter_exit is not None:
            row["notes"].append(f"opening + closing a scope (per request): {enter_exit:.1f} us")
        row["version"] = next(
            (x.get("version") for x in r.values() if isinstance(x, dict) and x.get("version")),
            None,
        )
        rows.append(row)
    return rows


def _cell(c: Optional[Dict[str, Any]], fmt: str, md: bool) -> str:
    if not c:
        return "-"
    s = fmt.format(c["value"])
    if c.get("delivered_ok") is False:
        s += " (LOST)"
    if c.get("advantage") is not None:
        s += f" ({c['advantage']:.1f}x)"
    return s


def targets(doc: Dict[str, Any]) -> List[Tuple[str, str, Optional[bool]]]:
    """The issue's targets: (description, measured, met?)."""
    res = doc["results"]

    def get(name: str, run: str, field: str) -> Optional[float]:
        return _num(((res.get(name) or {}).get(run) or {}).get(field))

    out: List[Tuple[str, str, Optional[bool]]] = []

    def ratio(desc: str, a: Optional[float], b: Optional[float], need: float, le: bool) -> None:
        if a is None or b is None or b == 0:
            out.append((desc, "n/a", None))
            return
        x = a / b
        shown = f"{x:.2f}x" if need == 1.0 else f"{x:.1f}x"
        out.append((desc, shown, x <= need if le else x >= need))

    ratio(
        "call overhead (median) >= 10x lower than segment",
        get("segment", "main", "median_us"),
        get("ours", "main", "median_us"),
        10,
        False,
    )
    ratio(
        "call overhead (mean, while delivering) >= 10x lower than segment",
        get("segment", "main", "mean_us"),
        get("ours", "main", "mean_us"),
        10,
        False,
    )
    ratio(
        "call overhead (p99, while delivering) >= 10x lower than segment",
        get("segment", "main", "p99_us"),
        get("ours", "main", "p99_us"),
        10,
        False,
    )
    ratio(
        "CPU per event (batch 100) >= 8x lower than segment",
        get("segment", "main", "cpu_per_100k"),
        get("ours", "main", "cpu_per_100k"),
        8,
        False,
    )
    # The A/B row: 0.1 in rounds interleaved with ours, best of each; the ratio is how
    # many times better ours is (>= 1.0: at least as good as 0.1).
    for what, field, lower in (
        ("call median", "median_us", True),
        ("call mean", "mean_us", True),
        ("call p99", "p99_us", True),
        ("events/s end to end (batch 100)", "throughput_eps", False),
        ("CPU per 100k events", "cpu_per_100k", True),
    ):
        ours_v, v01_v = get("ours", "main", field), get("v01", "main", field)
        ratio(
            f"A/B: {what} at least as good as 0.1",
            v01_v if lower else ours_v,
            ours_v if lower else v01_v,
            1.0,
            False,
        )
    limit_eps = get("limit", "main", "throughput_eps")
    ours_eps = get("ours", "main", "throughput_eps")
    if limit_eps and ours_eps is not None:
        share = ours_eps / limit_eps
        out.append(
            (
                "events/s end to end (batch 100) >= 75% of the limit loop",
                f"{share:.0%}",
                share >= 0.75,
            )
        )
    else:
        out.append(("events/s end to end (batch 100) >= 75% of the limit loop", "n/a", None))
    ratio(
        "call overhead (median) <= 2x the floor loop",
        get("ours", "main", "median_us"),
        get("floor", "main", "median_us"),
        2,
        True,
    )
    ratio(
        "throughput at batch 100 >= 8x segment",
        get("ours", "main", "throughput_eps"),
        get("segment", "main", "throughput_eps"),
        8,
        False,
    )
    ratio(
        "throughput with 50 ms latency >= 5x segment",
        get("ours", "slow", "throughput_eps"),
        get("segment", "slow", "throughput_eps"),
        5,
        False,
    )
    ratio(
        "memory per queued event >= 3x lower than segment",
        get("segment", "memory", "bytes_per_event"),
        get("ours", "memory", "bytes_per_event"),
        3,
        False,
    )
    imported = (res.get("import") or {}).get("ours") or {}
    if imported:
        eps, rss = _num(imported.get("throughput_eps")), _num(imported.get("peak_rss"))
        ok = imported.get("delivered_ok")
        out.append(
            (
                "import: >= 40,000 events/s from a JSONL file, every event delivered",
                "n/a" if eps is None else f"{eps:,.0f}/s",
                None if eps is None else bool(eps >= 40_000 and ok),
            )
        )
        out.append(
            (
                "import: peak RSS < 200 MB",
                "n/a" if rss is None else f"{rss / 1e6:,.0f} MB",
                None if rss is None else rss < 200e6,
            )
        )
    ours_runs = [
        v for k, v in (res.get("ours") or {}).items() if k != "memory" and isinstance(v, dict)
    ]
    if ours_runs and all("delivered_ok" in v for v in ours_runs):
        ok = all(v["delivered_ok"] for v in ours_runs)
        out.append(("every event delivered (unique ids at the sink)", "yes" if ok else "NO", ok))
    else:
        out.append(("every event delivered (unique ids at the sink)", "n/a", None))
    return out


def import_lines(doc: Dict[str, Any]) -> List[str]:
    """The import row: journy import vs the obvious segment loop over the same file."""
    runs = doc["results"].get("import") or {}
    lines = []
    for sdk, label in (("ours", "journy import"), ("segment", "segment loop")):
        r = runs.get(sdk)
        if not r:
            continue
        if "error" in r or "skipped" in r:
            lines.append(f"{label}: {r.get('error') or r.get('skipped')}")
            continue
        sink = r.get("sink") or {}
        procs = r.get("processes") or 1
        lines.append(
            f"{label}: {r['throughput_eps']:,.0f} events/s, peak RSS "
            f"{r['peak_rss'] / 1e6:,.0f} MB"
            + (f" (all {procs} processes together)" if procs > 1 else "")
            + f", CPU {r['cpu_seconds']:.1f} s, "
            f"{sink.get('unique', 0):,} of {r['events']:,} events at the sink"
        )
    return lines


def _grid(doc: Dict[str, Any], md: bool) -> List[List[str]]:
    header = ["SDK", *[c[1] for c in COLUMNS]]
    grid = [header]
    for row in doc["table"]:
        label = row["label"]
        if row.get("version") and row["name"] not in ("floor", "raw", "limit", "v01"):
            label += f" {row['version']}"
        if row["name"] == "v01":
            label = LABELS["v01"]  # its version (0.1.0) is in the label already
        grid.append([label, *[_cell(row["cells"].get(c[0]), c[5], md) for c in COLUMNS]])
    return grid


def render_text(doc: Dict[str, Any]) -> str:
    grid = _grid(doc, md=False)
    widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))]
    lines = []
    for j, r in enumerate(grid):
        lines.append(
            "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        "(Nx) = how many times better journy-analytics is on that figure "
        "(>1: ours better; <1: ours worse)."
    )
    for row in doc["table"]:
        for note in row["notes"]:
            lines.append(f"note: {row['label']}: {note}")
    for note in doc.get("notes", []):
        lines.append(f"note: {note}")
    imported = import_lines(doc)
    if imported:
        lines.append("")
        lines.append("import (a JSONL file of historical events to the sink):")
        lines.extend(f"  {line}" for line in imported)
    lines.append("")
    lines.append("speed targets:")
    for desc, measured, ok in targets(doc):
        mark = "n/a " if ok is None else ("MET " if ok else "MISS")
        lines.append(f"  [{mark}] {desc}: {measured}")
    return "\n".join(lines)


def render_markdown(doc: Dict[str, Any]) -> str:
    m = doc["machine"]
    grid = _grid(doc, md=True)
    out = [
        f"Run of {m['date']} on **{m['cpu']}**, {m['cores']} cores, {m['os']}, "
        f"{m['implementation']} {m['python']}, node {m.get('node') or 'n/a'}"
        f"{' (--quick)' if doc['settings'].get('quick') else ''}.",
        "",
        "| " + " | ".join(grid[0]) + " |",
        "|" + "|".join([":--"] + ["--:"] * (len(grid[0]) - 1)) + "|",
    ]
    for r in grid[1:]:
        out.append("| " + " | ".join(r) + " |")
    out.append("")
    out.append(
        "(Nx) = how many times better journy-analytics is on that figure (>1: ours better). "
        "Events: " + ", ".join(f"{k} {v:,}" for k, v in doc["settings"]["events"].items()) + "."
    )
    sc = doc.get("sink_check") or {}
    if sc.get("capacity_eps"):
        out.append(
            f"Sink check: {sc['achieved_eps']:,.0f} events/s from one raw client, sink capacity "
            f"{sc['capacity_eps']:,.0f} events per sink CPU-second."
        )
    imported = import_lines(doc)
    if imported:
        out.append("")
        out.append("Import (a JSONL file of historical events to the sink, `journy import`):")
        out.append("")
        out.extend(f"- {line}" for line in imported)
    out.append("")
    out.append("| speed target | measured | met |")
    out.append("|:--|--:|:--|")
    for desc, measured, ok in targets(doc):
        out.append(f"| {desc} | {measured} | {'n/a' if ok is None else ('yes' if ok else 'no')} |")
    notes = [f"{row['label']}: {n}" for row in doc["table"] for n in row["notes"]]
    notes += doc.get("notes", [])
    if notes:
        out.append("")
        out.extend(f"- note: {n}" for n in notes)
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    out.append("")
    out.append(f"Packages: {pk}.")
    return "\n".join(out)


DOC_TEMPLATE = """# Benchmarks

journy-analytics measured side by side with the SDKs users would pick instead, all against one
loopback sink, on the same machine, in one run of `make bench` (`python -m bench`). Ratios, not
absolute times, are the claim: the machine below is a small shared VM.

## Latest run

{table}

## How to run

```
make bench                      # full run, about 5-10 minutes
.venv/bin/python -m bench --quick          # fewer events, about 2-3 minutes
.venv/bin/python -m bench --only segment,floor   # journy-analytics is always included
.venv/bin/python -m bench --no-node --no-docs    # skip node, leave this file alone
```

Results are written to `bench/results/latest.json` (every raw figure, the sink's counters per run,
the machine and package versions) and the table above is rewritten between its markers.

## What is measured

- **Same workload for everyone**: `track` (posthog: `capture`) of the event `Car Sold` with a fresh
  properties dict of 4 properties per call, user ids from a pool of 1000, in a tight loop.
  Batches of 100 events (`max_events_in_batch` / `upload_size` / `flush_at` / `maxEventsInBatch`),
  flush interval 0.5 s, gzip off (rudder's default is on), queue limits raised so that nothing
  is dropped by design (journy-analytics' default queue of 10,000 would drop a 50k burst).
- **Isolation**: each SDK runs in its own fresh interpreter (node process); the sink runs in another
  process (`bench/sink.py`, an asyncio HTTP/1.1 server that accepts the Segment/journy/rudder
  `{{"batch": [...]}}` body on any path, posthog's `/batch/`, `/i/v1/analytics/events`, `/capture/`
  and `/i/v0/e/` formats, gzip and deflate bodies) so it never shares a GIL with the SDK.
- **Call overhead**: every `track()` call is timed with `perf_counter_ns` while the SDK's worker is
  delivering; median, mean and p99 in microseconds (after 200 warm-up calls).
- **Throughput**: events/s from the first call until `close_and_flush()` (segment/rudder:
  `flush()` + `join()`; posthog: `flush(None)` + `shutdown()`; node: `closeAndFlush()`) returns.
  The sink counts unique `messageId`/`uuid` values: a run that lost an event is marked LOST.
- **Slow server**: the same at batch 100 with the sink answering every request after 50 ms.
- **Memory**: 100,000 events queued with the server unreachable (a closed loopback port, long
  flush interval): peak RSS growth divided by 100,000.
- **CPU**: process CPU time (user + system, all threads) of the batch-100 run per 100,000 events.
- **Floor**: building the wire event dict, `orjson.dumps`, `deque.append`, timed the same way.
  **Raw**: one thread that builds, encodes, joins and POSTs batches of 100 over one keep-alive
  `http.client` connection: the end-to-end reference.
- **Scope**: journy-analytics with `journy_analytics.scope(user_id=..., group_id=...,
  context=...)` active and `track(event=..., properties=...)` taking its ids from it (the row
  "journy-analytics" is the same call with no scope). Opening and closing a scope (once per
  request) is timed separately: `scope_enter_exit_us` in the results JSON. Run it alone with
  `python -m bench --only scope`.
- **A/B (0.1)**: the previous release, exported from its commit (`1a6ced2`) with `git archive`
  into a temporary directory and put first on the child's `PYTHONPATH` (the runner refuses to
  run if another copy was imported), driven by the same adapter as journy-analytics. Its
  batch-100 run and journy-analytics' own run alternate in interleaved rounds (5; 2 with
  `--quick`), the order rotating each round; each row keeps the best of its rounds, figure by
  figure (every round is in the results JSON under `rounds`); the journy-analytics row's
  batch-100 figures are that best too, while the other SDKs run once. The "(Nx)" of that row and the
  `A/B:` speed targets compare the two: 1.00x or more means at least as good as 0.1.
- **Limit**: one thread POSTing batches of 100 events, encoded before the clock starts, over one
  keep-alive `http.client` connection to the same sink, in the same interleaved rounds: the most
  the sink and the machine allow. The target is journy-analytics' end-to-end events/s at batch
  100 at 75% of it or more.
- **Node**: analytics-node runs on one thread, so nothing is sent while a synchronous loop runs; its
  loop yields to the event loop (untimed) after every 100 calls, as a server does between requests.

Hot paths are also covered by `tests/client/test_bench_hotpaths.py` (pytest-benchmark),
which runs in `make test` as correctness checks only;
`pytest tests/client/test_bench_hotpaths.py --benchmark-enable` times them.
"""


def update_docs(path: str, doc: Dict[str, Any]) -> None:
    block = f"{MARK_START}\n{render_markdown(doc)}\n{MARK_END}"
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
        if MARK_START in text and MARK_END in text:
            head, rest = text.split(MARK_START, 1)
            _, tail = rest.split(MARK_END, 1)
            text = head + block + tail
        else:
            text = text.rstrip("\n") + "\n\n## Latest run\n\n" + block + "\n"
    else:
        text = DOC_TEMPLATE.format(table=block)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
