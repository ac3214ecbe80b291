"""The two exceptions a user can meet: one at call time, one reported after enqueue."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

__all__ = ["DeliveryError", "ValidationError"]


class ValidationError(ValueError):
    """A call was malformed; raised at once by the event method, nothing was queued."""


class DeliveryError(Exception):
    """Accepted events could not be delivered; passed to ``error`` handlers and callbacks.

    ``code`` is ``"delivery_failure"`` for every event that was not delivered, whatever the
    cause, as in analytics-node (journy.io's documented SDK). ``cause`` says why, with one
    of the stable names of ``journy_analytics.Cause``: ``rejected`` (the server refused the
    batch for good), ``retries_exhausted``, ``outage_deadline`` (no answer until the retry
    deadline), ``closed`` (the client closed first), ``queue_full`` or ``spool_overflow``.
    One more code, ``"spool_failure"`` (cause ``spool``), says the durable queue failed and
    the client carries on in memory: no event was lost.

    ``reason`` is a sentence for a person, ``status`` the HTTP status if there was one,
    ``events`` the affected wire events (a sample when many were dropped at once) and
    ``count`` how many there were.
    """

    def __init__(
        self,
        cause: str,
        reason: str,
        events: Optional[Sequence[Dict[str, Any]]] = None,
        status: Optional[int] = None,
        count: Optional[int] = None,
        code: str = "delivery_failure",
    ) -> None:
        super().__init__(f"{code} ({cause}): {reason}")
        self.code = code
        self.cause = str(cause)
        self.reason = reason
        self.status = status
        self.events: List[Dict[str, Any]] = list(events or ())
        self.count = len(self.events) if count is None else count
