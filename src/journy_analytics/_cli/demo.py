"""``journy demo``: the journy.io docs' examples through the SDK into an in-process collector."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

from journy_analytics._argtypes import non_negative_int
from journy_analytics._cli._extra import collector_extra_missing
from journy_analytics._cli.printers import print_account, print_events, print_user

__all__ = ["add_demo_command", "demo", "demo_calls", "run_demo_command"]

_DEMO_PORT = 8765


def add_demo_command(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="run every example of the journy.io docs through the SDK and show the profiles",
        description=(
            "Start a collector in-process with a temporary database, send the journy.io "
            "documentation's examples through the SDK, print the user and account profiles "
            "and the events as journy.io records them, then keep serving the inspector "
            "until Ctrl-C."
        ),
    )
    demo.add_argument(
        "--port",
        type=non_negative_int,
        default=_DEMO_PORT,
        help=f"port (default: {_DEMO_PORT}, or any free one when it is taken)",
    )
    demo.add_argument(
        "--no-serve",
        action="store_true",
        help="exit after printing instead of serving the inspector",
    )
    demo.set_defaults(handler=run_demo_command)


_ANON = "48d213bb-95c3-4f8d-af97-86b2b404dcfe"
_ELON = "f4ca124298"
_WRITE_KEY = "YOUR_WRITE_KEY"


def run_demo_command(args: argparse.Namespace) -> int:
    return demo(args.port, serve=not args.no_serve)


def demo(port: int = _DEMO_PORT, serve: bool = True) -> int:
    if collector_extra_missing("demo"):
        return 2
    try:
        from journy_analytics import Analytics  # type: ignore[attr-defined,unused-ignore]
    except ImportError as exc:
        print(f"journy demo: the SDK is not importable: {exc}", file=sys.stderr)
        return 1
    from journy_analytics.collector import CollectorThread

    out = sys.stdout
    with tempfile.TemporaryDirectory(prefix="journy-demo-") as tmp:
        db = os.path.join(tmp, "demo.db")
        # Any key is accepted, so the inspector opens without asking for one.
        collector = CollectorThread(db=db, port=port if serve else 0)
        try:
            collector.start()
        except OSError:  # the port is taken (a `journy collector` running?): any free one
            collector = CollectorThread(db=db)
            collector.start()
        with collector:
            out.write(f"Local collector on {collector.url} (database {db})\n\n")
            analytics = Analytics(write_key=_WRITE_KEY, host=collector.url)
            steps = demo_calls(analytics)
            for description, call in steps:
                out.write(f"  {description}\n")
                call()
            settled = analytics.close_and_flush(timeout=15)
            out.write(
                f"\nclose_and_flush(): {'everything delivered' if settled else 'TIMED OUT'}\n"
            )
            _demo_report(collector, out)
            stats = collector.stats()
            ok = bool(settled) and stats["events"] == len(steps)
            if not ok:
                out.write(
                    f"\nexpected {len(steps)} events, the collector stored {stats['events']}\n"
                )
            elif serve:
                _serve_demo(collector.url, out)
    return 0 if ok else 1


def _serve_demo(url: str, out: TextIO) -> None:
    out.write(
        f"\n>>> Open the inspector: {url}/\n"
        "    The demo's events, their warnings and the profiles are there; events you send\n"
        f'    with Analytics(write_key="...", host="{url}") appear live.\n'
        "    Ctrl-C to stop (the demo's database is deleted).\n"
    )
    out.flush()

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        out.write("\njourny demo: stopped\n")
    finally:
        signal.signal(signal.SIGTERM, previous)


def demo_calls(analytics: Any) -> list[tuple[str, Callable[[], Any]]]:
    dec_12_2015 = datetime(2015, 12, 12, 19, 11, tzinfo=timezone.utc)
    return [
        (
            "identify an anonymous visitor (friends: 42)",
            lambda: analytics.identify(anonymous_id=_ANON, traits={"friends": 42}),
        ),
        (
            "identify Elon: firstname, lastname, email, friends",
            lambda: analytics.identify(
                user_id=_ELON,
                traits={
                    "firstname": "Elon",
                    "lastname": "Musk",
                    "email": "elon@tesla.com",
                    "friends": 42,
                },
            ),
        ),
        (
            "identify Elon again with friends: None (deletes the trait)",
            lambda: analytics.identify(user_id=_ELON, traits={"friends": None}),
        ),
        (
            "group: Elon joins account Tesla",
            lambda: analytics.group(
                user_id=_ELON,
                group_id="tesla",
                traits={"name": "Tesla", "industry": "Automotive", "employees": 127000},
            ),
        ),
        (
            "group without a user (anonymous_id == group_id): Tesla gets a website",
            lambda: analytics.group(
                anonymous_id="tesla", group_id="tesla", traits={"website": "https://tesla.com"}
            ),
        ),
        (
            "group without a user, employees: None (deletes the account trait)",
            lambda: analytics.group(
                anonymous_id="tesla", group_id="tesla", traits={"employees": None}
            ),
        ),
        (
            "anonymous track: Item Purchased",
            lambda: analytics.track(
                anonymous_id=_ANON,
                event="Item Purchased",
                properties={"revenue": 39.95, "shippingMethod": "2-day"},
            ),
        ),
        (
            "identified track: Article Bookmarked",
            lambda: analytics.track(
                user_id=_ELON,
                event="Article Bookmarked",
                properties={"title": "Snow Fall", "author": "John Branch"},
            ),
        ),
        (
            "B2B track in account Tesla on 2015-12-12: Car Sold",
            lambda: analytics.track(
                user_id=_ELON,
                event="Car Sold",
                properties={"revenue": 39999.99, "shipping": "200-day"},
                group_id="tesla",
                timestamp=dec_12_2015,
            ),
        ),
        (
            "page with a name: Pricing (journy.io records a screen)",
            lambda: analytics.page(
                user_id=_ELON,
                category="Docs",
                name="Pricing",
                properties={"url": "https://journy.io/pricing"},
            ),
        ),
        (
            "B2B page in account Tesla on 2015-12-12: Pricing",
            lambda: analytics.page(
                user_id=_ELON,
                category="Docs",
                name="Pricing",
                properties={"url": "https://journy.io/pricing"},
                group_id="tesla",
                timestamp=dec_12_2015,
            ),
        ),
        (
            "page without a name (journy.io records a page)",
            lambda: analytics.page(user_id=_ELON, properties={"url": "https://journy.io/blog"}),
        ),
    ]


def _demo_report(collector: Any, out: TextIO) -> None:
    out.write("\n=== Profiles, as journy.io keeps them ===\n\n")
    for user_id, note in (
        (_ELON, "friends was sent, then deleted by the null trait; the rest is the union"),
        (_ANON, "an anonymous user keyed by its anonymousId"),
    ):
        user = collector.user(user_id)
        if user is None:
            out.write(f"user {user_id}: not found\n\n")
            continue
        print_user(user, out)
        out.write(f"  -> {note}\n\n")
    account = collector.account("tesla")
    if account is None:
        out.write("account tesla: not found\n")
    else:
        print_account(account, out)
        out.write(
            "  -> traits merged from three group calls (employees deleted by null); the\n"
            "     group calls without a user changed the account but added no member\n"
        )
    out.write("\n=== Events, as journy.io records them ===\n\n")
    print_events({"events": collector.events()}, out)
    out.write(
        "\nA page with a name is recorded as a screen; events sent with group_id appear in\n"
        "the context of account tesla. `journy collector` runs a collector that keeps its\n"
        "database between runs.\n"
    )
