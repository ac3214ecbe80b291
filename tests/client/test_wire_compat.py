"""Our requests against what @segment/analytics-node 3.1.0 (journy.io's documented SDK)
sends for the same calls. The golden file is captured by bench/node/capture.js.

The only intended differences: the library name and version, the User-Agent, message ids,
"now" timestamps and sentAt, and analytics-node's private ``_metadata`` field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, List

from journy_analytics import Analytics, __version__

GOLDEN = Path(__file__).parent.parent / "data" / "analytics-node-3.1.0-requests.json"
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
KEYWORDS = {
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "traits": "traits",
    "groupId": "group_id",
    "event": "event",
    "properties": "properties",
    "name": "name",
    "category": "category",
    "previousId": "previous_id",
}


def golden() -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads(GOLDEN.read_text(encoding="utf-8"))
    return data


def golden_events() -> List[Dict[str, Any]]:
    return [e for r in golden()["requests"] for e in r["body"]["batch"]]


def replay(client: Analytics, event: Dict[str, Any]) -> None:
    """Make our call that corresponds to one of analytics-node's events."""
    kwargs: Dict[str, Any] = {KEYWORDS[k]: v for k, v in event.items() if k in KEYWORDS}
    if event["type"] == "page" and "category" in kwargs:
        # analytics-node copied it into properties; we do that ourselves.
        kwargs["properties"] = {k: v for k, v in kwargs["properties"].items() if k != "category"}
    context = {k: v for k, v in event["context"].items() if k != "library"}
    if context:
        kwargs["context"] = context
    if event["timestamp"].startswith("2015"):
        kwargs["timestamp"] = event["timestamp"]
    method: Callable[..., None] = getattr(client, event["type"])
    method(**kwargs)


def normalised(event: Dict[str, Any]) -> Dict[str, Any]:
    out = {k: v for k, v in event.items() if k not in ("_metadata", "messageId")}
    assert ISO_MS_Z.match(out["timestamp"])
    if not out["timestamp"].startswith("2015"):
        out["timestamp"] = "now"
    out["context"] = {k: v for k, v in out["context"].items() if k != "library"}
    return out


def test_golden_file_is_the_seed_calls() -> None:
    data = golden()
    assert data["version"] == "3.1.0"
    types = [e["type"] for e in golden_events()]
    assert types == ["identify", "identify", "group", "track", "page", "screen", "alias"]


def test_same_events_as_analytics_node(scripted: Any) -> None:
    server = scripted()
    client = Analytics(
        write_key="WRITE_KEY", host=server.url, path="/backend/v1/batch", flush_interval=60
    )
    expected = golden_events()
    for event in expected:
        replay(client, event)
    assert client.close_and_flush(10)
    ours = server.events()
    assert len(ours) == len(expected)
    for mine, theirs in zip(ours, expected):
        assert normalised(mine) == normalised(theirs), mine["type"]
        assert set(mine) == set(theirs) - {"_metadata"}
        assert mine["context"]["library"] == {"name": "journy-analytics", "version": __version__}
        assert mine["messageId"] and mine["messageId"] != theirs["messageId"]


def test_same_request_envelope_and_headers(scripted: Any) -> None:
    server = scripted()
    client = Analytics(write_key="WRITE_KEY", host=server.url, flush_interval=60)
    for event in golden_events():
        replay(client, event)
    assert client.close_and_flush(10)
    (theirs,) = golden()["requests"]
    (body,) = server.bodies
    assert set(body) == set(theirs["body"]) == {"batch", "sentAt", "writeKey"}
    assert body["writeKey"] == theirs["body"]["writeKey"] == "WRITE_KEY"
    assert ISO_MS_Z.match(body["sentAt"]) and ISO_MS_Z.match(theirs["body"]["sentAt"])
    (headers,) = server.headers
    mine = {k.lower(): v for k, v in headers.items()}
    assert mine["content-type"] == theirs["headers"]["content-type"]
    assert mine["authorization"] == theirs["headers"]["authorization"]
    assert mine["user-agent"] == f"journy-analytics-python/{__version__}"
    assert "content-encoding" not in mine and "x-retry-count" not in mine


def test_gzip_is_the_only_header_change_when_enabled(scripted: Any) -> None:
    server = scripted()
    client = Analytics(write_key="WRITE_KEY", host=server.url, gzip=True, flush_interval=60)
    client.track(user_id="u", event="E", message_id="gz-1")
    assert client.close_and_flush(10)
    assert server.headers[0]["Content-Encoding"] == "gzip"
    assert [e["messageId"] for e in server.events()] == ["gz-1"]
