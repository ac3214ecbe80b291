"""A fast loopback sink for the benchmark: accepts every SDK's batch format, counts events.

Run as its own process (``python -m bench.sink``) so it never shares a GIL with the SDK being
measured. It prints ``PORT <n>`` on its first stdout line, then serves until SIGTERM/SIGINT.

Accepted bodies (identity, ``Content-Encoding: gzip`` or ``deflate``), on any path:

- Segment, journy, rudder, analytics-node: ``{"batch": [event, ...], ...}``, ids in ``messageId``;
- posthog v0 (``/batch/``): ``{"batch": [...], "api_key": ..., "sent_at": ...}``, ids in ``uuid``;
- posthog v1 (``/i/v1/analytics/events``): ``{"batch": [...]}``, answered with ``{"results": {}}``
  (absent from the map means accepted);
- posthog single-event endpoints (``/capture/``, ``/i/v0/e/``): one event object or a list.

Control endpoints (GET or POST):

- ``/_stats``: counters as JSON (requests, events, unique ids, bytes, paths, user agents, CPU);
- ``/_reset?latency_ms=N&status=S``: clears the counters and the id set; every later request is
  answered after ``N`` ms (default 0) with status ``S`` (default 200).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import urllib.parse
import zlib
from typing import Any, Dict, List, Optional, Set, Tuple

import orjson

_ID_KEYS = ("messageId", "uuid", "message_id")


class SinkState:
    def __init__(self) -> None:
        self.latency = 0.0
        self.status = 200
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.events = 0
        self.bytes = 0
        self.bad_requests = 0
        self.no_id = 0
        self.ids: Set[str] = set()
        self.paths: Dict[str, int] = {}
        self.user_agents: Dict[str, int] = {}
        self.encodings: Dict[str, int] = {}
        self.first_ts: Optional[float] = None
        self.last_ts: Optional[float] = None
        self.cpu0 = time.process_time()

    def stats(self) -> Dict[str, Any]:
        return {
            "requests": self.requests,
            "events": self.events,
            "unique": len(self.ids),
            "bytes": self.bytes,
            "bad_requests": self.bad_requests,
            "events_without_id": self.no_id,
            "paths": self.paths,
            "user_agents": self.user_agents,
            "encodings": self.encodings,
            "first_request_at": self.first_ts,
            "last_request_at": self.last_ts,
            "cpu_seconds": time.process_time() - self.cpu0,
            "latency_ms": self.latency * 1000.0,
            "status": self.status,
            "pid": os.getpid(),
        }


def decode_body(raw: bytes, encoding: str) -> bytes:
    encoding = encoding.lower().strip()
    if encoding == "gzip":
        return zlib.decompress(raw, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        try:
            return zlib.decompress(raw)
        except zlib.error:
            return zlib.decompress(raw, -zlib.MAX_WBITS)
    return raw


def extract_events(doc: Any) -> List[Any]:
    """The events of one request body, whatever the SDK's envelope."""
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        batch = doc.get("batch")
        if isinstance(batch, list):
            return batch
        if "event" in doc or "type" in doc:
            return [doc]
    return []


