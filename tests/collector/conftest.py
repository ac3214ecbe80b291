"""Fixtures for the collector tests: a live collector on loopback and a small HTTP client."""

from __future__ import annotations

import base64
import gzip as gzip_module
import json
from typing import Any, Iterator, Optional

import pytest
import urllib3

try:
    import aiohttp  # noqa: F401
except ImportError:  # the collector extra is not installed: nothing here can run
    collect_ignore_glob = ["test_*.py"]


class Answer:
    def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data

    def json(self) -> Any:
        return json.loads(self.data)


class Http:
    """Plain HTTP against a collector: every call is a real loopback request."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(10))

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        key: Optional[str] = "test-key",
        raw: Optional[bytes] = None,
        gzip: bool = False,
        headers: Optional[dict[str, str]] = None,
    ) -> Answer:
        data = raw if raw is not None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"}
        if key is not None:
            sent["Authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        if gzip:
            data = gzip_module.compress(data)
            sent["Content-Encoding"] = "gzip"
        sent.update(headers or {})
        r = self.pool.request("POST", self.base_url + path, body=data, headers=sent)
        return Answer(r.status, dict(r.headers), r.data)

    def get(self, path: str, **params: Any) -> Answer:
        fields = {k: str(v) for k, v in params.items() if v is not None}
        r = self.pool.request("GET", self.base_url + path, fields=fields)
        return Answer(r.status, dict(r.headers), r.data)

    def batch(self, *events: dict[str, Any], key: Optional[str] = "test-key") -> Answer:
        return self.post("/backend/v1/batch", {"batch": list(events)}, key=key)


@pytest.fixture
def collector() -> Iterator[Any]:
    from journy_analytics.collector import CollectorThread

    with CollectorThread() as c:
        yield c


@pytest.fixture
def http(collector: Any) -> Http:
    return Http(collector.url)


@pytest.fixture
def make_http() -> type[Http]:
    """The ``Http`` class, for tests that run their own ``CollectorThread``."""
    return Http
