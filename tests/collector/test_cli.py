"""The ``journy`` command: a real collector process, queries, Ctrl-C, missing extra."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import urllib3

from journy_analytics.cli import main
from journy_analytics.collector import CollectorThread

ROOT = Path(__file__).resolve().parents[2]


def start_collector(*args: str, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "journy_analytics.collector", "--port", "0", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if "listening on" not in first:
        proc.kill()
        pytest.fail(
            f"collector did not start: {first!r} {proc.stderr.read() if proc.stderr else ''}"
        )
    return proc, first.rsplit(" ", 1)[-1].strip()


def post(url: str, body: object, key: str = "k") -> urllib3.BaseHTTPResponse:
    headers = urllib3.make_headers(basic_auth=f"{key}:")
    headers["Content-Type"] = "application/json"
    return urllib3.request("POST", url, body=json.dumps(body).encode(), headers=headers)


def test_collector_process_serves_stops_on_sigint_and_keeps_data(tmp_path, capsys):
    proc, url = start_collector("--write-key", "k", cwd=tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:")
        batch = {
            "batch": [
                {"type": "identify", "userId": "elon", "traits": {"email": "e@x", "n": 1}},
                {"type": "group", "userId": "elon", "groupId": "tesla", "traits": {"name": "T"}},
                {
                    "type": "page",
                    "userId": "elon",
                    "name": "Pricing",
                    "context": {"groupId": "tesla"},
                },
            ]
        }
        assert post(url + "/backend/v1/batch", batch).status == 200
        assert post(url + "/backend/v1/batch", batch, key="other").status == 401

        # With write keys set, what was stored is shown only to a holder of one.
        assert main(["events", "--url", url]) == 1
        assert "401" in capsys.readouterr().err
        assert main(["events", "--url", url, "--write-key", "other"]) == 1
        assert "401" in capsys.readouterr().err
        k = ["--url", url, "--write-key", "k"]
        assert main(["events", *k]) == 0
        out = capsys.readouterr().out
        assert "identify" in out and "screen" in out and "tesla" in out and "(3 events)" in out
        assert main(["user", "elon", *k]) == 0
        out = capsys.readouterr().out
        assert "e@x" in out and "accounts: tesla" in out
        assert main(["account", "tesla", *k]) == 0
        assert "members:  elon" in capsys.readouterr().out
        assert main(["user", "nobody", *k]) == 1
        assert "404" in capsys.readouterr().err
        assert main(["events", "--type", "screen", "--json", *k]) == 0
        assert json.loads(capsys.readouterr().out)["events"][0]["name"] == "Pricing"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "stopped; 3 events" in out
    assert "Traceback" not in err
    db = tmp_path / "journy-collector.db"  # the default: a file in the working directory
    assert db.exists()
    with CollectorThread(db=str(db)) as c:
        assert c.user("elon")["traits"] == {"email": "e@x", "n": 1}
        assert c.account("tesla")["members"] == ["elon"]
        assert c.stats()["rejected"] == {"unauthorized": 1}


def test_sigterm_stops_cleanly_and_memory_db_leaves_no_file(tmp_path):
    proc, url = start_collector("--db", ":memory:", "--fail-rate", "1", cwd=tmp_path)
    try:
        r = post(url + "/v1/batch", {"batch": [{"type": "identify", "userId": "u"}]})
        assert r.status == 500
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert list(tmp_path.iterdir()) == []


def test_port_in_use_is_reported(tmp_path):
    with CollectorThread() as c:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "journy_analytics.collector",
                "--port",
                str(c.port),
                "--db",
                ":memory:",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_bad_fault_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["collector", "--fail-rate", "2"])
    assert exc.value.code == 2
    assert "between 0 and 1" in capsys.readouterr().err


def test_query_without_collector(capsys):
    with CollectorThread() as c:
        url = c.url
    assert main(["events", "--url", url]) == 1
    assert "no collector at" in capsys.readouterr().err


def test_missing_aiohttp_names_the_extra():
    code = (
        "import sys; sys.modules['aiohttp'] = None\n"
        "from journy_analytics.cli import main\n"
        "sys.exit(main(['collector', '--db', ':memory:']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert 'pip install "journy-analytics[collector]"' in result.stderr


def test_sdk_import_never_imports_aiohttp():
    code = (
        "import sys, journy_analytics, journy_analytics.cli\n"
        "assert 'aiohttp' not in sys.modules, 'aiohttp imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_console_script_help():
    script = Path(sys.executable).parent / "journy"
    if not script.exists():
        pytest.skip("the journy console script is not installed in this environment")
    result = subprocess.run(
        [str(script), "collector", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert result.returncode == 0
    for flag in ("--write-key", "--fail-rate", "--rate-limit", "--latency-ms", "--reset-rate"):
        assert flag in result.stdout


def test_stats_command(capsys):
    with CollectorThread() as c:
        post(c.url + "/v1/batch", {"batch": [{"type": "identify", "userId": "u"}]})
        assert main(["stats", "--url", c.url]) == 0
    out = capsys.readouterr().out
    assert any(line.split() == ["received", "1"] for line in out.splitlines())


def test_events_command_limit_and_all(capsys):
    with CollectorThread() as c:
        events = [{"type": "track", "userId": "u", "event": f"E{i}"} for i in range(3)]
        assert post(c.url + "/v1/batch", {"batch": events}).status == 200
        assert main(["events", "--limit", "2", "--url", c.url]) == 0
        limited = capsys.readouterr().out
        assert main(["events", "--limit", "2", "--all", "--url", c.url]) == 0
        everything = capsys.readouterr().out
    assert "(2 events)" in limited and "E0" not in limited and "E2" in limited
    assert "(3 events)" in everything and "E0" in everything


def test_retry_after_flags(tmp_path):
    proc, url = start_collector(
        "--db", ":memory:", "--retry-after-rate", "1", "--retry-after", "4", cwd=tmp_path
    )
    try:
        r = post(
            url + "/backend/v1/batch", {"batch": [{"type": "track", "userId": "u", "event": "E"}]}
        )
        assert r.status == 429 and r.headers["Retry-After"] == "4"
        faults = json.loads(urllib3.request("GET", url + "/api/faults").data)
        assert faults["retry_after_rate"] == 1.0 and faults["retry_after"] == 4
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


@pytest.mark.parametrize(
    "flags", [["--retry-after-rate", "1.5"], ["--retry-after", "-1"], ["--retry-after", "x"]]
)
def test_bad_retry_after_flags_are_usage_errors(flags, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["collector", *flags])
    assert exc.value.code == 2
