"""HTTP transport: the small protocol users can implement, and the urllib3 default.

The transport only moves bytes. It never retries (the worker's retry policy is the one
layer that does), never follows redirects (a redirected POST would lose its body) and
reads the whole answer so the keep-alive connection goes back to the pool.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import urllib3

from journy_analytics._version import __version__

try:  # Protocol is in typing from 3.8; runtime_checkable lets users isinstance() it.
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol, runtime_checkable  # type: ignore[assignment]

__all__ = ["USER_AGENT", "HttpClient", "Response", "Urllib3HttpClient"]

USER_AGENT = f"journy-analytics-python/{__version__}"


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
    called from several worker threads at once, so it must be thread-safe. ``close`` is
    called once, at ``close_and_flush``.
    """

    def send(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Response: ...

    def close(self) -> None: ...


class Urllib3HttpClient:
    """Default transport: a urllib3 connection pool per endpoint, keep-alive, TLS verified.

    The client only ever posts to one URL, so the pool and the parsed path are kept per
    URL: a request skips PoolManager's URL parsing and pool lookup.
    """

    def __init__(self, maxsize: int = 8, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        kwargs: dict[str, Any] = {
            "maxsize": maxsize,
            "block": False,
            "retries": False,
            "cert_reqs": "CERT_REQUIRED",
        }
        if ssl_context is not None:
            kwargs["ssl_context"] = ssl_context
        self._pool = urllib3.PoolManager(**kwargs)
        self._endpoints: dict[str, tuple[Any, str]] = {}
        self._timeouts: dict[float, urllib3.Timeout] = {}

    def _endpoint(self, url: str) -> tuple[Any, str]:
        found = self._endpoints.get(url)
        if found is None:
            parts = urllib3.util.parse_url(url)
            pool = self._pool.connection_from_url(url)
            found = (pool, parts.request_uri)
            self._endpoints[url] = found
        return found

    def send(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
        pool, path = self._endpoint(url)
        limit = self._timeouts.get(timeout)
        if limit is None:
            limit = self._timeouts[timeout] = urllib3.Timeout(total=timeout)
        answer = pool.urlopen(
            "POST",
            path,
            body=body,
            headers=headers,
            timeout=limit,
            retries=False,
            redirect=False,
            assert_same_host=False,
            preload_content=True,
            decode_content=False,
        )
        return Response(answer.status, answer.headers, answer.data or b"")

    def close(self) -> None:
        self._endpoints.clear()
        self._pool.clear()
