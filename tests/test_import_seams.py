"""``journy import`` where it meets the rest: identical rows, damaged and BOM-marked inputs,
the environment's host, typed CSV columns, the progress estimate, re-runs, Ctrl-C and a
``kill -9`` of the reader. Against the real collector over loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.test_import import _event, _write_jsonl

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
