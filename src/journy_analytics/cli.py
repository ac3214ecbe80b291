"""The ``journy`` command: run the local collector, query it, run the demo, import history."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any, Callable, Optional, Sequence, TextIO

from journy_analytics._api import add_api_commands, run_api_command
from journy_analytics._argtypes import fraction as _fraction
from journy_analytics._argtypes import non_negative_float as _non_negative_float
from journy_analytics._argtypes import non_negative_int as _non_negative_int
from journy_analytics._argtypes import positive_int as _positive_int
from journy_analytics._import import add_import_command, run_import_command
from journy_analytics._types import EVENT_TYPES
from journy_analytics.client import DEFAULT_PATH

__all__ = ["main"]

DEFAULT_URL = "http://127.0.0.1:8765"
DEFAULT_DB = "journy-collector.db"
_DEFAULT_EVENTS_LIMIT = 100
_URL_ENV = "JOURNY_COLLECTOR_URL"
_KEY_ENV = "JOURNY_WRITE_KEY"
# As the collector records them (a page with a name is a screen). Not imported from the
# collector package: that would import aiohttp, which the query commands do not need.
_DEMO_PORT = 8765
_EXTRA_HINT = (
    'journy collector needs the collector extra: pip install "journy-analytics[collector]"'
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="journy",
        description="journy-analytics tools: a local journy.io collector, its queries, a demo.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    col = sub.add_parser(
        "collector",
        help="run a local journy.io-compatible collector (needs the [collector] extra)",
        description=(
            "Run a local collector that accepts exactly what journy.io's batch endpoint "
            "accepts and applies journy.io's profile semantics, storing everything in SQLite. "
            "Point Analytics(host=...) at the printed URL. Ctrl-C stops it."
        ),
    )
    col.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    col.add_argument(
        "--allow-host",
        action="append",
        dest="allowed_hosts",
        default=[],
        metavar="NAME",
        help="another host name the collector is reached by (repeatable; a docker-compose "
        "service name, a LAN name): requests naming any other host are refused",
    )
    col.add_argument(
        "--port", type=_non_negative_int, default=8765, help="port (default: 8765; 0 = any free)"
    )
    col.add_argument(
        "--db",
        default=DEFAULT_DB,
        help=f"SQLite file (default: ./{DEFAULT_DB}); ':memory:' keeps nothing on disk",
    )
    col.add_argument(
        "--write-key",
        action="append",
        dest="write_keys",
        metavar="KEY",
        help="accept only this write key (repeatable; default: any non-empty key)",
    )
    col.add_argument(
        "--path",
        default=DEFAULT_PATH,
        help="batch path (default: /backend/v1/batch; /v1/batch is always served too)",
    )
    col.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=None,
        metavar="N",
        help="answer 413 to ingest bodies over N bytes (default: 512000, as journy.io)",
    )
    rest = col.add_argument_group(
        "REST API", "journy.io's REST API (api.journy.io paths, X-Api-Key header)"
    )
    rest.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY[:PERM,...]",
        help="accept this API key (repeatable; default: any key, every permission); "
        "PERMs: TrackData, ReadEvents, ReadProperties, ReadSegments, GetTrackingSnippet; "
        "KEY:disabled answers 403",
    )
    rest.add_argument(
        "--api-rate-limit",
        default="1800/min",
        metavar="N/min|N/s",
        help="requests per key in a sliding window; beyond, 429 with Retry-After "
        "(default: 1800/min, journy.io's)",
    )
    rest.add_argument(
        "--website",
        action="append",
        dest="websites",
        metavar="DOMAIN",
        help="GET /tracking/snippet answers only for these domains, 404 for others "
        "(repeatable; default: every domain)",
    )
    faults = col.add_argument_group(
        "fault injection", "off by default; applies to ingest and REST API requests"
    )
    faults.add_argument(
        "--fail-rate",
        type=_fraction,
        default=0.0,
        metavar="R",
        help="answer --fail-status to this fraction of requests, storing nothing",
    )
    faults.add_argument(
        "--fail-status",
        type=int,
        default=500,
        metavar="STATUS",
        help="status for --fail-rate (default: 500)",
    )
    faults.add_argument(
        "--rate-limit",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="accept N requests per second; beyond, answer 429 with Retry-After (--retry-after)",
    )
    faults.add_argument(
        "--retry-after-rate",
        type=_fraction,
        default=0.0,
        metavar="R",
        help="answer 429 with Retry-After to this fraction of requests, storing nothing",
    )
    faults.add_argument(
        "--retry-after",
        type=_non_negative_int,
        default=1,
        metavar="S",
        help="seconds in the Retry-After header of every 429 (default: 1)",
    )
    faults.add_argument(
        "--latency-ms",
        type=_non_negative_float,
        default=0.0,
        metavar="MS",
        help="wait this long before answering each request",
    )
    faults.add_argument(
        "--reset-rate",
        type=_fraction,
        default=0.0,
        metavar="R",
        help="close the connection without answering for this fraction of requests",
    )
    faults.add_argument(
        "--reset-when",
        choices=("after", "before"),
        default="after",
        help="reset after the batch was stored (default; retries become duplicates) or before",
    )
    faults.add_argument("--seed", type=int, default=None, help="seed for the fault draws")

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
        type=_non_negative_int,
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
        type=_non_negative_int,
        default=_DEMO_PORT,
        help=f"port (default: {_DEMO_PORT}, or any free one when it is taken)",
    )
    demo.add_argument(
        "--no-serve",
        action="store_true",
        help="exit after printing instead of serving the inspector",
    )
    add_import_command(sub)
    add_api_commands(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``journy`` console script; returns the exit status."""
    args = _build_parser().parse_args(argv)
    command: str = args.command
    try:
        if command == "collector":
            return _collector(args)
        if command == "demo":
            return _demo(args.port, serve=not args.no_serve)
        if command == "import":
            return run_import_command(args)
        if command in ("erase", "key"):
            return run_api_command(args)
        return _query(command, args)
    except BrokenPipeError:
        # The reader went away (`journy events --all | head -1`): nothing left to say.
        # Python would report the failed flush of stdout at exit: point it at nothing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # what a shell reports for a process ended by SIGPIPE


