"""HTTP transport: the small protocol users can implement, and the default one.

The transport only moves bytes. It never retries (``_retry`` is the one layer that
decides), never follows redirects (a redirected POST would lose its body) and reads the
whole answer so the keep-alive connection can be reused.

The default, :class:`StdlibHttpClient`, is ``http.client`` with a small keep-alive pool
and one guarantee ``urllib3`` does not give: ``timeout`` bounds the request's *whole*
life. A socket timeout applies to each read, so a server that answers one byte at a time
could hold a request forever; a watchdog thread shuts the socket down at the deadline.
"""

from __future__ import annotations

# Modules the send path would otherwise import lazily, on the first request, under the
# import lock: a fork at that moment leaves the lock held in the child, whose first request
# then hangs for ever. Imported here, in the parent, before any thread exists.
import encodings.idna  # noqa: F401  (socket.getaddrinfo encodes host names with it)
import heapq
import http.client
import io
import itertools
import os
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Protocol, Tuple, runtime_checkable
from urllib.parse import urlsplit

from journy_analytics._threads import signal_free
from journy_analytics._version import __version__

__all__ = ["USER_AGENT", "HttpClient", "Response", "StdlibHttpClient"]

USER_AGENT = f"journy-analytics-python/{__version__}"

# The first parse of an answer's headers imports parts of the email package: do it now.
http.client.parse_headers(io.BytesIO(b"Content-Type: application/json\r\n\r\n"))


@dataclass(frozen=True)
class Response:
    """What the worker needs of an answer. Header names are looked up case-insensitively."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> Optional[str]:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


@runtime_checkable
class HttpClient(Protocol):
    """Pluggable transport (``Analytics(http_client=...)``).

    ``send`` posts ``body`` to ``url`` with ``headers`` and returns a :class:`Response`
    for any HTTP answer (including 4xx/5xx). It raises any exception for "no answer"
    (connection refused or reset, DNS, TLS, timeout); the worker retries those. It is
    called from several worker threads at once, so it must be thread-safe, and it should
    give up after ``timeout`` seconds. ``close`` is called once, at ``close_and_flush``.
    """

    def send(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Response: ...

    def close(self) -> None: ...


class RequestTimeoutError(TimeoutError):
    """The whole request took longer than its timeout (e.g. a server dripping bytes)."""


class _Watchdog:
    """One daemon thread for the process: shuts down the socket of a request past its
    deadline, which makes the blocked read in the sender thread fail at once."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._heap: List[Tuple[float, int, _Connection]] = []
        self._ids = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def watch(self, deadline: float, conn: _Connection) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's thread is not here
            self.__init__()  # type: ignore[misc]
        with self._cond:
            first = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, next(self._ids), conn))
            if self._thread is None:
                thread = threading.Thread(
                    target=signal_free(self._run), name="journy-analytics-deadlines", daemon=True
                )
                try:
                    thread.start()
                except RuntimeError:  # interpreter shutdown: the socket timeout still applies
                    return
                self._thread = thread
            elif first:
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    _, _, conn = heapq.heappop(self._heap)
                    if not conn.done:
                        conn.expire()
                if self._heap:
                    # 50 ms granularity at least: finished requests are swept in bulk.
                    self._cond.wait(max(self._heap[0][0] - now, 0.05))
                else:
                    self._cond.wait()


_watchdog = _Watchdog()


class _Connection:
    __slots__ = ("conn", "done", "expired")

    def __init__(self, conn: http.client.HTTPConnection) -> None:
        self.conn = conn
        self.done = False
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class StdlibHttpClient:
    """Default transport: keep-alive connections to one endpoint, TLS verified, every
    request bounded by its timeout from connect to the last byte of the answer."""

    def __init__(
        self,
        maxsize: int = 8,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self._maxsize = maxsize
        self._ssl_context = ssl_context
        self._lock = threading.Lock()
        self._idle: Dict[Tuple[str, str, int], List[http.client.HTTPConnection]] = {}
        self._targets: Dict[str, Tuple[Tuple[str, str, int], str]] = {}

    def _target(self, url: str) -> Tuple[Tuple[str, str, int], str]:
        found = self._targets.get(url)
        if found is None:
            if len(self._targets) >= 256:  # URLs with a query (the REST API's) vary
                self._targets.clear()
            parts = urlsplit(url)
            scheme = parts.scheme
            port = parts.port or (443 if scheme == "https" else 80)
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            found = self._targets[url] = ((scheme, parts.hostname or "", port), path)
        return found

    def _new(self, key: Tuple[str, str, int], timeout: float) -> http.client.HTTPConnection:
        scheme, host, port = key
        if scheme == "https":
            context = self._ssl_context or _default_context()
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _checkout(self, key: Tuple[str, str, int]) -> Optional[http.client.HTTPConnection]:
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                conn = idle.pop()
                if _still_open(conn):
                    return conn
                conn.close()
        return None

    def _checkin(self, key: Tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._maxsize:
                idle.append(conn)
                return
        conn.close()

    def send(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
        return self.request("POST", url, body, headers, timeout)

    def request(
        self,
        method: str,
        url: str,
        body: Optional[bytes],
        headers: Mapping[str, str],
        timeout: float,
    ) -> Response:
        """``send`` with any method (the REST client's GET and DELETE); ``body`` None sends
        none."""
        deadline = time.monotonic() + timeout
        key, path = self._target(url)
        # A keep-alive connection the server closed meanwhile is found and dropped by
        # _checkout. There is no silent second try here: one layer retries (the worker's),
        # and it counts every attempt.
        conn = self._checkout(key) or self._new(key, timeout)
        return self._exchange(key, conn, method, path, body, headers, deadline, timeout)

    def _exchange(
        self,
        key: Tuple[str, str, int],
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        body: Optional[bytes],
        headers: Mapping[str, str],
        deadline: float,
        timeout: float,
    ) -> Response:
        watched = _Connection(conn)
        _watchdog.watch(deadline, watched)
        try:
            remaining = max(0.001, deadline - time.monotonic())
            conn.timeout = remaining
            if conn.sock is not None:
                conn.sock.settimeout(remaining)
            conn.request(method, path, body=body, headers=dict(headers))
            answer = conn.getresponse()
            data = answer.read()
            status = answer.status
            answer_headers = dict(answer.getheaders())
            # A 204 or 304 has no body by definition, so http.client reads none; a server
            # that sends one anyway (journy.io's document declares a body for a 204) would
            # leave it on the connection, where it would answer the next request.
            reusable = not answer.will_close and status not in (204, 304)
        except BaseException as exc:
            conn.close()
            if watched.expired:
                raise RequestTimeoutError(
                    f"no complete answer within http_request_timeout={timeout:g}s"
                ) from exc
            raise
        finally:
            watched.done = True
        if watched.expired:
            conn.close()
            raise RequestTimeoutError(
                f"no complete answer within http_request_timeout={timeout:g}s"
            )
        if reusable:
            self._checkin(key, conn)
        else:
            conn.close()
        return Response(status, answer_headers, data)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive socket that is readable was closed by the server (or sent
    something unasked): it cannot carry a request."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


_context: Optional[ssl.SSLContext] = None


def _default_context() -> ssl.SSLContext:
    global _context
    if _context is None:
        _context = ssl.create_default_context()
    return _context
