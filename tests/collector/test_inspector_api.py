"""The inspector's HTTP side without a browser: pages of events, detail, profiles, the
live stream, the key, and the collector's rough edges (disconnects, broken pipes, typos)."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import urllib3

from journy_analytics.cli import main
from journy_analytics.collector import CollectorThread, Store
from journy_analytics.collector._ingest import prepare_batch
from journy_analytics.collector._live import LIVE_ROWS
from journy_analytics.collector._store import SCHEMA_VERSION


def start_collector(*args: str, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "journy_analytics.collector", "--port", "0", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if "listening on" not in first:
        proc.kill()
        pytest.fail(f"collector did not start: {first!r}")
    return proc, first.rsplit(" ", 1)[-1].strip()


def post(url: str, body: object, key: str = "k") -> Any:
    headers = urllib3.make_headers(basic_auth=f"{key}:")
    headers["Content-Type"] = "application/json"
    return urllib3.request("POST", url, body=json.dumps(body).encode(), headers=headers)


def track(i: int, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "userId": f"u{i % 3}", "event": f"E{i}", "messageId": f"m{i}", **extra}


def test_pages_newest_first_with_filters_and_keyset_paging(collector, http):
    events = [track(i) for i in range(10)]
    events.append({"type": "identify", "userId": "u1", "traits": {"q": "find <me>"}})
    events.append({"type": "page", "anonymousId": "u1", "name": "Pricing"})
    assert http.batch(*events).status == 200
    page = http.get("/api/inspector/events", limit=4).json()
    assert [e["seq"] for e in page["events"]] == [12, 11, 10, 9]
    assert page["matched"] == 12 and page["latest"] == 12
    assert page["events"][0]["type"] == "screen" and page["events"][0]["name"] == "Pricing"
    older = http.get("/api/inspector/events", limit=4, before=9).json()
    assert [e["seq"] for e in older["events"]] == [8, 7, 6, 5]
    by_user = http.get("/api/inspector/events", user="u1").json()
    assert by_user["matched"] == 5  # userId u1 (3 tracks, the identify) and anonymousId u1
    assert http.get("/api/inspector/events", type="track", user="u1").json()["matched"] == 3
    assert http.get("/api/inspector/events", name="E7").json()["matched"] == 1
    assert http.get("/api/inspector/events", name="Pricing").json()["matched"] == 1
    assert http.get("/api/inspector/events", q="<me>").json()["matched"] == 1
    assert http.get("/api/inspector/events", q="%").json()["matched"] == 0  # a literal %
    assert http.get("/api/inspector/events", warnings=1).json()["matched"] == 1
    assert http.get("/api/inspector/events", after=10).json()["matched"] == 2
    assert http.get("/api/inspector/events", before="x").status == 400


def test_detail_has_request_metadata_redacted_and_duplicates(collector, http):
    event = track(1)
    assert http.post("/backend/v1/batch", {"batch": [event, track(2)]}, gzip=True).status == 200
    again = {"X-Retry-Count": "3"}
    assert http.post("/backend/v1/batch", {"batch": [event]}, headers=again).status == 200
    assert http.post("/v1/track", event).status == 200
    detail = http.get("/api/inspector/events/1").json()
    assert detail["event"] == event and detail["messageId"] == "m1"
    request = detail["request"]
    assert request["gzip"] is True and request["batchSize"] == 2
    assert request["retryCount"] is None and request["stored"] == 2
    assert request["headers"]["Authorization"] == "Basic [redacted]"
    assert "test-key" not in json.dumps(detail)
    first, second = detail["duplicates"]
    assert first["request"]["retryCount"] == 3 and first["request"]["duplicates"] == 1
    assert second["request"]["path"] == "/v1/track"
    assert http.get("/api/inspector/events/2").json()["duplicates"] == []
    assert http.get("/api/inspector/events/99").status == 404


def test_profiles_have_trait_history_and_recent_events(collector, http):
    assert (
        http.batch(
            {"type": "identify", "userId": "u", "messageId": "a", "traits": {"x": 1, "y": 2}},
            {"type": "identify", "userId": "u", "messageId": "b", "traits": {"x": None, "y": 2}},
            {"type": "group", "userId": "u", "groupId": "g", "messageId": "c", "traits": {"n": 1}},
            {"type": "track", "userId": "u", "event": "E", "context": {"groupId": "g"}},
        ).status
        == 200
    )
    user = http.get("/api/inspector/users/u").json()
    assert user["traits"] == {"y": 2} and user["accounts"] == ["g"]
    assert [(h["trait"], h["value"], h["deleted"], h["messageId"]) for h in user["history"]] == [
        ("x", 1, False, "a"),
        ("y", 2, False, "a"),
        ("x", None, True, "b"),
    ]
    assert [e["type"] for e in user["recent"]] == ["track", "group", "identify", "identify"]
    account = http.get("/api/inspector/accounts/g").json()
    assert account["members"] == ["u"]
    assert [(h["trait"], h["type"]) for h in account["history"]] == [("n", "group")]
    assert [e["type"] for e in account["recent"]] == ["track", "group"]
    assert http.get("/api/inspector/users/nobody").status == 404


def read_messages(response: Any, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    buffer = b""
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        chunk = response.read1(65536) if hasattr(response, "read1") else response.read(1)
        if not chunk:
            break
        buffer += chunk
        while b"\n\n" in buffer:
            message, buffer = buffer.split(b"\n\n", 1)
            for line in message.split(b"\n"):
                if line.startswith(b"data: "):
                    messages.append(json.loads(line[6:]))
    return messages


def test_the_stream_pushes_batches_not_one_message_per_event(collector, http):
    pool = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=10))
    stream = pool.request(
        "GET", collector.url + "/api/inspector/stream?type=track", preload_content=False
    )
    assert stream.status == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    assert stream.read1(64).startswith(b": live")
    total = 3 * LIVE_ROWS
    # Many small requests: a stream that pushed once per request would send 30 messages.
    for start in range(0, total, 5):
        assert http.batch(*[track(i) for i in range(start, start + 5)]).status == 200
    assert http.batch({"type": "identify", "userId": "x", "traits": {"a": 1}}).status == 200
    messages: list[dict[str, Any]] = []
    while sum(m["matched"] for m in messages) < total:
        got = read_messages(stream, 1)
        assert got, f"the stream stopped after {messages}"
        messages += got
    assert sum(m["matched"] for m in messages) == total  # the identify is filtered out
    assert all(len(m["events"]) <= LIVE_ROWS for m in messages)
    assert len(messages) < total / 10, "a message per request or per event"
    assert messages[-1]["events"][0]["name"] == f"E{total - 1}"
    http.post("/api/reset", {}, key=None)
    assert http.batch(track(1)).status == 200
    tail = read_messages(stream, 1)
    assert tail and tail[0].get("reset") is True
    stream.release_conn()


def test_collector_stops_promptly_with_a_stream_open(tmp_path):
    proc, url = start_collector("--db", ":memory:", cwd=tmp_path)
    try:
        stream = urllib3.PoolManager().request(
            "GET", url + "/api/inspector/stream", preload_content=False
        )
        assert stream.status == 200
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert time.monotonic() - began < 10
    assert "Traceback" not in err


def test_with_write_keys_the_data_needs_a_key_and_the_shell_does_not(make_http):
    with CollectorThread(write_keys=["k1"]) as c:
        http = make_http(c.url)
        page = http.get("/")
        assert page.status == 200 and b"<!doctype html>" in page.data
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert http.get("/inspector/app.js").status == 200
        for path in (
            "/api/inspector/events",
            "/api/inspector/stream",
            "/api/inspector/users/u",
            "/api/events",
            "/api/stats",
            "/api/requests",
        ):
            assert http.get(path).status == 401, path
        headers = urllib3.make_headers(basic_auth="k1:")
        answer = http.pool.request("GET", c.url + "/api/inspector/events", headers=headers)
        assert answer.status == 200
        wrong = urllib3.make_headers(basic_auth="k2:")
        assert http.pool.request("GET", c.url + "/api/stats", headers=wrong).status == 401


def test_json_index_still_answers_programs(http):
    answer = http.pool.request("GET", http.base_url + "/", headers={"Accept": "application/json"})
    assert answer.status == 200 and json.loads(answer.data)["inspector"] == "/"
    assert http.get("/api").json()["inspector"] == "/"


def test_banner_names_the_inspector_and_never_the_key(tmp_path):
    proc, url = start_collector("--db", ":memory:", "--write-key", "banner-secret", cwd=tmp_path)
    banner = ""
    try:
        assert proc.stdout is not None
        while "Ctrl-C" not in banner:
            banner += proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"inspector:            {url}/" in banner
    assert "banner-secret" not in banner + out + err


def test_a_client_leaving_mid_request_prints_no_traceback(tmp_path):
    proc, url = start_collector("--db", ":memory:", cwd=tmp_path)
    try:
        host, port = url.rsplit("/", 1)[-1].split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic azo=\r\n"
                b'Content-Length: 1000\r\n\r\n{"batch": ['
            )
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = json.loads(urllib3.request("GET", url + "/api/stats").data)
            if stats["rejected"].get("client_disconnected"):
                break
            time.sleep(0.05)
        assert stats["rejected"] == {"client_disconnected": 1}
        assert post(url + "/v1/batch", {"batch": [track(1)]}).status == 200
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in err and "Error handling request" not in err, err


def test_events_piped_into_head_ends_quietly():
    with CollectorThread() as c:
        store = c._require_state().store
        events = [track(i, properties={"pad": "x" * 200}) for i in range(2000)]
        store.ingest(prepare_batch({"batch": events})).result()
        code = "import sys; from journy_analytics.cli import main; sys.exit(main(sys.argv[1:]))"
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "events", "--all", "--url", c.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()  # what `| head -1` reads, then it leaves
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=30)
    assert first.startswith(b"timestamp")
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 141


def test_a_typo_in_type_names_the_valid_types(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["events", "--type", "trak"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'trak'" in err
    for kind in ("identify", "track", "page", "screen", "group", "alias"):
        assert kind in err


def test_events_warnings_lists_only_events_that_break_a_rule(capsys, collector, http):
    assert (
        http.batch(
            {"type": "track", "userId": "u", "event": "Clean"},
            {"type": "track", "userId": "u", "event": "Nested", "properties": {"a": [1]}},
            {"type": "identify", "userId": "u"},
        ).status
        == 200
    )
    assert main(["events", "--warnings", "--url", collector.url]) == 0
    out = capsys.readouterr().out
    assert "Clean" not in out and "Nested" in out
    assert "! nested_property: property 'a' is a list" in out
    assert "! identify_without_traits" in out
    assert "(2 events with warnings)" in out
    assert main(["events", "--warnings", "--json", "--url", collector.url]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [w[0]["rule"] for w in data["warnings"]] == [
        "nested_property",
        "identify_without_traits",
    ]


# A database written by the collector before schema version 2 (counters tables, no
# request metadata, no trait history, memberships without the group-call flag).
_VERSION_1 = """
CREATE TABLE events (seq INTEGER PRIMARY KEY, message_id TEXT NOT NULL UNIQUE,
    generated_id INTEGER NOT NULL DEFAULT 0, type TEXT NOT NULL, received_type TEXT NOT NULL,
    user_id TEXT, anonymous_id TEXT, profile_id TEXT, group_id TEXT, event TEXT, name TEXT,
    timestamp TEXT, received_at TEXT NOT NULL, body BLOB NOT NULL);