# -- journy collector ----------------------------------------------------------------------


def _aiohttp_available() -> bool:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def _collector(args: argparse.Namespace) -> int:
    if not _aiohttp_available():
        print(_EXTRA_HINT, file=sys.stderr)
        return 2
    from journy_analytics.collector import Faults, RestSettings

    try:
        args.rest = RestSettings(
            api_keys=args.api_keys, rate_limit=args.api_rate_limit, websites=args.websites
        )
        faults = Faults(
            fail_rate=args.fail_rate,
            fail_status=args.fail_status,
            rate_limit=args.rate_limit,
            latency_ms=args.latency_ms,
            reset_rate=args.reset_rate,
            reset_when=args.reset_when,
            seed=args.seed,
            retry_after_rate=args.retry_after_rate,
            retry_after=args.retry_after,
        )
    except ValueError as exc:
        print(f"journy collector: {exc}", file=sys.stderr)
        return 2
    if not args.path.startswith("/"):
        print("journy collector: --path must start with '/'", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(args, faults))
    except KeyboardInterrupt:
        # Only reachable where signal handlers cannot be installed (Windows).
        return 0


async def _serve(args: argparse.Namespace, faults: Any) -> int:
    from journy_analytics.collector import CollectorState, Server, Store

    db = args.db if args.db == ":memory:" else os.path.abspath(args.db)
    try:
        store = Store(db)
    except Exception as exc:  # sqlite3 reports a bad path in several ways
        print(f"journy collector: cannot open database {db}: {exc}", file=sys.stderr)
        return 1
    try:
        limits = {} if args.max_body_bytes is None else {"max_body_bytes": args.max_body_bytes}
        state = CollectorState(
            store,
            write_keys=args.write_keys,
            path=args.path,
            faults=faults,
            allowed_hosts=args.allowed_hosts,
            rest=args.rest,
            **limits,
        )
        server = Server(state, args.host, args.port)
        try:
            port = await server.start()
        except OSError as exc:
            print(
                f"journy collector: cannot listen on {args.host}:{args.port}: {exc}",
                file=sys.stderr,
            )
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        _print_banner(args, port, db, faults)
        try:
            await stop.wait()
        finally:
            # Requests in flight finish (and commit) before the store closes.
            await server.stop()
        stats = store.stats().result()
        print(
            f"journy collector: stopped; {stats['events']} events, {stats['users']} users, "
            f"{stats['accounts']} accounts in {db}",
            flush=True,
        )
        return 0
    finally:
        store.close()


