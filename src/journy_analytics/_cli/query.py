"""``journy events``, ``user``, ``account``, ``stats``: ask a running collector over HTTP.

Only the standard library: these commands work without the ``[collector]`` extra.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Optional, TextIO

from journy_analytics._argtypes import non_negative_int
from journy_analytics._cli.printers import (
    print_account,
    print_events,
    print_stats,
    print_user,
)
from journy_analytics._types import EVENT_TYPES

__all__ = ["add_query_commands", "run_query_command"]

DEFAULT_URL = "http://127.0.0.1:8765"
_DEFAULT_EVENTS_LIMIT = 100
_URL_ENV = "JOURNY_COLLECTOR_URL"
_KEY_ENV = "JOURNY_WRITE_KEY"


def add_query_commands(sub: Any) -> None:
    def add_url(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--url",
            default=os.environ.get(_URL_ENV, DEFAULT_URL),
            help=f"collector URL (default: ${_URL_ENV} or {DEFAULT_URL})",
        )
        p.add_argument("--json", action="store_true", help="print the raw JSON answer")
        p.add_argument(
            "--write-key",
            default=os.environ.get(_KEY_ENV),
            metavar="KEY",
            help=f"a collector started with --write-key asks for one (default: ${_KEY_ENV})",
        )

    ev = sub.add_parser(
        "events",
        help="list events stored by a running collector",
        description="List stored events (deduplicated), oldest first.",
    )
    ev.add_argument(
        "--type",
        choices=EVENT_TYPES,
        metavar="TYPE",
        help=f"only events of this type: {', '.join(EVENT_TYPES)}",
    )
    ev.add_argument("--user-id", help="only events with this userId")
    ev.add_argument("--anonymous-id", help="only events with this anonymousId")
    ev.add_argument("--group-id", help="only events of this account (groupId or context.groupId)")
    ev.add_argument(
        "--limit",
        type=non_negative_int,
        default=_DEFAULT_EVENTS_LIMIT,
        help=f"show the N most recent events (default: {_DEFAULT_EVENTS_LIMIT})",
    )
    ev.add_argument("--all", action="store_true", help="show every event (overrides --limit)")
    ev.add_argument(
        "--warnings",
        action="store_true",
        help="only events that break one of journy.io's rules, each with its warnings",
    )
    add_url(ev)

    us = sub.add_parser(
        "user",
        help="show a user profile from a running collector",
        description="Show a user's merged traits, accounts and event count.",
    )
    us.add_argument("id", help="userId (or anonymousId of an anonymous user)")
    add_url(us)

    ac = sub.add_parser(
        "account",
        help="show an account profile from a running collector",
        description="Show an account's merged traits and members.",
    )
    ac.add_argument("id", help="groupId")
    add_url(ac)

    st = sub.add_parser("stats", help="show a running collector's counters")
    add_url(st)
    for p in (ev, us, ac, st):
        p.set_defaults(handler=run_query_command)


class _QueryError(Exception):
    pass


def _get(
    base_url: str,
    path: str,
    params: Optional[dict[str, Any]] = None,
    write_key: Optional[str] = None,
) -> Any:
    query = {k: v for k, v in (params or {}).items() if v is not None}
    url = base_url.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    headers = {}
    if write_key:
        token = base64.b64encode(f"{write_key}:".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=10
        ) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("message", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise _QueryError(f"{exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _QueryError(
            f"no collector at {base_url} ({reason}); start one with `journy collector`"
        ) from None


def run_query_command(args: argparse.Namespace) -> int:
    command: str = args.command
    try:
        key = args.write_key
        if command == "events":
            data = _get(
                args.url,
                "/api/events",
                {
                    "type": args.type,
                    "userId": args.user_id,
                    "anonymousId": args.anonymous_id,
                    "groupId": args.group_id,
                    "limit": None if args.all else args.limit,
                    "warnings": "1" if args.warnings else None,
                },
                key,
            )
            printer: Callable[[Any, TextIO], None] = print_events
        elif command == "user":
            data = _get(args.url, "/api/users/" + urllib.parse.quote(args.id, safe=""), None, key)
            printer = print_user
        elif command == "account":
            data = _get(
                args.url, "/api/accounts/" + urllib.parse.quote(args.id, safe=""), None, key
            )
            printer = print_account
        else:
            data = _get(args.url, "/api/stats", None, key)
            printer = print_stats
    except _QueryError as exc:
        print(f"journy {command}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        printer(data, sys.stdout)
    return 0
