"""The import loop shared by ``journy import`` and ``journy_analytics.bulk``.

One thread (the caller's) reads rows, turns each into an event with a content-derived
message id, builds and encodes it with the event methods' own builder and encoder, and
hands the bytes to an ``Analytics`` client (``_enqueue_encoded``) with a per-row
``BatchAck`` (the delivery core's batch-settled hook). The client settles rows on its
sender threads: a delivered batch of them in one ``batch_delivered`` call, anything else
row by row (``event_settled``): refused for good,
or handed back to be sent again (``queue_full``). Inside a ``journy_analytics.scope()``,
or with a client that has no such hook, rows go through the event methods instead.
Three rules make it a backfill rather than a loop:

* **back-pressure**: at most ``window`` rows are unsettled at once; the reader waits on a
  condition for the server to catch up, so nothing is dropped for lack of room and memory
  does not grow with the input (a 429 with Retry-After slows the import instead);
* **a settled prefix**: the checkpoint is the number of rows below which every row is
  settled, written only after the callbacks said so;
* **stop, do not skip**: a row the client could not deliver (the server down past the
  retries, a bad write key) stops the import at that row; re-running resumes there.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Protocol, Tuple

import orjson

from journy_analytics import _message as m
from journy_analytics._core import BatchAck
from journy_analytics._exceptions import ValidationError
from journy_analytics._import._checkpoint import Checkpoint
from journy_analytics._import._rows import SKIPPED, Refusal, RowMapper
from journy_analytics._message import active_scope, encode_event

__all__ = [
    "SKIPPED",
    "ImportInterrupted",
    "ImportReport",
    "Importer",
    "Reject",
    "RejectsWriter",
    "collect_rarely",
    "resume_point",
]

EXAMPLES_PER_CODE = 5
CHECKPOINT_EVERY = 0.2  # seconds between checkpoint writes while rows settle
_BOUNCE_WAIT = 0.02  # the client's queue was full: retry that often (woken earlier by deliveries)
_AUTH_STATUSES = frozenset({401, 403, 404})
_BUILDERS: Dict[str, Callable[..., Dict[str, Any]]] = {
    "identify": m.build_identify,
    "group": m.build_group,
    "track": m.build_track,
    "page": m.build_page,
    "screen": functools.partial(m.build_page, kind="screen"),
    "alias": m.build_alias,
}
# (line, row, nth): nth counts the earlier rows of the input with the same content.
Rows = Iterator[Tuple[Optional[int], Any, int]]


@contextlib.contextmanager
def collect_rarely() -> Iterator[None]:
    """For a process that does nothing but import (``journy import`` and its workers, never
    a user's process): an import makes millions of short-lived objects and next to no
    reference cycles, yet every 700 allocations the collector walks the young ones, and
    now and then everything the process has loaded. Freezing what exists and collecting
    every 50,000 allocations instead saves about 14% of the import's CPU (measured on
    200,000 rows: 7.3 s before, 6.2 s after). Restored on the way out."""
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


@dataclass(frozen=True)
class Reject:
    """One refused row: where it was (``file`` is None for an iterable) and why."""

    file: Optional[str]
    line: Optional[int]
    code: str
    reason: str

    def where(self) -> str:
        if self.file is None:
            return f"row {self.line}"
        return f"{self.file}:{self.line}"


@dataclass
class ImportReport:
    """What an import did. Picklable, so Dask and Spark tasks can return it.

    ``rows_read`` counts rows read in this run, past the ``skipped`` ones a checkpoint said
    were done. Each read row is ``delivered``, ``refused`` (by code, with up to five
    ``examples`` each: file and line), or was left unsettled when the import ``stopped``.
    In a dry run nothing is sent: ``valid`` counts the rows that would have been.
    ``earlier_*``: what the earlier runs of a resumed import did (from its checkpoint);
    ``ok`` is False when they refused rows too. ``interrupted``: stopped by Ctrl-C.
    """

    rows_read: int = 0
    skipped: int = 0
    valid: int = 0
    delivered: int = 0
    refused: Dict[str, int] = field(default_factory=dict)
    examples: List[Reject] = field(default_factory=list)
    dry_run: bool = False
    stopped: Optional[str] = None
    seconds: float = 0.0
    checkpoint: Optional[str] = None
    rejects_file: Optional[str] = None
    interrupted: bool = False
    earlier_delivered: int = 0
    earlier_refused: Dict[str, int] = field(default_factory=dict)
    earlier_examples: List[Reject] = field(default_factory=list)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    @property
    def pending(self) -> int:
        """Rows read but not settled (the import stopped or was interrupted before)."""
        done = self.valid if self.dry_run else self.delivered
        return self.rows_read - done - self.refused_total

    @property
    def ok(self) -> bool:
        """Every row read was delivered (or, in a dry run, valid): nothing refused or left,
        in this run nor in the earlier runs of the same import."""
        done = self.valid if self.dry_run else self.delivered
        return (
            self.stopped is None
            and not self.interrupted
            and done == self.rows_read
            and not self.earlier_refused
        )

    def totals(self) -> Dict[str, Any]:
        """The counts of every run of the import so far, as its checkpoint keeps them."""
        refused = dict(self.earlier_refused)
        for code, n in self.refused.items():
            refused[code] = refused.get(code, 0) + n
        examples: List[Dict[str, Any]] = []
        per_code: Dict[str, int] = {}
        for e in [*self.earlier_examples, *self.examples]:
            if per_code.get(e.code, 0) < EXAMPLES_PER_CODE:
                per_code[e.code] = per_code.get(e.code, 0) + 1
                examples.append(
                    {"file": e.file, "line": e.line, "code": e.code, "reason": e.reason}
                )
        return {
            "delivered": self.earlier_delivered + self.delivered,
            "refused": refused,
            "examples": examples,
        }

    def resume_from(self, state: Optional[Dict[str, Any]]) -> None:
        """Take the earlier runs' counts from a checkpoint's state."""
        totals = (state or {}).get("totals")
        if not isinstance(totals, dict):
            return
        self.earlier_delivered = int(totals.get("delivered", 0))
        self.earlier_refused = {
            str(code): int(n) for code, n in dict(totals.get("refused", {})).items() if n
        }
        self.earlier_examples = [
            Reject(e.get("file"), e.get("line"), str(e.get("code")), str(e.get("reason")))
            for e in totals.get("examples", [])
            if isinstance(e, dict)
        ]

    @classmethod
    def combine(cls, reports: Iterable[ImportReport]) -> ImportReport:
        """One report for many partitions (``seconds`` is the longest partition's)."""
        total = cls()
        for r in reports:
            total.rows_read += r.rows_read
            total.skipped += r.skipped
            total.valid += r.valid
            total.delivered += r.delivered
            for code, n in r.refused.items():
                total.refused[code] = total.refused.get(code, 0) + n
            total.examples.extend(r.examples)
            total.dry_run = total.dry_run or r.dry_run
            if r.stopped and not total.stopped:
                total.stopped = r.stopped
            total.interrupted = total.interrupted or r.interrupted
            total.seconds = max(total.seconds, r.seconds)
        return total

    def summary(self) -> str:
        lines = []
        rate = self.rows_read / self.seconds if self.seconds > 0 else 0.0
        head = "dry run: nothing sent" if self.dry_run else "import"
        lines.append(
            f"{head}: {self.rows_read:,} rows read in {self.seconds:.1f} s ({rate:,.0f} rows/s)"
        )
        if self.skipped:
            lines.append(f"  skipped (done before, per the checkpoint): {self.skipped:,}")
        if self.dry_run:
            lines.append(f"  valid (would be sent): {self.valid:,}")
        else:
            lines.append(f"  delivered: {self.delivered:,}")
        lines.append(f"  refused: {self.refused_total:,}")
        for code, n in sorted(self.refused.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {code}: {n:,}")
            for ex in [e for e in self.examples if e.code == code]:
                lines.append(f"      {ex.where()}: {ex.reason}")
        if self.rejects_file and self.refused_total:
            lines.append(f"  refused rows written to {self.rejects_file}")
        if self.earlier_delivered or self.earlier_refused:
            earlier_refused = sum(self.earlier_refused.values())
            lines.append(
                f"  earlier runs of this import (per the checkpoint): delivered "
                f"{self.earlier_delivered:,}, refused {earlier_refused:,}"
            )
            for code, n in sorted(self.earlier_refused.items(), key=lambda kv: -kv[1]):
                lines.append(f"    {code}: {n:,}")
                for ex in [e for e in self.earlier_examples if e.code == code]:
                    lines.append(f"      {ex.where()}: {ex.reason}")
        unsettled = self.pending
        if self.stopped:
            lines.append(f"  STOPPED: {self.stopped}")
            lines.append(f"  not delivered: {unsettled:,} (run the same command again to resume)")
        elif self.interrupted:
            lines.append(
                f"  INTERRUPTED: pending (not delivered): {unsettled:,} "
                "(run the same command to resume)"
            )
        if self.checkpoint:
            lines.append(f"  checkpoint: {self.checkpoint}")
        return "\n".join(lines)


class ImportInterrupted(KeyboardInterrupt):
    """Ctrl-C during an import, once the import has wound down (the rows held delivered,
    the checkpoint written): still a ``KeyboardInterrupt``, carrying the ``report``."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__()
        self.report = report


class RejectSink(Protocol):
    """Where refused rows go: a ``RejectsWriter``, or a parallel import's relay to its reader."""

    path: str

    def write(self, reject: Reject, row: Any) -> None: ...

    def flush(self) -> None: ...


class RejectsWriter:
    """``--rejects FILE``: one JSON line per refused row: file, line, code, reason, row."""

    def __init__(self, path: str, append: bool) -> None:
        self.path = path
        self._file = open(path, "ab" if append else "wb")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()

    def write(self, reject: Reject, row: Any) -> None:
        record = {
            "file": reject.file,
            "line": reject.line,
            "code": reject.code,
            "reason": reject.reason,
            "row": row,
        }
        try:
            data = orjson.dumps(record, default=str)
        except TypeError:
            record["row"] = repr(row)
            data = orjson.dumps(record)
        with self._lock:
            self._file.write(data + b"\n")

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


class Importer:
    """One run. ``analytics`` is None for a dry run."""

    def __init__(
        self,
        analytics: Any,
        mapper: RowMapper,
        *,
        window: int,
        rate: Optional[float] = None,
        checkpoint: Optional[Checkpoint] = None,
        rejects: Optional[RejectSink] = None,
        progress: Optional[Callable[[Importer], None]] = None,
    ) -> None:
        self.analytics = analytics
        self.dry_run = analytics is None
        self.mapper = mapper
        self._replay = RowMapper()
        self.window = max(1, window)
        self.rate = rate
        self.checkpoint = checkpoint
        self.rejects = rejects
        self.progress = progress
        self.report = ImportReport(
            dry_run=self.dry_run,
            checkpoint=None if checkpoint is None else checkpoint.path,
            rejects_file=None if rejects is None else rejects.path,
        )
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # The settled prefix: every row below _low is settled; _ahead holds settled rows
        # above it (a batch that settled before an older one still retrying).
        self._low = 0
        self._ahead: set[int] = set()
        self._handed = 0  # rows given to the client (written by the reading thread only)
        # How rows reach the client, set by run(): the bytes hook (built and encoded here)
        # or, without it, the event methods by name.
        self._fast: Optional[Callable[[Dict[str, Any], bytes, Any], Any]] = None
        self._methods: Optional[Dict[str, Callable[..., Any]]] = None
        self._done = 0  # of those, settled (written under the lock by callbacks)
        self._requeue: List[Tuple[int, Optional[str], Optional[int], Dict[str, Any]]] = []
        self._stop: Optional[str] = None
        self._saved_low = -1
        self._last_save = 0.0
        self._total = 0
        self._read_all = False  # the input was read to its end (not stopped, not interrupted)
        self.started = time.monotonic()

    # -- bookkeeping -------------------------------------------------------------------

    @property
    def rows_done(self) -> int:
        return self._low

    @property
    def in_flight(self) -> int:
        return self._handed - self._done

    @property
    def stop_reason(self) -> Optional[str]:
        """Why the run stopped early (None: it has not)."""
        return self._stop

    def _settle_locked(self, index: int) -> None:
        if index == self._low:
            low = index + 1
            ahead = self._ahead
            while ahead and low in ahead:
                ahead.remove(low)
                low += 1
            self._low = low
        else:
            self._ahead.add(index)

    def _refuse(
        self, index: int, file: Optional[str], line: Optional[int], code: str, reason: str, row: Any
    ) -> None:
        reject = Reject(file, line, code, reason)
        if self.rejects is not None:
            self.rejects.write(reject, row)
        with self._lock:
            report = self.report
            count = report.refused.get(code, 0)
            report.refused[code] = count + 1
            if count < EXAMPLES_PER_CODE:
                report.examples.append(reject)
            self._settle_locked(index)

    def batch_delivered(self, rows: List[Tuple[int, Optional[str], Optional[int]]]) -> None:
        """A delivered batch of rows, in one call (``BatchAck``: on a sender thread)."""
        with self._lock:
            self.report.delivered += len(rows)
            self._done += len(rows)
            settle = self._settle_locked
            for row in rows:
                settle(row[0])
            if self._handed - self._done < self.window:
                self._changed.notify()

    def event_settled(
        self,
        row: Tuple[int, Optional[str], Optional[int]],
        error: Optional[BaseException],
        message: Dict[str, Any],
    ) -> None:
        """One row's delivery callback (on a sender thread, or the caller's for queue_full)."""
        index, file, line = row
        if error is None:
            self.batch_delivered([row])
            return
        cause = getattr(error, "cause", "")
        status = getattr(error, "status", None)
        if cause == "queue_full":
            # Not the row's fault: the client's queue is shared or smaller than our window.
            # Still unsettled (it counts against the window); sent again once there is room.
            with self._lock:
                self._requeue.append((index, file, line, message))
                self._changed.notify()
            return
        if cause == "rejected" and status not in _AUTH_STATUSES:
            with self._lock:
                self._done += 1
            self._refuse(index, file, line, "server_refused", str(error), message)
            with self._lock:
                self._changed.notify()
            return
        with self._lock:
            self._done += 1
            if self._stop is None:
                self._stop = f"{cause or type(error).__name__}: {getattr(error, 'reason', error)}"
            self._changed.notify()

    def halt(self, reason: str) -> None:
        """Hand the client no more rows (from any thread): the run ends at the next row."""
        with self._lock:
            if self._stop is None:
                self._stop = reason
            self._changed.notify_all()

    # -- the loop ------------------------------------------------------------------------

    def run(
        self, sources: Iterable[Tuple[Optional[str], Callable[[int], Rows]]], skip: int
    ) -> ImportReport:
        """``sources``: ``(name, rows(skip))`` pairs in order; the first ``skip`` rows overall
        are done already (from the checkpoint)."""
        report = self.report
        self._low = skip
        self._saved_low = skip
        index = 0
        dry_run = self.dry_run
        methods = (
            None
            if dry_run
            else {kind: getattr(self.analytics, kind) for kind in _BUILDERS}  # bound methods
        )
        # The fast path: the event built and encoded here, by the builders and the encoder
        # the event methods use, and handed to the client as bytes. Not inside a
        # journy_analytics.scope() (the event methods fill ids from it) nor for a client
        # without the hook (a stand-in of the user's).
        enqueue_encoded = (
            None
            if dry_run or active_scope() is not None
            else getattr(self.analytics, "_enqueue_encoded", None)
        )
        self._fast = enqueue_encoded
        self._methods = methods
        try:
            for name, open_rows in sources:
                index = self._read(name, open_rows(skip - index if index < skip else 0), index)
                if self._stop is not None:
                    break
            else:
                self._read_all = True
            if not dry_run:
                self._drain()
        finally:
            self._total = index
            self.finish()
        return report

    def _read(self, name: Optional[str], rows: Rows, index: int) -> int:
        """Hand over the rows of one source; returns the running row index after them."""
        report = self.report
        for line, row, nth in rows:
            if row is SKIPPED:
                index += 1
                report.skipped += 1
                continue
            if not index & 255:
                self._tick()
            if self._stop is not None:
                break  # failed, or halted from another thread: hand nothing more
            index += 1
            report.rows_read += 1
            if not self._take(index - 1, name, line, row, nth):
                break
        return index

    def _take(self, i: int, name: Optional[str], line: Optional[int], row: Any, nth: int) -> bool:
        """Row ``i``: refused, counted (dry run) or handed to the client. False when the run
        stops here (failed, or halted while waiting for room)."""
        if type(row) is Refusal:
            self._refuse(i, name, line, row.code, row.reason, row.raw)
            return True
        try:
            kind, kwargs = self.mapper.call(row, nth)
        except Refusal as exc:
            self._refuse(i, name, line, exc.code, exc.reason, row)
            return True
        fast = self._fast
        if self.dry_run or fast is not None:
            try:
                message = _BUILDERS[kind](**kwargs)
                data = encode_event(message)
            except ValidationError as exc:
                self._refuse(i, name, line, "invalid", str(exc), row)
                return True
        if self.dry_run:
            self.report.valid += 1
            with self._lock:
                self._settle_locked(i)
            return True
        if self._handed - self._done >= self.window:
            self._wait_for_room()
            if self._stop is not None:
                return False
        if self.rate:
            ahead = self._handed - (time.monotonic() - self.started) * self.rate
            if ahead > 0:
                time.sleep(ahead / self.rate)
        self._handed += 1
        if fast is not None:
            fast(message, data, BatchAck(self, (i, name, line)))
        else:
            assert self._methods is not None
            try:
                self._methods[kind](callback=BatchAck(self, (i, name, line)), **kwargs)
            except ValidationError as exc:
                self._handed -= 1
                self._refuse(i, name, line, "invalid", str(exc), row)
                return True
        self.report.valid += 1
        return True

    def finish(self) -> None:
        """Final figures and checkpoint; call again after closing the client, so rows that
        settled while it closed count too."""
        report = self.report
        report.seconds = time.monotonic() - self.started
        with self._lock:
            if self._stop is not None:
                report.stopped = self._stop
        self._tick(final=True)

    def _resend_requeued(self) -> bool:
        """Hand the rows the client's full queue bounced back over again (they are still
        counted in flight). False when every one bounced straight back: wait a little."""
        with self._lock:
            pending, self._requeue = self._requeue, []
        for i, name, line, message in pending:
            kind, kwargs = self._replay.call(message)
            getattr(self.analytics, kind)(callback=BatchAck(self, (i, name, line)), **kwargs)
        with self._lock:
            return len(self._requeue) < len(pending)

    def _wait_until(self, more_room: Callable[[], bool]) -> None:
        """One wait for a delivery (woken by the callbacks), re-sending bounced rows first."""
        if self._requeue and self._resend_requeued():
            return
        with self._changed:
            if not more_room() and self._stop is None:
                self._changed.wait(_BOUNCE_WAIT if self._requeue else CHECKPOINT_EVERY)
        self._tick()

    def _wait_for_room(self) -> None:
        def room() -> bool:
            return self._handed - self._done < self.window

        while not room() and self._stop is None:
            self._wait_until(room)

    def _drain(self) -> None:
        """Everything is handed over: wait until every row is settled (or the run stops)."""

        def settled() -> bool:
            return self._handed == self._done

        while self._stop is None and not settled():
            # Partial batches go now rather than after flush_interval; returns at once.
            self.analytics.flush(timeout=0.0)
            self._wait_until(settled)

    def _tick(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None:
            self.progress(self)
        if self.checkpoint is None or self.dry_run:
            return
        if not final and now - self._last_save < CHECKPOINT_EVERY:
            return
        low = self._low
        complete = final and self._read_all and self._stop is None and low == self._total
        if low == self._saved_low and not final:
            return
        if self.rejects is not None:
            # Refused rows below the checkpoint are on disk before the checkpoint says so.
            self.rejects.flush()
        self.checkpoint.save(
            low, {"rows_in_flight": self.in_flight, "totals": self.report.totals()}, complete
        )
        self._saved_low = low
        self._last_save = now


def resume_point(
    checkpoint: Optional[Checkpoint], restart: bool
) -> Tuple[int, Optional[Dict[str, Any]]]:
    """The rows a run may skip: ``rows_done`` of the checkpoint, or 0 (none, or
    ``restart``, which removes it); and the checkpoint's state (None: none)."""
    if checkpoint is None:
        return 0, None
    if restart:
        checkpoint.remove()
        return 0, None
    state = checkpoint.load()
    return (0, None) if state is None else (int(state.get("rows_done", 0)), state)


def execute(
    sources: List[Tuple[Optional[str], Callable[[int], Rows]]],
    mapper: RowMapper,
    *,
    analytics: Any,
    owns_client: bool,
    window: int,
    rate: Optional[float] = None,
    checkpoint: Optional[Checkpoint] = None,
    restart: bool = False,
    rejects_path: Optional[str] = None,
    progress: Optional[Callable[[Importer], None]] = None,
    close_timeout: float = 30.0,
) -> ImportReport:
    """Resume from ``checkpoint`` (unless ``restart``), run, settle, close what we own."""
    skip, state = resume_point(checkpoint, restart) if analytics is not None else (0, None)
    rejects = None
    if rejects_path is not None:
        # A resumed run appends: the refusals below the checkpoint are in the file already.
        rejects = RejectsWriter(rejects_path, append=skip > 0)
    importer = Importer(
        analytics,
        mapper,
        window=window,
        rate=rate,
        checkpoint=checkpoint if analytics is not None else None,
        rejects=rejects,
        progress=progress,
    )
    importer.report.resume_from(state)
    interrupted = False
    try:
        try:
            importer.run(sources, skip)
        except KeyboardInterrupt:
            interrupted = importer.report.interrupted = True
        finally:
            if analytics is not None:
                if owns_client:
                    analytics.close_and_flush(timeout=close_timeout)
                else:
                    analytics.flush(timeout=close_timeout)
                importer.finish()
    finally:
        if rejects is not None:
            rejects.close()
    if interrupted:
        raise ImportInterrupted(importer.report)
    return importer.report
