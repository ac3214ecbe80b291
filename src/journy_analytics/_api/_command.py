"""``journy erase`` and ``journy key``: journy.io's REST API from the command line.

Exit status: 0 done; 1 journy.io refused the call or never answered it (the message says
which and why); 2 a usage error (no API key, conflicting options).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, Optional

from journy_analytics._api._client import DEFAULT_API_HOST, JournyAPI
from journy_analytics._api._errors import JournyAPIError
from journy_analytics._exceptions import ValidationError

__all__ = ["add_api_commands", "run_api_command"]

_KEY_ENV = "JOURNY_API_KEY"
_HOST_ENV = "JOURNY_API_HOST"
ALL_PERMISSIONS = (
    "TrackData",
    "ReadEvents",
    "ReadProperties",
    "ReadSegments",
    "GetTrackingSnippet",
)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--api-key",
        default=None,
        help=f"journy.io API key (default: ${_KEY_ENV}; the environment keeps it out of ps)",
    )
    p.add_argument(
        "--host",
        default=None,
        help=f"API base URL (default: ${_HOST_ENV}, else {DEFAULT_API_HOST}; "
        "e.g. http://127.0.0.1:8080 for `journy collector`)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt (10)")


def add_api_commands(sub: Any) -> None:
    erase = sub.add_parser(
        "erase",
        help="GDPR erase: delete a user or an account at journy.io (DELETE /users, /accounts)",
        description=(
            "Ask journy.io to delete a user (--user-id and/or --email) or an account "
            "(--account-id and/or --domain) with all its data. journy.io answers 202 and "
            "deletes in the background. This command cannot reach events another process "
            "still holds: in an app, use analytics.erase_user(), which also purges its "
            "queue and spool and fences late events (see docs/journy-api.md)."
        ),
    )
    erase.add_argument("--user-id")
    erase.add_argument("--email")
    erase.add_argument("--account-id")
    erase.add_argument("--domain")
    _common(erase)
    key = sub.add_parser(
        "key",
        help="check a journy.io API key and print its permissions (GET /validate)",
        description="Check an API key with journy.io and print the permissions it has.",
    )
    _common(key)
    for parser in (erase, key):
        parser.set_defaults(handler=run_api_command)


def _client(args: argparse.Namespace) -> Optional[JournyAPI]:
    api_key = args.api_key or os.environ.get(_KEY_ENV)
    if not api_key:
        print(
            f"journy {args.command}: no API key; pass --api-key or set {_KEY_ENV} "
            "(journy.io > Connections > API keys)",
            file=sys.stderr,
        )
        return None
    host = args.host or os.environ.get(_HOST_ENV) or DEFAULT_API_HOST
    try:
        return JournyAPI(api_key=api_key, host=host, timeout=args.timeout)
    except ValueError as exc:
        print(f"journy {args.command}: {exc}", file=sys.stderr)
        return None


def run_api_command(args: argparse.Namespace) -> int:
    if args.command == "erase":
        user = {"user_id": args.user_id, "email": args.email}
        account = {"account_id": args.account_id, "domain": args.domain}
        given_user = any(v is not None for v in user.values())
        given_account = any(v is not None for v in account.values())
        if given_user == given_account:
            print(
                "journy erase: give a user (--user-id and/or --email) or an account "
                "(--account-id and/or --domain), not both and not neither",
                file=sys.stderr,
            )
            return 2
    api = _client(args)
    if api is None:
        return 2
    try:
        with api:
            if args.command == "key":
                info = api.validate_key()
                print("permissions: " + (", ".join(sorted(info.permissions)) or "none"))
                missing = [p for p in ALL_PERMISSIONS if not info.allows(p)]
                if missing:
                    print("missing:     " + ", ".join(missing))
                return 0
            what: Dict[str, Any] = user if given_user else account
            if given_user:
                api.delete_user(**what)
            else:
                api.delete_account(**what)
            named = ", ".join(f"{k}={v}" for k, v in what.items() if v is not None)
            kind = "user" if given_user else "account"
            print(f"erase requested: {kind} {named}; journy.io deletes it in the background")
            return 0
    except ValidationError as exc:
        print(f"journy {args.command}: {exc}", file=sys.stderr)
        return 2
    except JournyAPIError as exc:
        print(f"journy {args.command}: {exc}", file=sys.stderr)
        return 1
