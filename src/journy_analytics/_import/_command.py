"""``journy import FILE...``: the command line of the backfill (see docs/import.md).

Exit status: 0 every row delivered (or valid, with ``--dry-run``); 1 the input was read to
its end but some rows were refused; 3 the import stopped early (the server unreachable or
refusing the write key): run the same command again to resume; 4 an input is damaged (a
``.gz`` file cut short or corrupt): every row before the damage was imported; 130
interrupted (Ctrl-C), resumable too; 2 a usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.parse
from typing import Any, Dict, List, Tuple

from journy_analytics._argtypes import positive_float as _positive_float
from journy_analytics._argtypes import positive_int as _positive_int
from journy_analytics._import._checkpoint import Checkpoint
from journy_analytics._import._engine import (
    ImportInterrupted,
    ImportReport,
    collect_rarely,
    execute,
)
from journy_analytics._import._parallel import ParallelImport, default_jobs
from journy_analytics._import._progress import Progress
from journy_analytics._import._readers import FORMATS, Source
from journy_analytics._import._rows import (
    COLUMN_TYPES,
    TYPES,
    RowMapper,
    parse_column_types,
    parse_mapping,
)
from journy_analytics.client import DEFAULT_HOST, DEFAULT_PATH

__all__ = ["add_import_command", "run_import_command"]

_KEY_ENV = "JOURNY_WRITE_KEY"
# The module client's variables (journy_analytics._default): a backfill meant for the local
# collector must not go to journy.io because only the key came from the environment.
_HOST_ENV = "JOURNY_HOST"
_PATH_ENV = "JOURNY_PATH"
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_DAMAGED = 4
EXIT_INTERRUPTED = 130


def _jobs(text: str) -> Any:
    if text == "auto":
        return text
    return _positive_int(text)


def add_import_command(sub: Any) -> None:
    p = sub.add_parser(
        "import",
        help="import history (JSONL, CSV, Parquet) into journy.io: resumable, idempotent",
        description=(
            "Send every row of the files as a journy.io event, as fast as the server takes "
            "them. Rows without a messageId get one derived from their content, so importing "
            "the same rows again creates no duplicates. After a crash, run the same command "
            "in the same directory to resume (checkpoint: ./.journy-import/). "
            "See docs/import.md."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help=".jsonl/.ndjson, .csv or .parquet")
    p.add_argument(
        "--write-key",
        default=os.environ.get(_KEY_ENV),
        help=f"journy.io write key (default: ${_KEY_ENV}; the environment keeps it out of ps)",
    )
    p.add_argument(
        "--host",
        help=f"base URL (default: ${_HOST_ENV}, else {DEFAULT_HOST})",
    )
    p.add_argument("--path", help=f"batch path (default: ${_PATH_ENV}, else {DEFAULT_PATH})")
    p.add_argument("--format", choices=FORMATS, help="input format (default: from the name)")
    p.add_argument(
        "--map",
        dest="mapping",
        metavar="WIRE=COLUMN,...",
        help="name the columns of flat rows, e.g. userId=user_id,event=action,timestamp=created_at"
        " (other columns become properties or traits)",
    )
    p.add_argument(
        "--timestamp-format",
        metavar="FORMAT",
        help="how the timestamp column is written: a strptime format such as "
        "'%%d/%%m/%%Y %%H:%%M' (UTC unless it reads an offset with %%z), or epoch (seconds) "
        "or epoch_ms (default: ISO-8601)",
    )
    p.add_argument(
        "--column-type",
        dest="column_types",
        metavar="COLUMN=TYPE,...",
        help=f"what CSV columns hold ({', '.join(COLUMN_TYPES)}), e.g. amount=float,quantity=int "
        "(default: str)",
    )
    p.add_argument("--type", dest="default_type", choices=TYPES, help="type of rows without one")
    p.add_argument("--rejects", metavar="FILE", help="write each refused row here (JSON lines)")
    p.add_argument("--dry-run", action="store_true", help="validate every row, send nothing")
    p.add_argument("--rate", type=_positive_float, metavar="N", help="at most N events a second")
    p.add_argument(
        "--restart", action="store_true", help="ignore the checkpoint and start from row 1"
    )
    p.add_argument(
        "--checkpoint-dir",
        default=".",
        metavar="DIR",
        help="where .journy-import/ (the checkpoints) lives (default: the current directory)",
    )
    p.add_argument(
        "--window",
        type=_positive_int,
        default=10_000,
        metavar="N",
        help="rows in flight at most (memory and what a crash may re-send; default: 10000)",
    )
    p.add_argument(
        "--jobs",
        type=_jobs,
        default="auto",
        metavar="N",
        help="worker processes that decode, build and send rows (default: auto, one per core "
        "up to 4; 1 for inputs under 1 MB or --jobs 1)",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "plain", "none"),
        default="auto",
        help="auto: a bar on a terminal (with the import extra), a line every 5 s otherwise",
    )
    p.set_defaults(handler=run_import_command)


def _shown(host: str, path: str) -> str:
    """The destination as printed: without any user:password part of the URL."""
    parts = urllib.parse.urlsplit(host.rstrip("/") + path)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _identity(args: argparse.Namespace, sources: List[Source]) -> Tuple[dict[str, Any], Any]:
    inputs = [[os.path.abspath(s.path), s.size, s.mtime_ns] for s in sources]
    identity = {
        "inputs": inputs,
        "format": args.format,
        "map": args.mapping,
        "type": args.default_type,
        "endpoint": args.host.rstrip("/") + args.path,
        # A hash: the key itself is never written anywhere.
        "key": hashlib.sha256(args.write_key.encode()).hexdigest(),
    }
    # They change the events (and so the ids); absent when not given, so the checkpoints
    # of imports without them keep their names.
    if args.timestamp_format:
        identity["timestamp_format"] = args.timestamp_format
    if args.column_types:
        identity["column_types"] = parse_column_types(args.column_types)
    describe = {
        "inputs": [i[0] for i in inputs],
        "map": args.mapping,
        "type": args.default_type,
        "endpoint": identity["endpoint"],
    }
    return identity, describe


def _run(
    args: argparse.Namespace,
    jobs: int,
    sources: List[Source],
    mapper: RowMapper,
    analytics: Any,
    checkpoint: Any,
    progress: Progress,
) -> ImportReport:
    common: Dict[str, Any] = {
        "window": args.window,
        "rate": args.rate,
        "checkpoint": checkpoint,
        "restart": args.restart,
        "rejects_path": args.rejects,
        "progress": None if args.progress == "none" else progress,
    }
    if jobs > 1:
        client = (
            None
            if args.dry_run
            else {"write_key": args.write_key, "host": args.host, "path": args.path}
        )
        return ParallelImport(sources, mapper, jobs=jobs, client=client, **common).run()
    return execute(
        [(s.path, s.rows) for s in sources], mapper, analytics=analytics, owns_client=True, **common
    )


def run_import_command(args: argparse.Namespace, out: Any = None) -> int:
    out = out or sys.stdout
    err = sys.stderr
    # The flag wins over the environment, which wins over the SDK's default.
    args.host = args.host or os.environ.get(_HOST_ENV) or DEFAULT_HOST
    args.path = args.path or os.environ.get(_PATH_ENV) or DEFAULT_PATH
    if not args.dry_run and not args.write_key:
        print(
            f"journy import: pass --write-key KEY or set ${_KEY_ENV} (or use --dry-run)",
            file=err,
        )
        return EXIT_USAGE
    try:
        mapper = RowMapper(
            parse_mapping(args.mapping),
            args.default_type,
            timestamp_format=args.timestamp_format,
            column_types=parse_column_types(args.column_types),
        )
        sources = [Source(path, args.format) for path in args.files]
    except (ValueError, OSError) as exc:
        print(f"journy import: {exc}", file=err)
        return EXIT_USAGE
    from journy_analytics._import._client import import_client

    jobs = args.jobs
    if jobs == "auto":
        jobs = default_jobs(sum(s.size for s in sources))
    elif jobs > 1 and os.name != "posix":
        print("journy import: --jobs needs a POSIX system; importing in one process", file=err)
        jobs = 1
    analytics = None
    checkpoint = None
    if not args.dry_run:
        try:
            analytics = import_client(args.write_key, args.host, path=args.path, window=args.window)
            if jobs > 1:
                # Checked here (a bad --host fails before any worker starts); the workers
                # have clients of their own.
                analytics.close_and_flush(timeout=0)
                analytics = None
        except ValueError as exc:
            print(f"journy import: {exc}", file=err)
            return EXIT_USAGE
        print(f"journy import: sending to {_shown(args.host, args.path)}", file=err, flush=True)
        identity, describe = _identity(args, sources)
        checkpoint = Checkpoint.in_directory(args.checkpoint_dir, identity, describe)
        if not args.restart:
            try:
                state = checkpoint.load()
            except ValueError as exc:
                if analytics is not None:
                    analytics.close_and_flush(timeout=0)
                print(f"journy import: {exc}", file=err)
                return EXIT_USAGE
            if state is not None:
                print(
                    f"journy import: resuming after row {state.get('rows_done', 0):,} "
                    f"(checkpoint {checkpoint.path}; --restart to start over)",
                    file=err,
                )
    progress = Progress(sources, "none" if args.progress == "none" else args.progress, err)

    interrupted = False
    report = None
    try:
        with collect_rarely():
            report = _run(args, jobs, sources, mapper, analytics, checkpoint, progress)
    except ImportInterrupted as exc:
        interrupted = True
        report = exc.report
    except KeyboardInterrupt:  # a second Ctrl-C, while the import wound down
        interrupted = True
    except ValueError as exc:  # e.g. a CSV header that cannot be read
        print(f"\njourny import: {exc}", file=err)
        return EXIT_USAGE
    finally:
        progress.close()
    if interrupted or report is None:
        if report is not None:
            print(report.summary(), file=out, flush=True)
        where = f" (checkpoint {checkpoint.path})" if checkpoint is not None else ""
        print(f"\njourny import: interrupted; run the same command to resume{where}", file=err)
        return EXIT_INTERRUPTED
    print(report.summary(), file=out)
    damaged = [s.damage for s in sources if s.damage]
    for damage in damaged:
        print(f"journy import: DAMAGED INPUT: {damage}", file=err)
    if report.stopped:
        return EXIT_STOPPED
    if damaged:
        print(
            "journy import: every row before the damage was imported; fix or re-export the "
            "file and import it again (rows already sent have the same ids: no duplicates)",
            file=err,
        )
        return EXIT_DAMAGED
    return 0 if report.ok else EXIT_REFUSED
