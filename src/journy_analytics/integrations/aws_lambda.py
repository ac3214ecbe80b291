"""AWS Lambda: deliver before the handler returns, because a returned invocation may be
frozen (and later killed) with events still queued.

::

    from journy_analytics.integrations.aws_lambda import flush_after

    @flush_after
    def handler(event, context):
        journy_analytics.track(user_id=event["user"], event="Invoice Paid")
        return {"statusCode": 200}

After the handler returns or raises, the client is flushed for at most the invocation's
remaining time (``context.get_remaining_time_in_millis()``) less ``reserve`` seconds
(0.25 by default) kept for returning the answer; ``timeout=`` lowers that bound further.
The client is not closed: the next (warm) invocation of the same runtime uses it again.
Events a flush could not deliver in time stay queued for the next invocation and are
reported through a rate-limited warning. ``analytics=`` (or ``client=``) names the client
to flush; by default the module-level one. ``async def`` handlers are awaited and flushed
with ``aflush``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional, TypeVar, cast, overload

from journy_analytics import _default
from journy_analytics.client import Analytics
from journy_analytics.integrations._common import RateLimitedLog, flush

__all__ = ["flush_after"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_RESERVE_S = 0.25
_late = RateLimitedLog(every=60.0)


@overload
def flush_after(handler: F) -> F: ...


@overload
def flush_after(
    handler: None = None,
    *,
    analytics: Optional[Analytics] = None,
    client: Optional[Analytics] = None,
    timeout: Optional[float] = None,
    reserve: float = DEFAULT_RESERVE_S,
) -> Callable[[F], F]: ...


def flush_after(
    handler: Optional[F] = None,
    *,
    analytics: Optional[Analytics] = None,
    client: Optional[Analytics] = None,
    timeout: Optional[float] = None,
    reserve: float = DEFAULT_RESERVE_S,
) -> Any:
    """Decorate a Lambda handler ``handler(event, context)``: see the module doc."""
    target = analytics if analytics is not None else client

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(event, context, *args, **kwargs)
                finally:
                    budget = _budget(context, timeout, reserve)
                    if target is not None:
                        settled = await target.aflush(budget)
                    else:
                        settled = await _default.aflush(budget)
                    _report(settled, budget)

            return cast(F, run_async)

        @functools.wraps(fn)
        def run(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(event, context, *args, **kwargs)
            finally:
                budget = _budget(context, timeout, reserve)
                _report(flush(target, budget), budget)

        return cast(F, run)

    if handler is not None:
        return decorate(handler)
    return decorate


def _budget(context: Any, timeout: Optional[float], reserve: float) -> Optional[float]:
    """Seconds the flush may take: what is left of the invocation less ``reserve``."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    budget = timeout
    if callable(remaining):
        left = max(0.0, remaining() / 1000.0 - reserve)
        budget = left if budget is None else min(budget, left)
    return budget


def _report(settled: bool, budget: Optional[float]) -> None:
    if not settled:
        _late.warning(
            "journy_analytics: flush_after could not deliver every event within the "
            "invocation's remaining time (%.2f s); the rest stay queued for the next "
            "invocation",
            budget if budget is not None else float("nan"),
        )
