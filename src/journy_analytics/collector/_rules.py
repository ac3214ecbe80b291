"""journy.io's rules, checked on every stored event: warnings, never refusals.

An event that breaks one of these is valid Segment-spec JSON, so the collector stores it
(journy.io accepts it too), but journy.io will not make of it what the sender probably
meant. Each warning is ``{"rule": code, "message": text}``; docs/collector.md says where
each rule comes from.

The rules that need only the event are here (pure functions, run by the ingest path);
the two that need the profile as it stands (``account_not_grouped``,
``trait_key_collision`` against stored traits) are checked by the store, which has it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Optional

__all__ = [
    "FUTURE_TOLERANCE",
    "RULES",
    "RuleWarning",
    "event_warnings",
    "future_horizon",
    "trait_collisions",
]

RuleWarning = dict[str, str]

# rule code -> one line for the docs and the inspector's legend
RULES: dict[str, str] = {
    "account_not_grouped": (
        "a track/page/screen in the context of an account the user was never grouped into"
    ),
    "nested_property": "an event property is an object or a list; journy.io keeps scalars",
    "trait_key_collision": "two trait keys are the same once lower-cased and trimmed",
    "identify_without_traits": "an identify call with no traits changes nothing",
    "page_recorded_as_screen": "a page with a name is recorded as a screen",
    "future_timestamp": "the timestamp is in the future",
    "unreadable_timestamp": "the timestamp is not an ISO-8601 date and time",
}

# Clocks drift: a timestamp this little ahead of the collector's clock is not flagged.
FUTURE_TOLERANCE = timedelta(minutes=5)


def future_horizon(now: Optional[datetime] = None) -> str:
    """The latest timestamp not flagged as future, in the SDK's ``...T..:..:..Z`` form."""
    moment = (now or datetime.now(timezone.utc)) + FUTURE_TOLERANCE
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _warning(rule: str, message: str) -> RuleWarning:
    return {"rule": rule, "message": message}


def trait_collisions(keys: Any, where: str) -> list[RuleWarning]:
    """Warnings for keys of one traits object that collide once lower-cased and trimmed."""
    seen: dict[str, str] = {}
    found: list[RuleWarning] = []
    for key in keys:
        normal = key.strip().lower()
        other = seen.get(normal)
        if other is None:
            seen[normal] = key
        else:
            found.append(
                _warning(
                    "trait_key_collision",
                    f"{where} keys {other!r} and {key!r} are the same trait once "
                    f"lower-cased and trimmed",
                )
            )
    return found


def _timestamp_warning(timestamp: str, horizon: str) -> Optional[RuleWarning]:
    # The SDKs send "2026-01-01T00:00:00.000Z": compared as text, no parsing needed.
    if len(timestamp) >= 20 and timestamp[10] == "T" and timestamp.endswith("Z"):
        if timestamp[:19] > horizon:
            return _warning("future_timestamp", f"timestamp {timestamp} is in the future")
        if timestamp[4] == "-" and timestamp[7] == "-" and timestamp[13] == ":":
            return None
    text = timestamp[:-1] + "+00:00" if timestamp.endswith(("Z", "z")) else timestamp
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return _warning("unreadable_timestamp", f"timestamp {timestamp!r} is not ISO-8601")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    if moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") > horizon:
        return _warning("future_timestamp", f"timestamp {timestamp} is in the future")
    return None


_NESTED = (dict, list)


def event_warnings(
    event: dict[str, Any], received_type: str, recorded_type: str, horizon: str
) -> Optional[list[RuleWarning]]:
    """The warnings ``event`` earns on its own (None when it earns none).

    Runs on every event, so the common case (nothing to say) takes few steps: the
    detailed checks run only once a cheap test says something is there.
    """
    found: list[RuleWarning] = []
    if received_type == "identify":
        traits = event.get("traits")
        if not traits:
            found.append(
                _warning("identify_without_traits", "identify has no traits: nothing to record")
            )
        elif len(traits) > 1 and len({k.strip().lower() for k in traits}) < len(traits):
            found += trait_collisions(traits, "traits")
    elif received_type == "group":
        traits = event.get("traits")
        if traits and len(traits) > 1 and len({k.strip().lower() for k in traits}) < len(traits):
            found += trait_collisions(traits, "account traits")
    elif received_type != "alias":
        properties = event.get("properties")
        if properties:
            for value in properties.values():
                if type(value) in _NESTED:
                    found += _nested(properties)
                    break
        if recorded_type != received_type:
            found.append(
                _warning(
                    "page_recorded_as_screen",
                    f"page named {event.get('name')!r} is recorded as a screen view",
                )
            )
    timestamp = event.get("timestamp")
    # The SDKs' "2026-01-01T00:00:00.000Z" compares as text with the horizon.
    if timestamp and (timestamp[-1:] != "Z" or timestamp[10:11] != "T" or timestamp[:19] > horizon):
        problem = _timestamp_warning(timestamp, horizon)
        if problem is not None:
            found.append(problem)
    return found or None


def _nested(properties: dict[str, Any]) -> list[RuleWarning]:
    found = []
    for key, value in properties.items():
        kind = type(value)
        if kind is dict or kind is list:
            found.append(
                _warning(
                    "nested_property",
                    f"property {key!r} is {'an object' if kind is dict else 'a list'}; "
                    "journy.io keeps scalar values (text, number, boolean, date)",
                )
            )
    return found
