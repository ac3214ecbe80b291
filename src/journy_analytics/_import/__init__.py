"""The backfill machinery behind ``journy import`` and ``journy_analytics.bulk`` (private).

``_rows`` (row -> event call, mapping, content-derived ids), ``_readers`` (JSONL, CSV,
Parquet, streaming), ``_checkpoint`` (the resume point on disk), ``_engine`` (the loop:
back-pressure, settled-prefix checkpoint, refusals), ``_progress`` and ``_command`` (the
CLI). See docs/import.md.
"""
