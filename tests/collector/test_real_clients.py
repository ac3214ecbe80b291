"""Clients no one here wrote, delivering to the collector over loopback."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import urllib3

from journy_analytics.collector import CollectorThread

DATA = Path(__file__).resolve().parents[1] / "data" / "analytics-node-3.1.0-requests.json"


@pytest.mark.parametrize("gzip", [False, True])
def test_segment_analytics_python(gzip):
    segment = pytest.importorskip("segment.analytics")
    errors: list[Exception] = []
    with CollectorThread(write_keys=["seg-key"]) as c:
        client = segment.Client(
            "seg-key",
            host=c.url,
            sync_mode=True,
            gzip=gzip,
            on_error=lambda e, batch: errors.append(e),
            max_retries=0,
        )
        client.identify("f4ca124298", {"email": "elon@tesla.com", "friends": 42})
        client.identify("f4ca124298", {"friends": None, "firstname": "Elon"})
        client.identify(anonymous_id="48d213bb", traits={"friends": 42})
        client.group("f4ca124298", "tesla", {"name": "Tesla", "employees": 127000})
        client.group(anonymous_id="tesla", group_id="tesla", traits={"employees": None})
        client.track(
            "f4ca124298",
            "Car Sold",
            {"revenue": 39999.99, "shipping": "200-day"},
            context={"groupId": "tesla"},
            timestamp=datetime(2015, 12, 12, 19, 11, tzinfo=timezone.utc),
        )
        client.page("f4ca124298", "Docs", "Pricing", {"url": "https://journy.io/pricing"})
        client.screen("f4ca124298", name="Home")
        client.alias("48d213bb", "f4ca124298")
        client.flush()

        assert errors == []
        assert c.user("f4ca124298")["traits"] == {"email": "elon@tesla.com", "firstname": "Elon"}
        assert c.user("f4ca124298")["accounts"] == ["tesla"]
        assert c.user("f4ca124298")["aliases"] == ["48d213bb"]
        assert c.user("48d213bb")["traits"] == {"friends": 42}
        assert c.account("tesla")["traits"] == {"name": "Tesla"}
        assert c.account("tesla")["members"] == ["f4ca124298"]
        (sold,) = c.events(type="track", group_id="tesla")
        assert sold["properties"] == {"revenue": 39999.99, "shipping": "200-day"}
        assert sold["timestamp"].startswith("2015-12-12T19:11:00")
        screens = c.events(type="screen")
        assert [e["name"] for e in screens] == ["Pricing", "Home"]
        assert c.stats()["events"] == 9
        # segment-analytics-python posts to /v1/batch with the key in the body (and header).
        request = c.requests()[-1]
        assert request["path"] == "/v1/batch"
        assert request["body"]["writeKey"] == "seg-key"
        if gzip:
            assert request["headers"]["Content-Encoding"] == "gzip"


def test_segment_client_with_unknown_key_is_refused():
    segment = pytest.importorskip("segment.analytics")
    from segment.analytics.request import APIError

    with CollectorThread(write_keys=["right"]) as c:
        client = segment.Client("wrong", host=c.url, sync_mode=True, max_retries=0)
        with pytest.raises(APIError) as exc:
            client.track("u", "E")
        assert c.events() == []
        assert c.stats()["rejected"] == {"unauthorized": 1}
    # Our JSON error body is what Segment's client reads: code and message.
    assert exc.value.status == 401
    assert exc.value.code == "unauthorized"
    assert exc.value.message == "unknown write key"


def test_analytics_node_captured_requests_replay():
    """Requests captured from @segment/analytics-node 3.1.0 are accepted byte for byte."""
    capture = json.loads(DATA.read_text())
    pool = urllib3.PoolManager(retries=False)
    with CollectorThread(path=capture["settings"]["path"]) as c:
        for request in capture["requests"]:
            # Every header node sent (sec-fetch-mode included: the collector's cross-site
            # guard must not take it for a browser), but those of the connection.
            headers = {
                k: v
                for k, v in request["headers"].items()
                if k not in ("host", "content-length", "connection")
            }
            body = json.dumps(request["body"]).encode()
            r = pool.request(request["method"], c.url + request["path"], body=body, headers=headers)
            assert r.status == 200, r.data
        sent = {e["messageId"] for req in capture["requests"] for e in req["body"]["batch"]}
        assert c.unique_message_ids() == sent
        elon = c.user("f4ca124298")
        assert elon["traits"]["email"] == "elon@tesla.com"
        assert elon["accounts"] == ["tesla"]
        assert c.account("tesla")["traits"]["name"] == "Tesla"
        pages = [e for e in c.events() if e.get("name") == "Pricing"]
        assert [e["type"] for e in pages] == ["screen"]
