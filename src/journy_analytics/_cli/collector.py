"""``journy collector``: run the local collector until Ctrl-C (see docs/collector.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from journy_analytics._argtypes import (
    fraction,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from journy_analytics._cli._extra import collector_extra_missing
from journy_analytics.client import DEFAULT_PATH

__all__ = ["add_collector_command", "run_collector_command"]

DEFAULT_DB = "journy-collector.db"


def add_collector_command(sub: Any) -> None:
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
        "--port", type=non_negative_int, default=8765, help="port (default: 8765; 0 = any free)"
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
        type=positive_int,
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
        type=fraction,
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
        type=non_negative_int,
        default=None,
        metavar="N",
        help="accept N requests per second; beyond, answer 429 with Retry-After (--retry-after)",
    )
    faults.add_argument(
        "--retry-after-rate",
        type=fraction,
        default=0.0,
        metavar="R",
        help="answer 429 with Retry-After to this fraction of requests, storing nothing",
    )
    faults.add_argument(
        "--retry-after",
        type=non_negative_int,
        default=1,
        metavar="S",
        help="seconds in the Retry-After header of every 429 (default: 1)",
    )
    faults.add_argument(
        "--latency-ms",
        type=non_negative_float,
        default=0.0,
        metavar="MS",
        help="wait this long before answering each request",
    )
    faults.add_argument(
        "--reset-rate",
        type=fraction,
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
    col.set_defaults(handler=run_collector_command)


def run_collector_command(args: argparse.Namespace) -> int:
    if collector_extra_missing("collector"):
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
