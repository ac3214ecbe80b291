"""What a REST call can raise besides ``ValidationError``, and what ``validate_key`` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Mapping, Optional

__all__ = ["JournyAPIError", "KeyInfo"]


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


@dataclass(frozen=True)
class KeyInfo:
    """What ``validate_key()`` learnt: the key's permissions (``TrackData``,
    ``ReadEvents``, ``ReadProperties``, ``ReadSegments``, ``GetTrackingSnippet``)."""

    permissions: FrozenSet[str]

    def allows(self, permission: str) -> bool:
        return permission in self.permissions
