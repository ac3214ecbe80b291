"""HTTP transport: the small protocol users can implement, and the default one.

The transport only moves bytes. It never retries (``_retry`` is the one layer that
decides), never follows redirects (a redirected POST would lose its body) and reads the
whole answer so the keep-alive connection can be reused.

The default, :class:`StdlibHttpClient`, connects with ``http.client`` (direct, through a
proxy, TLS), writes each request and reads its answer on the socket itself (see "one
HTTP/1.1 exchange" below), keeps a small keep-alive pool, and gives one guarantee
``urllib3`` does not: ``timeout`` bounds the request's *whole* life. A socket timeout
applies to each read, so a server that answers one byte at a time could hold a request
forever; a watchdog thread shuts the socket down at the deadline.
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

from journy_analytics._core import _network
from journy_analytics._core._network import NetworkSettings, Proxy
from journy_analytics._exceptions import ProxyConnectError, ProxyTunnelError, RequestTimeoutError
from journy_analytics._lifecycle import signal_free
from journy_analytics._version import __version__

__all__ = [
    "USER_AGENT",
    "Failure",
    "HttpClient",
    "NetworkSettings",
    "ProxyConnectError",
    "RequestTimeoutError",
    "Response",
    "StdlibHttpClient",
    "explain_failure",
]

USER_AGENT = f"journy-analytics-python/{__version__}"

# The first parse of an answer's headers imports parts of the email package: do it now.
http.client.parse_headers(io.BytesIO(b"Content-Type: application/json\r\n\r\n"))


@dataclass(frozen=True)
class Response:
    """What the worker needs of an answer. Header names are looked up case-insensitively."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: Set when a proxy answered instead of the server (a 407, or a refused CONNECT):
    #: the proxy's URL, without its password.
    proxy: Optional[str] = None

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


