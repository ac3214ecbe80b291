"""The one workload every SDK gets: the same users, event name and ~4 properties per event."""

from __future__ import annotations

import math
import time
from typing import Any, Dict, List

EVENT = "Car Sold"
N_USERS = 1000
USER_IDS: List[str] = [f"user-{i:06d}" for i in range(N_USERS)]
SHIPPING = ("200-day", "2-day", "next-day", "pickup")


def make_props(i: int) -> Dict[str, Any]:
    """A fresh properties dict per call, as a request handler would build it."""
    return {
        "revenue": 39999.99 + (i % 100),
        "shipping": SHIPPING[i & 3],
        "sku": "model-s",
        "quantity": (i % 5) + 1,
    }


def percentile(sorted_values: List[int], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in [0, 100])."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return float(sorted_values[k])


def summarize_ns(lat_ns: Any) -> Dict[str, float]:
    """Median / p99 / mean of per-call latencies in nanoseconds, reported in microseconds."""
    values = sorted(lat_ns)
    n = len(values)
    return {
        "calls": n,
        "median_us": percentile(values, 50) / 1000.0,
        "p99_us": percentile(values, 99) / 1000.0,
        "mean_us": (sum(values) / n / 1000.0) if n else float("nan"),
        "max_us": (values[-1] / 1000.0) if n else float("nan"),
    }


def cpu_seconds() -> float:
    """Process CPU time (user + system, every thread)."""
    return time.process_time()


def write_import_file(path: str, n: int) -> None:
    """The import workload: ``n`` JSONL lines, one historical track event each (the same
    users, event and properties as every other scenario, a timestamp 7 s apart from 2020)."""
    import orjson

    base = 1_600_000_000
    with open(path, "wb") as f:
        write = f.write
        dumps = orjson.dumps
        for i in range(n):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + 7 * i))
            event = {
                "type": "track",
                "userId": USER_IDS[i % N_USERS],
                "event": EVENT,
                "timestamp": stamp,
                "properties": make_props(i),
            }
            write(dumps(event) + b"\n")
