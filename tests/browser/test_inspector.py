"""The inspector in a real browser: the SDK delivers to a real collector, Chromium shows it."""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import urllib3
from playwright.sync_api import expect

from journy_analytics.collector import CollectorThread
from journy_analytics.collector._ingest import prepare_batch

ROWS = "#events tbody tr"


def open_inspector(page: Any, url: str) -> None:
    page.goto(url)
    expect(page.locator("#live")).to_have_attribute("data-state", "live")


def url_query(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query)


def post(collector: Any, events: list[dict[str, Any]], key: str = "k", **headers: str) -> Any:
    body = json.dumps({"batch": events}).encode()
    sent = {
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
        **headers,
    }
    if sent.get("Content-Encoding") == "gzip":
        body = gzip.compress(body)
    answer = urllib3.request("POST", collector.url + "/backend/v1/batch", body=body, headers=sent)
    assert answer.status == 200, answer.data
    return answer


def test_rows_appear_live_newest_first(page, collector, make_client):
    open_inspector(page, collector.url)
    expect(page.locator("#empty")).to_be_visible()
    analytics = make_client()
    analytics.identify(user_id="elon", traits={"email": "elon@tesla.com"})
    analytics.track(user_id="elon", event="Car Sold", group_id="tesla")
    analytics.page(anonymous_id="visitor-1", name="Pricing")
    assert analytics.flush(timeout=10)
    rows = page.locator(ROWS)
    expect(rows).to_have_count(3)
    newest = rows.nth(0)
    expect(newest.locator(".c-type")).to_have_text("screen")
    expect(newest.locator(".c-user")).to_have_text("visitor-1")
    expect(newest.locator(".c-name")).to_have_text("Pricing")
    car = rows.nth(1)
    expect(car.locator(".c-type")).to_have_text("track")
    expect(car.locator(".c-user")).to_have_text("elon")
    expect(car.locator(".c-account")).to_have_text("tesla")
    expect(car.locator(".c-name")).to_have_text("Car Sold")
    expect(car.locator(".c-time")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"))
    expect(rows.nth(2).locator(".c-type")).to_have_text("identify")
    expect(page.locator("#count")).to_have_text("3 events")
    # The page was never reloaded: the rows came over the stream.
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1


def test_filters_live_in_the_url_and_survive_a_reload(page, collector, make_client):
    analytics = make_client()
    for i in range(3):
        analytics.track(user_id=f"user-{i}", event="Signed Up", group_id="acme")
    analytics.identify(user_id="user-0", traits={"plan": "pro"})
    analytics.track(user_id="user-1", event="Invoice Paid", properties={"note": "needle-42"})
    assert analytics.flush(timeout=10)
    open_inspector(page, collector.url)
    expect(page.locator(ROWS)).to_have_count(5)

    page.select_option("select[name=type]", "track")
    expect(page.locator(ROWS)).to_have_count(4)
    page.fill("input[name=user]", "user-1")
    expect(page.locator(ROWS)).to_have_count(2)
    page.wait_for_function("location.search.includes('user=user-1')")
    assert url_query(page) == {"type": ["track"], "user": ["user-1"]}
    page.fill("input[name=name]", "Invoice Paid")
    expect(page.locator(ROWS)).to_have_count(1)
    expect(page.locator(ROWS).first.locator(".c-name")).to_have_text("Invoice Paid")

    page.reload()
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    expect(page.locator("select[name=type]")).to_have_value("track")
    expect(page.locator("input[name=user]")).to_have_value("user-1")
    expect(page.locator(ROWS)).to_have_count(1)

    # A shared link opens the same view.
    page.goto(collector.url + "/?account=acme")
    expect(page.locator(ROWS)).to_have_count(3)
    expect(page.locator("input[name=account]")).to_have_value("acme")
    page.goto(collector.url + "/?q=needle-42")
    expect(page.locator(ROWS)).to_have_count(1)
    expect(page.locator(ROWS).first.locator(".c-user")).to_have_text("user-1")

    # The live stream honours the filter too.
    page.goto(collector.url + "/?type=identify")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    expect(page.locator(ROWS)).to_have_count(1)
    analytics.track(user_id="user-2", event="Not An Identify")
    analytics.identify(user_id="user-9", traits={"plan": "free"})
    assert analytics.flush(timeout=10)
    expect(page.locator(ROWS)).to_have_count(2)
    expect(page.locator(ROWS).first.locator(".c-user")).to_have_text("user-9")
    page.click("#clear-filters")
    expect(page.locator(ROWS)).to_have_count(7)
    assert url_query(page) == {}


def test_event_detail_shows_json_request_and_duplicates(page):
    with CollectorThread(write_keys=["secret-key"]) as collector:
        event = {
            "type": "track",
            "userId": "elon",
            "event": "Car Sold",
            "messageId": "dup-1",
            "properties": {"revenue": 39999.99},
        }
        other = {"type": "identify", "userId": "elon", "messageId": "m-2", "traits": {"a": 1}}
        post(collector, [event, other], key="secret-key", **{"Content-Encoding": "gzip"})
        post(collector, [event], key="secret-key", **{"X-Retry-Count": "2"})
        page.goto(collector.url)
        page.fill("#login-key", "secret-key")
        page.click("#login-form button")
        expect(page.locator(ROWS)).to_have_count(2)
        page.locator(ROWS).nth(1).click()
        detail = page.locator("#detail")
        expect(detail.locator("h2")).to_contain_text("Car Sold")
        assert "event=" in page.url
        stored = json.loads(detail.locator("pre.json").text_content())
        assert stored == event
        request = detail.locator(".request")
        expect(request).to_contain_text("POST /backend/v1/batch")
        expect(request).to_contain_text("2 events")
        expect(request).to_contain_text(re.compile(r"gzip\s*yes"))
        expect(request).to_contain_text("Basic [redacted]")
        expect(detail.locator(".duplicates li")).to_have_count(1)
        expect(detail.locator(".duplicates li")).to_contain_text("retry count 2")
        assert "secret-key" not in page.content()
        secret_b64 = base64.b64encode(b"secret-key:").decode()
        assert secret_b64 not in detail.text_content()
        # The detail is part of the URL: a reload shows it again.
        page.reload()
        expect(page.locator("#detail pre.json")).to_contain_text('"dup-1"')


def test_profile_shows_merged_traits_history_memberships_and_account_events(
    page, collector, make_client
):
    analytics = make_client()
    analytics.identify(user_id="elon", traits={"firstname": "Elon", "friends": 42})
    analytics.identify(user_id="elon", traits={"email": "elon@tesla.com", "friends": None})
    analytics.group(user_id="elon", group_id="tesla", traits={"name": "Tesla", "size": 1})
    analytics.group(anonymous_id="tesla", group_id="tesla", traits={"size": None})
    analytics.track(user_id="elon", event="Car Sold", group_id="tesla")
    assert analytics.flush(timeout=10)
    page.goto(collector.url + "/?view=user&id=elon")
    profile = page.locator("#profile")
    expect(profile.locator("h2")).to_have_text("user elon")
    traits = profile.locator("table.traits tbody tr")
    expect(traits).to_have_count(2)
    expect(profile.locator("table.traits tr[data-trait=firstname] td").nth(1)).to_have_text("Elon")
    expect(profile.locator("table.traits tr[data-trait=email] td").nth(1)).to_have_text(
        "elon@tesla.com"
    )
    expect(profile.locator("table.traits tr[data-trait=friends]")).to_have_count(0)
    history = profile.locator("table.history tr[data-trait=friends]")
    expect(history).to_have_count(2)
    expect(history.nth(0).locator("td").nth(1)).to_have_text("deleted")
    expect(history.nth(0).locator("td.deleted")).to_have_count(1)
    expect(history.nth(1).locator("td").nth(1)).to_have_text("42")
    expect(history.nth(1).locator("td").nth(2)).to_contain_text("identify")
    expect(profile.locator("ul.memberships li")).to_have_text(["tesla"])

    profile.locator("ul.memberships a").click()
    expect(profile.locator("h2")).to_have_text("account tesla")
    assert url_query(page) == {"view": ["account"], "id": ["tesla"]}
    expect(profile.locator("table.traits tbody tr")).to_have_count(1)
    expect(profile.locator("table.history tr[data-trait=size] td.deleted")).to_have_count(1)
    expect(profile.locator("ul.memberships li")).to_have_text(["elon"])
    in_context = profile.locator("table.recent tbody tr")
    expect(in_context.locator(".c-name")).to_contain_text(["Car Sold"])
    page.go_back()
    expect(profile.locator("h2")).to_have_text("user elon")


def test_warnings_show_in_the_stream_and_the_detail(page, collector, make_client):
    open_inspector(page, collector.url)
    analytics = make_client()
    analytics.track(
        user_id="elon",
        event="Car Sold",
        group_id="never-grouped",
        properties={"address": {"city": "Austin"}},
    )
    analytics.track(user_id="elon", event="Clean")
    assert analytics.flush(timeout=10)
    rows = page.locator(ROWS)
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator(".c-warn")).to_have_text("")
    expect(rows.nth(1).locator(".c-warn")).to_have_text("\u26a0 2")
    rows.nth(1).click()
    warnings = page.locator("#detail ul.warnings li code")
    expect(warnings).to_have_text(["nested_property", "account_not_grouped"])
    page.check("input[name=warnings]")
    expect(rows).to_have_count(1)
    page.wait_for_function("location.search.includes('warnings=1')")


