"""Assert what your code tracked, with no server: an in-memory capture.

In a test::

    from journy_analytics.testing import Capture

    def test_signup_is_tracked():
        with Capture() as capture:
            signup(capture.analytics)            # your code, given the client
            assert capture.events(type="track", event="Signed Up")

With pytest, add ``pytest_plugins = ["journy_analytics.testing"]`` to your conftest.py and
use the ``journy_capture`` fixture. It also installs the capture as the module-level default
client, so code calling ``journy_analytics.track(...)`` is captured too.

The capture runs the real pipeline (validation, encoding, batching, the worker); only the
HTTP transport is replaced by one that records each request and answers 200.
"""

from __future__ import annotations

import gzip as _gzip
import threading
from typing import Any, Dict, Iterator, List, Mapping, Optional

import orjson

from journy_analytics._core import Response
from journy_analytics._default import set_default_client
from journy_analytics.client import Analytics

__all__ = ["Capture", "MemoryHttpClient", "journy_capture"]


class MemoryHttpClient:
    """An ``HttpClient`` that keeps every request body (decoded) and answers 200."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: List[Dict[str, Any]] = []

    def send(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
        if headers.get("Content-Encoding") == "gzip":
            body = _gzip.decompress(body)
        decoded = orjson.loads(body)
        with self._lock:
            self.requests.append({"url": url, "headers": dict(headers), "body": decoded})
        return Response(200, {}, b'{"success":true}')

    def close(self) -> None:
        pass


class Capture:
    """An ``Analytics`` client whose requests land in memory. Extra keyword arguments go to
    ``Analytics`` (write_key defaults to "test-write-key")."""

    def __init__(self, **settings: Any) -> None:
        self.http_client = MemoryHttpClient()
        settings.setdefault("write_key", "test-write-key")
        settings.setdefault("flush_interval", 0.05)
        # Captures whatever the environment says (Analytics reads JOURNY_DISABLE, ...):
        # a test suite run with JOURNY_DISABLE=1 must still see its events.
        settings.setdefault("disable", False)
        self.analytics = Analytics(http_client=self.http_client, **settings)

    def flush(self, timeout: float = 5.0) -> bool:
        return self.analytics.flush(timeout)

    def events(
        self,
        type: Optional[str] = None,
        event: Optional[str] = None,
        user_id: Optional[str] = None,
        group_id: Optional[str] = None,
    ) -> List[Dict[str, Any]]:
        """Every event sent so far (after a flush), filtered by the given fields."""
        self.flush()
        with self.http_client._lock:
            batches = [r["body"]["batch"] for r in self.http_client.requests]
        found = []
        for batch in batches:
            for e in batch:
                if type is not None and e.get("type") != type:
                    continue
                if event is not None and e.get("event") != event:
                    continue
                if user_id is not None and e.get("userId") != user_id:
                    continue
                if group_id is not None and group_id not in (
                    e.get("groupId"),
                    e.get("context", {}).get("groupId"),
                ):
                    continue
                found.append(e)
        return found

    def clear(self) -> None:
        self.flush()
        with self.http_client._lock:
            self.http_client.requests.clear()

    def close(self) -> None:
        self.analytics.close_and_flush(5.0)

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional for users
    pass
else:

    @pytest.fixture
    def journy_capture() -> Iterator[Capture]:
        """A Capture installed as the module-level default client for the test's duration."""
        capture = Capture()
        previous = set_default_client(capture.analytics)
        try:
            yield capture
        finally:
            set_default_client(previous)
            capture.close()
