"""Backfill history from your own code: ``send`` an iterable of events, or ``send_partition``
one partition of a Dask or Spark job. The same engine as ``journy import`` (docs/import.md).

::

    from journy_analytics import bulk

    report = bulk.send(rows, write_key="...")        # rows: an iterable of event dicts
    print(report.summary())
    assert report.ok

Guarantees: back-pressure (at most ``window`` rows unsettled, the reader waits, nothing is
dropped for lack of room); a row without ``messageId`` gets one derived from its content
and its number among the identical rows before it (two identical rows are two events), so
sending the same rows again creates no duplicate at journy.io; historical
``timestamp`` values are kept (``sentAt`` is the send time); bad rows are refused and
reported, never raised; if the server stays unreachable the run stops at that row
(``report.stopped``) instead of skipping it.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from journy_analytics._import import (
    DEFAULT_WINDOW,
    IMPORT_SETTINGS,
    SKIPPED,
    Checkpoint,
    ImportReport,
    Occurrences,
    Reject,
    RowMapper,
    Rows,
    execute,
    import_client,
    parse_mapping,
    record_key,
)
from journy_analytics.client import DEFAULT_HOST, Analytics

__all__ = ["IMPORT_SETTINGS", "ImportReport", "Reject", "import_client", "send", "send_partition"]

Mapping_ = Union[str, Mapping[str, str], Sequence[Tuple[str, str]], None]


def _mapping(mapping: Mapping_) -> List[Tuple[str, str]]:
    if mapping is None:
        return []
    if isinstance(mapping, str):
        return parse_mapping(mapping)
    pairs = list(mapping.items()) if isinstance(mapping, Mapping) else list(mapping)
    return parse_mapping(",".join(f"{wire}={column}" for wire, column in pairs))


def _rows(events: Iterable[Any]) -> Any:
    def rows(skip: int) -> Rows:
        return _numbered(events, skip)

    return rows


def _numbered(events: Iterable[Any], skip: int) -> Iterator[Tuple[Optional[int], Any, int]]:
    # Identical rows are separate events: each gets its number among them (docs/import.md).
    occurrences = Occurrences()
    for position, row in enumerate(events, 1):
        as_dict = getattr(row, "asDict", None)  # a pyspark Row
        if as_dict is not None:
            row = as_dict(recursive=True)
        nth = occurrences(record_key(row))
        yield position, SKIPPED if position <= skip else row, nth


def send(
    events: Iterable[Any],
    analytics: Optional[Analytics] = None,
    *,
    write_key: Optional[str] = None,
    host: str = DEFAULT_HOST,
    mapping: Mapping_ = None,
    default_type: Optional[str] = None,
    timestamp_format: Optional[str] = None,
    column_types: Optional[Mapping[str, str]] = None,
    rate: Optional[float] = None,
    dry_run: bool = False,
    checkpoint: Optional[Union[str, os.PathLike[str]]] = None,
    restart: bool = False,
    rejects: Optional[Union[str, os.PathLike[str]]] = None,
    window: Optional[int] = None,
    close_timeout: float = 30.0,
) -> ImportReport:
    """Send every event of ``events`` (dicts: Segment-spec events, or flat rows named by
    ``mapping``, ``{"userId": "user_id", ...}`` or ``"userId=user_id,..."``).

    ``analytics``: a client of yours (flushed, not closed); without one, pass ``write_key``
    (and ``host``) and an import client is made and closed. ``rate`` caps events per
    second. ``dry_run`` validates every row and sends nothing. ``checkpoint``: a file
    that lets a re-run with the *same rows in the same order* resume after a crash
    (``restart`` ignores it). ``rejects``: a file receiving one JSON line per refused row.
    ``window``: rows in flight at most (default: the client's ``max_queue_size``).
    ``timestamp_format`` (a strptime format, ``"epoch"`` or ``"epoch_ms"``) and
    ``column_types`` (``{"amount": "float"}``) read string columns as ``journy import``'s
    ``--timestamp-format`` and ``--column-type`` do.
    """
    mapper = RowMapper(
        _mapping(mapping),
        default_type,
        timestamp_format=timestamp_format,
        column_types=column_types,
    )
    if rate is not None and not rate > 0:
        raise ValueError(f"rate={rate!r} must be a number of events per second above 0")
    owns = False
    if not dry_run and analytics is None:
        if not write_key:
            raise ValueError(
                "bulk.send needs analytics=Analytics(...) or write_key= (and host=) to make one"
            )
        analytics = import_client(write_key, host, window=window or DEFAULT_WINDOW)
        owns = True
    if window is None:
        window = analytics.max_queue_size if analytics is not None else DEFAULT_WINDOW
    return execute(
        [(None, _rows(events))],
        mapper,
        analytics=None if dry_run else analytics,
        owns_client=owns,
        window=window,
        rate=rate,
        checkpoint=None if checkpoint is None else Checkpoint(os.fspath(checkpoint)),
        restart=restart,
        rejects_path=None if rejects is None else os.fspath(rejects),
        close_timeout=close_timeout,
    )


def send_partition(
    rows: Any,
    *,
    write_key: str,
    host: str = DEFAULT_HOST,
    mapping: Mapping_ = None,
    default_type: Optional[str] = None,
    timestamp_format: Optional[str] = None,
    column_types: Optional[Mapping[str, str]] = None,
    rate: Optional[float] = None,
    window: int = DEFAULT_WINDOW,
    close_timeout: float = 60.0,
    **settings: Any,
) -> ImportReport:
    """Send one partition from a Dask or Spark task with a client of its own (made and
    closed here: a client cannot cross processes). ``rows``: an iterable of dicts or
    pyspark ``Row`` objects, or a pandas DataFrame. Ids are content-derived, so a re-run
    of a failed job creates no duplicates. ``rate`` is per partition. Returns the
    partition's ``ImportReport`` (combine them with ``ImportReport.combine``).
    ``timestamp_format`` and ``column_types`` as for :func:`send`.
    """
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # a pandas DataFrame
        rows = rows.to_dict("records")
    mapper = RowMapper(
        _mapping(mapping),
        default_type,
        timestamp_format=timestamp_format,
        column_types=column_types,
    )
    analytics = import_client(write_key, host, window=window, **settings)
    return execute(
        [(None, _rows(rows))],
        mapper,
        analytics=analytics,
        owns_client=True,
        window=window,
        rate=rate,
        close_timeout=close_timeout,
    )