XSS = [
    "<script>window.__xss = 1</script>",
    '<img src=x onerror="window.__xss = 2">',
    '"><svg onload="window.__xss = 3">',
    "javascript:window.__xss = 4",
]


def test_payloads_in_events_render_as_text_and_run_nothing(page, collector, make_client):
    analytics = make_client()
    for i, payload in enumerate(XSS):
        analytics.identify(user_id=payload, traits={payload: payload, "n": i})
        analytics.group(user_id=payload, group_id=payload, traits={"name": payload})
        analytics.track(
            user_id=payload,
            event=payload,
            group_id=payload,
            properties={"html": payload},
        )
    assert analytics.flush(timeout=10)
    open_inspector(page, collector.url)
    rows = page.locator(ROWS)
    expect(rows).to_have_count(len(XSS) * 3)
    # Newest first: each payload's track (named by it), group and identify.
    expect(rows.locator(".c-name")).to_have_text([n for p in reversed(XSS) for n in (p, "", "")])
    expect(rows.locator(".c-user")).to_have_text([p for p in reversed(XSS) for _ in range(3)])
    assert_inert(page)
    rows.first.click()
    expect(page.locator("#detail pre.json")).to_contain_text(XSS[-1])
    expect(page.locator("#detail h2")).to_have_text(f"track · {XSS[-1]}")
    assert_inert(page)
    page.goto(collector.url + "/?q=" + "%3Cimg")
    expect(rows).to_have_count(3)
    for payload in XSS:
        page.goto(collector.url + "/?" + urlencode({"view": "user", "id": payload}))
        expect(page.locator("#profile h2")).to_have_text(f"user {payload}")
        expect(page.locator("#profile table.traits tbody tr").first.locator("td")).to_have_text(
            [payload, payload]
        )
        expect(page.locator("#profile table.history tbody tr").last.locator("td")).to_contain_text(
            [payload, payload]
        )
        assert_inert(page)
        page.locator("#profile ul.memberships a").click()
        expect(page.locator("#profile h2")).to_have_text(f"account {payload}")
        expect(page.locator("#profile table.recent .c-name")).to_have_text([payload, ""])
        assert_inert(page)


