"""Shared pieces of the reliability tests: collectors on loopback, fault mixes, scale.

Every test here runs a real client against a real server over 127.0.0.1 and asserts
counts (sent, delivered, duplicates, dropped) that would fail if an event were lost.

Scale: the default run (``make test``) uses counts small enough for CI; ``make soak``
(``JOURNY_SOAK=1 pytest -m slow``) runs the same tests at the issue's full scale.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Set

import pytest

pytest.importorskip("aiohttp")

from journy_analytics.collector import CollectorThread, Faults

SOAK = os.environ.get("JOURNY_SOAK") == "1"

# The two scales of each parametrised test: "default" always runs, "soak" only under
# `make soak` (it is marked slow and skipped unless JOURNY_SOAK=1).
soak_only = [
    pytest.mark.slow,
    pytest.mark.skipif(not SOAK, reason="full-scale variant: set JOURNY_SOAK=1 (make soak)"),
]


def scales(default: Any, soak: Any) -> Any:
    return pytest.mark.parametrize(
        "scale",
        [pytest.param(default, id="default"), pytest.param(soak, id="soak", marks=soak_only)],
    )


def report(name: str, **figures: Any) -> None:
    """Print the figures of one run (pytest -s shows them; docs/reliability.md quotes them)
    and append them to $JOURNY_RELIABILITY_REPORT when set."""
    line = json.dumps({"test": name, **figures}, sort_keys=True, default=str)
    print(f"\nRELIABILITY {line}")
    path = os.environ.get("JOURNY_RELIABILITY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")


@pytest.fixture
def collector() -> Iterator[CollectorThread]:
    # A large request log: the duplicate accounting reads every reset request from it.
    with CollectorThread(db=":memory:", max_logged_requests=200_000) as c:
        yield c


# -- a mix of fault kinds on one stream of requests --------------------------------------


def mixed_faults(p500: float, p429: float, preset: float, seed: int = 1234) -> Faults:
    """One uniform draw per ingest request: ``p500`` answered 500, ``p429`` answered 429
    with ``Retry-After: 1``, ``preset`` stored and then reset (no answer), the rest
    accepted. The collector counts every fault it applies in ``stats()["faults"]``
    (the 429s as ``rate_limited``)."""
    return Faults(
        fail_rate=p500,
        fail_status=500,
        retry_after_rate=p429,
        retry_after=1,
        reset_rate=preset,
        reset_when="after",
        seed=seed,
    )


def reset_requests(c: CollectorThread) -> List[Dict[str, Any]]:
    """Requests the collector stored and then reset (the client saw no answer)."""
    return [r for r in c.requests() if r.get("status") == "reset"]


# -- a tiny scripted batch server ------------------------------------------------------


@dataclass
class ScriptedServer:
    """A threaded http.server batch endpoint. ``decide(batch)`` returns ``(status,
    sleep_seconds)`` for each request; accepted (2xx) batches are recorded by messageId."""

    decide: Callable[[List[Dict[str, Any]]], tuple[int, float]]
    accepted: List[str] = field(default_factory=list)
    answered: List[tuple[int, List[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop_sleeping: threading.Event = field(default_factory=threading.Event)

    @property
    def unique_accepted(self) -> Set[str]:
        with self.lock:
            return set(self.accepted)


def _handler(server: ScriptedServer) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            batch = json.loads(self.rfile.read(length))["batch"]
            status, sleep = server.decide(batch)
            if sleep:
                server.stop_sleeping.wait(sleep)
            ids = [e["messageId"] for e in batch]
            with server.lock:
                server.answered.append((status, ids))
                if 200 <= status < 300:
                    server.accepted.extend(ids)
            body = b'{"success":true}' if status < 300 else b'{"success":false}'
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up on us (timeout): expected in the hang test

    return Handler


@pytest.fixture
def scripted() -> Iterator[Callable[..., tuple[ScriptedServer, str]]]:
    servers: List[ThreadingHTTPServer] = []
    states: List[ScriptedServer] = []

    def start(decide: Callable[[List[Dict[str, Any]]], tuple[int, float]]) -> Any:
        state = ScriptedServer(decide)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        states.append(state)
        return state, f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for state in states:
        state.stop_sleeping.set()
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def ids(prefix: str, n: int) -> List[str]:
    return [f"{prefix}-{i:06d}" for i in range(n)]