def _print_banner(args: argparse.Namespace, port: int, db: str, faults: Any) -> None:
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{port}"
    # The keys themselves are never printed: a banner ends up in logs and screenshots.
    count = len(args.write_keys or ())
    keys = (
        f"{count} key{'s' if count != 1 else ''} set with --write-key (the inspector asks for one)"
        if count
        else "any non-empty key"
    )
    api_count = len(args.api_keys or ())
    api_keys = f"{api_count} set with --api-key" if api_count else "any key"
    lines = [
        f"journy collector listening on {url}",
        f'  point the SDK at it:  Analytics(write_key="...", host="{url}")',
        f"  batch endpoint:       POST {url}{args.path}  (also /v1/batch, /v1/<type>)",
        f"  write keys:           {keys}",
        f"  REST API:             {url}/users/upsert, /track, ... (journy.io's paths; "
        f"X-Api-Key: {api_keys}; {args.rest.limiter.rate} per key)",
        f"  database:             {db}",
        f"  inspector:            {url}/  (open it in a browser: events live, profiles)",
        f"  read it:              journy events --url {url}  |  journy user ID  |  "
        f"journy account ID",
    ]
    if faults.active:
        settings = ", ".join(f"{k}={v}" for k, v in faults.to_dict().items() if v)
        lines.append(f"  faults:               {settings}")
    lines.append("  Ctrl-C to stop.")
    print("\n".join(lines), flush=True)


# -- journy events / user / account / stats ---------------------------------------------


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


def _query(command: str, args: argparse.Namespace) -> int:
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
            printer: Callable[[Any, TextIO], None] = _print_events
        elif command == "user":
            data = _get(args.url, "/api/users/" + urllib.parse.quote(args.id, safe=""), None, key)
            printer = _print_user
        elif command == "account":
            data = _get(
                args.url, "/api/accounts/" + urllib.parse.quote(args.id, safe=""), None, key
            )
            printer = _print_account
        else:
            data = _get(args.url, "/api/stats", None, key)
            printer = _print_stats
    except _QueryError as exc:
        print(f"journy {command}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        printer(data, sys.stdout)
    return 0


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


def _print_events(data: Any, out: TextIO) -> None:
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


def _print_user(user: Any, out: TextIO) -> None:
    kind = "user" if user.get("identified") else "anonymous user"
    out.write(f"{kind} {user['id']}\n")
    _print_traits(user.get("traits") or {}, out)
    out.write(f"  accounts: {', '.join(user.get('accounts') or []) or '(none)'}\n")
    if user.get("aliases"):
        out.write(f"  aliases:  {', '.join(user['aliases'])}\n")
    out.write(f"  events:   {user.get('events', 0)}\n")


def _print_account(account: Any, out: TextIO) -> None:
    out.write(f"account {account['id']}\n")
    _print_traits(account.get("traits") or {}, out)
    out.write(f"  members:  {', '.join(account.get('members') or []) or '(none)'}\n")
    out.write(f"  events:   {account.get('events', 0)} in the context of this account\n")


def _print_stats(stats: Any, out: TextIO) -> None:
    for key, value in stats.items():
        shown = _compact(value) if isinstance(value, dict) else value
        out.write(f"{key.ljust(18)} {shown}\n")


# -- journy demo ---------------------------------------------------------------------------

_ANON = "48d213bb-95c3-4f8d-af97-86b2b404dcfe"
_ELON = "f4ca124298"
_WRITE_KEY = "YOUR_WRITE_KEY"


def _demo(port: int = _DEMO_PORT, serve: bool = True) -> int:
    if not _aiohttp_available():
        print(_EXTRA_HINT.replace("journy collector", "journy demo"), file=sys.stderr)
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
            steps = _demo_calls(analytics)
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


def _demo_calls(analytics: Any) -> list[tuple[str, Callable[[], Any]]]:
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
        _print_user(user, out)
        out.write(f"  -> {note}\n\n")
    account = collector.account("tesla")
    if account is None:
        out.write("account tesla: not found\n")
    else:
        _print_account(account, out)
        out.write(
            "  -> traits merged from three group calls (employees deleted by null); the\n"
            "     group calls without a user changed the account but added no member\n"
        )
    out.write("\n=== Events, as journy.io records them ===\n\n")
    _print_events({"events": collector.events()}, out)
    out.write(
        "\nA page with a name is recorded as a screen; events sent with group_id appear in\n"
        "the context of account tesla. `journy collector` runs a collector that keeps its\n"
        "database between runs.\n"
    )
