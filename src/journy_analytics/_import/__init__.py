"""The backfill machinery behind ``journy import`` and ``journy_analytics.bulk`` (private).

``_client`` (the client a backfill sends through), ``_rows`` (row -> event call,
mapping, content-derived ids), ``_readers`` (JSONL, CSV, Parquet, streaming),
``_checkpoint`` (the resume point on disk), ``_engine`` (the loop: back-pressure,
settled-prefix checkpoint, refusals), ``_progress`` and ``_command`` (the CLI). See
docs/import.md. What ``bulk`` and the CLI use is exported here.
"""

from __future__ import annotations

from journy_analytics._import._checkpoint import Checkpoint
from journy_analytics._import._client import DEFAULT_WINDOW, IMPORT_SETTINGS, import_client
from journy_analytics._import._command import add_import_command, run_import_command
from journy_analytics._import._engine import SKIPPED, ImportReport, Reject, Rows, execute
from journy_analytics._import._readers import record_key
from journy_analytics._import._rows import Occurrences, RowMapper, parse_mapping

__all__ = [
    "DEFAULT_WINDOW",
    "IMPORT_SETTINGS",
    "SKIPPED",
    "Checkpoint",
    "ImportReport",
    "Occurrences",
    "Reject",
    "RowMapper",
    "Rows",
    "add_import_command",
    "execute",
    "import_client",
    "parse_mapping",
    "record_key",
    "run_import_command",
]
