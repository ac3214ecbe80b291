"""GDPR erase on the batch client (``Analytics.erase_user`` / ``erase_account``).

An erase must stick: the id's events still held by the client never leave it (the
queue, and the spool on disk), new events for the id are refused for
``erase_fence_seconds`` (a late or replayed event would re-create the profile), and
journy.io deletes what it has (``DELETE /users`` or ``/accounts``). This module owns the
fence and the matching of encoded events to an identity; the worker owns the purge.

The fence costs the event path one attribute test while no erase is active
(``Analytics._fence`` is None); while one is, a dict lookup or two per event.
"""

from __future__ import annotations

import datetime as _dt
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import orjson

__all__ = ["EraseFence", "EraseResult", "identity_matcher"]

# What each erase kind looks at in a Segment-spec event.
USER_ID, EMAIL, ACCOUNT_ID, DOMAIN = "user_id", "email", "account_id", "domain"


def _traits(message: Mapping[str, Any]) -> Tuple[Any, Any]:
    traits = message.get("traits")
    context = message.get("context")
    ctx_traits = context.get("traits") if isinstance(context, dict) else None
    return (
        traits if isinstance(traits, dict) else None,
        ctx_traits if isinstance(ctx_traits, dict) else None,
    )


def event_identities(message: Mapping[str, Any]) -> Tuple[Tuple[str, Any], ...]:
    """The (kind, value) pairs an event belongs to."""
    found = []
    user_id = message.get("userId")
    if user_id is not None:
        found.append((USER_ID, user_id))
    group_id = message.get("groupId")
    if group_id is None:
        context = message.get("context")
        if isinstance(context, dict):
            group_id = context.get("groupId")
    if group_id is not None:
        found.append((ACCOUNT_ID, group_id))
    for traits in _traits(message):
        if traits is None:
            continue
        if isinstance(traits.get("email"), str):
            found.append((EMAIL, traits["email"]))
        if message.get("type") == "group" and isinstance(traits.get("domain"), str):
            found.append((DOMAIN, traits["domain"]))
    return tuple(found)


def identity_matcher(targets: Dict[str, str]) -> Any:
    """A test on encoded events: does one belong to any of ``targets`` (kind -> value)?
    A substring test first, so that most events are never decoded."""
    needles = [orjson.dumps(v)[1:-1] for v in targets.values()]
    wanted = set(targets.items())

    def matches(data: bytes) -> bool:
        if not any(n in data for n in needles):
            return False
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        return any((k, str(v)) in wanted for k, v in event_identities(message))

    return matches


class EraseFence:
    """Ids erased recently, with the wall-clock time their fence ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: Dict[Tuple[str, str], float] = {}
        self._next_expiry = -math.inf
        self.refused = 0

    def add(self, kind: str, value: str, until: float) -> None:
        with self._lock:
            self._until[(kind, value)] = max(until, self._until.get((kind, value), 0.0))
            self._next_expiry = min(self._until.values())

    def active(self) -> bool:
        """Does any fence stand? O(1) until the earliest one expires (the event path asks
        this for every event while a fence stands)."""
        now = time.time()
        if now < self._next_expiry:
            return True
        with self._lock:
            for key in [k for k, u in self._until.items() if u <= now]:
                del self._until[key]
            # None standing: -inf sends every call to this (then cheap) path.
            self._next_expiry = min(self._until.values(), default=-math.inf)
            return bool(self._until)

    def blocks(self, message: Mapping[str, Any]) -> bool:
        until = self._until
        now = 0.0
        for kind, value in event_identities(message):
            end = until.get((kind, str(value)))
            if end is not None:
                now = now or time.time()
                if end > now:
                    self.refused += 1
                    return True
        return False

    def figures(self) -> Dict[str, Any]:
        now = time.time()
        with self._lock:
            standing = sum(1 for u in self._until.values() if u > now)
        return {"active": standing, "refused": self.refused}


@dataclass(frozen=True)
class EraseResult:
    """What ``erase_user`` / ``erase_account`` did.

    ``purged_from_queue``: the id's events taken out of the in-memory queue (never sent).
    ``purged_from_spool``: rows of them deleted from the spool file.
    ``purged_from_retry``: the id's events taken out of batches parked waiting to retry
    (an outage): the batch goes on without them, they are never sent. ``in_flight``: events
    of the id in a batch on the wire (it cannot be recalled) that were still unsettled
    when the erase stopped waiting for them (it waits, within ``timeout``, so that the
    DELETE comes after them).
    ``fenced_until``: new events for the id are refused until then; ``fence_persisted``
    says the fence is in the spool (it survives a restart). ``deleted``: journy.io
    accepted the DELETE (202: it deletes in the background); else ``delete_error`` says
    why, and calling the erase again is safe.
    """

    kind: str
    identifiers: Dict[str, str]
    purged_from_queue: int
    purged_from_spool: int
    in_flight: int
    fenced_until: Optional[_dt.datetime]
    fence_persisted: bool
    deleted: bool
    delete_error: Optional[str]
    purged_from_retry: int = 0

    @property
    def ok(self) -> bool:
        """journy.io accepted the DELETE (after the id's events in flight, if any, settled)."""
        return self.deleted


def run_erase(
    *,
    worker: Any,
    fence: EraseFence,
    fence_seconds: float,
    kind: str,
    targets: Dict[str, str],
    delete: Optional[Any],
    wait_for_in_flight: float,
    arm: Any,
) -> EraseResult:
    """The erase, in the order that makes it stick: fence first (no new event slips in
    behind the purge), then purge, then let taken batches settle, then DELETE (after any
    event that could still reach journy.io)."""
    from journy_analytics._api import JournyAPIError
    from journy_analytics._exceptions import ValidationError

    until = time.time() + fence_seconds
    persisted = True
    if fence_seconds > 0:
        for key, value in targets.items():
            fence.add(key, value, until)
            persisted = worker.save_fence(key, value, until) and persisted
        arm()
    matches = identity_matcher(targets)
    removed, unsent, spool_rows, in_flight = worker.erase(matches)
    if in_flight and delete is not None:
        worker.flush(wait_for_in_flight)
        _, more_unsent, _, in_flight = worker.erase(matches)
        unsent += more_unsent
    deleted, error = False, None
    if delete is None:
        error = (
            "no api_key: the events held here were purged and fenced, but journy.io was not "
            "asked to delete the profile; pass Analytics(api_key=...) or run `journy erase`"
        )
    else:
        try:
            delete()
            deleted = True
        except (JournyAPIError, ValidationError) as exc:
            error = str(exc)
    from journy_analytics._exceptions import DeliveryError
    from journy_analytics._types import callback_of, data_of

    for item in removed + unsent:
        callback = callback_of(item)
        if callback is not None:
            message = orjson.loads(data_of(item))
            try:
                callback(DeliveryError("erased", f"erased by erase_{kind}()", [message]), message)
            except Exception:  # a callback's failure is the caller's, never the erase's
                pass
    return EraseResult(
        kind=kind,
        identifiers=dict(targets),
        purged_from_queue=len(removed),
        purged_from_spool=spool_rows,
        in_flight=in_flight,
        purged_from_retry=len(unsent),
        fenced_until=(
            _dt.datetime.fromtimestamp(until, _dt.timezone.utc) if fence_seconds > 0 else None
        ),
        fence_persisted=fence_seconds > 0 and persisted,
        deleted=deleted,
        delete_error=error,
    )
