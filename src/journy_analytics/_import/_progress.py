"""Progress for ``journy import``: a tqdm bar on a terminal, a plain line now and then
elsewhere (a log, CI), nothing with ``--quiet``.

tqdm (the ``import`` extra) rather than rich: one small pure-Python package with no
dependencies of its own, whose bar shows rate and ETA out of the box; rich would pull in
pygments and markdown-it for a single bar. Without tqdm the plain lines are used.
"""

from __future__ import annotations

import sys
import time
from typing import Any, List, Optional, TextIO

from journy_analytics._import._readers import Source

__all__ = ["Progress"]

_PLAIN_EVERY = 5.0


class Progress:
    def __init__(self, sources: List[Source], mode: str, out: Optional[TextIO] = None) -> None:
        self.sources = sources
        self.out = out or sys.stderr
        self.bytes_total = sum(s.size for s in sources)
        self.exact_total: Optional[int] = None
        if sources and all(s.total_rows is not None for s in sources):
            self.exact_total = sum(s.total_rows or 0 for s in sources)
        self._bar: Any = None
        self._shown = 0
        self._last_plain = time.monotonic()
        self.mode = mode
        if mode == "auto":
            self.mode = "bar" if self.out.isatty() and _tqdm() is not None else "plain"
        if self.mode == "bar":
            tqdm = _tqdm()
            if tqdm is None:
                self.mode = "plain"
            else:
                self._bar = tqdm(
                    total=self.exact_total,
                    unit=" rows",
                    unit_scale=True,
                    file=self.out,
                    smoothing=0.1,
                    dynamic_ncols=True,
                    desc="journy import",
                )

    def _estimate(self, rows: int) -> Optional[int]:
        """The rows in the input: the rows the reader has read, over the bytes they took
        (the compressed bytes, for a ``.gz`` file), times the bytes of the input. Not the
        rows done: the reader runs ahead of them (by the window, and by the chunks the
        workers hold), which made the estimate reach 100% at 60%."""
        if self.exact_total is not None:
            return self.exact_total
        read = sum(s.position for s in self.sources)
        seen = sum(s.rows_seen for s in self.sources)
        if read <= 0 or seen <= 0:
            return None
        return max(rows, int(seen * self.bytes_total / read))

    def __call__(self, importer: Any) -> None:
        report = importer.report
        rows = report.rows_read + report.skipped
        if self.mode == "bar":
            bar = self._bar
            total = self._estimate(rows)
            if total is not None and total != bar.total:
                bar.total = total
            bar.set_postfix_str(
                f"delivered {report.delivered:,}, refused {report.refused_total:,}", refresh=False
            )
            bar.update(rows - self._shown)
            self._shown = rows
        elif self.mode == "plain":
            now = time.monotonic()
            if now - self._last_plain < _PLAIN_EVERY:
                return
            self._last_plain = now
            elapsed = now - importer.started
            rate = report.rows_read / elapsed if elapsed > 0 else 0.0
            total = self._estimate(rows)
            eta = ""
            if total and rate > 0:
                eta = f", ETA {_clock((total - rows) / rate)}"
            done = f" of ~{total:,}" if total else ""
            print(
                f"journy import: {rows:,}{done} rows, {rate:,.0f} rows/s{eta}; "
                f"delivered {report.delivered:,}, refused {report.refused_total:,}",
                file=self.out,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _tqdm() -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm
