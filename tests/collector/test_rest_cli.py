"""``journy collector``'s REST API flags, in a real collector process, and their parsing."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.collector.rest_contract import RestHttp

from journy_analytics.cli import main
from journy_analytics.collector._rest_auth import (
    PERMISSIONS,
    ApiKey,
    RateLimit,
    parse_api_key,
    parse_rate_limit,
)


def test_api_flags_in_a_collector_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "journy_analytics.collector",
            "--port",
            "0",
            "--db",
            ":memory:",
            "--api-key",
            "reader-key-1:ReadEvents,ReadSegments",
            "--api-key",
            "writer-key-2",
            "--api-rate-limit",
            "2/s",
            "--website",
            "acme-inc.com",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    banner = []
    for line in proc.stdout:
        banner.append(line)
        if "Ctrl-C" in line:
            break
    out = "".join(banner)
    url = banner[0].rsplit(" ", 1)[-1].strip()
    try:
        api = RestHttp(url, key="reader-key-1")
        assert api.get("/validate").json()["data"]["permissions"] == ["ReadEvents", "ReadSegments"]
        writer = RestHttp(url, key="writer-key-2")
        snippet = writer.get("/tracking/snippet", query={"domain": "other.org"})
        assert snippet.status == 404
        assert snippet.headers["X-RateLimit-Limit"] == "2"
        assert RestHttp(url, key="nobody").get("/validate").status == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "REST API" in out
    # The banner names how many keys there are, never a key.
    assert "2 set with --api-key" in out and "2/s per key" in out
    assert "reader-key-1" not in out and "writer-key-2" not in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--api-key", "k:WriteEverything"], "unknown permission 'WriteEverything'"),
        (["--api-key", ":TrackData"], "the key before ':' is empty"),
        (["--api-rate-limit", "fast"], "expected N/min"),
        (["--api-rate-limit", "0/s"], "N >= 1"),
    ],
)
def test_bad_api_flags_are_usage_errors(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["collector", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err
    if "permission" in message:
        assert all(p in err for p in PERMISSIONS)  # it says what would be valid


def test_parse_api_key() -> None:
    assert parse_api_key("k") == ApiKey("k", PERMISSIONS)
    assert parse_api_key("k:") == ApiKey("k", ())
    assert parse_api_key("k:ReadEvents, TrackData,ReadEvents") == ApiKey(
        "k", ("ReadEvents", "TrackData")
    )
    assert parse_api_key("k:disabled") == ApiKey("k", (), enabled=False)
    with pytest.raises(ValueError, match="unknown permission 'Admin'"):
        parse_api_key("k:ReadEvents,Admin")


def test_parse_rate_limit() -> None:
    assert parse_rate_limit("1800") == RateLimit(1800, 60.0)
    assert parse_rate_limit("1800/min") == RateLimit(1800, 60.0)
    assert parse_rate_limit("50/s") == RateLimit(50, 1.0)
    assert parse_rate_limit(" 5 / second ") == RateLimit(5, 1.0)
    for bad in ("0", "-1/s", "5/hour", "many"):
        with pytest.raises(ValueError, match="expected N/min"):
            parse_rate_limit(bad)
    assert str(RateLimit(50, 1.0)) == "50/s" and str(RateLimit(9, 60.0)) == "9/min"
