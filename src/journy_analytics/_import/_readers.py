"""Streaming readers: JSONL (optionally gzipped), CSV and Parquet, one row at a time.

Each yields ``(line, row)``: ``line`` is the 1-based line of the row in the file (for
Parquet, the 1-based row number), ``row`` a dict, or a :class:`Refusal` for a row that
cannot be read. Memory stays flat: a line, a CSV record or one Parquet record batch.
``skip`` rows are counted but not decoded (a resumed import passes what is already done).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import orjson

from journy_analytics._import._rows import SKIPPED, Refusal

__all__ = ["FORMATS", "Source", "decode_line", "detect_format"]

FORMATS = ("jsonl", "csv", "parquet")
_PARQUET_BATCH = 8192
# Every read() releases the GIL, and getting it back can wait for a busy sender thread's
# switch interval (5 ms): read megabytes at a time, not the default 8 KB.
_READ_BUFFER = 4 << 20
_PARQUET_HINT = (
    'reading Parquet needs pyarrow: pip install "journy-analytics[parquet]" '
    "(or pip install pyarrow)"
)


def detect_format(path: str) -> str:
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise ValueError(
        f"cannot tell the format of {path!r} from its name; pass --format jsonl, csv or parquet"
    )


class Source:
    """One input file. ``position`` (bytes read) and ``size`` drive the progress bar."""

    def __init__(self, path: str, fmt: Optional[str] = None) -> None:
        self.path = path
        self.format = fmt or detect_format(path)
        if self.format not in FORMATS:
            raise ValueError(f"format {self.format!r} is not one of {', '.join(FORMATS)}")
        stat = os.stat(path)  # a missing file fails here, before anything is sent
        self.size = stat.st_size
        self.mtime_ns = stat.st_mtime_ns
        self.position = 0
        self.total_rows: Optional[int] = None
        if self.format == "parquet":
            self.total_rows = _parquet_file(path).metadata.num_rows

    @property
    def _gzipped(self) -> bool:
        return self.path.lower().endswith(".gz")

    def _uncompressed(self, raw: Any) -> Any:
        """The file's bytes as written, through gzip for a ``.gz`` file."""
        return io.BufferedReader(gzip.GzipFile(fileobj=raw), _READ_BUFFER) if self._gzipped else raw

    def rows(self, skip: int = 0, raw: bool = False) -> Iterator[Tuple[int, Any]]:
        """``raw``: JSONL lines are yielded as bytes, left for :func:`decode_line` (a parallel
        import decodes them in its workers, not in the reading process)."""
        if self.format == "jsonl":
            return self._jsonl(skip, raw)
        if self.format == "csv":
            return self._csv(skip)
        return self._parquet(skip)

    def _jsonl(self, skip: int, raw_lines: bool) -> Iterator[Tuple[int, Any]]:
        gz = self._gzipped
        with open(self.path, "rb", buffering=_READ_BUFFER) as raw:
            f: Any = self._uncompressed(raw)
            line = 0
            position = 0
            for text in f:
                line += 1
                position += len(text)
                if not line & 1023:
                    self.position = raw.tell() if gz else position
                if not text.strip():
                    continue
                if skip:
                    skip -= 1
                    yield line, SKIPPED
                    continue
                yield line, text if raw_lines else decode_line(text)
        self.position = self.size

    def line_blocks(self, skip: int, size: int) -> Iterator[Tuple[int, Sequence[int], List[bytes]]]:
        """JSONL only, for a parallel import's reader: ``(skipped, lines, texts)`` blocks of
        about ``size`` rows, undecoded, read a block at a time rather than a line at a time
        (the reading process reads for every worker). ``skipped`` counts the rows of the
        block that ``skip`` passed over; blank lines are not rows, as in :meth:`rows`."""
        gz = self._gzipped
        hint = size * 128  # bytes: readlines() stops after the line that passes it
        with open(self.path, "rb", buffering=_READ_BUFFER) as raw:
            f: Any = self._uncompressed(raw)
            line = 0  # lines before this block
            position = 0
            while True:
                block = f.readlines(hint)
                if not block:
                    break
                first = line + 1
                line += len(block)
                position += sum(map(len, block))
                self.position = raw.tell() if gz else position
                texts = [t for t in block if t.strip()]
                lines: Sequence[int] = (
                    range(first, line + 1)
                    if len(texts) == len(block)
                    else [n for n, t in enumerate(block, first) if t.strip()]
                )
                skipped = 0
                if skip:
                    skipped = min(skip, len(texts))
                    skip -= skipped
                    texts = texts[skipped:]
                    lines = lines[skipped:]
                yield skipped, lines, texts
        self.position = self.size

    def _csv(self, skip: int) -> Iterator[Tuple[int, Any]]:
        with open(self.path, "rb", buffering=_READ_BUFFER) as raw:
            binary: Any = self._uncompressed(raw)
            text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
            name = self.path.lower()
            delimiter = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
            reader = csv.reader(text, delimiter=delimiter)
            try:
                header = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise ValueError(f"{self.path}: cannot read the CSV header: {exc}") from None
            width = len(header)
            end = reader.line_num
            while True:
                start = end + 1
                try:
                    record = next(reader)
                except StopIteration:
                    break
                except (csv.Error, UnicodeDecodeError) as exc:
                    end = reader.line_num
                    yield start, Refusal("bad_csv", f"not a readable CSV record: {exc}")
                    continue
                end = reader.line_num
                if not start & 1023:
                    self.position = raw.tell()
                if not record:
                    continue
                if skip:
                    skip -= 1
                    yield start, SKIPPED
                    continue
                if len(record) != width:
                    yield (
                        start,
                        Refusal(
                            "bad_csv",
                            f"{len(record)} fields where the header has {width}",
                            record,
                        ),
                    )
                    continue
                yield start, dict(zip(header, record))
        self.position = self.size

    def _parquet(self, skip: int) -> Iterator[Tuple[int, Any]]:
        pf = _parquet_file(self.path)
        row = 0
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH):
            n = batch.num_rows
            if skip >= n:
                skip -= n
                for _ in range(n):
                    row += 1
                    yield row, SKIPPED
                continue
            records = batch.to_pylist()
            if skip:
                for _ in range(skip):
                    row += 1
                    yield row, SKIPPED
                records = records[skip:]
                skip = 0
            for record in records:
                row += 1
                yield row, record
            if self.total_rows:
                self.position = int(self.size * row / self.total_rows)
        self.position = self.size


def decode_line(text: bytes) -> Any:
    """One JSONL line: its value, or a ``bad_json`` Refusal carrying the line's text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raw_text = text.decode("utf-8", "replace").rstrip()
        return Refusal("bad_json", f"not valid JSON: {exc}", raw_text)


def _parquet_file(path: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(_PARQUET_HINT) from None
    return pq.ParquetFile(path)
