"""``journy import --jobs N``: one reading process, N worker processes, one checkpoint.

One process cannot go much past 30,000 rows/s: decoding, the content id, building and
encoding each event all hold its interpreter lock. So the command's process only reads:
it cuts the input into chunks of consecutive rows (JSONL lines are passed undecoded) and
hands each to whichever worker asks for more. Each worker is the single-process import
(:class:`Importer`, its own client, its own share of the window) over the chunks it was
given, and tells the reader, a few times a second, its *settled prefix*: how many of its
rows, in the order it got them, are settled. Chunks go to a worker in input order, so that
prefix maps back to a row of the input, and

    rows_done = min(first unsettled row of each worker, first row not handed out yet)

is a row below which every row is settled: the same checkpoint one process writes, so a
run resumes where any earlier run (with any ``--jobs``) stopped. Refused rows come back
to the reader, which writes ``--rejects`` before any checkpoint that passes them.

Workers are fresh interpreters running :func:`_worker_main` (not ``multiprocessing``,
which would import the caller's main module again in each one), in a
session of their own (Ctrl-C reaches the reader, which stops them in order), talking over
two pipes each. The reader never blocks on a worker: a feeder thread per worker writes its
chunks, a worker's own reader thread takes them in as they come, and a worker asks for its
next chunk when it starts one, so it holds at most ``_AHEAD`` chunks not started. When the
reader dies (``kill -9``), its pipes close and the checkpoint stops moving: each worker
then sends nothing more (it drops the rows it holds unsent, which the next run sends) and
exits; only the requests already on the wire finish.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

from journy_analytics._import._checkpoint import Checkpoint
from journy_analytics._import._engine import (
    CHECKPOINT_EVERY,
    EXAMPLES_PER_CODE,
    Importer,
    ImportInterrupted,
    ImportReport,
    Reject,
    RejectsWriter,
    collect_rarely,
    resume_point,
)
from journy_analytics._import._readers import Source, decode_line
from journy_analytics._import._rows import SKIPPED, RowMapper
from journy_analytics._lifecycle import signal_free

__all__ = ["Assignments", "ParallelImport", "default_jobs"]

CHUNK_ROWS = 1000
_AHEAD = 2  # chunks a worker holds beyond the one it works on
_STATUS_EVERY = 0.1  # seconds between a worker's reports while rows settle
_POLL = 0.1  # how often a waiting process looks at the others
_SMALL_INPUT = 1 << 20  # bytes: below this, starting workers costs more than it saves
_STOP = "stop"  # reader to worker: take no more rows, deliver what you hold, report

# file, line numbers, rows, and {index in rows: nth} for rows whose content came before
Chunk = Tuple[Optional[str], Sequence[int], List[Any], Optional[Dict[int, int]]]


def default_jobs(total_bytes: int) -> int:
    """``--jobs auto``: one worker per usable core (at most 4); one process for small
    input, or where workers cannot be started with inherited pipes (not POSIX)."""
    if total_bytes < _SMALL_INPUT or os.name != "posix":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


@dataclass(frozen=True)
class _Settings:
    """What every worker is started with (sent down its pipe: the write key is never in
    a command line)."""

    worker: int
    client: Optional[Dict[str, Any]]  # import_client's keyword arguments; None: a dry run
    mapping: List[Tuple[str, str]]
    default_type: Optional[str]
    timestamp_format: Optional[str]
    column_types: Dict[str, str]
    window: int
    rate: Optional[float]
    close_timeout: float


# -- the worker process --------------------------------------------------------------------


class _Relay:
    """In a worker: sends refused rows and the settled prefix to the reader. Stands in for
    the importer's rejects writer and progress callback. Called from the importing thread
    and the client's sender threads; a reader that is gone makes every send a no-op."""

    path = "(the reading process)"

    def __init__(self, out: Connection, worker: int, reader_gone: Callable[[], None]) -> None:
        self._out = out
        self._worker = worker
        self._lock = threading.Lock()
        self._gone = reader_gone
        self.reader_gone = False
        self._last = 0.0
        self._sent: Optional[Tuple[Any, ...]] = None

    def send(self, message: Tuple[Any, ...]) -> None:
        if self.reader_gone:
            return
        try:
            with self._lock:
                self._out.send(message)
        except OSError:  # the reader died
            self._gone()

    def write(self, reject: Reject, row: Any) -> None:
        self.send(("reject", self._worker, reject, row))

    def flush(self) -> None:
        pass

    def status(self, importer: Importer, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < _STATUS_EVERY:
            return
        self._last = now
        r = importer.report
        state = (
            importer.rows_done,
            r.rows_read,
            r.valid,
            r.delivered,
            dict(r.refused),
            importer.stop_reason,
        )
        if state != self._sent or final:
            self._sent = state
            self.send(("status", self._worker, state))


def _take_in(
    inbox: Connection,
    chunks: queue.Queue[Any],
    stop: threading.Event,
    reader_gone: Callable[[], None],
) -> None:
    """A worker's reader thread: empties the pipe as chunks arrive (so the reader's feeder
    never waits on us), and turns a stop or a closed pipe into ``stop`` at once."""
    while True:
        try:
            item = inbox.recv()
        except (EOFError, OSError):
            reader_gone()
            chunks.put(None)
            return
        if item == _STOP:
            stop.set()
            chunks.put(None)
        else:
            chunks.put(item)  # a chunk, or None: the end of the input


def _work(settings: _Settings, inbox: Connection, out: Connection) -> None:
    stop = threading.Event()
    chunks: queue.Queue[Any] = queue.Queue()
    analytics = None
    if settings.client is not None:
        from journy_analytics._import._client import import_client

        analytics = import_client(**settings.client, window=settings.window)

    def reader_gone() -> None:
        """The reading process died (``kill -9``): it keeps the checkpoint, which no longer
        moves, so whatever this worker sends from now on is sent again by the next run.
        Send nothing more: the rows not handed to the client stay unread, and the ones in
        its queue are dropped when it closes; only requests already on the wire finish."""
        if relay.reader_gone:
            return
        relay.reader_gone = True
        stop.set()
        importer.halt("the reading process is gone")
        print(
            f"journy import worker {settings.worker}: the reading process is gone; stopping "
            "without sending the rows not sent yet (the next run sends them)",
            file=sys.stderr,
            flush=True,
        )

    relay = _Relay(out, settings.worker, reader_gone)
    importer = Importer(
        analytics,
        RowMapper(
            settings.mapping,
            settings.default_type,
            timestamp_format=settings.timestamp_format,
            column_types=settings.column_types,
        ),
        window=settings.window,
        rate=settings.rate,
        rejects=relay,
        progress=relay.status,
    )
    threading.Thread(
        target=signal_free(_take_in),
        args=(inbox, chunks, stop, reader_gone),
        name="journy-import-inbox",
        daemon=True,
    ).start()

    def take() -> Optional[Chunk]:
        while not stop.is_set():
            try:
                chunk: Optional[Chunk] = chunks.get(timeout=_POLL)
            except queue.Empty:
                relay.status(importer)  # rows settle while we wait for input
                continue
            if chunk is not None and not stop.is_set():
                relay.send(("more", settings.worker))
                return chunk
            return None
        return None

    def sources() -> Iterator[Tuple[Optional[str], Callable[[int], Any]]]:
        while True:
            chunk = take()
            if chunk is None:
                return
            name, lines, rows, repeats = chunk

            def decoded(
                _skip: int,
                lines: Sequence[int] = lines,
                rows: List[Any] = rows,
                repeats: Optional[Dict[int, int]] = repeats,
            ) -> Any:
                for i, (line, row) in enumerate(zip(lines, rows)):
                    yield (
                        line,
                        decode_line(row) if type(row) is bytes else row,
                        repeats.get(i, 0) if repeats else 0,
                    )

            yield name, decoded

    try:
        importer.run(sources(), 0)
    finally:
        if analytics is not None:
            # Told to stop (Ctrl-C) or at the end: deliver what it holds. The reader gone:
            # drop it (timeout 0: the queue is dropped, the requests on the wire finish).
            analytics.close_and_flush(timeout=0 if relay.reader_gone else settings.close_timeout)
            importer.finish()
        relay.status(importer, final=True)
        relay.send(("done", settings.worker, importer.report))


# A worker's command line. The package is imported the way a fresh interpreter finds it,
# else from where the reader found it (appended to sys.path, never ahead of the stdlib).
_BOOTSTRAP = (
    "import sys; sys.path.append(sys.argv[1]); "
    "from journy_analytics._import._parallel import _worker_main; "
    "sys.exit(_worker_main(sys.argv[2:]))"
)
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _worker_main(argv: List[str]) -> int:
    """A worker: ``argv`` is the file descriptors of its two pipes (in, out)."""
    inbox = Connection(int(argv[0]), writable=False)
    out = Connection(int(argv[1]), readable=False)
    try:
        settings: _Settings = inbox.recv()
    except (EOFError, OSError):
        return 1
    try:
        with collect_rarely():
            _work(settings, inbox, out)
    except BaseException as exc:
        try:
            out.send(("failed", settings.worker, f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
        raise
    return 0


# -- the reading process -------------------------------------------------------------------


def _feed(outbox: Connection, items: queue.Queue[Any]) -> None:
    """The reader's feeder thread for one worker: writes what the loop hands it, in order."""
    while True:
        item = items.get()
        try:
            outbox.send(item)
        except OSError:
            return  # the worker is gone; the loop sees it exit
        if item is None or item == _STOP:
            return


class Assignments:
    """Which input rows one worker was given, and which of them its settled prefix covers.

    A worker gets chunks of consecutive input rows, in input order, and counts its rows in
    the order it got them; it reports ``settled``: every one of its first ``settled`` rows
    is settled. ``first_unsettled`` turns that back into an input row."""

    def __init__(self) -> None:
        self._chunks: Deque[Tuple[int, int, int]] = deque()  # (first input row, rows, offset)
        self._given = 0  # rows handed to the worker so far
        self.settled = 0

    def give(self, first_row: int, rows: int) -> None:
        self._chunks.append((first_row, rows, self._given))
        self._given += rows

    def first_unsettled(self) -> Optional[int]:
        """The lowest input row the worker holds unsettled (None: it holds none)."""
        chunks = self._chunks
        while chunks and chunks[0][2] + chunks[0][1] <= self.settled:
            chunks.popleft()
        if not chunks:
            return None
        first, _, offset = chunks[0]
        return first + max(0, self.settled - offset)


class _Worker:
    """The reader's side of one worker: its process and pipes, the chunks it was given
    (in order) and what it last reported."""

    def __init__(self, index: int, settings: _Settings) -> None:
        self.index = index
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _BOOTSTRAP,
                    _PACKAGE_ROOT,
                    str(to_worker_r),
                    str(from_worker_w),
                ],
                pass_fds=(to_worker_r, from_worker_w),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C is the reader's to handle
            )
        finally:
            os.close(to_worker_r)
            os.close(from_worker_w)
        self.results = Connection(from_worker_r, writable=False)
        self._outbox = Connection(to_worker_w, readable=False)
        self._items: queue.Queue[Any] = queue.Queue()
        self._items.put(settings)
        self._feeder = threading.Thread(
            target=signal_free(_feed),
            args=(self._outbox, self._items),
            name=f"journy-import-feed-{index}",
        )
        self._feeder.daemon = True
        self._feeder.start()
        self.credit = 1 + _AHEAD
        self.rows = Assignments()
        self.report = ImportReport()
        self.done = False  # it said "done", or it is gone
        self.closed = False  # told there is no more input (or to stop)

    def give(self, first_row: int, chunk: Chunk) -> None:
        self.rows.give(first_row, len(chunk[2]))
        self.credit -= 1
        self._items.put(chunk)

    def close(self, stop: bool = False) -> None:
        if not self.closed:
            self.closed = True
            self._items.put(_STOP if stop else None)

    def reap(self) -> None:
        try:
            self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._outbox.close()
        self.results.close()


class ParallelImport:
    """Same contract as :func:`journy_analytics._import._engine.execute`, over ``jobs``
    worker processes. ``client``: the keyword arguments of ``import_client`` (None: dry run)."""

    def __init__(
        self,
        sources: List[Source],
        mapper: RowMapper,
        *,
        jobs: int,
        client: Optional[Dict[str, Any]],
        window: int,
        rate: Optional[float] = None,
        checkpoint: Optional[Checkpoint] = None,
        restart: bool = False,
        rejects_path: Optional[str] = None,
        progress: Optional[Callable[[Any], None]] = None,
        close_timeout: float = 30.0,
    ) -> None:
        self.sources = sources
        self.jobs = max(1, jobs)
        self.dry_run = client is None
        self._settings = [
            _Settings(
                worker=i,
                client=client,
                mapping=mapper.mapping,
                default_type=mapper.default_type,
                timestamp_format=mapper.timestamp_format,
                column_types=mapper.column_types,
                window=max(1, window // self.jobs),  # the window is shared out
                rate=None if rate is None else rate / self.jobs,
                close_timeout=close_timeout,
            )
            for i in range(self.jobs)
        ]
        self.close_timeout = close_timeout
        self.checkpoint = checkpoint if client is not None else None
        self.restart = restart
        self.rejects_path = rejects_path
        self.progress = progress
        self.report = ImportReport(
            dry_run=self.dry_run,
            checkpoint=None if self.checkpoint is None else self.checkpoint.path,
            rejects_file=rejects_path,
        )
        self.started = time.monotonic()
        self._workers: List[_Worker] = []
        self._handed = 0  # the next input row to hand out (skipped rows included)
        self._read_all = False
        self._stop: Optional[str] = None
        self._saved = -1
        self._last_save = 0.0
        self._rejects: Optional[RejectsWriter] = None

    @property
    def rows_done(self) -> int:
        """Every input row below this one is settled."""
        low = self._handed
        for w in self._workers:
            first = w.rows.first_unsettled()
            if first is not None and first < low:
                low = first
        return low

    def run(self) -> ImportReport:
        skip, state = resume_point(self.checkpoint, self.restart)
        self.report.resume_from(state)
        self._saved = skip
        if self.rejects_path is not None:
            self._rejects = RejectsWriter(self.rejects_path, append=skip > 0)
        try:
            for settings in self._settings:
                self._workers.append(_Worker(settings.worker, settings))
            try:
                self._loop(self._chunks(skip))
            except KeyboardInterrupt:
                self.report.interrupted = True
                self._halt("interrupted")
        finally:
            for w in self._workers:
                w.close(stop=True)
            for w in self._workers:
                w.reap()
            self._finish()
            if self._rejects is not None:
                self._rejects.close()
        if self.report.interrupted:
            raise ImportInterrupted(self.report)
        return self.report

    def _chunks(self, skip: int) -> Iterator[Chunk]:
        """The input, about ``CHUNK_ROWS`` rows at a time, past the ``skip`` done ones."""
        for source in self.sources:
            if source.format == "jsonl":
                for skipped, line_numbers, texts, repeats in source.line_blocks(skip, CHUNK_ROWS):
                    if skipped:
                        skip -= skipped
                        self._handed += skipped
                        self.report.skipped += skipped
                    if texts:
                        yield source.path, line_numbers, texts, repeats
                continue
            lines: List[int] = []
            rows: List[Any] = []
            nths: Dict[int, int] = {}
            for line, row, nth in source.rows(skip, raw=True):
                if row is SKIPPED:
                    skip -= 1
                    self._handed += 1
                    self.report.skipped += 1
                    continue
                if nth:
                    nths[len(rows)] = nth
                lines.append(line)
                rows.append(row)
                if len(rows) == CHUNK_ROWS:
                    yield source.path, lines, rows, nths or None
                    lines, rows, nths = [], [], {}
            if rows:
                yield source.path, lines, rows, nths or None
        self._read_all = True

    def _hand_out(self, chunks: Iterator[Chunk]) -> None:
        """Chunks, in input order, to every worker with room; end of input to all."""
        for w in self._workers:
            while w.credit > 0 and not w.closed and self._stop is None:
                chunk = next(chunks, None)
                if chunk is None:
                    for other in self._workers:
                        other.close()
                    return
                w.give(self._handed, chunk)
                self._handed += len(chunk[2])

    def _loop(self, chunks: Iterator[Chunk]) -> None:
        while True:
            self._hand_out(chunks)
            live = [w for w in self._workers if not w.done]
            if not live:
                return
            for conn in wait([w.results for w in live], timeout=_POLL):
                self._read_from(next(w for w in live if w.results is conn))
            self._tick()

    def _read_from(self, w: _Worker) -> None:
        """Every message the worker has written so far; its exit if it closed the pipe."""
        try:
            while True:
                self._receive(w, w.results.recv())
                if w.done or not w.results.poll():
                    return
        except (EOFError, OSError):
            if not w.done:
                # Gone without a word (killed, out of memory): what it held is unsettled.
                w.done = True
                code = w.process.wait()
                self._stopping(f"import worker {w.index} exited with status {code}")

    def _receive(self, w: _Worker, message: Tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "more":
            w.credit += 1
        elif kind == "reject":
            if self._rejects is not None:
                self._rejects.write(message[2], message[3])
        elif kind == "status":
            settled, rows_read, valid, delivered, refused, stopped = message[2]
            w.rows.settled = settled
            r = w.report
            r.rows_read, r.valid, r.delivered, r.refused = rows_read, valid, delivered, refused
            if stopped is not None:
                self._stopping(stopped)
        elif kind == "done":
            w.report = message[2]
            w.done = True
            if w.report.stopped:
                self._stopping(w.report.stopped)
        elif kind == "failed":
            self._stopping(f"import worker {w.index} failed: {message[2]}")

    def _stopping(self, reason: str) -> None:
        """Stop the run: every worker takes no more rows, delivers what it holds, reports."""
        if self._stop is None:
            self._stop = reason
        for w in self._workers:
            w.close(stop=True)

    def _halt(self, reason: str) -> None:
        """Ctrl-C: the workers stop and report (bounded); then the checkpoint is final."""
        self._stopping(reason)
        deadline = time.monotonic() + self.close_timeout + 5.0
        try:
            while time.monotonic() < deadline:
                live = [w for w in self._workers if not w.done]
                if not live:
                    return
                for conn in wait([w.results for w in live], timeout=_POLL):
                    self._read_from(next(w for w in live if w.results is conn))
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: leave now, with the checkpoint as it stands

    def _aggregate(self) -> None:
        report = self.report
        combined = ImportReport.combine(w.report for w in self._workers)
        report.rows_read = combined.rows_read
        report.valid = combined.valid
        report.delivered = combined.delivered
        report.refused = combined.refused
        examples: List[Reject] = []
        per_code: Dict[str, int] = {}
        for e in sorted(combined.examples, key=lambda e: (e.file or "", e.line or 0)):
            if per_code.get(e.code, 0) < EXAMPLES_PER_CODE:
                per_code[e.code] = per_code.get(e.code, 0) + 1
                examples.append(e)
        report.examples = examples
        report.seconds = time.monotonic() - self.started

    def _tick(self, final: bool = False) -> None:
        self._aggregate()
        if self.progress is not None:
            self.progress(self)
        if self.checkpoint is None:
            return
        now = time.monotonic()
        if not final and now - self._last_save < CHECKPOINT_EVERY:
            return
        low = self.rows_done
        if low == self._saved and not final:
            return
        if self._rejects is not None:
            self._rejects.flush()  # refused rows below the checkpoint are on disk first
        complete = final and self._read_all and self._stop is None and low == self._handed
        self.checkpoint.save(
            low, {"rows_in_flight": self._handed - low, "totals": self.report.totals()}, complete
        )
        self._saved = low
        self._last_save = now

    def _finish(self) -> None:
        if self._stop is not None and self._stop != "interrupted":
            self.report.stopped = self._stop
        self._tick(final=True)
