"""Interpreter exit: an open client flushes for a bounded time, and exit is never held longer."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from typing import Any

from journy_analytics.collector import CollectorThread


def run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_open_client_flushes_at_exit() -> None:
    with CollectorThread() as c:
        result = run(
            """
            import sys
            from journy_analytics import Analytics
            a = Analytics(write_key="k", host=sys.argv[1], flush_interval=60)
            for i in range(25):
                a.track(user_id="u", event="At Exit", message_id=f"x{i}")
            """,
            c.url,
        )
        assert result.returncode == 0, result.stderr
        assert c.unique_message_ids() == {f"x{i}" for i in range(25)}


def test_exit_is_not_blocked_past_exit_flush_timeout(scripted: Any) -> None:
    server = scripted([{"delay": 30}] * 10)
    result = run(
        """
        import sys, time
        from journy_analytics import Analytics
        a = Analytics(write_key="k", host=sys.argv[1], flush_interval=0.01,
                      exit_flush_timeout=1.0)
        a.track(user_id="u", event="Stuck")
        print("EXITING", time.monotonic(), flush=True)
        """,
        server.url,
    )
    ended = time.monotonic()
    assert result.returncode == 0, result.stderr
    # Timed from the end of the script (time.monotonic() is the system's clock, shared with
    # the child), so the interpreter's start-up, which a loaded machine makes slow, is out.
    elapsed = ended - float(result.stdout.split("EXITING", 1)[1])
    # 1 s of flush plus interpreter teardown; not the 30 s the server would take.
    assert elapsed < 3.0, f"exit took {elapsed:.1f}s"
    assert "in flight when close_and_flush() timed out" in result.stderr
