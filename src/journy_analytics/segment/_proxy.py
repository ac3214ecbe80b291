"""segment's ``proxies`` setting (requests' format) on urllib3's ProxyManager.

urllib3 is not a dependency of journy-analytics: it is imported only when a client is
created with ``proxies``, so ``import journy_analytics.segment`` works in a clean install.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit

from journy_analytics._transport import Response

__all__ = ["ProxyHttpClient", "proxy_for"]

_KEYS = ("http", "https", "all")


def proxy_for(proxies: Mapping[str, str], endpoint: str) -> Optional[str]:
    """The proxy URL for ``endpoint`` from a requests-style ``proxies`` dict, or None to go
    direct (as requests does when no entry matches the scheme)."""
    if not isinstance(proxies, Mapping):
        raise ValueError(
            "proxies must be a dict like {'https': 'http://proxy.example.com:3128'}, "
            f"not {type(proxies).__name__}"
        )
    unknown = [k for k in proxies if k not in _KEYS]
    if unknown:
        raise ValueError(
            f"proxies key {unknown[0]!r} is not supported; use 'http', 'https' or 'all' "
            "(per-host keys like 'https://host' are requests-only)"
        )
    scheme = urlsplit(endpoint).scheme
    url = proxies.get(scheme) or proxies.get("all")
    if not url:
        return None
    if not isinstance(url, str):
        raise ValueError(f"proxies[{scheme!r}] must be a URL string, not {url!r}")
    if "://" not in url:
        url = "http://" + url  # requests' reading of 'host:port'
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(
            f"proxy {url!r}: only http:// and https:// proxies are supported (not SOCKS)"
        )
    return url


class ProxyHttpClient:
    """An ``HttpClient`` that posts through one HTTP(S) proxy (CONNECT for https targets)."""

    def __init__(self, proxy_url: str, maxsize: int = 1) -> None:
        self.proxy_url = proxy_url
        self._maxsize = maxsize
        self._make()

    def _make(self) -> None:
        urllib3 = _urllib3()
        self._pid = os.getpid()
        self._timeout = urllib3.Timeout
        self._pool = urllib3.ProxyManager(
            self.proxy_url,
            maxsize=self._maxsize,
            block=False,
            retries=False,
            cert_reqs="CERT_REQUIRED",
        )

    def send(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
        if self._pid != os.getpid():
            self._make()  # a forked child must not share its parent's sockets
        answer: Any = self._pool.urlopen(
            "POST",
            url,
            body=body,
            headers=dict(headers),
            timeout=self._timeout(total=timeout),
            retries=False,
            redirect=False,
            preload_content=True,
            decode_content=False,
        )
        return Response(answer.status, answer.headers, answer.data or b"")

    def close(self) -> None:
        self._pool.clear()


def _urllib3() -> Any:
    try:
        import urllib3
    except ImportError:
        raise ImportError(
            "segment's proxies setting needs urllib3, which journy-analytics does not install: "
            "pip install urllib3 (or leave proxies unset)"
        ) from None
    return urllib3
