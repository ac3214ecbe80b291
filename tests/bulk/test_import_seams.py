"""``journy import`` where it meets the rest: identical rows, damaged and BOM-marked inputs,
the environment's host, typed CSV columns, the progress estimate, re-runs, Ctrl-C and a
``kill -9`` of the reader. Against the real collector over loopback."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import zlib
from pathlib import Path
from typing import Any, Dict, List, Tuple

import orjson
import pytest
from tests.bulk.test_import import BAD_LINES, JOURNY, _event, _import, _rows_seen, _write_jsonl
from tests.bulk.test_import_parallel import _wait_for_progress

from journy_analytics import bulk
from journy_analytics._import._command import EXIT_DAMAGED, EXIT_REFUSED
from journy_analytics._import._progress import Progress
from journy_analytics._import._readers import Source
from journy_analytics._import._rows import RowMapper
from journy_analytics.cli import main as journy
from journy_analytics.collector import CollectorThread


def _plain_import(tmp: Path, *args: str) -> int:
    """The command with no --host: where it sends is up to the environment."""
    return journy(
        ["import", *args, "--checkpoint-dir", str(tmp), "--progress", "none", "--jobs", "1"]
    )


def test_import_sends_to_journy_host_from_the_environment_and_the_flag_wins(
    collector: CollectorThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _write_jsonl(tmp_path / "e.jsonl", [_event(i) for i in range(3)])
    monkeypatch.setenv("JOURNY_WRITE_KEY", "k")
    monkeypatch.setenv("JOURNY_HOST", collector.url)
    monkeypatch.delenv("JOURNY_PATH", raising=False)
    assert _plain_import(tmp_path, str(path)) == 0
    assert len(collector.events()) == 3
    err = capsys.readouterr().err
    assert f"sending to {collector.url}/backend/v1/batch" in err
    # JOURNY_PATH too, as the module client reads it (the collector serves /v1/batch).
    monkeypatch.setenv("JOURNY_PATH", "/v1/batch")
    assert _plain_import(tmp_path, str(path)) == 0
    assert f"sending to {collector.url}/v1/batch" in capsys.readouterr().err
    # The flag wins over the environment: a host nobody listens on is not used.
    monkeypatch.setenv("JOURNY_HOST", "http://127.0.0.1:9")
    assert _plain_import(tmp_path, str(path), "--host", collector.url, "--restart") == 0
    assert f"sending to {collector.url}/v1/batch" in capsys.readouterr().err
    assert collector.stats()["duplicates"] == 6


def _checkpoint_file(tmp: Path) -> Path:
    files = list((tmp / ".journy-import").glob("*.json"))
    assert len(files) == 1, files
    return files[0]


def _message_ids(collector: CollectorThread) -> List[str]:
    return sorted(e["messageId"] for e in collector.events())


@pytest.mark.parametrize("first, then", [("1", "2"), ("2", "1")])
def test_identical_rows_are_separate_events_with_the_same_ids_on_every_run(
    collector: CollectorThread, tmp_path: Path, first: str, then: str
) -> None:
    # Two page views in the same second, and a third: three events, not one.
    same = {"type": "page", "userId": "u1", "name": "Pricing", "timestamp": "2021-01-01T00:28:00Z"}
    other = {**same, "name": "Home"}
    path = _write_jsonl(tmp_path / "views.jsonl", [same, same, other, b"", same])
    assert _import(collector, tmp_path, str(path), "--jobs", first) == 0
    events = collector.events()
    assert len(events) == 4 and collector.stats()["duplicates"] == 0
    ids = _message_ids(collector)
    # Again from scratch, with the other number of processes: the same four ids.
    collector.reset()
    assert _import(collector, tmp_path, str(path), "--jobs", then, "--restart") == 0
    assert _message_ids(collector) == ids

    def message_id(row: Dict[str, Any], nth: int) -> str:
        return str(RowMapper().call(row, nth)[1]["message_id"])

    assert ids == sorted(
        [message_id(same, 0), message_id(same, 1), message_id(other, 0), message_id(same, 2)]
    )
    # Resumed after two rows (as after a crash): the rows before the checkpoint are still
    # counted, so the third identical row gets its id again.
    checkpoint = _checkpoint_file(tmp_path)
    state = orjson.loads(checkpoint.read_bytes())
    for jobs in (first, then):
        collector.reset()
        checkpoint.write_bytes(orjson.dumps({**state, "rows_done": 2, "complete": False}))
        assert _import(collector, tmp_path, str(path), "--jobs", jobs) == 0
        assert _message_ids(collector) == sorted([message_id(other, 0), message_id(same, 2)])


def test_bulk_send_keeps_identical_rows_apart(collector: CollectorThread) -> None:
    row = {"type": "track", "userId": "u1", "event": "Add to cart", "timestamp": "2021-01-01"}
    assert bulk.send([row, row], write_key="k", host=collector.url).delivered == 2
    assert bulk.send([row, row], write_key="k", host=collector.url).delivered == 2
    assert len(collector.events()) == 2 and collector.stats()["duplicates"] == 2


def _cut_gzip(tmp: Path, rows: int, keep: float) -> Tuple[Path, int]:
    """A .jsonl.gz of ``rows`` events cut after ``keep`` of its bytes, and the number of
    whole lines that can still be read from it."""
    plain = _write_jsonl(tmp / "plain.jsonl", [_event(i) for i in range(rows)])
    packed = gzip.compress(plain.read_bytes())
    cut = packed[: int(len(packed) * keep)]
    path = tmp / "export.jsonl.gz"
    path.write_bytes(cut)
    readable = zlib.decompressobj(wbits=31).decompress(cut).count(b"\n")
    assert 0 < readable < rows
    return path, readable


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_cut_gzip_file_delivers_every_readable_row_then_says_where_it_was_cut(
    collector: CollectorThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    jobs: str,
) -> None:
    path, readable = _cut_gzip(tmp_path, 6000, 0.6)
    assert _import(collector, tmp_path, str(path), "--jobs", jobs) == EXIT_DAMAGED
    assert _rows_seen(collector) == list(range(readable))
    captured = capsys.readouterr()
    assert f"delivered: {readable:,}" in captured.out
    assert f"DAMAGED INPUT: {path}: the compressed data ends early" in captured.err
    assert f"line {readable + 1:,} is incomplete" in captured.err
    # Run again: nothing more to send, and the damage is reported again.
    assert _import(collector, tmp_path, str(path), "--jobs", jobs) == EXIT_DAMAGED
    assert collector.stats()["duplicates"] == 0


def test_a_corrupt_gzip_file_is_reported_too(tmp_path: Path) -> None:
    plain = _write_jsonl(tmp_path / "plain.jsonl", [_event(i) for i in range(3000)])
    packed = bytearray(gzip.compress(plain.read_bytes()))
    packed[len(packed) // 2 : len(packed) // 2 + 64] = bytes(64)
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(bytes(packed))
    source = Source(str(path))
    # Deflate finds most damage only at the checksum: the garbage rows before it are
    # refused as bad JSON, and the file is reported as damaged, not read to a clean end.
    assert len(list(source.rows())) > 1000
    assert source.damage is not None and "corrupt" in source.damage and str(path) in source.damage


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_byte_order_mark_is_not_part_of_the_first_row(
    collector: CollectorThread, tmp_path: Path, jobs: str
) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(orjson.dumps(_event(i)) for i in range(3)))
    assert _import(collector, tmp_path, str(path), "--jobs", jobs) == 0
    assert _rows_seen(collector) == [0, 1, 2]
    table = tmp_path / "bom.csv"
    table.write_bytes(b"\xef\xbb\xbfuser_id,action\r\nu1,Signed Up\r\n")
    mapping = "userId=user_id,event=action"
    assert _import(collector, tmp_path, str(table), "--jobs", jobs, "--map", mapping) == 0
    assert collector.user("u1") is not None


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_finished_import_that_refused_rows_says_so_again_when_run_again(
    collector: CollectorThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    jobs: str,
) -> None:
    path = _write_jsonl(tmp_path / "mixed.jsonl", BAD_LINES)
    assert _import(collector, tmp_path, str(path), "--jobs", jobs) == EXIT_REFUSED
    capsys.readouterr()
    state = orjson.loads(_checkpoint_file(tmp_path).read_bytes())
    assert state["complete"] and state["totals"]["delivered"] == 2
    assert sum(state["totals"]["refused"].values()) == 5
    # Nothing is sent again, and the earlier run's refusals keep the exit status.
    requests = collector.stats()["requests"]
    assert _import(collector, tmp_path, str(path), "--jobs", jobs) == EXIT_REFUSED
    out = capsys.readouterr().out
    assert "skipped (done before, per the checkpoint): 7" in out
    assert "earlier runs of this import (per the checkpoint): delivered 2, refused 5" in out
    assert f"{path}:3: track() needs event" in out  # the examples are kept too
    assert collector.stats()["requests"] == requests


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_prints_the_counts_and_the_checkpoint(
    collector: CollectorThread, tmp_path: Path, jobs: str
) -> None:
    collector.set_faults(latency_ms=100)
    path = _write_jsonl(tmp_path / "big.jsonl", [_event(i) for i in range(30_000)])
    command = [JOURNY, "import", str(path), "--host", collector.url, "--progress", "none"]
    proc = subprocess.Popen(
        [*command, "--jobs", jobs, "--rate", "5000"],
        cwd=tmp_path,
        env={**os.environ, "JOURNY_WRITE_KEY": "k"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_progress(proc, tmp_path, 2000)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()
    text = out.decode()
    state = orjson.loads(_checkpoint_file(tmp_path).read_bytes())
    delivered = len(collector.events())
    assert f"delivered: {delivered:,}" in text, text
    assert "refused: 0" in text and "INTERRUPTED: pending (not delivered): " in text
    assert f"checkpoint: {_checkpoint_file(tmp_path)}" in text
    assert state["totals"]["delivered"] == delivered


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_csv_timestamp_formats_and_column_types(
    collector: CollectorThread, tmp_path: Path, jobs: str
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "user_id,action,created_at,amount,quantity,gift\n"
        "u1,Order Placed,01/01/2021 00:28,156.70,2,yes\n"
        "u2,Order Placed,31/12/2020 23:59,12,1,no\n"
        "u3,Order Placed,2021-01-01,1.5,1,no\n"  # not in the format: refused
        "u4,Order Placed,02/01/2021 10:00,cheap,1,no\n"  # not a float: refused
    )
    mapping = "userId=user_id,event=action,timestamp=created_at"
    code = _import(
        collector,
        tmp_path,
        str(path),
        "--jobs",
        jobs,
        "--map",
        mapping,
        "--timestamp-format",
        "%d/%m/%Y %H:%M",
        "--column-type",
        "amount=float,quantity=int,gift=bool",
    )
    assert code == EXIT_REFUSED
    events = {e["userId"]: e for e in collector.events()}
    assert set(events) == {"u1", "u2"}
    assert events["u1"]["timestamp"] == "2021-01-01T00:28:00.000Z"
    assert events["u2"]["timestamp"] == "2020-12-31T23:59:00.000Z"
    assert events["u1"]["properties"] == {"amount": 156.7, "quantity": 2, "gift": True}
    assert events["u2"]["properties"] == {"amount": 12.0, "quantity": 1, "gift": False}


def test_epoch_timestamps(collector: CollectorThread, tmp_path: Path) -> None:
    seconds = tmp_path / "seconds.csv"
    seconds.write_text("user_id,action,at\nu1,Signed Up,1609460880\nu2,Signed Up,1609460880.5\n")
    millis = tmp_path / "millis.csv"
    millis.write_text("user_id,action,at\nu3,Signed Up,1609460880123\n")
    mapping = "userId=user_id,event=action,timestamp=at"
    for path, fmt in ((seconds, "epoch"), (millis, "epoch_ms")):
        args = ("--map", mapping, "--timestamp-format", fmt)
        assert _import(collector, tmp_path, str(path), *args) == 0
    stamps = {e["userId"]: e["timestamp"] for e in collector.events()}
    assert stamps == {
        "u1": "2021-01-01T00:28:00.000Z",
        "u2": "2021-01-01T00:28:00.500Z",
        "u3": "2021-01-01T00:28:00.123Z",
    }


def test_bad_timestamp_formats_and_column_types_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("user_id,action\nu1,Signed Up\n")
    for args, message in (
        (("--timestamp-format", "DD/MM/YYYY"), "has no % directive"),
        (("--timestamp-format", "%d/%Q/%Y"), "is not usable"),
        (("--column-type", "amount=decimal"), "'decimal' is not a type; use one of int"),
        (("--column-type", "amount"), "is not COLUMN=TYPE"),
    ):
        assert _import_dry(tmp_path, str(path), *args) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="no % directive"):
        bulk.send([], dry_run=True, timestamp_format="yyyy-mm-dd")
    report = bulk.send(
        [{"user_id": "u1", "action": "Paid", "at": "1609460880", "amount": "1.5"}],
        dry_run=True,
        mapping="userId=user_id,event=action,timestamp=at",
        timestamp_format="epoch",
        column_types={"amount": "float"},
    )
    assert report.valid == 1, report.summary()


def _import_dry(tmp: Path, *args: str) -> int:
    return journy(["import", *args, "--dry-run", "--progress", "none"])


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz", "events.csv.gz"])
def test_the_progress_total_is_the_rows_in_the_input_while_the_reader_runs_ahead(
    tmp_path: Path, name: str
) -> None:
    n = 40_000
    if name.startswith("events.csv"):
        data = b"user_id,action,n\n" + b"".join(
            b"u%d,Signed Up,%d\n" % (i % 97, i) for i in range(n)
        )
    else:
        data = b"".join(orjson.dumps(_event(i)) + b"\n" for i in range(n))
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    source = Source(str(path))
    progress = Progress([source], "none")
    # The reader is at 60% of the rows; the rows done (the workers', the window's) lag
    # behind at 30%: the estimate is still the rows of the whole input.
    rows = source.rows()
    for _ in range(int(n * 0.6)):
        next(rows)
    estimate = progress._estimate(int(n * 0.3))
    assert estimate is not None and abs(estimate - n) < n * 0.05, estimate
    if name.endswith(".jsonl"):
        blocks = source.line_blocks(0, 1000)
        for _ in range(24):
            next(blocks)
        estimate = progress._estimate(int(n * 0.3))
        assert estimate is not None and abs(estimate - n) < n * 0.05, estimate


def test_a_gzip_file_of_several_members_is_read_whole(tmp_path: Path) -> None:
    # What `cat a.gz b.gz > c.gz` and some exporters write: one member after another.
    first = b"".join(orjson.dumps(_event(i)) + b"\n" for i in range(500))
    second = b"".join(orjson.dumps(_event(i)) + b"\n" for i in range(500, 1200))
    path = tmp_path / "joined.jsonl.gz"
    path.write_bytes(gzip.compress(first) + gzip.compress(second))
    source = Source(str(path))
    rows = [row["properties"]["row"] for _, row, _ in source.rows()]
    assert rows == list(range(1200)) and source.damage is None
    blocks = [t for _, _, texts, _ in Source(str(path)).line_blocks(0, 100) for t in texts]
    assert len(blocks) == 1200
