"""A loopback stand-in for api.journy.io: answers every path of the document, checks
every request against it (``contract.py``), and can be scripted (a status for the next
requests to a path), rate limited (a sliding window, with the ``X-RateLimit-*`` headers on
every answer) or stopped and restarted on the same port (an outage)."""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Deque, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from . import contract

_VALIDATOR = None
_VALIDATOR_LOCK = threading.Lock()


def shared_validator() -> Any:
    global _VALIDATOR
    with _VALIDATOR_LOCK:
        if _VALIDATOR is None:
            _VALIDATOR = contract.validator()
        return _VALIDATOR


PERMISSIONS = {
    ("POST", "/users/upsert"): "TrackData",
    ("POST", "/accounts/upsert"): "TrackData",
    ("POST", "/accounts/users/add"): "TrackData",
    ("POST", "/accounts/users/remove"): "TrackData",
    ("POST", "/track"): "TrackData",
    ("POST", "/link"): "TrackData",
    ("DELETE", "/users"): "TrackData",
    ("DELETE", "/accounts"): "TrackData",
    ("GET", "/events"): "ReadEvents",
    ("GET", "/properties/users"): "ReadProperties",
    ("GET", "/properties/accounts"): "ReadProperties",
    ("GET", "/segments/users"): "ReadSegments",
    ("GET", "/segments/accounts"): "ReadSegments",
    ("GET", "/tracking/snippet"): "GetTrackingSnippet",
    ("GET", "/validate"): None,
}
ALL_PERMISSIONS = [
    "TrackData",
    "ReadEvents",
    "ReadProperties",
    "ReadSegments",
    "GetTrackingSnippet",
]

_SUCCESS = {"POST": 201, "DELETE": 202, "GET": 200}


@dataclass
class Seen:
    method: str
    path: str
    query: str
    body: Any
    headers: Dict[str, str]
    problem: Optional[str]
    status: int = 0


@dataclass
class ApiServer:
    keys: Dict[str, List[str]] = field(default_factory=lambda: {"test-api-key": ALL_PERMISSIONS})
    rate_limit: Optional[int] = None
    rate_window: float = 60.0
    send_retry_after: bool = True
    seen: List[Seen] = field(default_factory=list)
    script: Dict[Tuple[str, str], Deque[Tuple[int, Dict[str, str], bytes]]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: Deque[float] = collections.deque()
        self.rate_limited = 0
        self._server: Optional[ThreadingHTTPServer] = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def then(
        self,
        method: str,
        path: str,
        status: int,
        headers: Optional[Dict[str, str]] = None,
        body: Any = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` requests to ``method path`` get this answer."""
        if body is None:
            body = {"meta": {"requestId": "r", "status": status}, "message": f"scripted {status}"}
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        queue = self.script.setdefault((method, path), collections.deque())
        for _ in range(times):
            queue.append((status, dict(headers or {}), data))

    def problems(self) -> List[str]:
        return [f"{s.method} {s.path}: {s.problem}" for s in self.seen if s.problem]

    def calls(self, method: str, path: str) -> List[Seen]:
        return [s for s in self.seen if s.method == method and s.path == path]

    # -- answering -------------------------------------------------------------------------

    def answer(
        self, method: str, target: str, headers: Dict[str, str], body: bytes
    ) -> Tuple[int, Dict[str, str], bytes]:
        parts = urlsplit(target)
        path, query = parts.path, parts.query
        problem = contract.request_problem(shared_validator(), method, path, query, body)
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body
        seen = Seen(method, path, query, parsed, headers, problem)
        with self._lock:
            self.seen.append(seen)
            limit_headers, limited = self._count()
        status, extra, data = self._respond(method, path, query, headers, limited)
        extra.update(limit_headers)
        if limited and self.send_retry_after:
            extra.setdefault("Retry-After", str(max(1, round(self.rate_window))))
        seen.status = status
        return status, extra, data

    def _count(self) -> Tuple[Dict[str, str], bool]:
        if self.rate_limit is None:
            return {"X-RateLimit-Limit": "1800", "X-RateLimit-Remaining": "1799"}, False
        now = time.monotonic()
        hits = self._hits
        while hits and hits[0] <= now - self.rate_window:
            hits.popleft()
        limited = len(hits) >= self.rate_limit
        if limited:
            self.rate_limited += 1
        else:
            hits.append(now)
        remaining = max(0, self.rate_limit - len(hits))
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(remaining),
        }, limited

    def _respond(
        self, method: str, path: str, query: str, headers: Dict[str, str], limited: bool
    ) -> Tuple[int, Dict[str, str], bytes]:
        def message(status: int, text: str, **more: Any) -> Tuple[int, Dict[str, str], bytes]:
            doc = {"meta": {"requestId": uuid.uuid4().hex, "status": status}, "message": text}
            doc.update(more)
            return status, {"Content-Type": "application/json"}, json.dumps(doc).encode()

        if limited:
            return message(429, "Too many API requests were send")
        scripted = self.script.get((method, path))
        if scripted:
            status, extra, data = scripted.popleft()
            return status, extra, data
        key = headers.get("x-api-key")
        if key not in self.keys:
            return message(401, "No API Key was provided or the key is not authorised")
        needed = PERMISSIONS.get((method, path), "missing")
        if needed == "missing":
            return message(404, "Not found")
        if needed is not None and needed not in self.keys[key]:
            return message(401, "The key is not authorised to perform the action")
        if method == "GET":
            data: Any = []
            if path == "/validate":
                data = {"permissions": self.keys[key]}
            elif path == "/tracking/snippet":
                domain = query.split("=", 1)[-1]
                data = {"domain": domain, "snippet": f"<script>/* {domain} */</script>"}
            elif path == "/events":
                data = [{"id": "e1", "name": "signed_up", "group": {"id": "g", "name": "Main"}}]
            elif path.startswith("/properties"):
                data = [{"name": "plan", "label": "Plan", "isComputed": False}]
            elif path.startswith("/segments"):
                data = [{"id": "s1", "name": "Active"}]
            return message(200, "ok", data=data)
        if path == "/accounts/users/remove":
            return 204, {}, b""
        return message(_SUCCESS[method], "Object will be created or updated")


def _handler(owner: ApiServer) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, data = owner.answer(self.command, self.path, headers, body)
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
