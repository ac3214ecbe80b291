"""``journy import --jobs N``: a reading process and N worker processes, one checkpoint.

Every test runs the real command (in a child process where a signal is involved) against
the real collector over loopback, with real worker processes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import orjson
import pytest
from tests.bulk.test_import import (
    BAD_LINES,
    JOURNY,
    _duplicate_free,
    _event,
    _import,
    _rows_seen,
    _write_jsonl,
)

from journy_analytics._import._parallel import Assignments, default_jobs
from journy_analytics._import._readers import Source
from journy_analytics.collector import CollectorThread

WORKER_MODULE = "journy_analytics._import._parallel"


def _workers_tagged(tag: str) -> List[int]:
    """Pids of import workers started with JOURNY_TEST_TAG=tag in their environment."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if WORKER_MODULE.encode() in cmdline and f"JOURNY_TEST_TAG={tag}".encode() in environ:
            pids.append(int(entry))
    return pids


def _wait_gone(tag: str, seconds: float) -> List[int]:
    deadline = time.monotonic() + seconds
    left = _workers_tagged(tag)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _workers_tagged(tag)
    return left


def _checkpoint(directory: Path) -> Optional[Dict[str, Any]]:
    files = list((directory / ".journy-import").glob("*.json"))
    if not files:
        return None
    try:
        state: Dict[str, Any] = orjson.loads(files[0].read_bytes())
    except (orjson.JSONDecodeError, OSError):
        return None
    return state


