"""Delivery core v2, process lifecycle: SIGTERM, exit, forks the interpreter cannot see.

Each test runs a real Python process (a script, uvicorn or gunicorn) that delivers to a
collector on loopback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, List

import pytest

from journy_analytics.collector import CollectorThread


def start(code: str, *args: str, env: Any = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_line(proc: subprocess.Popen[str], expected: str, timeout: float = 20.0) -> None:
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        if expected in line:
            return
    proc.kill()
    raise AssertionError(f"no {expected!r} from the process: {proc.communicate()[1][-3000:]}")


TRACK_THEN_WAIT = """
    import signal, sys, time
    from journy_analytics import Analytics
    handle = sys.argv[2] == "1"
    if sys.argv[3] == "own-handler":
        def graceful(signum, frame):
            print("APP HANDLER", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, graceful)
    a = Analytics(write_key="k", host=sys.argv[1], flush_interval=60, handle_sigterm=handle)
    for i in range(20):
        a.track(user_id="u", event="Before SIGTERM", message_id=f"t{i}")
    print("READY", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("mode", ["default", "own-handler"])
def test_sigterm_delivers_what_is_queued(mode: str) -> None:
    with CollectorThread() as c:
        proc = start(TRACK_THEN_WAIT, c.url, "1", mode)
        wait_line(proc, "READY")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert time.monotonic() - started < 5.0 + 2.0  # exit_flush_timeout + slack
        assert c.unique_message_ids() == {f"t{i}" for i in range(20)}, err
        if mode == "default":
            # Ended as SIGTERM would have: killed by the signal, not a clean exit.
            assert proc.returncode == -signal.SIGTERM, err
        else:
            assert "APP HANDLER" in out and proc.returncode == 0, err


THREAD_MASKS = """
    import json, signal, sys, threading
    from journy_analytics import Analytics
    a = Analytics(write_key="k", host=sys.argv[1], flush_interval=60, max_events_in_batch=5)

    class Destination:
        name, type = "sink", "destination"
        def track(self, event):
            pass

    a.register(Destination())
    for i in range(50):  # starts the dispatcher, senders, the watchdog, the destination thread
        a.track(user_id="u", event="E", message_id=f"m{i}")
    a.flush()

    def blocked(native_id):
        for line in open(f"/proc/self/task/{native_id}/status"):
            if line.startswith("SigBlk:"):
                mask = int(line.split()[1], 16)
                return [s for s in (signal.SIGTERM, signal.SIGINT) if mask & (1 << (s - 1))]
    print(json.dumps({t.name: blocked(t.native_id) for t in threading.enumerate()}))
    a.close_and_flush()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sdk_threads_leave_sigterm_and_sigint_to_the_main_thread() -> None:
    # The kernel gives a signal sent to the process to any thread not blocking it; on one
    # of ours, the main thread stays asleep and the handler (the exit flush, Ctrl-C) waits
    # with it. That hung the SIGTERM test above about one run in four, on 3.9 and 3.11.
    import json

    with CollectorThread() as c:
        proc = start(THREAD_MASKS, c.url)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    masks = json.loads(out)
    ours = {name: m for name, m in masks.items() if name.startswith("journy-analytics-")}
    assert {"journy-analytics-dispatcher", "journy-analytics-deadlines"} <= set(ours), masks
    assert any(name.startswith("journy-analytics-sender-") for name in ours), masks
    assert "journy-analytics-destinations" in ours, masks
    for name, blocked in ours.items():
        assert sorted(blocked) == sorted([signal.SIGTERM, signal.SIGINT]), (name, masks)
    assert masks["MainThread"] == []


def test_handle_sigterm_false_leaves_sigterm_alone() -> None:
    with CollectorThread() as c:
        proc = start(TRACK_THEN_WAIT, c.url, "0", "default")
        wait_line(proc, "READY")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        assert proc.returncode == -signal.SIGTERM
        assert c.unique_message_ids() == set()


UVICORN_APP = """
import asyncio
import os
from journy_analytics import Analytics

analytics = Analytics(write_key="k", host=os.environ["COLLECTOR"], flush_interval=60)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"].startswith("/slow"):
        # Still running when SIGTERM comes: uvicorn lets it finish, then re-raises SIGTERM
        # (skipping atexit); its event is tracked after the signal.
        print("SLOW STARTED", flush=True)
        await asyncio.sleep(1.0)
    analytics.track(user_id="u", event="Request", message_id=scope["path"].strip("/"))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def _get(url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.status == 200


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(cmd: List[str], tmp_path: Path, collector: CollectorThread, port: int) -> Any:
    env = {**os.environ, "COLLECTOR": collector.url, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            _get(f"http://127.0.0.1:{port}/warmup")
            return proc
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.communicate()[1][-3000:]) from None
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start: " + proc.communicate()[1][-3000:])


# "cli": `uvicorn app:app` imports the app before it installs its SIGTERM handler, so ours
# is the one it saves and restores. "server": uvicorn.Server imports the app inside its
# signal capture (as `--workers N` and `--reload` children do): ours chains to uvicorn's,
# and uvicorn re-raises SIGTERM with the default action after its graceful shutdown.
UVICORN_SERVER = (
    "import sys, uvicorn; uvicorn.Server(uvicorn.Config('uvicorn_app:app', "
    "port=int(sys.argv[1]), lifespan='off')).run()"
)


@pytest.mark.parametrize("start", ["cli", "server"])
def test_sigterm_under_uvicorn_without_a_lifespan_hook(tmp_path: Path, start: str) -> None:
    pytest.importorskip("uvicorn")
    (tmp_path / "uvicorn_app.py").write_text(UVICORN_APP)
    port = _free_port()
    if start == "cli":
        cmd = [sys.executable, "-m", "uvicorn", "uvicorn_app:app", "--port", str(port)]
        cmd += ["--lifespan", "off"]
    else:
        cmd = [sys.executable, "-c", UVICORN_SERVER, str(port)]
    with CollectorThread() as c:
        proc = _serve(cmd, tmp_path, c, port)
        for i in range(5):
            _get(f"http://127.0.0.1:{port}/r{i}")
        slow = threading.Thread(target=_get, args=(f"http://127.0.0.1:{port}/slow",))
        slow.start()
        wait_line(proc, "SLOW STARTED")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        slow.join(10)
        expected = {"warmup", "slow"} | {f"r{i}" for i in range(5)}
        assert c.unique_message_ids() == expected, err[-3000:]


WSGI_APP = """
import os
from journy_analytics import Analytics

analytics = None


def app(environ, start_response):
    global analytics
    if analytics is None:  # created in the worker, after gunicorn installed its handlers
        analytics = Analytics(write_key="k", host=os.environ["COLLECTOR"], flush_interval=60)
    analytics.track(user_id="u", event="Request", message_id=environ["PATH_INFO"].strip("/"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def test_sigterm_under_gunicorn(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    (tmp_path / "wsgi_app.py").write_text(WSGI_APP)
    port = _free_port()
    with CollectorThread() as c:
        proc = _serve(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-w",
                "1",
                "-b",
                f"127.0.0.1:{port}",
                "wsgi_app:app",
            ],
            tmp_path,
            c,
            port,
        )
        for i in range(5):
            _get(f"http://127.0.0.1:{port}/g{i}")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert c.unique_message_ids() == {"warmup"} | {f"g{i}" for i in range(5)}, err[-3000:]


# 8 -------------------------------------------------------------------------------------


def test_events_tracked_from_an_atexit_handler_are_delivered_at_exit() -> None:
    with CollectorThread() as c:
        proc = start(
            """
            import atexit, sys, time
            from journy_analytics import Analytics
            a = Analytics(write_key="k", host=sys.argv[1], flush_interval=60,
                          exit_flush_timeout=5)
            for i in range(20):
                a.track(user_id="u", event="Before Exit", message_id=f"b{i}")

            def goodbye():
                for i in range(20):
                    a.track(user_id="u", event="In atexit", message_id=f"x{i}")

            atexit.register(goodbye)  # runs before the SDK's own exit flush
            print("EXITING", time.monotonic(), flush=True)
            """,
            c.url,
        )
        out, err = proc.communicate(timeout=30)
        ended = time.monotonic()
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
        expected = {f"b{i}" for i in range(20)} | {f"x{i}" for i in range(20)}
        assert c.unique_message_ids() == expected
        # Timed from the end of the script (time.monotonic() is the system's clock, shared
        # with the child), so the interpreter's start-up, slow on a loaded machine, is out:
        # the exit delivers and ends, it does not sit out exit_flush_timeout (5 s).
        assert ended - float(out.split("EXITING", 1)[1]) < 5.0


# 3, 6 ----------------------------------------------------------------------------------


def test_a_fork_bypassing_register_at_fork_loses_none_of_the_childs_events() -> None:
    with CollectorThread() as c:
        proc = start(
            """
            import ctypes, os, sys
            from journy_analytics import Analytics
            a = Analytics(write_key="k", host=sys.argv[1], flush_interval=60)
            for i in range(10):
                a.track(user_id="parent", event="Before Fork")
            # libc's fork, as a C extension would call it: no Python at-fork hooks run.
            pid = ctypes.PyDLL(None).fork()
            if pid == 0:
                for i in range(5):
                    a.track(user_id="child", event="In Child")
                ok = a.flush(timeout=10)
                os._exit(0 if ok else 3)
            _, status = os.waitpid(pid, 0)
            print("CHILD", os.waitstatus_to_exitcode(status), flush=True)
            a.close_and_flush(10)
            """,
            c.url,
        )
        out, err = proc.communicate(timeout=60)
        assert "CHILD 0" in out, (out, err)
        events = c.events()
        child = [e for e in events if e.get("userId") == "child"]
        parent = [e for e in events if e.get("userId") == "parent"]
        assert len(child) == 5, "the child's events were dropped (or lost to an id collision)"
        assert len(parent) == 10
        assert len({e["messageId"] for e in events}) == 15


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_WIPEONFORK is Linux's")
def test_the_fork_mark_reads_zero_in_a_libc_forked_child_until_its_first_event() -> None:
    # The event methods skip the getpid() check while the mark reads 1: it must read 0 in
    # any child (even of a fork Python did not see) and 1 again once the check has run.
    proc = start(
        """
        import ctypes, os
        from journy_analytics import Analytics
        from journy_analytics._lifecycle import _fork
        a = Analytics(write_key="k", disable=True)
        print("PARENT", _fork.mark[0], flush=True)
        pid = ctypes.PyDLL(None).fork()
        if pid == 0:
            before = _fork.mark[0]
            a.track(user_id="u", event="E")
            print("CHILD", before, _fork.mark[0], flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        """
    )
    out, err = proc.communicate(timeout=30)
    assert "PARENT 1" in out, (out, err)
    assert "CHILD 0 1" in out, (out, err)


def test_send_path_modules_are_imported_before_any_thread_exists() -> None:
    # A fork while a sender thread holds a lazily imported module's lock (encodings.idna,
    # the email parser) leaves the child's first request hanging for ever.
    proc = start(
        """
        import sys
        import journy_analytics
        missing = [m for m in ("encodings.idna", "email.parser", "http.client", "ssl")
                   if m not in sys.modules]
        print("MISSING", missing)
        """
    )
    out, _ = proc.communicate(timeout=30)
    assert "MISSING []" in out, out


def test_forks_during_the_first_send_never_deadlock_the_child(scripted: Any) -> None:
    server = scripted([{"delay": 0.05}] * 200)
    proc = start(
        """
        import os, sys, time
        from journy_analytics import Analytics
        a = Analytics(write_key="k", host=sys.argv[1], flush_interval=0)
        hung = 0
        for k in range(8):
            a.track(user_id="u", event="Parent")
            time.sleep(k * 0.002)  # fork at staggered moments of the first sends
            pid = os.fork()
            if pid == 0:
                a.track(user_id="u", event="Child")
                os._exit(0 if a.flush(timeout=5) else 3)
            deadline = time.monotonic() + 10
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    if os.waitstatus_to_exitcode(status) != 0:
                        hung += 1
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    hung += 1
                    break
                time.sleep(0.01)
        print("HUNG", hung, flush=True)
        a.close_and_flush(5)
        """,
        server.url,
    )
    out, err = proc.communicate(timeout=120)
    assert "HUNG 0" in out, (out, err[-3000:])


def test_import_works_where_there_is_no_fork() -> None:
    # Windows has neither os.fork nor os.register_at_fork.
    proc = start(
        """
        import os
        del os.register_at_fork, os.fork
        import journy_analytics, journy_analytics.plugins, journy_analytics.segment
        a = journy_analytics.Analytics(write_key="k", disable=True)
        a.track(user_id="u", event="E")
        print("SETTLED", a.close_and_flush(2))
        """
    )
    out, err = proc.communicate(timeout=30)
    assert "SETTLED True" in out, err