class _Watchdog:
    """One daemon thread for the process: shuts down the socket of a request past its
    deadline, which makes the blocked read in the sender thread fail at once."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._heap: List[Tuple[float, int, _Watched]] = []
        self._ids = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def watch(self, deadline: float, conn: _Watched) -> None:
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


class _Watched:
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


class _ProxyAnswered(Exception):
    """The proxy refused the CONNECT with an answer of its own (407, 403...)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class _Connection(http.client.HTTPConnection):
    """One keep-alive connection to a server, direct or through an http:// proxy.

    ``connect`` bounds the name lookup and the connect by ``deadline`` (set before each
    request), opens the ``CONNECT`` tunnel for an https:// server behind a proxy, and
    checks the server's certificate against the server's own name."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        proxy: Optional[Proxy],
        network: NetworkSettings,
    ) -> None:
        super().__init__(host, port)
        self.scheme = scheme
        self.proxy = proxy
        self.network = network
        self.deadline = 0.0
        default_port = 443 if scheme == "https" else 80
        name = f"[{host}]" if ":" in host else _ascii_host(host)
        self.host_header = name if port == default_port else f"{name}:{port}"

    def connect(self) -> None:
        proxy = self.proxy
        if proxy is None:
            sock = _network.connect(self.host, self.port, self.deadline, "host")
        else:
            try:
                sock = _network.connect(proxy.host, proxy.port, self.deadline, proxy.source)
            except _network.NameResolutionError:
                raise
            except OSError as exc:
                raise ProxyConnectError(
                    f"cannot connect to the proxy {proxy.display} ({type(exc).__name__}: "
                    f"{exc}); check `{proxy.source}`"
                ) from exc
        self.sock = sock
        if self.scheme != "https":
            return
        if proxy is not None:
            self._tunnel_through(proxy, sock)
        context = self.network.tls_context()
        self.sock = context.wrap_socket(sock, server_hostname=self.host)

    def _tunnel_through(self, proxy: Proxy, sock: socket.socket) -> None:
        target = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", f"User-Agent: {USER_AGENT}"]
        authorization = proxy.authorization()
        if authorization is not None:
            lines.append(f"Proxy-Authorization: {authorization}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        answer = http.client.HTTPResponse(sock, method="CONNECT")
        answer.begin()
        if answer.status == 200:
            return
        body = answer.read() if answer.length else b""
        headers = dict(answer.getheaders())
        if answer.status >= 500:  # 502 from most proxies, 500 from tinyproxy
            raise ProxyTunnelError(
                f"the proxy {proxy.display} could not reach {target} "
                f"({answer.status} {answer.reason}): the server looks down from the proxy"
            )
        raise _ProxyAnswered(Response(answer.status, headers, body, proxy=proxy.display))


class StdlibHttpClient:
    """Default transport: keep-alive connections to one endpoint, TLS verified, every
    request bounded by its timeout from the name lookup to the last byte of the answer.

    ``network`` (a :class:`NetworkSettings`) says how to reach the server: the proxy
    (from the environment by default) and the trust. ``ssl_context`` alone is a shortcut
    for ``network=NetworkSettings(ssl_context=...)``."""

    def __init__(
        self,
        maxsize: int = 8,
        ssl_context: Optional[ssl.SSLContext] = None,
        network: Optional[NetworkSettings] = None,
    ) -> None:
        self._maxsize = maxsize
        self.network = network if network is not None else NetworkSettings(ssl_context=ssl_context)
        self._lock = threading.Lock()
        self._idle: Dict[Tuple[str, str, int], List[_Connection]] = {}
        self._targets: Dict[str, Tuple[Tuple[str, str, int], str]] = {}

    def __repr__(self) -> str:
        return f"StdlibHttpClient(maxsize={self._maxsize}, network={self.network!r})"

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

    def _new(self, key: Tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        proxy = self.network.proxy_for(scheme, host, port)
        return _Connection(scheme, host, port, proxy, self.network)

    def _checkout(self, key: Tuple[str, str, int]) -> Optional[_Connection]:
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                conn = idle.pop()
                if _still_open(conn):
                    return conn
                conn.close()
        return None

    def _checkin(self, key: Tuple[str, str, int], conn: _Connection) -> None:
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
        none. Raises for "no answer"; :func:`explain_failure` says what such an error means."""
        deadline = time.monotonic() + timeout
        key, path = self._target(url)
        # A keep-alive connection the server closed meanwhile is found and dropped by
        # _checkout. There is no silent second try here: one layer retries (the caller's),
        # and it counts every attempt.
        conn = self._checkout(key) or self._new(key)
        return self._exchange(key, conn, method, url, path, body, headers, deadline, timeout)

    def _exchange(
        self,
        key: Tuple[str, str, int],
        conn: _Connection,
        method: str,
        url: str,
        path: str,
        body: Optional[bytes],
        headers: Mapping[str, str],
        deadline: float,
        timeout: float,
    ) -> Response:
        watched = _Watched(conn)
        _watchdog.watch(deadline, watched)
        proxy = conn.proxy
        sent = dict(headers)
        if proxy is not None and conn.scheme == "http":
            # Plain http:// through the proxy: the request line carries the whole URL.
            path = url
            authorization = proxy.authorization()
            if authorization is not None:
                sent["Proxy-Authorization"] = authorization
        try:
            remaining = max(0.001, deadline - time.monotonic())
            conn.deadline = deadline
            if conn.sock is None:
                conn.connect()
            sock = conn.sock
            sock.settimeout(remaining)
            sock.sendall(_request_bytes(method, conn, path, body, sent))
            status, answer_headers, data, reusable = _read_answer(sock)
        except _ProxyAnswered as refused:
            conn.close()
            return refused.response
        except BaseException as exc:
            conn.close()
            # The socket's own timeout is the same deadline (it is set to what is left of
            # it), and may fire a moment before the watchdog: one error for both, on every
            # Python (socket.timeout is not TimeoutError before 3.10).
            expired = watched.expired or isinstance(exc, socket.timeout)
            if expired and not isinstance(exc, _network.NameResolutionError):
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
        if status == 407 and proxy is not None:
            return Response(status, answer_headers, data, proxy=proxy.display)
        return Response(status, answer_headers, data)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