class SinkProtocol(asyncio.Protocol):
    """A minimal HTTP/1.1 server connection: keep-alive, Content-Length or chunked bodies.

    aiohttp costs ~0.4 ms per request here; this costs a fraction of that, so the sink stays far
    from being the bottleneck (see ``python -m bench --sink-check``).
    """

    def __init__(self, state: SinkState) -> None:
        self.state = state
        self.buf = bytearray()
        self.transport: Optional[asyncio.Transport] = None
        self.busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        while not self.busy and not self.closed:
            req = self.parse_one()
            if req is None:
                return
            self.handle(*req)

    def parse_one(self) -> Optional[Tuple[str, str, Dict[str, str], bytes]]:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buf[:end]).decode("latin-1").split("\r\n")
        try:
            method, target, _version = head[0].split(" ", 2)
        except ValueError:
            self.fail()
            return None
        headers: Dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        pos = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    return None
                size = int(bytes(buf[pos:nl]).split(b";")[0], 16)
                start = nl + 2
                if size == 0:
                    trailer_end = buf.find(b"\r\n\r\n", nl)
                    if trailer_end < 0 and buf[start : start + 2] != b"\r\n":
                        return None
                    pos = start + 2 if buf[start : start + 2] == b"\r\n" else trailer_end + 4
                    break
                if len(buf) < start + size + 2:
                    return None
                body += buf[start : start + size]
                pos = start + size + 2
            raw = bytes(body)
        else:
            length = int(headers.get("content-length", "0") or 0)
            if len(buf) < pos + length:
                return None
            raw = bytes(buf[pos : pos + length])
            pos += length
        del buf[:pos]
        return method, target, headers, raw

    def fail(self) -> None:
        self.state.bad_requests += 1
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
        self.closed = True

    def handle(self, method: str, target: str, headers: Dict[str, str], raw: bytes) -> None:
        path, _, query = target.partition("?")
        if path.startswith("/_"):
            status, body = control(self.state, path, query)
            self.respond(status, body, headers)
            return
        status, body = ingest(self.state, path, headers, raw)
        if self.state.latency > 0 and status < 400:
            self.busy = True
            asyncio.get_running_loop().call_later(
                self.state.latency, self.respond_later, status, body, headers
            )
        else:
            self.respond(status, body, headers)

    def respond_later(self, status: int, body: bytes, headers: Dict[str, str]) -> None:
        self.busy = False
        if self.closed:
            return
        self.respond(status, body, headers)
        self.process()

    def respond(self, status: int, body: bytes, headers: Dict[str, str]) -> None:
        if self.transport is None or self.closed:
            return
        close = headers.get("connection", "").lower() == "close"
        reason = _REASONS.get(status, "Status")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (status, reason.encode(), len(body), b"Connection: close\r\n" if close else b"")
            + body
        )
        if close:
            self.transport.close()
            self.closed = True


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}
_OK_BODY = b'{"success":true}'
_V1_BODY = b'{"results":{}}'


def ingest(state: SinkState, path: str, headers: Dict[str, str], raw: bytes) -> Tuple[int, bytes]:
    now = time.time()
    if state.first_ts is None:
        state.first_ts = now
    state.last_ts = now
    state.requests += 1
    state.bytes += len(raw)
    state.paths[path] = state.paths.get(path, 0) + 1
    ua = headers.get("user-agent", "")
    state.user_agents[ua] = state.user_agents.get(ua, 0) + 1
    enc = headers.get("content-encoding", "")
    if enc:
        state.encodings[enc] = state.encodings.get(enc, 0) + 1
    try:
        doc = orjson.loads(decode_body(raw, enc) if enc else raw)
    except (orjson.JSONDecodeError, zlib.error):
        state.bad_requests += 1
        return 400, b'{"error":"bad body"}'
    events = extract_events(doc)
    state.events += len(events)
    add = state.ids.add
    for ev in events:
        if isinstance(ev, dict):
            for key in _ID_KEYS:
                mid = ev.get(key)
                if mid is not None:
                    add(str(mid))
                    break
            else:
                state.no_id += 1
    return state.status, (_V1_BODY if path.startswith("/i/v1/") else _OK_BODY)


def control(state: SinkState, path: str, query: str) -> Tuple[int, bytes]:
    if path == "/_stats":
        return 200, orjson.dumps(state.stats())
    if path == "/_reset":
        q = dict(urllib.parse.parse_qsl(query))
        state.latency = float(q.get("latency_ms", "0")) / 1000.0
        state.status = int(q.get("status", "200"))
        state.reset()
        return 200, orjson.dumps(state.stats())
    return 404, b"{}"


async def serve(host: str, port: int) -> None:
    state = SinkState()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SinkProtocol(state), host, port, backlog=1024, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"PORT {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()
    server.close()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sink", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("the sink binds loopback only", file=sys.stderr)
        return 2
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
