"""Whatever arrives on the ingest endpoints, the collector never answers 5xx."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any, Iterator

import pytest
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journy_analytics.collector import CollectorThread

AUTH = {"Authorization": "Basic " + base64.b64encode(b"k:").decode()}
PATHS = ["/backend/v1/batch", "/v1/batch", "/v1/track", "/v1/identify", "/v1/group", "/v1/page"]


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[CollectorThread, urllib3.PoolManager]]:
    with CollectorThread(max_logged_requests=10) as c:
        yield c, urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(10))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = st.none() | st.text(max_size=4) | st.integers() | json_values
event_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["identify", "track", "page", "screen", "group", "alias", "x"])
        | json_values,
        "userId": ids,
        "anonymousId": ids,
        "groupId": ids,
        "previousId": ids,
        "event": ids,
        "name": ids,
        "messageId": ids,
        "timestamp": ids,
        "traits": json_values,
        "properties": json_values,
        "context": st.fixed_dictionaries({}, optional={"groupId": ids}) | json_values,
        "integrations": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.builds(
        lambda events, key: json.dumps({"batch": events, "writeKey": key}).encode(),
        st.lists(event_like, max_size=5) | json_values,
        st.none() | st.text(max_size=3),
    ),
    st.builds(lambda e: json.dumps(e).encode(), event_like),
    # orjson reads 1024 levels of nesting but writes only 255: probe around both limits.
    st.builds(
        lambda depth, kind: (
            '{"batch": [{"type": "identify", "userId": "u", "traits": {"x": '
            + kind[0] * depth
            + kind[1] * depth
            + "}}]}"
        ).encode(),
        st.integers(240, 1100),
        st.sampled_from([("[", "]"), ('{"a":', "}")]),
    ),
)


def check(live: Any, path: str, body: bytes, headers: dict[str, str]) -> None:
    collector, pool = live
    r = pool.request("POST", collector.url + path, body=body, headers=headers)
    assert r.status < 500, (r.status, r.data)
    assert r.status in (200, 400, 401, 413, 415), (r.status, r.data)
    if r.status != 200:
        assert json.loads(r.data)["success"] is False


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=st.sampled_from(PATHS), body=bodies, use_auth=st.booleans(), use_gzip=st.booleans())
def test_random_bodies_never_5xx(live, path, body, use_auth, use_gzip):
    headers = {"Content-Type": "application/json", **(AUTH if use_auth else {})}
    if use_gzip:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    check(live, path, body, headers)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    auth=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
    | st.builds(
        lambda s: "Basic " + s,
        st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20),
    )
    | st.builds(lambda b: "Basic " + base64.b64encode(b).decode(), st.binary(max_size=12)),
    encoding=st.sampled_from(["gzip", "identity", "", "deflate", "GZIP", "x-gzip"]),
    body=st.binary(max_size=64),
)
def test_random_headers_never_5xx(live, auth, encoding, body):
    check(live, "/backend/v1/batch", body, {"Authorization": auth, "Content-Encoding": encoding})


def test_fuzzing_left_the_store_consistent(live):
    collector, _ = live
    stats = collector.stats()
    assert stats["stored"] == stats["events"]
    assert stats["received"] == stats["stored"] + stats["duplicates"]