def assert_inert(page: Any) -> None:
    """Nothing ran, and no element came from an event: the page has no image, SVG, frame
    or object of its own and one script, so any such element was made from event data."""
    assert page.evaluate("window.__xss") is None
    assert page.evaluate("document.querySelectorAll('img, svg, iframe, object').length") == 0
    assert page.evaluate("document.scripts.length") == 1
    hrefs = page.evaluate("Array.from(document.links, a => a.getAttribute('href'))")
    assert all(h.startswith("?") or h == "/" for h in hrefs), hrefs


def test_with_a_write_key_the_page_and_stream_ask_for_it(page, make_client):
    with CollectorThread(write_keys=["s3cret"]) as collector:
        api = urllib3.request("GET", collector.url + "/api/inspector/events")
        assert api.status == 401
        stream = urllib3.request("GET", collector.url + "/api/inspector/stream")
        assert stream.status == 401
        page.goto(collector.url)
        expect(page.locator("#login")).to_be_visible()
        expect(page.locator("#app")).to_be_hidden()
        page.fill("#login-key", "wrong")
        page.click("#login-form button")
        expect(page.locator("#login-error")).to_contain_text("not one of this collector's")
        page.fill("#login-key", "s3cret")
        page.click("#login-form button")
        expect(page.locator("#live")).to_have_attribute("data-state", "live")
        analytics = make_client(write_key="s3cret", host=collector.url)
        analytics.track(user_id="u", event="Behind A Key")
        assert analytics.flush(timeout=10)
        expect(page.locator(ROWS)).to_have_count(1)
        assert "s3cret" not in page.url
        # Kept for this tab only.
        assert page.evaluate("Object.values(sessionStorage)") == ["s3cret"]
        assert page.evaluate("Object.keys(localStorage).length") == 0


