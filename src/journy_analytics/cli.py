"""The ``journy`` command: the local collector, its queries, the demo, import, the REST API.

Each command lives in a module of its own (``_cli/``, ``_import/_command.py``,
``_api/_command.py``); this module only builds the top parser from their registrations
and runs the chosen command's handler.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Optional, Sequence

from journy_analytics._api import add_api_commands
from journy_analytics._cli import add_collector_command, add_demo_command, add_query_commands
from journy_analytics._import import add_import_command

__all__ = ["main"]

# The commands, in the order `journy --help` lists them. A new command: a module whose
# add_<name>_command(sub) adds its subparser with set_defaults(handler=...), and a line here.
_COMMANDS: tuple[Callable[[Any], None], ...] = (
    add_collector_command,
    add_query_commands,  # events, user, account, stats
    add_demo_command,
    add_import_command,
    add_api_commands,  # erase, key
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="journy",
        description="journy-analytics tools: a local journy.io collector, its queries, a demo.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add_command in _COMMANDS:
        add_command(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``journy`` console script; returns the exit status."""
    args = _build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        # The reader went away (`journy events --all | head -1`): nothing left to say.
        # Python would report the failed flush of stdout at exit: point it at nothing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # what a shell reports for a process ended by SIGPIPE
