"""What the REST API's calls do to the collector's store (journy.io's REST semantics).

Each write runs on the store's thread inside one write transaction (``Store.rest_write``),
after the transaction wrote what earlier jobs gathered, so plain SQL sees everything.

- Upserts, memberships added and ``/track`` become the events a batch would carry
  (identify, group, track), stored through the batch path's own ``ingest``: profiles,
  trait history and the inspector treat them exactly like the SDK's events. Their
  ``context.rest`` names the call (``"POST /users/upsert"``).
- Memberships removed, ``/link`` and the deletes change rows directly, then drop the
  store's profile cache (it refills from the database).

A user is named by ``userId``; by email alone, it is the user whose ``email`` trait is
that address, else a user whose id is the address. An account likewise by ``accountId``,
else its ``domain`` trait, else the domain as its id.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import orjson

from journy_analytics.collector._ingest import PreparedEvent

if TYPE_CHECKING:
    from journy_analytics.collector._store import IngestResult, _Transaction

__all__ = [
    "REST_SCHEMA",
    "Ingest",
    "account_properties",
    "delete_account",
    "delete_user",
    "event_types",
    "link",
    "log_call",
    "remove_members",
    "rest_calls",
    "store_events",
    "user_properties",
]

REST_SCHEMA = """
-- Every call of the REST API, whatever its answer: the inspector's REST feed.
CREATE TABLE IF NOT EXISTS rest_calls (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    message TEXT NOT NULL,
    body TEXT  -- the request body as received (JSON), NULL when there was none
);
"""

# Stores events as one request of the batch path: (events, request shown by the inspector).
Ingest = Callable[[Sequence[PreparedEvent], Mapping[str, Any]], "IngestResult"]

_LOGGED_BODY = 16 * 1024


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


# -- naming profiles -------------------------------------------------------------------


def _by_trait(conn: sqlite3.Connection, table: str, trait: str, value: str) -> Optional[str]:
    # ``table`` and ``trait`` are constants of this module.
    try:
        row = conn.execute(
            f"SELECT id FROM {table} WHERE json_extract(traits, '$.{trait}') = ? "
            "ORDER BY rowid LIMIT 1",
            (value,),
        ).fetchone()
    except sqlite3.OperationalError:  # an SQLite built without JSON1: read them all
        for pid, traits in conn.execute(f"SELECT id, traits FROM {table} ORDER BY rowid"):
            if orjson.loads(traits).get(trait) == value:
                return str(pid)
        return None
    return None if row is None else str(row[0])


def user_id_of(conn: sqlite3.Connection, identification: Mapping[str, str]) -> str:
    """The profile id of a (validated) user identification."""
    user_id = identification.get("userId")
    if user_id:
        return user_id
    email = identification["email"]
    return _by_trait(conn, "users", "email", email) or email


def account_id_of(conn: sqlite3.Connection, identification: Mapping[str, str]) -> str:
    """The account id of a (validated) account identification."""
    account_id = identification.get("accountId")
    if account_id:
        return account_id
    domain = identification["domain"]
    return _by_trait(conn, "accounts", "domain", domain) or domain


# -- writes that are events ------------------------------------------------------------


def _event(
    body: dict[str, Any],
    *,
    user_id: Optional[str] = None,
    anonymous_id: Optional[str] = None,
    group_id: Optional[str] = None,
    previous_id: Optional[str] = None,
    traits: Optional[dict[str, Any]] = None,
    event: Optional[str] = None,
) -> PreparedEvent:
    message_id = f"rest-{uuid.uuid4()}"
    body = {**body, "messageId": message_id}
    body.setdefault("timestamp", _now())
    return PreparedEvent(
        message_id=message_id,
        generated_message_id=True,
        type=body["type"],
        received_type=body["type"],
        user_id=user_id,
        anonymous_id=anonymous_id,
        group_id=group_id,
        previous_id=previous_id,
        traits=traits,
        event=event,
        name=None,
        timestamp=body["timestamp"],
        body=orjson.dumps(body),
    )


def store_events(
    tx: _Transaction, ingest: Ingest, call: str, body: Mapping[str, Any], meta: Mapping[str, Any]
) -> int:
    """The events a write call means, stored; returns how many. ``call`` is
    ``"POST /users/upsert"`` and the like, ``body`` the validated request body."""
    conn = tx.conn
    context = {"rest": call}
    events: list[PreparedEvent] = []
    if call == "POST /users/upsert":
        ident = body["identification"]
        uid = user_id_of(conn, ident)
        traits = dict(body.get("properties") or {})
        if ident.get("email"):
            traits["email"] = ident["email"]
        events.append(
            _event(
                {"type": "identify", "userId": uid, "traits": traits, "context": context},
                user_id=uid,
                traits=traits,
            )
        )
    elif call == "POST /accounts/upsert":
        ident = body["identification"]
        aid = account_id_of(conn, ident)
        traits = dict(body.get("properties") or {})
        if ident.get("domain"):
            traits["domain"] = ident["domain"]
        # group(anonymousId=X, groupId=X): journy.io's way to update an account alone.
        events.append(
            _event(
                {
                    "type": "group",
                    "anonymousId": aid,
                    "groupId": aid,
                    "traits": traits,
                    "context": context,
                },
                anonymous_id=aid,
                group_id=aid,
                traits=traits,
            )
        )
    elif call == "POST /accounts/users/add":
        aid = account_id_of(conn, body["account"])
        for item in body["users"]:
            uid = user_id_of(conn, item["identification"])
            events.append(
                _event(
                    {"type": "group", "userId": uid, "groupId": aid, "context": context},
                    user_id=uid,
                    group_id=aid,
                    traits={},
                )
            )
    elif call in ("POST /track", "POST /events"):
        ident = body["identification"]
        actor = user_id_of(conn, ident["user"]) if ident.get("user") else None
        context_id = account_id_of(conn, ident["account"]) if ident.get("account") else None
        event: dict[str, Any] = {
            "type": "track",
            "event": body["name"],
            "properties": dict(body.get("metadata") or {}),
            "context": {**context, **({"groupId": context_id} if context_id else {})},
        }
        if actor is not None:
            event["userId"] = actor
        if body.get("triggeredAt"):
            event["timestamp"] = body["triggeredAt"]
        # An account's own event (no user): filed under the account, no user profile.
        events.append(_event(event, user_id=actor, group_id=context_id, event=body["name"]))
    else:
        raise ValueError(f"{call} is not a call that stores events")
    ingest(events, meta)
    return len(events)


# -- writes that change rows -----------------------------------------------------------


def remove_members(tx: _Transaction, body: Mapping[str, Any]) -> int:
    """Ends the memberships named; returns how many there were."""
    conn = tx.conn
    aid = account_id_of(conn, body["account"])
    removed = 0
    for item in body["users"]:
        uid = user_id_of(conn, item["identification"])
        removed += conn.execute(
            "DELETE FROM memberships WHERE user_id = ? AND account_id = ?", (uid, aid)
        ).rowcount
    if removed:
        tx.cache.clear()
    return removed


def _drop_events(conn: sqlite3.Connection, column: str, value: str) -> int:
    """Deletes the events whose ``column`` (profile_id or group_id) is ``value``, and
    their receipts; keeps the other side's event counts true."""
    other, counts = (
        ("group_id", "account_events")
        if column == "profile_id"
        else ("profile_id", "profile_events")
    )
    # ``column``, ``other`` and ``counts`` are constants of this function.
    for oid, n in conn.execute(
        f"SELECT {other}, COUNT(*) FROM events WHERE {column} = ? AND {other} IS NOT NULL "
        f"GROUP BY {other}",
        (value,),
    ).fetchall():
        conn.execute(f"UPDATE {counts} SET n = n - ? WHERE id = ?", (n, oid))
    conn.execute(f"DELETE FROM {counts} WHERE n <= 0")
    conn.execute(
        "DELETE FROM receipts WHERE message_id IN "
        f"(SELECT message_id FROM events WHERE {column} = ?)",
        (value,),
    )
    return conn.execute(f"DELETE FROM events WHERE {column} = ?", (value,)).rowcount


