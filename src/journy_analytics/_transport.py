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
    """Default transport: one urllib3 connection pool, keep-alive, TLS verified."""

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

    def send(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
        answer = self._pool.request(
            "POST",
            url,
            body=body,
            headers=dict(headers),
            timeout=urllib3.Timeout(total=timeout),
            retries=False,
            redirect=False,
            preload_content=True,
        )
        return Response(answer.status, dict(answer.headers), answer.data or b"")

    def close(self) -> None:
        self._pool.clear()
