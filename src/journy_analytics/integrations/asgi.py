"""ASGI (Starlette, FastAPI, any ASGI 3 app): a scope per request, a flush at shutdown.

::

    from fastapi import FastAPI
    from journy_analytics.integrations.asgi import JournyMiddleware

    def identify(scope):  # the ASGI connection scope: headers, path, "user" (Starlette auth)
        return {"user_id": dict(scope["headers"]).get(b"x-user-id", b"").decode() or None}

    app = FastAPI()
    app.add_middleware(JournyMiddleware, identify=identify)

The journy scope holds Starlette's authenticated ``scope["user"].identity`` (``username``
where an older Starlette leaves ``identity`` unimplemented), if any (put
``JournyMiddleware`` inside Starlette's ``AuthenticationMiddleware``); ``identify(scope)``
(plain or ``async``) returns more of its arguments (``user_id``, ``anonymous_id``,
``group_id``, ``properties``, ``context``) or None, and its keys win. The ``__journey``
cookie journy.io's snippet sets gives ``anonymous_id``; a logged-out visitor with no cookie
and no id from ``identify`` gets a random one for the request, so ``track`` never raises.

At the ASGI lifespan shutdown (after the app's own shutdown handlers, so their events are
included) the client is flushed with ``await aflush(flush_timeout)``: the server's loop keeps
running other work meanwhile. Servers that do not run the lifespan protocol (uvicorn
``--lifespan off``) rely on the client's exit flush instead.
"""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, Dict, MutableMapping, Optional

from journy_analytics import _default
from journy_analytics._logging import logger
from journy_analytics._message import activate, deactivate
from journy_analytics.client import Analytics
from journy_analytics.integrations._common import (
    cookie_in_header,
    identify_result,
    someone,
    visitor_defaults,
)

__all__ = ["JournyMiddleware"]


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def starlette_user_scope(scope: Scope) -> Dict[str, Any]:
    """The default: Starlette's authenticated user (``AuthenticationMiddleware``), if any."""
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return {}
    try:
        identity = user.identity
    except (AttributeError, NotImplementedError):
        # Older Starlette releases leave BaseUser.identity unimplemented, SimpleUser included.
        identity = getattr(user, "username", None)
    return {"user_id": str(identity)} if identity else {}


def _cookie_header(scope: Scope) -> Optional[str]:
    """The ``__journey`` cookie of an ASGI connection, if it has one."""
    for name, value in scope.get("headers") or ():
        if name == b"cookie":
            found = cookie_in_header(value.decode("latin-1"))
            if found is not None:
                return found
    return None


class JournyMiddleware:
    """A pure ASGI middleware (no framework import): see the module doc."""

    def __init__(
        self,
        app: ASGIApp,
        identify: Optional[Callable[[Scope], Any]] = None,
        *,
        analytics: Optional[Analytics] = None,
        client: Optional[Analytics] = None,
        flush_timeout: float = 5.0,
    ) -> None:
        self.app = app
        self.identify = identify
        self.analytics = analytics if analytics is not None else client
        self.flush_timeout = flush_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, self._flushing_send(send))
            return
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        kwargs = await self._identify(scope)
        token = activate(**kwargs)
        try:
            await self.app(scope, receive, send)
        finally:
            deactivate(token)

    async def _identify(self, scope: Scope) -> Dict[str, Any]:
        defaults = visitor_defaults(starlette_user_scope(scope), _cookie_header(scope))
        if self.identify is None:
            return someone(defaults)
        result = self.identify(scope)
        if inspect.isawaitable(result):
            result = await result
        return someone(identify_result(lambda _: result, scope, defaults))

    def _flushing_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.aflush()
            await send(message)

        return lifespan_send

    async def aflush(self) -> bool:
        """Flush this middleware's client without blocking the loop (the shutdown flush)."""
        try:
            if self.analytics is not None:
                settled = await self.analytics.aflush(self.flush_timeout)
            else:
                settled = await _default.aflush(self.flush_timeout)
        except Exception:
            logger.exception("journy_analytics: flushing at ASGI lifespan shutdown failed")
            return False
        if not settled:
            logger.warning(
                "journy_analytics: events were still undelivered %.1f s into the ASGI "
                "shutdown flush; the client's exit flush tries once more",
                self.flush_timeout,
            )
        return settled
