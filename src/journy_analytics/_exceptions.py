"""Every exception a user of the SDK can meet, in one place, all exported by ``journy_analytics``.

The hierarchy::

    Exception
    +-- ValidationError (ValueError)     an event method's call was malformed: nothing queued
    +-- SpoolLockedError (ValueError)    Analytics(spool=path): another live process holds path
    +-- DeliveryError                    accepted events were not delivered (handlers, callbacks)
    +-- JournyAPIError                   journy.io's REST API refused a call, or never answered
    +-- OSError                          a request failed; the client retries or reports it as a
        |                                DeliveryError / last_error, an HttpClient may raise them
        +-- TimeoutError
        |   +-- RequestTimeoutError      the whole request outlived its timeout
        +-- NameResolutionError          the host name could not be resolved (DNS)
        +-- ProxyConnectError            the proxy itself could not be reached
        +-- ProxyTunnelError             the proxy answered CONNECT with a 5xx

Only ``ValidationError`` (and ``TypeError`` for a positional call) is raised by the call
path; ``SpoolLockedError`` by the constructor. Everything after enqueue is reported, not
raised: ``DeliveryError`` to error handlers and callbacks, the request errors as the
``DeliveryError``'s reason and in ``stats()["last_error"]``. ``JournyAPI``'s calls raise
``ValidationError`` (a malformed call) and ``JournyAPIError``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = [
    "DeliveryError",
    "JournyAPIError",
    "NameResolutionError",
    "ProxyConnectError",
    "ProxyTunnelError",
    "RequestTimeoutError",
    "SpoolLockedError",
    "ValidationError",
]


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


class SpoolLockedError(ValueError):
    """Another live process holds this spool path (``Analytics(spool=path)``): give each
    process a path of its own, or wait until the other one closes its client."""


class RequestTimeoutError(TimeoutError):
    """The whole request took longer than its timeout (e.g. a server dripping bytes)."""


class NameResolutionError(OSError):
    """A host name could not be resolved (DNS): the text says which and what to check."""


class ProxyConnectError(OSError):
    """The proxy itself could not be reached (refused, reset, no route, timed out)."""


class ProxyTunnelError(OSError):
    """The proxy answered the CONNECT with a 5xx: it could not reach the server. For the
    SDK, the same as a server that is down."""


class JournyAPIError(Exception):
    """journy.io refused a call, or never answered it within the retries.

    ``status`` is the HTTP status (None: no answer at all), ``message`` the server's
    message, ``fields`` the field errors of a 400 (``{"identification.userId": "..."}``),
    ``parameters`` its parameter errors (``{"query": {...}, "header": {...}, "path": {...}}``),
    ``request_id`` the ``meta.requestId`` to quote to journy.io's support, and
    ``permission`` the permission the call needs (``TrackData``, ``ReadEvents``, ...).
    """

    def __init__(
        self,
        reason: str,
        *,
        status: Optional[int] = None,
        message: str = "",
        fields: Optional[Mapping[str, str]] = None,
        parameters: Optional[Mapping[str, Mapping[str, str]]] = None,
        request_id: Optional[str] = None,
        permission: Optional[str] = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.message = message
        self.fields: Dict[str, str] = dict(fields or {})
        self.parameters: Dict[str, Dict[str, str]] = {
            k: dict(v) for k, v in (parameters or {}).items()
        }
        self.request_id = request_id
        self.permission = permission
