"""How a connection reaches a server: proxy, trust (TLS) and a bounded name lookup.

One small settings value, :class:`NetworkSettings`, shared by every sender of the SDK (the
batch client, the Segment drop-in, ``journy import`` and the REST API client): each builds
``StdlibHttpClient(network=settings)`` and gets the same proxy rules, the same trust and the
same failure words.

Proxies follow ``urllib.request`` and requests, which is what Python users expect:

* ``https_proxy`` / ``HTTPS_PROXY`` for https:// URLs, ``http_proxy`` / ``HTTP_PROXY`` for
  http:// ones, ``all_proxy`` / ``ALL_PROXY`` for both; the lower-case name wins over the
  upper-case one, and a lower-case name set to "" switches the variable off (urllib's rule).
  Inside a CGI request (``REQUEST_METHOD`` is set) ``HTTP_PROXY`` is ignored (httpoxy).
* ``no_proxy`` / ``NO_PROXY``: a comma-separated list; ``*`` bypasses the proxy for every
  host; ``example.com`` (or ``.example.com``) matches that host and its subdomains at a dot
  boundary; ``host:port`` matches only that port; an IP address matches itself and a CIDR
  block (``10.0.0.0/8``) the addresses in it (requests' extension).
* An explicit proxy (``Analytics(proxy=...)``) wins over all of these; ``proxy=None`` reads
  none of them.

Only ``http://`` proxies are supported (as most company proxies are): https:// targets go
through a ``CONNECT`` tunnel and TLS runs end to end, checked against the real host name.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
import ssl
import threading
import time
from typing import Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

from journy_analytics._exceptions import NameResolutionError, ProxyTunnelError
from journy_analytics._lifecycle import signal_free

__all__ = [
    "PROXY_FROM_ENV",
    "NameResolutionError",
    "NetworkSettings",
    "Proxy",
    "ProxyTunnelError",
    "bypasses_proxy",
    "environment_proxies",
    "resolve",
]


class _FromEnvironment:
    """The default of ``proxy=``: read HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY."""

    _instance: Optional[_FromEnvironment] = None

    def __new__(cls) -> _FromEnvironment:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "PROXY_FROM_ENV"


#: ``proxy=PROXY_FROM_ENV`` (the default): the proxy comes from the environment variables.
PROXY_FROM_ENV = _FromEnvironment()

ProxySetting = Union[str, None, _FromEnvironment]


class Proxy:
    """One http:// proxy. Its password is kept only inside the ``Proxy-Authorization``
    value: ``str()``, ``repr()`` and every message show ``display`` (no password)."""

    __slots__ = ("_authorization", "display", "host", "port", "source")

    def __init__(self, url: str, source: str = "proxy") -> None:
        text = url.strip()
        if "://" not in text:
            text = "http://" + text  # 'host:port', as urllib and requests read it
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        where = f"{source}={_without_password(text)!r}"
        if scheme != "http":
            raise ValueError(
                f"{where}: only http:// proxies are supported (not {scheme}://); a company "
                "proxy usually listens on http://, and https:// requests still go through it "
                "encrypted end to end (CONNECT)"
            )
        try:
            port = parts.port or 80
        except ValueError:
            raise ValueError(f"{where}: the port is not a number") from None
        if not parts.hostname:
            raise ValueError(f"{where}: no proxy host, e.g. http://proxy.example.com:3128")
        self.host = parts.hostname
        self.port = port
        self.source = source
        self._authorization: Optional[str] = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        user = f"{parts.username}@" if parts.username is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.display = f"http://{user}{host}:{port}"

    def authorization(self) -> Optional[str]:
        """The ``Proxy-Authorization`` header value, or None without credentials."""
        return self._authorization

    def __repr__(self) -> str:
        return f"Proxy({self.display!r})"

    __str__ = __repr__


def _without_password(url: str) -> str:
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return f"{parts.scheme}://{parts.username}:***@{netloc}"


def environment_proxies(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """``{"https": url, "http": url, "all": url, "no": "list"}`` from the environment, with
    urllib's precedence: the lower-case variable wins, and an empty one unsets."""
    env = os.environ if environ is None else environ
    found: Dict[str, str] = {}
    for name, value in env.items():
        lowered = name.lower()
        if value and lowered.endswith("_proxy"):
            found[lowered[:-6]] = value
    if "REQUEST_METHOD" in env:
        # In a CGI script HTTP_PROXY comes from the client's "Proxy:" header (httpoxy).
        found.pop("http", None)
    for name, value in env.items():
        if name.endswith("_proxy") and name == name.lower():
            if value:
                found[name[:-6]] = value
            else:
                found.pop(name[:-6], None)
    return found


