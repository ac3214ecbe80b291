"""The two exceptions a user can meet: one at call time, one reported after enqueue."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

__all__ = ["DeliveryError", "ValidationError"]


class ValidationError(ValueError):
    """A call was malformed; raised at once by the event method, nothing was queued."""


class DeliveryError(Exception):
    """An accepted event could not be delivered; passed to ``error`` handlers and callbacks.

    ``code`` is one of ``delivery_failure`` (the server refused the batch for good),
    ``retries_exhausted``, ``queue_full``, ``closed`` (the client closed before it could
    deliver) or ``spool`` (the durable queue failed and the client fell back to memory).
    ``reason`` is a human sentence, ``status`` the HTTP status if there was one, and
    ``events`` the affected wire events (possibly a sample when many were dropped at once).
    """

    def __init__(
        self,
        code: str,
        reason: str,
        events: Optional[Sequence[Dict[str, Any]]] = None,
        status: Optional[int] = None,
        count: Optional[int] = None,
    ) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.status = status
        self.events: List[Dict[str, Any]] = list(events or ())
        self.count = len(self.events) if count is None else count
