"""What ``validate_key`` returns; ``JournyAPIError`` lives with the other exceptions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet

from journy_analytics._exceptions import JournyAPIError

__all__ = ["JournyAPIError", "KeyInfo"]


@dataclass(frozen=True)
class KeyInfo:
    """What ``validate_key()`` learnt: the key's permissions (``TrackData``,
    ``ReadEvents``, ``ReadProperties``, ``ReadSegments``, ``GetTrackingSnippet``)."""

    permissions: FrozenSet[str]

    def allows(self, permission: str) -> bool:
        return permission in self.permissions