def bypasses_proxy(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``no_proxy`` (NO_PROXY's value) sends ``host:port`` direct."""
    entries = [e.strip() for e in no_proxy.replace(" ", ",").split(",") if e.strip()]
    if "*" in entries:
        return True
    host = host.lower().strip("[]").rstrip(".")
    try:
        address: Optional[ipaddress._BaseAddress] = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in entries:
        name, entry_port = _split_port(entry.lower())
        if entry_port is not None and entry_port != port:
            continue
        name = name.strip("[]")
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _split_port(entry: str) -> Tuple[str, Optional[int]]:
    if entry.startswith("["):  # [::1]:8080
        close = entry.find("]")
        rest = entry[close + 1 :]
        if rest.startswith(":") and rest[1:].isdigit():
            return entry[: close + 1], int(rest[1:])
        return entry, None
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        if port.isdigit():
            return name, int(port)
    return entry, None


class NetworkSettings:
    """Proxy and trust for the connections of one client.

    ``proxy``: a URL such as ``"http://user:pass@proxy.example.com:3128"`` (wins over the
    environment), ``None`` (always direct, the environment is not read) or
    ``PROXY_FROM_ENV`` (the default). ``ssl_context``: the trust for https:// servers (a
    company CA); by default ``ssl.create_default_context()``, which honours
    ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` as the standard library does.
    ``source`` names the setting in error messages (``proxy``, ``proxies``...).
    """

    __slots__ = ("_context", "_explicit", "_from_env", "_lock", "_proxies", "ssl_context")

    def __init__(
        self,
        proxy: ProxySetting = PROXY_FROM_ENV,
        ssl_context: Optional[ssl.SSLContext] = None,
        source: str = "proxy",
    ) -> None:
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise ValueError(
                "ssl_context must be an ssl.SSLContext, e.g. "
                "ssl.create_default_context(cafile='company-ca.pem'), "
                f"not {type(ssl_context).__name__}"
            )
        self._from_env = isinstance(proxy, _FromEnvironment)
        self._explicit: Optional[Proxy] = None
        if isinstance(proxy, str):
            self._explicit = Proxy(proxy, source)
        elif proxy is not None and not self._from_env:
            raise ValueError(
                f"{source} must be a proxy URL such as 'http://proxy.example.com:3128', or "
                f"None for no proxy, not {type(proxy).__name__}"
            )
        self.ssl_context = ssl_context
        self._lock = threading.Lock()
        self._proxies: Dict[Tuple[str, str, int], Optional[Proxy]] = {}
        self._context: Optional[Tuple[Tuple[Optional[str], Optional[str]], ssl.SSLContext]] = None

    def __repr__(self) -> str:
        proxy = (
            "PROXY_FROM_ENV"
            if self._from_env
            else (repr(self._explicit.display) if self._explicit else "None")
        )
        trust = "custom" if self.ssl_context is not None else "default"
        return f"NetworkSettings(proxy={proxy}, ssl_context={trust})"

    def proxy_for(self, scheme: str, host: str, port: int) -> Optional[Proxy]:
        """The proxy for a request to ``scheme://host:port``, or None to go direct. The
        environment is read the first time a target is asked for."""
        if not self._from_env:
            return self._explicit
        key = (scheme, host, port)
        with self._lock:
            if key in self._proxies:
                return self._proxies[key]
        found = _proxy_from_environment(scheme, host, port)
        with self._lock:
            self._proxies[key] = found
        return found

    def tls_context(self) -> ssl.SSLContext:
        """The given ``ssl_context``, or the default trust (built once for the values of
        SSL_CERT_FILE and SSL_CERT_DIR it was built with)."""
        if self.ssl_context is not None:
            return self.ssl_context
        return default_context()


def _proxy_from_environment(scheme: str, host: str, port: int) -> Optional[Proxy]:
    found = environment_proxies()
    url = found.get(scheme) or found.get("all")
    if not url:
        return None
    if bypasses_proxy(host, port, found.get("no", "")):
        return None
    variable = f"{scheme.upper()}_PROXY" if found.get(scheme) else "ALL_PROXY"
    return Proxy(url, variable)


_contexts: Dict[Tuple[Optional[str], Optional[str]], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def default_context() -> ssl.SSLContext:
    """``ssl.create_default_context()``, one per value of SSL_CERT_FILE / SSL_CERT_DIR."""
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    context = _contexts.get(key)
    if context is None:
        with _contexts_lock:
            context = _contexts.get(key)
            if context is None:
                context = _contexts[key] = ssl.create_default_context()
    return context


# -- a name lookup bounded by the request's deadline ---------------------------------------

AddrInfo = List[Tuple[int, int, int, str, Tuple[object, ...]]]


class _Lookup:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Optional[AddrInfo] = None
        self.error: Optional[BaseException] = None


_lookups: Dict[Tuple[str, int], _Lookup] = {}
_lookups_lock = threading.Lock()
_lookups_pid = os.getpid()


def resolve(host: str, port: int, deadline: float, what: str = "host") -> AddrInfo:
    """``getaddrinfo(host, port)`` that gives up at ``deadline`` (``time.monotonic()``).

    ``getaddrinfo`` cannot be interrupted and runs before there is a socket to shut down,
    so it runs in a helper thread and the caller waits at most until the deadline. Callers
    asking for the same name while a lookup is under way share it: a resolver that hangs
    costs one thread per name, not one per request. ``what`` names the setting to check
    in the error (``host``, or the proxy's setting).
    """
    global _lookups_pid
    try:
        ipaddress.ip_address(host)
        numeric = True
    except ValueError:
        numeric = False
    if numeric:  # no lookup to wait for
        return _getaddrinfo(host, port)
    key = (host, port)
    with _lookups_lock:
        if _lookups_pid != os.getpid():  # a forked child: the parent's helpers are not here
            _lookups.clear()
            _lookups_pid = os.getpid()
        lookup = _lookups.get(key)
        start = lookup is None
        if lookup is None:
            lookup = _lookups[key] = _Lookup()
    if start:
        thread = threading.Thread(
            target=signal_free(_run_lookup),
            args=(key, lookup),
            name="journy-analytics-resolve",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # interpreter shutdown: resolve here, unbounded as before
            _run_lookup(key, lookup)
    if not lookup.done.wait(max(0.0, deadline - time.monotonic())):
        raise NameResolutionError(
            f"cannot resolve {host}: no answer from the name server (DNS) within the "
            f"request's timeout; check `{what}` and this machine's DNS"
        )
    if lookup.error is not None:
        error = lookup.error
        if isinstance(error, socket.gaierror):
            raise NameResolutionError(
                f"cannot resolve {host}: check `{what}` ({error.strerror or error})"
            ) from error
        raise error
    assert lookup.result is not None
    return lookup.result


def _run_lookup(key: Tuple[str, int], lookup: _Lookup) -> None:
    try:
        lookup.result = _getaddrinfo(*key)
    except BaseException as exc:
        lookup.error = exc
    finally:
        with _lookups_lock:
            if _lookups.get(key) is lookup:
                del _lookups[key]
        lookup.done.set()


def _getaddrinfo(host: str, port: int) -> AddrInfo:
    # Looked up on the module at call time: tests replace it with one that blocks.
    return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)  # type: ignore[return-value]


def connect(host: str, port: int, deadline: float, what: str = "host") -> socket.socket:
    """A TCP connection to ``host:port``, name lookup and connect both bounded by
    ``deadline``; each address is tried in turn, as ``socket.create_connection`` does."""
    addresses = resolve(host, port, deadline, what)
    error: Optional[OSError] = None
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
    if error is None:
        raise NameResolutionError(f"cannot resolve {host}: no address; check `{what}`")
    raise error
