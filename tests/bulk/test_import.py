"""``journy import`` and ``journy_analytics.bulk`` against the real local collector."""

from __future__ import annotations

import csv
import datetime as dt
import gc
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journy_analytics import Analytics, bulk
from journy_analytics._import._rows import Occurrences
from journy_analytics.cli import main as journy
from journy_analytics.collector import CollectorThread

JOURNY = os.path.join(os.path.dirname(sys.executable), "journy")


def _event(i: int) -> Dict[str, Any]:
    return {
        "type": "track",
        "userId": f"user-{i % 50}",
        "event": "Order Placed",
        "timestamp": f"2019-0{1 + i % 9}-1{i % 10}T0{i % 10}:00:00Z",
        "properties": {"row": i, "total": i * 1.5},
    }


def _write_jsonl(path: Path, rows: List[Any]) -> Path:
    with open(path, "wb") as f:
        for row in rows:
            f.write(row if isinstance(row, bytes) else orjson.dumps(row))
            f.write(b"\n")
    return path


def _rows_seen(collector: CollectorThread) -> List[int]:
    return sorted(e["properties"]["row"] for e in collector.events())


def _import(collector: CollectorThread, tmp: Path, *args: str) -> int:
    return journy(
        [
            "import",
            *args,
            "--write-key",
            "k",
            "--host",
            collector.url,
            "--checkpoint-dir",
            str(tmp),
            "--progress",
            "none",
        ]
    )


