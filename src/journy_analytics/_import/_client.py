"""The client a backfill sends through: an ``Analytics`` with settings for bulk work.

Public as ``journy_analytics.bulk.import_client``; here so that the import's own modules
(the CLI, the worker processes) build it without reaching up to ``bulk``.
"""

from __future__ import annotations

from typing import Any, Dict

from journy_analytics._core import RetryPolicy
from journy_analytics.client import DEFAULT_HOST, Analytics

__all__ = ["DEFAULT_WINDOW", "IMPORT_SETTINGS", "import_client"]

DEFAULT_WINDOW = 10_000

# What an import client changes from the interactive defaults, and why:
IMPORT_SETTINGS: Dict[str, Any] = {
    # Full requests: journy.io takes up to 500 KB a request (the queue cuts a batch at
    # 480 KB whatever the count); fewer round trips. 500 rather than 100 took a fifth off
    # the import's CPU per row (docs/import.md, "Speed and memory"). A batch the server
    # refuses (400) refuses all of its rows, which go to --rejects to be sent again.
    "max_events_in_batch": 500,
    # The last partial batch should not wait 10 s.
    "flush_interval": 0.2,
    # Back-pressure in the client too, for anyone else sharing it.
    "enqueue_timeout": 60.0,
    # A rate-limited backfill may meet many 429s in a row; each honours Retry-After.
    "retry_policy": RetryPolicy(max_retries=10),
}


def import_client(
    write_key: str, host: str = DEFAULT_HOST, *, window: int = DEFAULT_WINDOW, **settings: Any
) -> Analytics:
    """An ``Analytics`` client set up for a backfill (``IMPORT_SETTINGS``); ``settings``
    override them. Its queue holds the import's ``window``."""
    merged = {**IMPORT_SETTINGS, "max_queue_size": window, **settings}
    return Analytics(write_key, host=host, **merged)
