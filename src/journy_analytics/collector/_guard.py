"""What keeps a web page from driving the collector: a Host check and a cross-site check.

A collector started without ``--write-key`` accepts any request, and a browser will send
requests to it on behalf of any page the developer opens. Two attacks follow, and each
check stops one:

- **Cross-site requests.** A page on another site can POST to ``http://127.0.0.1:8765``
  with a "simple" request (``text/plain``, form data, no body) that the browser sends
  without asking first: it could reset the store, switch faults on or inject events. So
  a request that changes something is refused when the browser says it comes from
  another origin (``Origin``, ``Sec-Fetch-Site``), and a ``POST`` to ``/api/*`` must be
  ``application/json``, which a browser sends cross-site only after a CORS preflight
  that the collector never grants.
- **DNS rebinding.** A page on ``evil.example`` whose name is made to resolve to
  127.0.0.1 is same-origin with its own requests, so it could read ``/api/events``. Its
  requests carry ``Host: evil.example``: the collector answers only the names it is
  reached by (loopback names, the bound address, the address the connection arrived on,
  and names given with ``--allow-host``).

Server-side clients (this SDK, the segment shim, analytics-node, curl) send no ``Origin``
and no ``Sec-Fetch-Site`` and use one of those names, so nothing changes for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import orjson
from aiohttp import web

if TYPE_CHECKING:  # names of aiohttp's typing module, for annotations only
    from aiohttp.typedefs import Handler, Middleware

__all__ = ["LOOPBACK_NAMES", "host_name", "request_guard"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# Addresses that mean "every interface": a Host header never names them.
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
# Methods a browser may send without a preflight, or that change nothing.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What a browser says of a request's origin that is not someone else's page.
_OWN_SITE = frozenset({"same-origin", "none"})


def host_name(value: str) -> str:
    """The name part of a ``Host`` header or an address, lower-cased, without the port,
    the IPv6 brackets or a trailing dot: ``"[::1]:8765"`` -> ``"::1"``."""
    value = value.strip().lower()
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else value[1:]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def _refuse(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        body=orjson.dumps({"success": False, "code": code, "message": message}),
        status=status,
        content_type="application/json",
    )


def request_guard(bound_host: str, allowed_hosts: Iterable[str] = ()) -> Middleware:
    """The middleware refusing what a web page could make a browser send (see the module
    doc). ``bound_host`` is the address the server listens on; ``allowed_hosts`` more
    names it is reached by (a docker-compose service name, a LAN host name)."""
    names = set(LOOPBACK_NAMES)
    names.update(host_name(h) for h in allowed_hosts)
    bound = host_name(bound_host)
    if bound not in _WILDCARDS:
        names.add(bound)
    allowed = frozenset(names)

    def known(name: str, request: web.Request) -> bool:
        if name in allowed or name.endswith(".localhost"):  # *.localhost is loopback
            return True
        # Reached by an address of this machine (a collector bound to 0.0.0.0): a page
        # cannot make a browser send an IP literal for its own name.
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if not sockname:
            return False
        local = str(sockname[0]).lower()
        if local.startswith("::ffff:"):  # an IPv4 client of a socket bound to "::"
            local = local[len("::ffff:") :]
        return name == local

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if host is not None and not known(host_name(host), request):
            return _refuse(
                421,
                "unknown_host",
                f"this collector is not served as {host!r}: use http://127.0.0.1:PORT or "
                "localhost, or start it with --allow-host NAME for another name it is "
                "reached by",
            )
        if request.method in _SAFE_METHODS:
            return await handler(request)
        origin = request.headers.get("Origin")
        site = request.headers.get("Sec-Fetch-Site")
        own_origin = f"{request.scheme}://{host or ''}".lower()
        if (site is not None and site.lower() not in _OWN_SITE) or (
            origin is not None and origin.lower() != own_origin
        ):
            return _refuse(
                403,
                "cross_site",
                f"a request from another site ({origin or site}) cannot change this "
                "collector; send it from a program or from the inspector's own page",
            )
        if (
            request.method == "POST"
            and request.path.startswith("/api/")
            and request.content_type != "application/json"
        ):
            return _refuse(
                415,
                "not_json",
                f"{request.method} {request.path} takes Content-Type: application/json "
                f"(got {request.headers.get('Content-Type') or 'none'}); with curl: "
                "-H 'Content-Type: application/json'",
            )
        return await handler(request)

    return guard