def test_a_hundred_thousand_events_are_paged(page, collector):
    store = collector._require_state().store
    total = 100_000
    batch = 2_000
    futures = []
    for start in range(0, total, batch):
        events = [
            {
                "type": "track",
                "userId": f"user-{i % 97}",
                "event": "Bulk" if i != 31_337 else "The Needle",
                "messageId": f"bulk-{i}",
            }
            for i in range(start, start + batch)
        ]
        futures.append(store.ingest(prepare_batch({"batch": events})))
    for future in futures:
        future.result()
    began = time.monotonic()
    open_inspector(page, collector.url)
    rows = page.locator(ROWS)
    expect(rows).to_have_count(100)
    expect(page.locator("#count")).to_have_text("100,000 events")
    expect(rows.first).to_have_attribute("data-seq", str(total))
    page.click("#older")
    expect(rows.first).to_have_attribute("data-seq", str(total - 100))
    expect(rows).to_have_count(100)
    assert url_query(page)["before"] == [str(total - 99)]
    page.click("#newer")
    expect(rows.first).to_have_attribute("data-seq", str(total))
    page.fill("input[name=q]", "The Needle")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".c-name")).to_have_text("The Needle")
    # Not a speed claim: a bound that only a page rendering all 100,000 rows would break.
    assert time.monotonic() - began < 60
    assert page.evaluate("document.getElementsByTagName('tr').length") < 150


def test_the_page_loads_nothing_from_elsewhere(page, collector):
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    open_inspector(page, collector.url)
    assert requested and all(u.startswith(collector.url) for u in requested), requested
    for path in ("/", "/inspector/app.js", "/inspector/app.css"):
        answer = urllib3.request("GET", collector.url + path)
        assert answer.status == 200
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]


def test_make_demo_tells_where_to_look_and_the_inspector_shows_it(page):
    """`make demo` runs `journy demo`: it names the inspector's URL and keeps serving."""
    import signal
    import subprocess
    import sys

    code = "import sys; from journy_analytics.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            if line.startswith(">>> Open the inspector: "):
                url = line.split(": ", 1)[1].strip()
                break
        assert url, "journy demo never named the inspector"
        open_inspector(page, url)
        expect(page.locator(ROWS)).to_have_count(12)
        expect(page.locator("#count")).to_have_text("12 events")
        page.goto(url + "?view=user&id=f4ca124298")
        expect(page.locator("#profile table.traits tr[data-trait=email] td").nth(1)).to_have_text(
            "elon@tesla.com"
        )
        expect(
            page.locator("#profile table.history tr[data-trait=friends] td.deleted")
        ).to_have_count(1)
        page.goto(url + "?view=account&id=tesla")
        expect(page.locator("#profile ul.memberships li")).to_have_text(["f4ca124298"])
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_an_account_only_group_links_no_user_and_first_seen_is_the_event_time(page, collector):
    post(
        collector,
        [
            {
                "type": "group",
                "anonymousId": "tesla",
                "groupId": "tesla",
                "messageId": "acct",
                "traits": {"plan": "pro"},
                "timestamp": "2015-12-12T19:11:00.000Z",
            },
            {
                "type": "track",
                "userId": "elon",
                "event": "Car Sold",
                "messageId": "sold",
                "timestamp": "2016-01-02T03:04:05.000Z",
            },
        ],
    )
    open_inspector(page, collector.url)
    expect(page.locator(ROWS)).to_have_count(2)
    page.locator(ROWS).nth(1).click()  # the group call, older
    detail = page.locator("#detail")
    expect(detail.locator("h2")).to_contain_text("group")
    # No link to a user page that does not exist; the account is linked.
    expect(detail.locator(".no-user")).to_contain_text("account only")
    expect(detail.locator("a[href*='view=user']")).to_have_count(0)
    detail.locator("a[href*='view=account']").click()
    expect(page.locator("#profile h2")).to_have_text("account tesla")
    expect(page.locator("#profile .first-seen")).to_have_text("2015-12-12 19:11:00Z")
    page.goto(collector.url + "/?view=user&id=elon")
    expect(page.locator("#profile .first-seen")).to_have_text("2016-01-02 03:04:05Z")


def test_users_acting_in_an_account_without_a_group_call_are_not_listed_as_members(page, collector):
    post(
        collector,
        [
            {"type": "group", "userId": "elon", "groupId": "tesla", "messageId": "g"},
            {"type": "track", "userId": "elon", "event": "A", "context": {"groupId": "tesla"}},
            {"type": "track", "userId": "kimbal", "event": "B", "context": {"groupId": "tesla"}},
        ],
    )
    page.goto(collector.url + "/?view=account&id=tesla")
    profile = page.locator("#profile")
    expect(profile.locator("h2")).to_have_text("account tesla")
    expect(profile.locator("ul.memberships li")).to_have_text(["elon"])
    expect(profile.locator("ul.not-grouped li")).to_have_text(["kimbal"])
    profile.locator("ul.not-grouped a").click()
    expect(profile.locator("h2")).to_have_text("user kimbal")
    expect(profile.locator("ul.memberships")).to_have_count(0)
    expect(profile.locator("ul.not-grouped li")).to_have_text(["tesla"])