def delete_user(tx: _Transaction, body: Mapping[str, Any]) -> dict[str, Any]:
    """Erases the user: its row, events, memberships and aliases."""
    conn = tx.conn
    uid = user_id_of(conn, body["identification"])
    events = _drop_events(conn, "profile_id", uid)
    conn.execute("DELETE FROM profile_events WHERE id = ?", (uid,))
    conn.execute("DELETE FROM memberships WHERE user_id = ?", (uid,))
    conn.execute("DELETE FROM aliases WHERE user_id = ? OR previous_id = ?", (uid, uid))
    found = conn.execute("DELETE FROM users WHERE id = ?", (uid,)).rowcount
    tx.cache.clear()
    return {"id": uid, "found": bool(found), "events": events}


def delete_account(tx: _Transaction, body: Mapping[str, Any]) -> dict[str, Any]:
    """Erases the account: its row, memberships and the events in its context."""
    conn = tx.conn
    aid = account_id_of(conn, body["identification"])
    events = _drop_events(conn, "group_id", aid)
    conn.execute("DELETE FROM account_events WHERE id = ?", (aid,))
    conn.execute("DELETE FROM memberships WHERE account_id = ?", (aid,))
    found = conn.execute("DELETE FROM accounts WHERE id = ?", (aid,)).rowcount
    tx.cache.clear()
    return {"id": aid, "found": bool(found), "events": events}


