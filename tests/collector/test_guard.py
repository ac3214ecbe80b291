"""A web page cannot drive the collector: cross-site writes and foreign Host names are
refused, over real HTTP, while programs (the SDK, the segment shim, curl) and the
inspector's own page keep working."""

from __future__ import annotations

import json
from typing import Any, Optional

import urllib3
from test_inspector_api import start_collector

from journy_analytics import Analytics
from journy_analytics.collector import CollectorThread
from journy_analytics.collector._guard import host_name

EVENT = {"type": "track", "userId": "u", "event": "Kept", "messageId": "kept"}


def request(
    url: str,
    method: str,
    path: str,
    body: Optional[bytes] = None,
    headers: Optional[dict[str, str]] = None,
) -> Any:
    return urllib3.request(
        method, url + path, body=body, headers=headers or {}, retries=False, timeout=10
    )


def seeded(c: CollectorThread) -> None:
    body = json.dumps({"batch": [EVENT], "writeKey": "k"}).encode()
    answer = request(c.url, "POST", "/v1/batch", body, {"Content-Type": "application/json"})
    assert answer.status == 200
    assert c.stats()["events"] == 1


def test_a_cross_site_text_plain_post_cannot_reset_the_store(collector):
    seeded(collector)
    # What <form method=post enctype=text/plain action=http://127.0.0.1:PORT/api/reset>
    # or fetch(..., {mode: "no-cors", body: "x"}) on another site makes the browser send.
    answer = request(
        collector.url,
        "POST",
        "/api/reset",
        b"x",
        {
            "Content-Type": "text/plain;charset=UTF-8",
            "Origin": "https://evil.example",
            "Sec-Fetch-Site": "cross-site",
        },
    )
    assert answer.status == 403
    assert json.loads(answer.data)["code"] == "cross_site"
    assert collector.stats()["events"] == 1


def test_a_text_plain_post_to_the_api_is_refused_even_without_an_origin(collector):
    seeded(collector)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        answer = request(collector.url, "POST", "/api/reset", b"", headers)
        assert answer.status == 415, content_type
        assert "application/json" in json.loads(answer.data)["message"]
        faults = b'{"fail_rate": 1.0}'
        assert request(collector.url, "POST", "/api/faults", faults, headers).status == 415
    assert collector.stats()["events"] == 1
    assert collector.faults.fail_rate == 0.0


def test_cross_site_pages_cannot_switch_faults_on_or_inject_events(collector):
    cross = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
    body = b'{"fail_rate": 1.0}'
    assert request(collector.url, "POST", "/api/faults", body, cross).status == 403
    assert collector.faults.fail_rate == 0.0
    batch = json.dumps({"batch": [EVENT], "writeKey": "k"}).encode()
    assert request(collector.url, "POST", "/v1/batch", batch, cross).status == 403
    # Same-site is another origin too (a page on another port of this machine).
    same_site = {"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"}
    assert request(collector.url, "POST", "/v1/batch", batch, same_site).status == 403
    assert collector.stats()["events"] == 0


def test_a_rebound_host_name_cannot_read_the_events(collector):
    seeded(collector)
    port = collector.url.rsplit(":", 1)[1]
    # A DNS-rebinding page's requests are same-origin for the browser; only Host tells.
    for path in ("/api/events", "/api/inspector/events", "/"):
        answer = request(collector.url, "GET", path, headers={"Host": f"evil.example:{port}"})
        assert answer.status == 421, path
        assert b"kept" not in answer.data
        assert json.loads(answer.data)["code"] == "unknown_host"
    for name in ("localhost", "127.0.0.1", "LocalHost.", "app.localhost"):
        answer = request(collector.url, "GET", "/api/events", headers={"Host": f"{name}:{port}"})
        assert answer.status == 200, name
        assert json.loads(answer.data)["events"][0]["messageId"] == "kept"


def test_the_inspector_page_and_its_own_same_origin_requests_still_work(collector):
    seeded(collector)
    own = collector.url  # http://127.0.0.1:PORT
    browser = {"Sec-Fetch-Site": "same-origin", "Origin": own}
    page = request(own, "GET", "/", headers={"Accept": "text/html", **browser})
    assert page.status == 200 and b"<!doctype html>" in page.data
    events = request(own, "GET", "/api/inspector/events", headers=browser)
    assert events.status == 200 and json.loads(events.data)["matched"] == 1
    faults = request(
        own,
        "POST",
        "/api/faults",
        b'{"fail_rate": 0.5}',
        {"Content-Type": "application/json", **browser},
    )
    assert faults.status == 200
    reset = request(own, "POST", "/api/reset", b"{}", {"Content-Type": "application/json"})
    assert reset.status == 200
    assert collector.stats()["events"] == 0


def test_the_sdk_still_delivers_with_no_origin(collector):
    with Analytics(write_key="k", host=collector.url.replace("127.0.0.1", "localhost")) as a:
        a.track(user_id="u", event="From the SDK")
        assert a.flush(10)
    assert [e["event"] for e in collector.events()] == ["From the SDK"]


def test_a_collector_on_every_interface_answers_its_ip_and_allowed_names(tmp_path):
    proc, url = start_collector(
        "--host", "0.0.0.0", "--allow-host", "collector", "--db", ":memory:", cwd=tmp_path
    )
    try:
        port = url.rsplit(":", 1)[1]
        local = "http://127.0.0.1:" + port
        for name, status in (("collector", 200), ("127.0.0.1", 200), ("evil.example", 421)):
            answer = request(local, "GET", "/api/stats", headers={"Host": f"{name}:{port}"})
            assert answer.status == status, name
        # Reached by another address of this machine (Linux serves all of 127/8): the
        # address the connection arrived on is a valid Host, though no list names it.
        answer = request(f"http://127.0.0.2:{port}", "GET", "/api/stats")
        assert answer.status == 200
        # ... and only for a connection that arrived on it.
        answer = request(local, "GET", "/api/stats", headers={"Host": f"127.0.0.2:{port}"})
        assert answer.status == 421
    finally:
        proc.terminate()
        proc.communicate(timeout=15)


def test_host_names_are_read_without_port_brackets_case_or_final_dot():
    assert host_name("[::1]:8765") == "::1"
    assert host_name("LOCALHOST.:80") == "localhost"
    assert host_name("127.0.0.1") == "127.0.0.1"
