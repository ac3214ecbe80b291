"""How the query commands and the demo print events and profiles for a terminal."""

from __future__ import annotations

import json
from typing import Any, TextIO

__all__ = ["print_account", "print_events", "print_stats", "print_user"]


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _who(event: dict[str, Any]) -> str:
    if event.get("userId") is not None:
        return str(event["userId"])
    return f"anon:{event.get('anonymousId')}"


def _what(event: dict[str, Any]) -> str:
    kind = event.get("type")
    if kind == "identify":
        return f"traits {_compact(event.get('traits') or {})}"
    if kind == "group":
        return f"account {event.get('groupId')} traits {_compact(event.get('traits') or {})}"
    if kind == "alias":
        return f"{event.get('previousId')} -> {_who(event)}"
    if kind == "track":
        return f"{event.get('event')!s} {_compact(event.get('properties') or {})}"
    name = event.get("name")
    label = " / ".join(str(x) for x in (event.get("category"), name) if x) or "(no name)"
    return f"{label} {_compact(event.get('properties') or {})}"


def print_events(data: Any, out: TextIO) -> None:
    events = data.get("events", [])
    warnings = data.get("warnings")
    if not events:
        out.write("no events with warnings\n" if warnings is not None else "no events\n")
        return
    rows = []
    for event in events:
        context = event.get("context") or {}
        account = context.get("groupId") or (
            event.get("groupId") if event.get("type") == "group" else None
        )
        rows.append(
            (
                str(event.get("timestamp") or "-"),
                str(event.get("type")),
                _who(event),
                str(account or "-"),
                _what(event),
            )
        )
    headers = ("timestamp", "type", "user", "account", "details")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers[:-1])]
    for index, row in enumerate([headers, *rows]):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")
        if warnings is not None and index > 0:
            for found in warnings[index - 1]:
                out.write(f"    ! {found['rule']}: {found['message']}\n")
    noun = "event" + ("s" if len(events) != 1 else "")
    out.write(f"({len(events)} {noun}{' with warnings' if warnings is not None else ''})\n")


def _print_traits(traits: dict[str, Any], out: TextIO) -> None:
    if not traits:
        out.write("  traits:   (none)\n")
        return
    out.write("  traits:\n")
    width = max(len(k) for k in traits)
    for key, value in traits.items():
        shown = value if isinstance(value, str) else _compact(value)
        out.write(f"    {key.ljust(width)}  {shown}\n")


def print_user(user: Any, out: TextIO) -> None:
    kind = "user" if user.get("identified") else "anonymous user"
    out.write(f"{kind} {user['id']}\n")
    _print_traits(user.get("traits") or {}, out)
    out.write(f"  accounts: {', '.join(user.get('accounts') or []) or '(none)'}\n")
    if user.get("aliases"):
        out.write(f"  aliases:  {', '.join(user['aliases'])}\n")
    out.write(f"  events:   {user.get('events', 0)}\n")


def print_account(account: Any, out: TextIO) -> None:
    out.write(f"account {account['id']}\n")
    _print_traits(account.get("traits") or {}, out)
    out.write(f"  members:  {', '.join(account.get('members') or []) or '(none)'}\n")
    out.write(f"  events:   {account.get('events', 0)} in the context of this account\n")


def print_stats(stats: Any, out: TextIO) -> None:
    for key, value in stats.items():
        shown = _compact(value) if isinstance(value, dict) else value
        out.write(f"{key.ljust(18)} {shown}\n")
