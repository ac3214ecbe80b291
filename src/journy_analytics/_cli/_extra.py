"""Whether the ``[collector]`` extra (aiohttp) is installed, for the commands that need it."""

from __future__ import annotations

import sys

__all__ = ["collector_extra_missing"]

_EXTRA_HINT = (
    'journy collector needs the collector extra: pip install "journy-analytics[collector]"'
)


def _aiohttp_available() -> bool:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def collector_extra_missing(command: str) -> bool:
    """True (after telling the user how to install it) when aiohttp is missing."""
    if _aiohttp_available():
        return False
    print(_EXTRA_HINT.replace("journy collector", f"journy {command}"), file=sys.stderr)
    return True
