"""segment's ``proxies`` setting (requests' format), read into the SDK's ``proxy=``."""

from __future__ import annotations

from typing import Mapping, Optional
from urllib.parse import urlsplit

__all__ = ["proxy_for"]

_KEYS = ("http", "https", "all")


def proxy_for(proxies: Mapping[str, str], endpoint: str) -> Optional[str]:
    """The proxy URL for ``endpoint`` from a requests-style ``proxies`` dict, or None when
    no entry matches its scheme (requests then reads the environment, and so do we)."""
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
    if urlsplit(url).scheme != "http":
        raise ValueError(
            f"proxy {urlsplit(url).scheme}://...: only http:// proxies are supported (not "
            "SOCKS or https://); https:// requests still go through it encrypted (CONNECT)"
        )
    return url