# -- one HTTP/1.1 exchange ----------------------------------------------------------------
#
# http.client's request and response objects (header objects, the email parser, a file
# object per answer) were more than half of the CPU a batch cost; with this exchange a
# backlog drains at half the CPU per event (docs/benchmarks.md). A POST to a collector is
# one small request and one small answer, so the exchange is done here on the socket,
# framed by RFC 9112: Content-Length, chunked, or (HTTP/1.0 style) until the server
# closes. http.client still opens the connection (``_Connection.connect``: proxy, tunnel,
# TLS) and names the errors: RemoteDisconnected, BadStatusLine, IncompleteRead,
# LineTooLong, as it would have raised them.

_MAX_HEADER_BYTES = 64 * 1024
_MAX_HEADERS = 100
_RECV = 65536
_BODY_METHODS = ("POST", "PUT", "PATCH")


def _ascii_host(host: str) -> str:
    try:
        host.encode("ascii")
        return host
    except UnicodeEncodeError:
        return host.encode("idna").decode("ascii")


def _request_bytes(
    method: str, conn: _Connection, path: str, body: Optional[bytes], headers: Dict[str, str]
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1\r\nHost: {conn.host_header}\r\n"]
    for name, value in headers.items():
        value = str(value)
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            # A header a caller built from untrusted text must not add lines of its own.
            raise ValueError(f"invalid HTTP header {name!r}: it holds a line break")
        lines.append(f"{name}: {value}\r\n")
    if "Accept-Encoding" not in headers:
        lines.append("Accept-Encoding: identity\r\n")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n")
    elif method in _BODY_METHODS:
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1")
    return head + body if body else head


class _Reader:
    """The bytes of one answer: what the last recv() brought beyond what was consumed."""

    __slots__ = ("buffer", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def more(self) -> bool:
        chunk = self.sock.recv(_RECV)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def head(self) -> bytes:
        """Up to and without the blank line that ends a header block."""
        start = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n", start)
            if (end if end >= 0 else len(self.buffer)) > _MAX_HEADER_BYTES:
                raise http.client.LineTooLong("header block")
            if end >= 0:
                block, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
                return block
            start = max(0, len(self.buffer) - 3)
            if not self.more():
                if not self.buffer:
                    raise http.client.RemoteDisconnected(
                        "Remote end closed connection without response"
                    )
                if not self.buffer.startswith(b"HTTP/"):
                    raise http.client.BadStatusLine(repr(self.buffer[:80]))
                raise http.client.IncompleteRead(self.buffer)

    def exactly(self, length: int) -> bytes:
        while len(self.buffer) < length:
            if not self.more():
                raise http.client.IncompleteRead(self.buffer, length - len(self.buffer))
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return data

    def line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                data, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
                return data
            if len(self.buffer) > _MAX_HEADER_BYTES:
                raise http.client.LineTooLong("chunk size")
            if not self.more():
                raise http.client.IncompleteRead(self.buffer)

    def chunked(self) -> bytes:
        parts: List[bytes] = []
        while True:
            size_line = self.line().split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise http.client.IncompleteRead(b"".join(parts)) from None
            if size == 0:
                while self.line():  # trailers, up to the blank line
                    pass
                return b"".join(parts)
            parts.append(self.exactly(size))
            self.exactly(2)  # the CRLF after each chunk

    def rest(self) -> bytes:
        while self.more():
            pass
        data, self.buffer = self.buffer, b""
        return data


def _parse_status(line: bytes) -> Tuple[bytes, int]:
    version, _, rest = line.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/") or len(code) != 3 or not code.isdigit():
        raise http.client.BadStatusLine(repr(line[:80]))
    return version, int(code)


def _read_answer(sock: socket.socket) -> Tuple[int, Dict[str, str], bytes, bool]:
    """Status, headers, body, and whether the connection can carry another request."""
    reader = _Reader(sock)
    while True:
        lines = reader.head().split(b"\r\n")
        version, status = _parse_status(lines[0])
        if status < 100 or status >= 200 or status == 101:
            break
        # An interim answer (100 Continue, 103 Early Hints): the real one follows.
    if len(lines) > _MAX_HEADERS + 1:
        raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
    headers: Dict[str, str] = {}
    last = ""
    for raw in lines[1:]:
        text = raw.decode("latin-1")
        if text[:1] in (" ", "\t") and last:
            headers[last] += " " + text.strip()  # an obsolete folded line continues
            continue
        name, colon, value = text.partition(":")
        if colon:
            last = name.strip()
            headers[last] = value.strip()
    lowered = {name.lower(): value for name, value in headers.items()}
    connection = lowered.get("connection", "").lower()
    # HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 only when asked to.
    reusable = "keep-alive" in connection if version == b"HTTP/1.0" else "close" not in connection
    try:
        if status in (204, 304):
            # No body by definition; a server that sends one anyway (journy.io's document
            # declares a body for a 204) would leave it on the connection, where it would
            # answer the next request.
            data, reusable = b"", False
        elif "chunked" in lowered.get("transfer-encoding", "").lower():
            data = reader.chunked()
        elif "content-length" in lowered:
            text = lowered["content-length"]
            if not (text.isascii() and text.isdigit()):  # a sign, a list...: not HTTP
                raise http.client.HTTPException(f"bad Content-Length {text!r}")
            data = reader.exactly(int(text))
        else:
            data, reusable = reader.rest(), False
    except (ConnectionError, http.client.IncompleteRead) as exc:
        # The status is the answer: a server or proxy that closes the connection after its
        # headers (tinyproxy's 407 resets it) still answered.
        partial = getattr(exc, "partial", b"")
        data = partial if isinstance(partial, bytes) else b""
        reusable = False
    if reader.buffer:
        reusable = False  # bytes nobody asked for would answer the next request
    return status, headers, data, reusable


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


@dataclass(frozen=True)
class Failure:
    """What an error raised by a transport means: ``text`` says what happened and what to
    check (never a key or a password); ``outage`` is True when the server (or the proxy)
    is down or unreachable, a state that passes by itself, and False for a failure that
    retrying will not fix soon (TLS trust, an answer that is not HTTP)."""

    text: str
    outage: bool


_CERTIFICATE_HINT = (
    "if a company proxy or firewall inspects TLS, trust its CA: "
    "ssl_context=ssl.create_default_context(cafile='company-ca.pem'), "
    "or SSL_CERT_FILE=company-ca.pem"
)


def explain_failure(error: BaseException, host: str = "the server") -> Failure:
    """Name the failure behind ``error`` (raised by ``send``/``request``) for ``host``."""
    seen = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _explain_one(current, host)
        if found is not None:
            return found
        reason = getattr(current, "reason", None)
        current = (
            reason
            if isinstance(reason, BaseException)
            else (current.__cause__ or current.__context__)
        )
    return Failure(f"no answer from {host} ({type(error).__name__}: {_one_line(error)})", True)


def _explain_one(error: BaseException, host: str) -> Optional[Failure]:
    kind = type(error).__name__
    if isinstance(error, (_network.NameResolutionError, ProxyTunnelError, ProxyConnectError)):
        return Failure(str(error), True)
    if isinstance(error, RequestTimeoutError):
        return Failure(f"no answer from {host} ({error})", True)
    if isinstance(error, ssl.SSLCertVerificationError) or kind == "CertificateError":
        why = getattr(error, "verify_message", None) or _one_line(error)
        code = getattr(error, "reason", None)
        label = f"{kind} {code}" if isinstance(code, str) else kind
        return Failure(
            f"the TLS certificate of {host} was not accepted ({label}: {why}); "
            + _CERTIFICATE_HINT,
            False,
        )
    if isinstance(error, ssl.SSLError) or kind in ("SSLError", "SSLCertVerificationError"):
        text = _one_line(error)
        hint = (
            "; does it speak plain http://? check the scheme of `host`"
            if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text
            else ""
        )
        return Failure(f"TLS with {host} failed ({kind}: {text}){hint}", False)
    if isinstance(error, (http.client.RemoteDisconnected, http.client.IncompleteRead)):
        return Failure(f"no answer from {host} (the connection closed: {kind})", True)
    if isinstance(error, http.client.HTTPException):
        return Failure(
            f"{host} answered something that is not HTTP ({kind}: {_one_line(error)}): "
            "check `host` and its port",
            False,
        )
    return None


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
