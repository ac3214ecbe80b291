"""Awaiting a blocking call (flush, close) without blocking the event loop.

Each call runs in its own short-lived daemon thread rather than in the loop's default
executor: that executor may be full of the application's own work (a flush would queue
behind it), it may already be shut down during an ASGI lifespan shutdown, and its threads
are joined at interpreter exit (a flush still running would hold the exit). flush and close
are rare calls, so a thread each costs nothing that matters.

Cancelling the awaiting task raises ``CancelledError`` in it at once; the thread goes on
until the call's own timeout and its result is dropped. The client is consistent either
way: ``flush`` and ``close_and_flush`` are thread-safe and ``close_and_flush`` marks the
client closed before it starts delivering.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, TypeVar

from journy_analytics._lifecycle import signal_free

__all__ = ["run_in_thread"]

T = TypeVar("T")


async def run_in_thread(fn: Callable[..., T], *args: Any, name: str = "journy-aio") -> T:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle_result(value: T) -> None:
        if not future.done():  # cancelled meanwhile: nobody waits for it
            future.set_result(value)

    def settle_error(exc: BaseException) -> None:
        if not future.done():
            future.set_exception(exc)

    def run() -> None:
        try:
            value = fn(*args)
        except BaseException as exc:
            _call_soon(loop, settle_error, exc)
        else:
            _call_soon(loop, settle_result, value)

    threading.Thread(target=signal_free(run), name=name, daemon=True).start()
    return await future


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], arg: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, arg)
    except RuntimeError:
        pass  # the loop closed while we worked: the awaiting task is gone with it