CREATE TABLE profile_events (id TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE account_events (id TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE users (id TEXT PRIMARY KEY, identified INTEGER NOT NULL DEFAULT 0,
    traits TEXT NOT NULL DEFAULT '{}', first_seen TEXT NOT NULL, last_seen TEXT NOT NULL);
CREATE TABLE accounts (id TEXT PRIMARY KEY, traits TEXT NOT NULL DEFAULT '{}',
    first_seen TEXT NOT NULL, last_seen TEXT NOT NULL);
CREATE TABLE memberships (user_id TEXT NOT NULL, account_id TEXT NOT NULL,
    first_seen TEXT NOT NULL, PRIMARY KEY (user_id, account_id));
CREATE TABLE aliases (previous_id TEXT PRIMARY KEY, user_id TEXT NOT NULL,
    first_seen TEXT NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO events (message_id, type, received_type, user_id, profile_id, group_id, event,
    received_at, body) VALUES ('old', 'group', 'group', 'u', 'u', 'acme', NULL, 't',
    '{"type":"group","userId":"u","groupId":"acme"}');
INSERT INTO users VALUES ('u', 1, '{"a": 1}', 't', 't');
INSERT INTO accounts VALUES ('acme', '{}', 't', 't');
INSERT INTO memberships VALUES ('u', 'acme', 't');
INSERT INTO profile_events VALUES ('u', 1);
INSERT INTO account_events VALUES ('acme', 1);
"""


def test_a_version_1_database_is_migrated(tmp_path):
    path = str(tmp_path / "v1.db")
    conn = sqlite3.connect(path)
    conn.executescript(_VERSION_1)
    conn.close()
    for _ in range(2):  # migrating twice changes nothing
        store = Store(path)
        try:
            detail = store.event_detail(1).result()
            assert detail["request"] is None and detail["warnings"] == []
            tracked = {"type": "track", "userId": "u", "event": "E", "context": {"groupId": "acme"}}
            store.ingest(prepare_batch({"batch": [tracked]}), request={"path": "/x"}).result()
            page = store.inspector_events({}, limit=1).result()
            # The old membership counts as a group call: no false warning.
            assert page["events"][0]["warnings"] == []
            assert store.user("u").result()["traits"] == {"a": 1}
        finally:
            store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()


def test_inspector_assets_ship_in_the_package():
    from journy_analytics.collector import _server

    directory = Path(_server.__file__).parent / "inspector"
    for name in ("index.html", "app.js", "app.css"):
        assert (directory / name).is_file(), name
    script = (directory / "app.js").read_text()
    # Event data never goes through an HTML parser.
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "http://" not in script and "https://" not in script


def test_an_account_only_group_call_belongs_to_no_user_profile(collector, http):
    account_only = {"type": "group", "anonymousId": "tesla", "groupId": "tesla", "messageId": "a"}
    member = {"type": "group", "userId": "elon", "groupId": "tesla", "messageId": "m"}
    visitor = {"type": "track", "anonymousId": "v1", "event": "E", "messageId": "t"}
    assert http.batch({**account_only, "traits": {"plan": "pro"}}, member, visitor).status == 200
    summaries = {e["messageId"]: e for e in http.get("/api/inspector/events").json()["events"]}
    # The page links "profile": there is no user "tesla" to link an account-only call to.
    assert summaries["a"]["profile"] is None
    assert summaries["m"]["profile"] == "elon" and summaries["t"]["profile"] == "v1"
    detail = http.get(f"/api/inspector/events/{summaries['a']['seq']}").json()
    assert detail["profile"] is None and detail["account"] == "tesla"
    assert http.get("/api/inspector/users/tesla").status == 404
    assert http.get("/api/inspector/accounts/tesla").json()["traits"] == {"plan": "pro"}


def test_first_and_last_seen_are_the_events_own_timestamps(collector, http):
    events = [
        {
            "type": "identify",
            "userId": "u",
            "traits": {"a": 1},
            "timestamp": "2021-03-01T10:00:00.000Z",
        },
        # Earliest, written with an offset: 2015-12-12T18:11:00Z.
        {"type": "group", "userId": "u", "groupId": "g", "timestamp": "2015-12-12T19:11:00+01:00"},
        {
            "type": "track",
            "userId": "u",
            "event": "E",
            "context": {"groupId": "g"},
            "timestamp": "2019-06-01T00:00:00.000Z",
        },
    ]
    assert http.batch(*events).status == 200
    for path in ("/api/users/u", "/api/inspector/users/u", "/api/accounts/g"):
        profile = http.get(path).json()
        assert profile["firstSeen"] == "2015-12-12T18:11:00.000Z", path
        # The receive time is kept apart: it is today, not 2015.
        assert profile["firstReceived"] > "2026", path
    assert http.get("/api/users/u").json()["lastSeen"] == "2021-03-01T10:00:00.000Z"
    assert http.get("/api/accounts/g").json()["lastSeen"] == "2019-06-01T00:00:00.000Z"
    # An event sent without a timestamp happened when it was received.
    assert http.batch({"type": "track", "userId": "now", "event": "E"}).status == 200
    now = http.get("/api/users/now").json()
    assert now["firstSeen"] == now["firstReceived"]