def test_import_delivers_every_row_with_its_historical_timestamp(
    collector: CollectorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_jsonl(tmp_path / "events.jsonl", [_event(i) for i in range(3000)])
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    gc_before = (gc.get_threshold(), gc.get_freeze_count())
    assert _import(collector, tmp_path, str(path)) == 0
    # The command collects garbage rarely while it runs; a caller's process gets its
    # settings back (the tests run it in-process, as a script may).
    assert (gc.get_threshold(), gc.get_freeze_count()) == gc_before
    out = capsys.readouterr().out
    assert "3,000 rows read" in out and "delivered: 3,000" in out
    assert _rows_seen(collector) == list(range(3000))
    stored = {e["properties"]["row"]: e for e in collector.events()}
    assert stored[7]["timestamp"] == "2019-08-17T07:00:00.000Z"
    bodies = [r["body"] for r in collector.requests() if r["body"]]
    sent_at = dt.datetime.fromisoformat(bodies[0]["sentAt"].replace("Z", "+00:00"))
    assert sent_at >= before  # sentAt is now, the events keep their own time


def _duplicate_free(collector: CollectorThread, n: int) -> None:
    events = collector.events()
    assert len(events) == n
    assert len({e["messageId"] for e in events}) == n
    assert _rows_seen(collector) == list(range(n))


def test_importing_again_or_from_a_reordered_copy_elsewhere_creates_no_duplicates(
    collector: CollectorThread, tmp_path: Path
) -> None:
    n = 2000
    first = _write_jsonl(tmp_path / "export.jsonl", [_event(i) for i in range(n)])
    assert _import(collector, tmp_path, str(first)) == 0
    # The same file again, from scratch.
    assert _import(collector, tmp_path, str(first), "--restart") == 0
    # A copy elsewhere, written in another order (a re-run export), with a blank line:
    # neither the path nor the line numbers may enter the message id.
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    copy = _write_jsonl(elsewhere / "copy.jsonl", [b"", *[_event(i) for i in reversed(range(n))]])
    assert _import(collector, elsewhere, str(copy)) == 0
    _duplicate_free(collector, n)
    assert collector.stats()["duplicates"] == 2 * n


def test_a_finished_import_run_again_in_the_same_place_sends_nothing(
    collector: CollectorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_jsonl(tmp_path / "e.jsonl", [_event(i) for i in range(300)])
    assert _import(collector, tmp_path, str(path)) == 0
    requests = collector.stats()["requests"]
    capsys.readouterr()
    assert _import(collector, tmp_path, str(path)) == 0
    assert "skipped (done before, per the checkpoint): 300" in capsys.readouterr().out
    assert collector.stats()["requests"] == requests


def test_kill_9_then_resume_delivers_every_row_once_resending_only_what_was_in_flight(
    collector: CollectorThread, tmp_path: Path
) -> None:
    n, window, rate = 20_000, 500, 4000
    # A slow server keeps rows in flight for a while: a checkpoint that ran ahead of the
    # acknowledgements would lose them at the kill.
    collector.set_faults(latency_ms=300)
    path = _write_jsonl(tmp_path / "big.jsonl", [_event(i) for i in range(n)])
    cmd = [
        JOURNY,
        "import",
        str(path),
        "--host",
        collector.url,
        "--window",
        str(window),
        "--progress",
        "none",
    ]
    env = {**os.environ, "JOURNY_WRITE_KEY": "k"}
    proc = subprocess.Popen(
        [*cmd, "--rate", str(rate)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    checkpoint_dir = tmp_path / ".journy-import"
    deadline = time.monotonic() + 60
    done = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            files = list(checkpoint_dir.glob("*.json")) if checkpoint_dir.exists() else []
            if files:
                try:
                    done = orjson.loads(files[0].read_bytes())["rows_done"]
                except (orjson.JSONDecodeError, OSError):
                    done = 0
                if done >= 5000:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, "the import ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert done >= 5000
    # The process is gone: from now on the server only finishes requests on the wire.
    stored_at_kill = len(collector.events())
    rows_done = orjson.loads(next(checkpoint_dir.glob("*.json")).read_bytes())["rows_done"]
    # Everything below the checkpoint reached the server before the kill.
    seen = set(_rows_seen(collector))
    assert set(range(rows_done)) <= seen
    assert rows_done < n
    collector.set_faults(latency_ms=0)
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"skipped (done before, per the checkpoint): {rows_done:,}" in again.stdout
    _duplicate_free(collector, n)
    # Re-sent: what settled after the checkpoint's last write (stored at the kill, at the
    # latest) and the rows in flight, at most the window: the documented bound, measured
    # rather than assumed from the timing.
    resent = collector.stats()["duplicates"]
    assert resent <= (stored_at_kill - rows_done) + window


BAD_LINES: List[Any] = [
    _event(0),
    b"{not json",
    {"type": "track", "userId": "u1"},  # no event
    b"",
    {"type": "track", "userId": "u1", "event": "E", "timestamp": "yesterday"},
    [1, 2, 3],
    {"type": "launch", "userId": "u1"},
    _event(1),
]


def test_refused_rows_go_to_the_rejects_file_with_file_and_line(
    collector: CollectorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_jsonl(tmp_path / "mixed.jsonl", BAD_LINES)
    rejects = tmp_path / "rejects.jsonl"
    assert _import(collector, tmp_path, str(path), "--rejects", str(rejects)) == 1
    records = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(r["line"], r["code"]) for r in records] == [
        (2, "bad_json"),
        (3, "invalid"),
        (5, "invalid"),
        (6, "not_an_object"),
        (7, "bad_type"),
    ]
    assert all(r["file"] == str(path) for r in records)
    assert records[0]["row"] == "{not json"
    assert records[1]["row"] == {"type": "track", "userId": "u1"}
    assert "timestamp" in records[2]["reason"]
    out = capsys.readouterr().out
    assert "delivered: 2" in out and "refused: 5" in out
    assert f"{path}:3: track() needs event" in out
    assert _rows_seen(collector) == [0, 1]


def test_dry_run_validates_and_sends_nothing(
    collector: CollectorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_jsonl(tmp_path / "mixed.jsonl", BAD_LINES)
    rejects = tmp_path / "rejects.jsonl"
    assert _import(collector, tmp_path, str(path), "--dry-run", "--rejects", str(rejects)) == 1
    out = capsys.readouterr().out
    assert "dry run: nothing sent" in out and "valid (would be sent): 2" in out
    assert len(rejects.read_bytes().splitlines()) == 5
    assert collector.stats()["requests"] == 0
    assert not (tmp_path / ".journy-import").exists()


def test_csv_with_a_mapping(collector: CollectorThread, tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "action", "created_at", "plan", "traits.ignored"])
        w.writerow(["42", "Upgraded", "2018-05-06 07:08:09", "pro", ""])
        w.writerow(["43", "Downgraded", "2018-05-07T00:00:00+02:00", "", ""])
        w.writerow(["44", "Too", "many", "fields", "here", "!"])
    mapping = "userId=user_id,event=action,timestamp=created_at"
    assert _import(collector, tmp_path, str(path), "--map", mapping) == 1  # one bad record
    events = {e["userId"]: e for e in collector.events()}
    assert set(events) == {"42", "43"}
    assert events["42"]["event"] == "Upgraded"
    assert events["42"]["timestamp"] == "2018-05-06T07:08:09.000Z"
    assert events["42"]["properties"] == {"plan": "pro"}
    assert events["43"]["timestamp"] == "2018-05-06T22:00:00.000Z"
    assert events["43"]["properties"] == {}


def test_csv_identify_with_dotted_columns(collector: CollectorThread, tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("id,email_address,name\n7,a@example.com,Ada\n")
    mapping = "userId=id,traits.email=email_address"
    assert _import(collector, tmp_path, str(path), "--type", "identify", "--map", mapping) == 0
    user = collector.user("7")
    assert user is not None
    assert user["traits"] == {"email": "a@example.com", "name": "Ada"}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_parquet_with_real_timestamp_columns(
    collector: CollectorThread, tmp_path: Path, jobs: str
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    utc = dt.timezone.utc
    table = pa.table(
        {
            "user_id": ["u1", "u2", "u3"],
            "action": ["Signed Up", "Signed Up", "Paid"],
            "at": pa.array(
                [
                    dt.datetime(2017, 1, 2, 3, 4, 5, 678000, tzinfo=utc),
                    dt.datetime(2017, 1, 3, tzinfo=utc),
                    None,
                ],
                type=pa.timestamp("us", tz="UTC"),
            ),
            "amount": pa.array([1, 2, 3], type=pa.int64()),
            "score": [0.5, None, 2.0],
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    mapping = "userId=user_id,event=action,timestamp=at"
    # With --jobs 2, rows (with their datetimes) cross to a worker process.
    assert _import(collector, tmp_path, str(path), "--map", mapping, "--jobs", jobs) == 0
    events = {e["userId"]: e for e in collector.events()}
    assert events["u1"]["timestamp"] == "2017-01-02T03:04:05.678Z"
    assert events["u2"]["timestamp"] == "2017-01-03T00:00:00.000Z"
    assert events["u1"]["properties"] == {"amount": 1, "score": 0.5}
    assert events["u2"]["properties"] == {"amount": 2}
    assert events["u3"]["event"] == "Paid"


def test_bulk_send_with_a_client_whose_queue_is_smaller_than_the_window(
    collector: CollectorThread, make_client: Callable[..., Analytics]
) -> None:
    # The client drops on a full queue (enqueue_timeout 0); the import must re-send those
    # rows rather than lose them.
    client = make_client(max_queue_size=20, max_events_in_batch=10)
    report = bulk.send((_event(i) for i in range(1500)), client, window=1000)
    assert report.ok, report.summary()
    assert report.delivered == 1500
    assert client.stats()["dropped"]["queue_full"] > 0  # the case did happen
    _duplicate_free(collector, 1500)
    assert not client.closed  # a caller's client is flushed, not closed


def test_bulk_send_reports_server_refusals(collector: CollectorThread, tmp_path: Path) -> None:
    collector.set_faults(fail_rate=1.0, fail_status=400)
    report = bulk.send([_event(i) for i in range(5)], write_key="k", host=collector.url)
    assert report.refused == {"server_refused": 5}
    assert not report.ok and report.stopped is None
    assert [e.line for e in report.examples] == [1, 2, 3, 4, 5]


def test_bulk_send_stops_at_a_bad_write_key_and_resumes_there(
    tmp_path: Path, make_client: Callable[..., Analytics]
) -> None:
    with CollectorThread(write_keys=["good"]) as strict:
        checkpoint = tmp_path / "cp.json"
        rows = [_event(i) for i in range(200)]
        report = bulk.send(rows, write_key="bad", host=strict.url, checkpoint=checkpoint)
        assert report.stopped is not None and "401" in report.stopped
        assert report.delivered == 0 and strict.stats()["events"] == 0
        assert orjson.loads(checkpoint.read_bytes())["rows_done"] == 0
        report = bulk.send(rows, write_key="good", host=strict.url, checkpoint=checkpoint)
        assert report.ok and report.delivered == 200


def test_bulk_send_honours_429_retry_after_without_losing_rows(collector: CollectorThread) -> None:
    collector.set_faults(retry_after_rate=0.5, retry_after=0, seed=7)
    report = bulk.send(
        [_event(i) for i in range(1000)], write_key="k", host=collector.url, window=300
    )
    assert report.ok, report.summary()
    assert collector.stats()["faults"].get("rate_limited", 0) > 0
    _duplicate_free(collector, 1000)


def test_bulk_send_rate_caps_events_per_second(collector: CollectorThread) -> None:
    started = time.monotonic()
    rows = [_event(i) for i in range(600)]
    report = bulk.send(rows, write_key="k", host=collector.url, rate=2000)
    assert report.ok
    assert time.monotonic() - started >= 0.25  # 600 events at 2000/s take 0.3 s at least


def test_bulk_dry_run_needs_no_client_and_sends_nothing(collector: CollectorThread) -> None:
    report = bulk.send([_event(1), {"type": "alias", "userId": "x"}], dry_run=True)
    assert report.valid == 1 and report.refused == {"invalid": 1}
    assert collector.stats()["requests"] == 0


def test_mapping_errors_are_actionable() -> None:
    with pytest.raises(ValueError, match="not WIRE=COLUMN"):
        bulk.send([], dry_run=True, mapping="userId")
    with pytest.raises(ValueError, match="not a wire field"):
        bulk.send([], dry_run=True, mapping={"user": "user_id"})
    with pytest.raises(ValueError, match="write_key"):
        bulk.send([])


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1000, 1, 1), max_value=dt.datetime(9999, 12, 31)))
def test_a_timestamp_already_in_wire_form_is_kept_exactly_as_the_general_path_writes_it(
    moment: dt.datetime,
) -> None:
    from journy_analytics._message._build import format_timestamp

    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    expected = format_timestamp(moment)  # a datetime takes the general path
    # Equal strings that are not the object just returned (which is recognised by identity
    # and not checked again): the wire-form check itself must keep them as they are.
    assert format_timestamp((expected + " ")[:-1]) == expected
    assert format_timestamp(expected[:19] + "Z") == expected[:19] + ".000Z"


def test_a_wire_form_timestamp_that_is_no_date_is_refused() -> None:
    report = bulk.send(
        [{"type": "track", "userId": "u", "event": "E", "timestamp": "2021-02-30T00:00:00Z"}],
        dry_run=True,
    )
    assert report.refused == {"invalid": 1}


def test_progress_bar_and_plain_lines_show_rate_and_eta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from journy_analytics._import import _progress
    from journy_analytics._import._engine import ImportReport
    from journy_analytics._import._readers import Source

    path = _write_jsonl(tmp_path / "e.jsonl", [_event(i) for i in range(100)])
    source = Source(str(path))
    source.position = source.size // 4  # a quarter of the file read: 25 rows
    source.rows_seen = 25

    class Running:
        started = time.monotonic() - 2.0
        report = ImportReport(rows_read=25, delivered=20)

    if _progress._tqdm() is not None:
        out = io.StringIO()
        bar = _progress.Progress([source], "bar", out)
        bar(Running())
        bar.close()
        text = out.getvalue()
        assert "25%" in text and "/100 " in text and "rows/s" in text and "delivered 20" in text
    monkeypatch.setattr(_progress, "_PLAIN_EVERY", 0.0)
    out = io.StringIO()
    plain = _progress.Progress([source], "plain", out)
    plain(Running())
    line = out.getvalue()
    assert "25 of ~100 rows" in line and "rows/s" in line and "ETA 0:00:0" in line


class _CountingReference:
    """What :class:`Occurrences` answers, done the obvious way: a count per hash of a key
    (a hash, not the key, as the readers keep only that)."""

    def __init__(self) -> None:
        self.counts: Dict[int, int] = {}

    def __call__(self, key: Any) -> int:
        h = hash(key)
        n = self.counts.get(h, -1) + 1
        self.counts[h] = n
        return n

    def block(self, keys: Sequence[Any]) -> Optional[Dict[int, int]]:
        repeats = {i: n for i, n in enumerate(map(self, keys)) if n}
        return repeats or None


def _same_answers(steps: List[Tuple[bool, List[Any]]], recent_limit: int) -> None:
    occurrences, reference = Occurrences(recent_limit), _CountingReference()
    for one_by_one, keys in steps:
        if one_by_one:
            assert [occurrences(k) for k in keys] == [reference(k) for k in keys], keys
        else:
            assert occurrences.block(keys) == reference.block(keys), keys


# Small ints repeat often (and -1 and -2 have the same hash), big ints are spread over the
# whole hash range, bytes hash at random: repeats land in the recent set, in the sorted
# array, before and after many merges (a tiny ``recent_limit`` merges every few rows).
_KEYS = st.one_of(
    st.integers(-3, 40),
    st.integers(-(2**63), 2**63),
    st.binary(max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.lists(_KEYS, max_size=12)), max_size=60),
    st.integers(1, 6),
)
def test_occurrences_counts_identical_rows_as_a_plain_counter_does(
    steps: List[Tuple[bool, List[Any]]], recent_limit: int
) -> None:
    _same_answers(steps, recent_limit)


def test_occurrences_stays_exact_over_many_merges_and_bitmap_rebuilds() -> None:
    rng = random.Random(7)
    keys: List[Any] = [rng.getrandbits(64) for _ in range(30_000)]
    keys += [rng.choice(keys) for _ in range(10_000)]  # repeats of rows long merged
    keys += list(range(5_000))  # clustered hashes: long runs between merged hashes
    keys += [b"row %d" % rng.randrange(40_000) for _ in range(20_000)]
    rng.shuffle(keys)
    steps = [(rng.random() < 0.5, keys[i : i + 500]) for i in range(0, len(keys), 500)]
    _same_answers(steps, recent_limit=3)
