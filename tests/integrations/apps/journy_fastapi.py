"""A FastAPI app with the journy ASGI middleware. Its client has exit_flush_timeout=0, so
whatever arrives after SIGTERM was delivered by the lifespan shutdown flush, not atexit."""

import asyncio
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware

from journy_analytics import Analytics
from journy_analytics._message._scope import active_scope
from journy_analytics.integrations.asgi import JournyMiddleware

analytics = Analytics(
    write_key="test-key",
    host=os.environ["JOURNY_TEST_COLLECTOR"],
    flush_interval=60.0,
    exit_flush_timeout=0.0,
)


class HeaderAuth(AuthenticationBackend):
    """Starlette's real authentication, from a header (a stand-in for a session or token)."""

    async def authenticate(self, conn):
        name = conn.headers.get("x-user-id")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


async def identify(scope):
    # The user comes from Starlette's authentication (scope["user"]); the hook adds the rest.
    await asyncio.sleep(0)  # an async hook (e.g. a session lookup) is awaited
    headers = dict(scope["headers"])
    return {
        "group_id": headers.get(b"x-account", b"").decode() or None,
        "context": {"path": scope["path"]},
    }


@asynccontextmanager
async def lifespan(app):
    yield
    # An app's own shutdown work: its event must be in the shutdown flush.
    analytics.track(user_id="system", event="App Stopping", message_id="app-stopping")


class LeakCheck:
    """Outermost: counts requests after which a journy scope is still active in the code
    that called the app (the middleware must restore what it found)."""

    leaks = 0

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)
        if scope["type"] == "http" and active_scope() is not None:
            LeakCheck.leaks += 1


app = FastAPI(lifespan=lifespan)
app.add_middleware(JournyMiddleware, identify=identify, analytics=analytics)
app.add_middleware(AuthenticationMiddleware, backend=HeaderAuth())
app.add_middleware(LeakCheck)  # added last: outermost


@app.get("/leaks")
async def leaks():
    return {"leaks": LeakCheck.leaks}


@app.get("/track")
async def track(mid: str, request: Request):
    await asyncio.sleep(0.02)  # concurrent requests interleave on the loop
    analytics.track(event="Endpoint Hit", message_id=mid)
    return {"pid": os.getpid()}
