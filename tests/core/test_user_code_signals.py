"""User code the SDK runs on its own threads gets a normal thread's signal mask.

The SDK's threads block SIGTERM, SIGINT and the other asynchronous signals (so a signal
sent to the process reaches the main thread, see _threads.py). A callback, an ``error``
handler, the Segment shim's ``on_error``, a destination plugin or a user's ``http_client``
runs on those threads: a process it starts must still die on ``terminate()``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from typing import Any, List, Mapping

import pytest

from journy_analytics import Analytics, Response
from journy_analytics._core._transport import StdlibHttpClient
from journy_analytics.collector import CollectorThread

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status"
)


def _blocked_mask(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16)
    raise AssertionError(f"no SigBlk in /proc/{pid}/status")


class Spawned:
    """Starts a sleeping child from wherever the SDK calls it; the test then checks it."""

    def __init__(self) -> None:
        self.children: List[subprocess.Popen[bytes]] = []
        self.threads: List[str] = []
        self.done = threading.Event()

    def __call__(self, *_: Any) -> None:
        if self.done.is_set():
            return
        self.threads.append(threading.current_thread().name)
        self.children.append(
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        )
        self.done.set()

    def assert_child_is_a_normal_process(self) -> None:
        assert self.done.wait(20), "the SDK never ran the user code"
        (child,) = self.children
        try:
            blocked = _blocked_mask(child.pid)
            child.terminate()
            try:
                code = child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                code = None
        finally:
            child.kill()
            child.wait()
        # Where the SDK ran it: one of its own threads, or the test proves nothing.
        assert self.threads[0].startswith("journy-"), self.threads
        assert blocked == 0, (
            f"the child blocks signals {blocked:#x}: it inherited the SDK thread's mask"
        )
        assert code == -signal.SIGTERM, "the child ignored terminate()"


def test_sdk_threads_block_sigterm_again_once_user_code_returns(
    collector: CollectorThread,
) -> None:
    # The switch is scoped to the user's call: afterwards the SDK's threads block SIGTERM
    # again, so a signal sent to the process still goes to the main thread.
    ran = threading.Event()
    client = Analytics(write_key="k", host=collector.url, flush_interval=0.01)
    client.on("http_response", lambda *_: None)
    try:
        client.track(user_id="u", event="E", callback=lambda *_: ran.set())
        assert ran.wait(20)
        assert client.flush(20)
        ours = [t for t in threading.enumerate() if t.name.startswith("journy-analytics-")]
        assert any(t.name.startswith("journy-analytics-sender-") for t in ours), ours
        for thread in ours:
            mask = _blocked_mask_of_thread(thread.native_id)
            assert mask & (1 << (signal.SIGTERM - 1)), (thread.name, hex(mask))
    finally:
        client.close_and_flush(5)


def _blocked_mask_of_thread(native_id: Any) -> int:
    with open(f"/proc/self/task/{native_id}/status") as status:
        for line in status:
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16)
    raise AssertionError("no SigBlk")


def test_a_process_started_from_a_callback_dies_on_terminate(collector: CollectorThread) -> None:
    spawned = Spawned()
    client = Analytics(write_key="k", host=collector.url, flush_interval=0.01)
    try:
        client.track(user_id="u", event="E", callback=spawned)
        spawned.assert_child_is_a_normal_process()
    finally:
        client.close_and_flush(5)


def test_a_process_started_from_an_error_handler_dies_on_terminate(scripted: Any) -> None:
    server = scripted([400])
    spawned = Spawned()
    client = Analytics(write_key="k", host=server.url, flush_interval=0.01, max_retries=0)
    client.on("error", spawned)
    try:
        client.track(user_id="u", event="E")
        spawned.assert_child_is_a_normal_process()
    finally:
        client.close_and_flush(5)


def test_a_process_started_from_the_segment_shims_on_error_dies_on_terminate(
    scripted: Any,
) -> None:
    from journy_analytics.segment import Client

    server = scripted([400])
    spawned = Spawned()
    client = Client("k", host=server.url, on_error=spawned, max_retries=0, upload_interval=0.01)
    try:
        client.track("u", "E")
        spawned.assert_child_is_a_normal_process()
    finally:
        client.shutdown()


def test_a_process_started_from_a_destination_plugin_dies_on_terminate(
    collector: CollectorThread,
) -> None:
    spawned = Spawned()

    class Destination:
        name = "spawner"
        type = "destination"

        def process(self, event: Any) -> Any:
            spawned()
            return event

    client = Analytics(write_key="k", host=collector.url, flush_interval=0.01)
    client.register(Destination())
    try:
        client.track(user_id="u", event="E")
        spawned.assert_child_is_a_normal_process()
    finally:
        client.close_and_flush(5)


def test_a_process_started_from_a_users_http_client_dies_on_terminate(
    collector: CollectorThread,
) -> None:
    spawned = Spawned()
    inner = StdlibHttpClient()

    class Transport:
        def send(
            self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
        ) -> Response:
            spawned()
            return inner.send(url, body, headers, timeout)

        def close(self) -> None:
            inner.close()

    client = Analytics(
        write_key="k", host=collector.url, flush_interval=0.01, http_client=Transport()
    )
    try:
        client.track(user_id="u", event="E")
        spawned.assert_child_is_a_normal_process()
    finally:
        client.close_and_flush(5)
        inner.close()


def test_a_process_started_from_a_callback_run_by_aclose_dies_on_terminate(
    scripted: Any,
) -> None:
    # aclose() runs close_and_flush on a thread of the asyncio bridge; events still queued
    # at its timeout are reported there, to their callbacks.
    import asyncio

    server = scripted([{"delay": 3.0}])
    spawned = Spawned()
    client = Analytics(write_key="k", host=server.url, flush_interval=60)
    client.track(user_id="u", event="E", callback=spawned)

    async def close() -> None:
        await client.aclose(timeout=0.2)

    asyncio.run(close())
    spawned.assert_child_is_a_normal_process()
    assert spawned.threads == ["journy-aclose"]