def link(
    tx: _Transaction, ingest: Ingest, body: Mapping[str, Any], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """Merges the anonymous profile of ``deviceId`` into the user: its anonymous events,
    traits (the user's win) and memberships move to the user, and an alias records the
    link (shown as the user's ``aliases``)."""
    conn = tx.conn
    device = body["deviceId"]
    uid = user_id_of(conn, body["identification"])
    moved = 0
    if device != uid:
        moved = conn.execute(
            "UPDATE events SET profile_id = ? WHERE profile_id = ? AND user_id IS NULL",
            (uid, device),
        ).rowcount
        if moved:
            conn.execute("UPDATE profile_events SET n = n - ? WHERE id = ?", (moved, device))
            conn.execute(
                "INSERT INTO profile_events (id, n) VALUES (?, ?) "
                "ON CONFLICT(id) DO UPDATE SET n = n + excluded.n",
                (uid, moved),
            )
            conn.execute("DELETE FROM profile_events WHERE n <= 0")
        anonymous = conn.execute(
            "SELECT traits, identified FROM users WHERE id = ?", (device,)
        ).fetchone()
        if anonymous is not None and not anonymous[1]:
            traits = orjson.loads(anonymous[0])
            mine = conn.execute("SELECT traits FROM users WHERE id = ?", (uid,)).fetchone()
            if mine is not None:
                traits.update(orjson.loads(mine[0]))
                conn.execute("UPDATE users SET traits = ? WHERE id = ?", (_json_text(traits), uid))
            else:
                conn.execute(
                    "INSERT INTO users (id, identified, traits, first_seen, last_seen) "
                    "VALUES (?, 1, ?, ?, ?)",
                    (uid, _json_text(traits), tx.now, tx.now),
                )
            conn.execute(
                "INSERT INTO memberships (user_id, account_id, first_seen, grouped) "
                "SELECT ?, account_id, first_seen, grouped FROM memberships WHERE user_id = ? "
                "ON CONFLICT(user_id, account_id) DO UPDATE SET "
                "grouped = MAX(grouped, excluded.grouped)",
                (uid, device),
            )
            conn.execute("DELETE FROM memberships WHERE user_id = ?", (device,))
            conn.execute("DELETE FROM users WHERE id = ?", (device,))
        tx.cache.clear()
    ingest(
        [
            _event(
                {
                    "type": "alias",
                    "userId": uid,
                    "previousId": device,
                    "context": {"rest": "POST /link"},
                },
                user_id=uid,
                previous_id=device,
            )
        ],
        meta,
    )
    return {"id": uid, "moved": moved}


# -- the inspector's REST feed ----------------------------------------------------------


def log_call(conn: sqlite3.Connection, call: Mapping[str, Any]) -> None:
    """Records one REST call (``method``, ``path``, ``status``, ``requestId``,
    ``message``, ``body`` as received or None)."""
    body = call.get("body")
    if isinstance(body, (bytes, bytearray)):
        text = bytes(body[:_LOGGED_BODY]).decode("utf-8", "replace")
    else:
        text = None
    conn.execute(
        "INSERT INTO rest_calls (received_at, method, path, status, request_id, message, body) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            _now(),
            call["method"],
            call["path"],
            call["status"],
            call["requestId"],
            call["message"],
            text,
        ),
    )


def rest_calls(
    conn: sqlite3.Connection, before: Optional[int] = None, limit: int = 100
) -> dict[str, Any]:
    """A page of REST calls, newest first: ``{"calls": [...], "total": n}``."""
    where, params = ("WHERE id < ?", [before]) if before is not None else ("", [])
    rows = conn.execute(
        "SELECT id, received_at, method, path, status, request_id, message, body "
        f"FROM rest_calls {where} ORDER BY id DESC LIMIT ?",
        [*params, max(0, limit)],
    ).fetchall()
    (total,) = conn.execute("SELECT COUNT(*) FROM rest_calls").fetchone()
    return {
        "calls": [
            {
                "id": r[0],
                "receivedAt": r[1],
                "method": r[2],
                "path": r[3],
                "status": r[4],
                "requestId": r[5],
                "message": r[6],
                "body": r[7],
            }
            for r in rows
        ],
        "total": total,
    }


# -- reads -----------------------------------------------------------------------------


def event_types(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """The track event names stored, as ``GET /events`` lists event types."""
    names = conn.execute(
        "SELECT DISTINCT event FROM events WHERE type = 'track' AND event IS NOT NULL "
        "ORDER BY event"
    ).fetchall()
    return [{"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"event:{n}")), "name": n} for (n,) in names]


def _trait_names(conn: sqlite3.Connection, table: str) -> list[str]:
    # ``table`` is users or accounts.
    try:
        rows = conn.execute(
            f"SELECT DISTINCT j.key FROM {table}, json_each({table}.traits) AS j ORDER BY j.key"
        ).fetchall()
        return [str(r[0]) for r in rows]
    except sqlite3.OperationalError:  # no JSON1
        names: set[str] = set()
        for (traits,) in conn.execute(f"SELECT traits FROM {table}"):
            names.update(orjson.loads(traits))
        return sorted(names)


def _properties(names: list[str]) -> list[dict[str, Any]]:
    return [
        {"name": n, "label": n.replace("_", " ").strip().capitalize() or n, "isComputed": False}
        for n in names
    ]


def user_properties(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return _properties(_trait_names(conn, "users"))


def account_properties(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return _properties(_trait_names(conn, "accounts"))