def _start(
    collector: CollectorThread, cwd: Path, path: Path, tag: str, *args: str
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "JOURNY_WRITE_KEY": "k", "JOURNY_TEST_TAG": tag}
    return subprocess.Popen(
        [JOURNY, "import", str(path), "--host", collector.url, "--progress", "none", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_progress(proc: subprocess.Popen[bytes], cwd: Path, rows: int) -> int:
    """Until the checkpoint passes ``rows`` (the import is well under way)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        state = _checkpoint(cwd)
        if state is not None and state["rows_done"] >= rows:
            return int(state["rows_done"])
        time.sleep(0.02)
    raise AssertionError(f"the import ended or stalled before row {rows}: {proc.poll()}")


def test_the_settled_prefix_of_each_worker_maps_back_to_input_rows() -> None:
    a = Assignments()
    assert a.first_unsettled() is None
    a.give(0, 100)  # rows 0-99
    a.give(250, 50)  # rows 250-299 (another worker had 100-249)
    assert a.first_unsettled() == 0
    a.settled = 99
    assert a.first_unsettled() == 99
    a.settled = 100
    assert a.first_unsettled() == 250
    a.settled = 120
    assert a.first_unsettled() == 270
    a.settled = 150
    assert a.first_unsettled() is None  # all it was given is settled
    a.give(400, 10)
    assert a.first_unsettled() == 400


def test_line_blocks_number_lines_past_blanks_and_skip_done_rows(tmp_path: Path) -> None:
    rows = [_event(i) for i in range(10)]
    path = _write_jsonl(tmp_path / "e.jsonl", [rows[0], b"", rows[1], b"  ", *rows[2:]])
    blocks = list(Source(str(path)).line_blocks(skip=3, size=1))
    assert sum(skipped for skipped, _, _, _ in blocks) == 3
    lines = [n for _, numbers, _, _ in blocks for n in numbers]
    texts = [t for _, _, block, _ in blocks for t in block]
    assert lines == list(range(6, 13))  # rows 0, 1, 2 were on lines 1, 3 and 5
    assert [orjson.loads(t)["properties"]["row"] for t in texts] == list(range(3, 10))
    assert list(Source(str(path)).rows(3, raw=True))[3:] == [
        (n, t, 0) for n, t in zip(lines, texts)
    ]


def test_gzipped_inputs_read_like_plain_ones(tmp_path: Path) -> None:
    import gzip

    rows = [_event(i) for i in range(50)]
    plain = _write_jsonl(tmp_path / "e.jsonl", [rows[0], b"", *rows[1:]])
    packed = tmp_path / "e.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert list(Source(str(packed)).rows(2)) == list(Source(str(plain)).rows(2))
    blocks = [b[1:] for b in Source(str(packed)).line_blocks(skip=2, size=4)]
    assert blocks == [b[1:] for b in Source(str(plain)).line_blocks(skip=2, size=4)]
    csv_text = "user_id,action\n" + "".join(f"u{i},Signed Up\n" for i in range(20))
    packed_csv = tmp_path / "users.csv.gz"
    packed_csv.write_bytes(gzip.compress(csv_text.encode()))
    read = list(Source(str(packed_csv)).rows())
    assert read[3] == (5, {"user_id": "u3", "action": "Signed Up"}, 0) and len(read) == 20


def test_auto_jobs_is_one_process_for_small_inputs_and_a_worker_per_core_otherwise() -> None:
    assert default_jobs(10_000) == 1
    cores = len(os.sched_getaffinity(0))
    assert default_jobs(50 << 20) == max(1, min(cores, 4))


def test_every_row_once_and_rejects_with_file_and_line_across_workers(
    collector: CollectorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Good rows with the bad ones of the single-process test spread through the file, and
    # blank lines, over three workers: the line numbers must survive the chunking.
    rows: List[Any] = []
    bad_lines: List[int] = []
    n_good = 0
    for _block in range(6):
        for _ in range(700):
            rows.append(_event(n_good))
            n_good += 1
        for bad in BAD_LINES[1:-1]:
            rows.append(bad)
            if bad != b"":
                bad_lines.append(len(rows))
    path = _write_jsonl(tmp_path / "mixed.jsonl", rows)
    rejects = tmp_path / "rejects.jsonl"
    code = _import(collector, tmp_path, str(path), "--jobs", "3", "--rejects", str(rejects))
    assert code == 1
    out = capsys.readouterr().out
    assert f"delivered: {n_good:,}" in out and f"refused: {len(bad_lines):,}" in out
    _duplicate_free(collector, n_good)
    records = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert sorted(r["line"] for r in records) == bad_lines
    assert all(r["file"] == str(path) for r in records)
    by_line = {r["line"]: r for r in records}
    assert (
        by_line[bad_lines[0]]["row"] == "{not json" and by_line[bad_lines[0]]["code"] == "bad_json"
    )
    assert by_line[bad_lines[1]]["code"] == "invalid"
    # The summary's examples are the first refused lines, as one process would list them.
    assert f"{path}:{bad_lines[1]}: track() needs event" in out
    state = _checkpoint(tmp_path)
    assert (
        state is not None
        and state["complete"]
        and state["rows_done"] == len([r for r in rows if r != b""])
    )


def test_a_csv_export_with_a_mapping_over_two_workers(
    collector: CollectorThread, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    with open(path, "w") as f:
        f.write("user_id,action,created_at,amount\n")
        for i in range(3000):
            f.write(f"u{i % 40},Order Placed,2021-03-0{1 + i % 9}T10:00:00Z,{i}\n")
        f.write("u1,Order Placed,not a date,1\n")
    code = _import(
        collector,
        tmp_path,
        str(path),
        "--jobs",
        "2",
        "--map",
        "userId=user_id,event=action,timestamp=created_at",
    )
    assert code == 1  # the last row is refused
    events = collector.events()
    assert len(events) == 3000 and len({e["messageId"] for e in events}) == 3000
    assert sorted(int(e["properties"]["amount"]) for e in events) == list(range(3000))


def test_dry_run_over_workers_sends_nothing(
    collector: CollectorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_jsonl(tmp_path / "mixed.jsonl", [*[_event(i) for i in range(2000)], *BAD_LINES])
    assert _import(collector, tmp_path, str(path), "--dry-run", "--jobs", "2") == 1
    out = capsys.readouterr().out
    assert "valid (would be sent): 2,002" in out and "refused: 5" in out
    assert collector.stats()["requests"] == 0


def test_kill_9_of_the_reader_then_resume_delivers_every_row_once(
    collector: CollectorThread, tmp_path: Path
) -> None:
    n, window, jobs = 30_000, 1000, 2
    collector.set_faults(latency_ms=300)  # rows stay in flight: the checkpoint must wait
    path = _write_jsonl(tmp_path / "big.jsonl", [_event(i) for i in range(n)])
    tag = uuid.uuid4().hex
    args = ("--jobs", str(jobs), "--window", str(window))
    proc = _start(collector, tmp_path, path, tag, *args, "--rate", "6000")
    assert proc.stderr is not None
    noticed: List[str] = []
    both_noticed = threading.Event()

    def watch_stderr() -> None:
        # The workers write to the command's stderr, which outlives the command.
        assert proc.stderr is not None
        # Two workers write at once: their lines may come interleaved, so each worker is
        # found by its own words, wherever they stand in a line.
        for line in proc.stderr:
            for worker in re.findall(rb"worker (\d+): the reading process is gone", line):
                noticed.append(worker.decode())
                if len(set(noticed)) == jobs:
                    both_noticed.set()

    watcher = threading.Thread(target=watch_stderr, daemon=True)
    watcher.start()
    try:
        _wait_for_progress(proc, tmp_path, 12_000)
        assert len(_workers_tagged(tag)) == jobs
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    # Each worker sees its pipe close, says so, and sends nothing more.
    assert both_noticed.wait(30), noticed
    # Stored by now: below the checkpoint, and what settled after its last write.
    stored_when_noticed = len(collector.events())
    assert _wait_gone(tag, 30) == []
    state = _checkpoint(tmp_path)
    assert state is not None
    rows_done = state["rows_done"]
    seen = set(_rows_seen(collector))
    assert set(range(rows_done)) <= seen  # below the checkpoint: all at the server
    assert rows_done < n
    collector.set_faults(latency_ms=0)
    again = subprocess.run(
        [JOURNY, "import", str(path), "--host", collector.url, "--progress", "none", *args],
        cwd=tmp_path,
        env={**os.environ, "JOURNY_WRITE_KEY": "k"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"skipped (done before, per the checkpoint): {rows_done:,}" in again.stdout
    _duplicate_free(collector, n)
    # The documented bound, whatever the timing: re-sent are the rows that settled after
    # the checkpoint's last write (all stored when the workers noticed, since they send
    # nothing after) and the rows of the requests then on the wire, at most --window.
    # Workers that delivered what they held would add the rest of their chunks.
    resent = collector.stats()["duplicates"]
    assert resent <= (stored_when_noticed - rows_done) + window


def test_ctrl_c_stops_the_workers_and_leaves_a_checkpoint_to_resume_from(
    collector: CollectorThread, tmp_path: Path
) -> None:
    n = 30_000
    collector.set_faults(latency_ms=100)
    path = _write_jsonl(tmp_path / "big.jsonl", [_event(i) for i in range(n)])
    tag = uuid.uuid4().hex
    proc = _start(collector, tmp_path, path, tag, "--jobs", "2", "--rate", "5000")
    try:
        _wait_for_progress(proc, tmp_path, 3000)
        proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _out, err = proc.communicate(timeout=60)
        # The workers stop taking rows at once and deliver what they hold (a few hundred
        # ms of requests at this latency), not the rest of the file, not the close timeout.
        assert time.monotonic() - interrupted < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()
    assert b"interrupted; run the same command to resume" in err
    assert _wait_gone(tag, 10) == []
    state = _checkpoint(tmp_path)
    assert state is not None and not state["complete"]
    assert set(range(state["rows_done"])) <= set(_rows_seen(collector))
    collector.set_faults(latency_ms=0)
    assert _import(collector, tmp_path, str(path), "--jobs", "2") == 0
    _duplicate_free(collector, n)


def test_a_worker_killed_stops_the_import_resumably(
    collector: CollectorThread, tmp_path: Path
) -> None:
    n = 30_000
    collector.set_faults(latency_ms=50)
    path = _write_jsonl(tmp_path / "big.jsonl", [_event(i) for i in range(n)])
    tag = uuid.uuid4().hex
    proc = _start(collector, tmp_path, path, tag, "--jobs", "2", "--rate", "5000")
    try:
        _wait_for_progress(proc, tmp_path, 2000)
        victim = _workers_tagged(tag)[0]
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, out.decode() + err.decode()
    assert b"STOPPED: import worker" in out and b"exited with status -9" in out
    assert _wait_gone(tag, 10) == []
    state = _checkpoint(tmp_path)
    assert state is not None
    assert set(range(state["rows_done"])) <= set(_rows_seen(collector))
    collector.set_faults(latency_ms=0)
    assert _import(collector, tmp_path, str(path), "--jobs", "2") == 0
    _duplicate_free(collector, n)


def test_a_bad_write_key_stops_every_worker_at_once(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "e.jsonl", [_event(i) for i in range(5000)])
    with CollectorThread(write_keys=["good"]) as strict:
        env = {**os.environ, "JOURNY_WRITE_KEY": "bad"}
        cmd = [JOURNY, "import", str(path), "--host", strict.url, "--progress", "none"]
        run = subprocess.run(
            [*cmd, "--jobs", "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 3, run.stdout + run.stderr
        assert "STOPPED" in run.stdout and "401" in run.stdout
        assert strict.stats()["events"] == 0
        state = _checkpoint(tmp_path)
        assert state is not None and state["rows_done"] == 0
        env["JOURNY_WRITE_KEY"] = "good"
        run = subprocess.run(
            [*cmd, "--jobs", "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert strict.stats()["events"] == 5000


def test_works_from_a_script_without_a_main_guard(
    collector: CollectorThread, tmp_path: Path
) -> None:
    # Workers are not multiprocessing children: nothing re-imports the caller's script.
    path = _write_jsonl(tmp_path / "e.jsonl", [_event(i) for i in range(3000)])
    script = tmp_path / "backfill.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from journy_analytics.cli import main
            print("script body ran")
            code = main(["import", {str(path)!r}, "--jobs", "2", "--write-key", "k",
                         "--host", {collector.url!r}, "--progress", "none"])
            sys.exit(code)
            """
        )
    )
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("script body ran") == 1
    _duplicate_free(collector, 3000)
