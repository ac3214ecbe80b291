"""Streaming readers: JSONL (optionally gzipped), CSV and Parquet, one row at a time.

Each yields ``(line, row)``: ``line`` is the 1-based line of the row in the file (for
Parquet, the 1-based row number), ``row`` a dict, or a :class:`Refusal` for a row that
cannot be read. Memory stays flat: a line, a CSV record or one Parquet record batch.
``skip`` rows are counted but not decoded (a resumed import passes what is already done).
"""

from __future__ import annotations

import csv
import io
import os
import zlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import orjson

from journy_analytics._import._rows import SKIPPED, Occurrences, Refusal

__all__ = ["FORMATS", "Source", "decode_line", "detect_format", "record_key"]

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


_BOM = b"\xef\xbb\xbf"


class _Gunzip(io.RawIOBase):
    """The decompressed bytes of a gzip file (one member or several), tolerant of damage:
    where the data is cut short or corrupt it ends, as at the end of the file, after every
    byte that could be decompressed, and ``damage`` says what was wrong. (``gzip.GzipFile``
    raises ``EOFError`` instead, and loses what the failing read had decompressed.)

    ``compressed_at(offset)`` turns an offset in the decompressed stream into a position in
    the file, in proportion to what was decompressed so far: the progress bar's position."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj(wbits=31)
        self._pending = b""
        self._held = b""  # after the last newline: released when the data goes on
        self.dropped = 0  # bytes of an incomplete last line, where the data was cut
        self._eof = False
        self._member_bytes = 0  # compressed bytes of the current member fed so far
        self.compressed_in = 0
        self.produced = 0  # decompressed so far
        self.returned = 0  # of which handed to the reader
        self.damage: Optional[str] = None

    def readable(self) -> bool:
        return True

    def compressed_at(self, offset: int) -> int:
        if self.produced <= 0:
            return 0
        return min(self.compressed_in, int(self.compressed_in * offset / self.produced))

    def _fill(self) -> None:
        while not self._pending and not self._eof:
            chunk = self._raw.read(1 << 16)
            if not chunk:
                if self._member_bytes and not self._inflate.eof:
                    self.damage = (
                        f"the compressed data ends early (cut at byte {self.compressed_in:,}"
                        " of the file)"
                    )
                self._end()
                return
            self.compressed_in += len(chunk)
            saved = (self._inflate.copy(), self._member_bytes)
            try:
                self._pending = self._decompress(chunk)
            except zlib.error:
                # Find where: again from the same state, a little at a time, keeping
                # everything before the bad bytes.
                self._inflate, self._member_bytes = saved
                self._pending = b""
                for i in range(0, len(chunk), 256):
                    try:
                        self._pending += self._decompress(chunk[i : i + 256])
                    except zlib.error as exc:
                        at = self.compressed_in - len(chunk) + i
                        self.damage = (
                            f"the compressed data is corrupt near byte {at:,} of the file ({exc})"
                        )
                        break
            self.produced += len(self._pending)
            data = self._held + self._pending
            cut = data.rfind(b"\n") + 1
            self._pending, self._held = data[:cut], data[cut:]
            if self.damage is not None:
                self._end()

    def _decompress(self, chunk: bytes) -> bytes:
        self._member_bytes += len(chunk)
        out = self._inflate.decompress(chunk)
        while self._inflate.eof and self._inflate.unused_data:
            # The next member of a concatenated gzip file.
            rest = self._inflate.unused_data
            self._inflate = zlib.decompressobj(wbits=31)
            self._member_bytes = len(rest)
            out += self._inflate.decompress(rest)
        if self._inflate.eof:
            self._member_bytes = 0
        return out

    def _end(self) -> None:
        # A clean end releases the last line; after damage it is a piece of a line.
        if self.damage is None:
            self._pending = self._held
        else:
            self.dropped = len(self._held)
        self._held = b""
        self._eof = True

    def readinto(self, buffer: Any) -> int:
        self._fill()
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self.returned += n
        return n


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
        self.rows_seen = 0  # rows read up to ``position``
        self.total_rows: Optional[int] = None
        # What made the reading stop before the end of the file (a cut or corrupt .gz),
        # with the line where it stopped; every row before it was read.
        self.damage: Optional[str] = None
        if self.format == "parquet":
            self.total_rows = _parquet_file(path).metadata.num_rows

    @property
    def _gzipped(self) -> bool:
        return self.path.lower().endswith(".gz")

    def _uncompressed(self, raw: Any, buffer: int = _READ_BUFFER) -> Any:
        """The file's bytes as written, through gzip for a ``.gz`` file."""
        return io.BufferedReader(_Gunzip(raw), buffer) if self._gzipped else raw

    def _check_damage(self, f: Any, lines: int) -> None:
        """After a ``.gz`` file's last row: was it the end of the data, or a cut?"""
        gunzip = getattr(f, "raw", None)
        if not isinstance(gunzip, _Gunzip) or gunzip.damage is None:
            return
        where = (
            f"line {lines + 1:,} is incomplete and was not imported"
            if gunzip.dropped
            else f"the last whole line read is line {lines:,}"
        )
        self.damage = f"{self.path}: {gunzip.damage}; {where}"

    def rows(self, skip: int = 0, raw: bool = False) -> Iterator[Tuple[int, Any, int]]:
        """``(line, row, nth)``: ``nth`` counts the rows of this file with the same content
        before this one (0 for the first), skipped rows included, so a resumed run numbers
        them as the first run did. ``raw``: JSONL lines are yielded as bytes, left for
        :func:`decode_line` (a parallel import decodes them in its workers)."""
        self.rows_seen = 0
        if self.format == "jsonl":
            return self._jsonl(skip, raw)
        if self.format == "csv":
            return self._csv(skip)
        return self._parquet(skip)

    def _progress(self, position: int, rows: int) -> None:
        # Together, so that the estimate of the rows in the input is rows / bytes read.
        self.position = position
        self.rows_seen = rows

    def _jsonl(self, skip: int, raw_lines: bool) -> Iterator[Tuple[int, Any, int]]:
        occurrences = Occurrences()
        with open(self.path, "rb", buffering=_READ_BUFFER) as raw:
            f: Any = self._uncompressed(raw)
            gunzip = f.raw if self._gzipped else None
            line = 0
            rows = 0
            position = 0
            for text in f:
                line += 1
                position += len(text)
                if line == 1 and text.startswith(_BOM):
                    text = text[3:]  # a UTF-8 byte order mark (Windows tools write one)
                if not line & 1023:
                    self._progress(gunzip.compressed_at(position) if gunzip else position, rows)
                if not text.strip():
                    continue
                rows += 1
                nth = occurrences(text)
                if skip:
                    skip -= 1
                    yield line, SKIPPED, nth
                    continue
                yield line, text if raw_lines else decode_line(text), nth
            self._check_damage(f, line)
        self._progress(self.size, rows)

    def line_blocks(
        self, skip: int, size: int
    ) -> Iterator[Tuple[int, Sequence[int], List[bytes], Optional[Dict[int, int]]]]:
        """JSONL only, for a parallel import's reader: ``(skipped, lines, texts, repeats)``
        blocks of about ``size`` rows, undecoded, read a block at a time rather than a line
        at a time (the reading process reads for every worker). ``skipped`` counts the rows
        of the block that ``skip`` passed over; blank lines are not rows, as in
        :meth:`rows`. ``repeats`` maps the index in ``texts`` of a row whose content came
        before in the file to its ``nth`` (None: no such row in the block)."""
        hint = size * 128  # bytes: readlines() stops after the line that passes it
        occurrences = Occurrences()
        self.rows_seen = 0
        with open(self.path, "rb", buffering=_READ_BUFFER) as raw:
            f: Any = self._uncompressed(raw)
            gunzip = f.raw if self._gzipped else None
            line = 0  # lines before this block
            rows = 0
            position = 0
            while True:
                block = f.readlines(hint)
                if not block:
                    break
                if not line and block[0].startswith(_BOM):
                    block[0] = block[0][3:]
                first = line + 1
                line += len(block)
                position += sum(map(len, block))
                texts = [t for t in block if t.strip()]
                lines: Sequence[int] = (
                    range(first, line + 1)
                    if len(texts) == len(block)
                    else [n for n, t in enumerate(block, first) if t.strip()]
                )
                rows += len(texts)
                self._progress(gunzip.compressed_at(position) if gunzip else position, rows)
                repeats = occurrences.block(texts)
                skipped = 0
                if skip:
                    skipped = min(skip, len(texts))
                    skip -= skipped
                    texts = texts[skipped:]
                    lines = lines[skipped:]
                    if repeats:
                        repeats = {i - skipped: n for i, n in repeats.items() if i >= skipped}
                yield skipped, lines, texts, repeats or None
            self._check_damage(f, line)
        self._progress(self.size, rows)

    def _csv(self, skip: int) -> Iterator[Tuple[int, Any, int]]:
        occurrences = Occurrences()
        with open(self.path, "rb", buffering=_READ_BUFFER) as raw:
            # A small buffer over gzip: the position is then close to the rows read.
            binary: Any = self._uncompressed(raw, 1 << 16)
            gunzip = binary.raw if self._gzipped else None
            # utf-8-sig: a byte order mark before the header is not part of its first name.
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
            rows = 0
            while True:
                start = end + 1
                try:
                    record = next(reader)
                except StopIteration:
                    break
                except (csv.Error, UnicodeDecodeError) as exc:
                    end = reader.line_num
                    rows += 1
                    yield start, Refusal("bad_csv", f"not a readable CSV record: {exc}"), 0
                    continue
                end = reader.line_num
                if not start & 1023:
                    self._progress(
                        gunzip.compressed_at(gunzip.returned - len(binary.peek(0)))
                        if gunzip
                        else raw.tell(),
                        rows,
                    )
                if not record:
                    continue
                rows += 1
                nth = occurrences(tuple(record))
                if skip:
                    skip -= 1
                    yield start, SKIPPED, nth
                    continue
                if len(record) != width:
                    yield (
                        start,
                        Refusal(
                            "bad_csv",
                            f"{len(record)} fields where the header has {width}",
                            record,
                        ),
                        nth,
                    )
                    continue
                yield start, dict(zip(header, record)), nth
            self._check_damage(binary, end)
        self._progress(self.size, rows)

    def _parquet(self, skip: int) -> Iterator[Tuple[int, Any, int]]:
        occurrences = Occurrences()
        pf = _parquet_file(self.path)
        row = 0
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH):
            # Skipped rows are read too: the occurrence count needs their content.
            for record in batch.to_pylist():
                row += 1
                nth = occurrences(record_key(record))
                if skip:
                    skip -= 1
                    yield row, SKIPPED, nth
                    continue
                yield row, record, nth
            if self.total_rows:
                self._progress(int(self.size * row / self.total_rows), row)
        self._progress(self.size, row)


def record_key(record: Any) -> Any:
    try:
        return orjson.dumps(record, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return repr(record)


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
