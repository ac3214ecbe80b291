"""The store's reads: each a function of an open connection, run on the database thread."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any, Mapping, Optional, Sequence

import orjson

from journy_analytics.collector._store.writer import merge_traits_changes

__all__ = [
    "INSPECTOR_FILTERS",
    "account",
    "event_detail",
    "events_json",
    "events_with_warnings",
    "inspector_events",
    "message_ids",
    "profile",
    "stats",
    "user",
]

# The inspector's filters: name -> SQL condition with one or two ``?`` for the value.
INSPECTOR_FILTERS = {
    "type": "type = ?",
    "user": "(user_id = ? OR anonymous_id = ?)",
    "account": "group_id = ?",
    "name": "(event = ? OR name = ?)",
    "q": "CAST(body AS TEXT) LIKE ? ESCAPE '\\'",
    "warnings": "warnings IS NOT NULL",
}

_SUMMARY_COLUMNS = (
    "seq, message_id, type, user_id, anonymous_id, group_id, event, name, timestamp, "
    "received_at, warnings"
)


def _filter_sql(filters: Mapping[str, str]) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for name, value in filters.items():
        condition = INSPECTOR_FILTERS.get(name)
        if condition is None or value == "":
            continue
        clauses.append(condition)
        if name == "q":
            escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.append(f"%{escaped}%")
        elif name != "warnings":
            params.extend([value] * condition.count("?"))
    return clauses, params


def _summary(row: Sequence[Any]) -> dict[str, Any]:
    kind, user_id, anonymous_id, group_id = row[2], row[3], row[4], row[5]
    return {
        "seq": row[0],
        "messageId": row[1],
        "type": kind,
        "userId": user_id,
        "anonymousId": anonymous_id,
        # The user profile the event belongs to: none for journy.io's account-only group
        # call (anonymousId == groupId, no userId), which updates the account alone.
        "profile": None
        if kind == "group" and user_id is None and anonymous_id == group_id
        else (user_id if user_id is not None else anonymous_id),
        "account": group_id,
        "name": row[6] if row[6] is not None else row[7],
        "timestamp": row[8],
        "receivedAt": row[9],
        "warnings": orjson.loads(row[10]) if row[10] else [],
    }


def _utc_moment(timestamp: str) -> Optional[str]:
    """``timestamp`` as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC (so that text order is time
    order), or None when it is not ISO-8601."""
    if (
        len(timestamp) == 24
        and timestamp[10] == "T"
        and timestamp[19] == "."
        and timestamp[-1] == "Z"
    ):
        return timestamp  # the SDKs' form, already UTC
    text = timestamp[:-1] + "+00:00" if timestamp.endswith(("Z", "z")) else timestamp
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    utc = moment.astimezone(timezone.utc)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# An event a user profile is made of: every event of its id but journy.io's account-only
# group call, which has the account's id as its anonymousId and updates the account alone.
_OF_USER = "profile_id = ? AND NOT (type = 'group' AND user_id IS NULL AND anonymous_id = group_id)"


# The SDKs' UTC form, whose text order is time order: SQLite's MIN/MAX compare it directly.
_CANONICAL_TIMESTAMP = (
    "timestamp GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:"
    "[0-9][0-9].[0-9][0-9][0-9]Z'"
)


def _seen(conn: sqlite3.Connection, kind: str, id: str) -> tuple[Optional[str], Optional[str]]:
    """The earliest and latest moment of a profile's events, by their own timestamps (an
    event sent without one happened when it was received, as journy.io takes it): a
    backfill of 2015 events was first seen in 2015, not when it was imported."""
    # ``where`` is one of two constants.
    where = _OF_USER if kind == "user" else "group_id = ?"
    first, last = conn.execute(
        f"SELECT MIN(timestamp), MAX(timestamp) FROM events WHERE {where} "
        f"AND {_CANONICAL_TIMESTAMP}",
        (id,),
    ).fetchone()
    # The rest (offsets, other precisions, none) is rare: normalized one by one.
    for timestamp, received_at in conn.execute(
        f"SELECT timestamp, received_at FROM events WHERE {where} "
        f"AND (timestamp IS NULL OR NOT {_CANONICAL_TIMESTAMP})",
        (id,),
    ):
        moment = (_utc_moment(timestamp) if timestamp else None) or received_at
        if first is None or moment < first:
            first = moment
        if last is None or moment > last:
            last = moment
    return first, last


def events_json(
    conn: sqlite3.Connection,
    type: Optional[str] = None,
    user_id: Optional[str] = None,
    anonymous_id: Optional[str] = None,
    group_id: Optional[str] = None,
    limit: Optional[int] = None,
) -> list[bytes]:
    """Encoded events in arrival order; with ``limit``, the most recent ``limit`` ones."""
    rows = _event_rows(conn, type, user_id, anonymous_id, group_id, limit, False)
    return [bytes(row[0]) for row in rows]


def events_with_warnings(
    conn: sqlite3.Connection,
    type: Optional[str] = None,
    user_id: Optional[str] = None,
    anonymous_id: Optional[str] = None,
    group_id: Optional[str] = None,
    limit: Optional[int] = None,
) -> list[tuple[bytes, list[dict[str, str]]]]:
    """Like ``events_json``, only the events that break a rule, each with its warnings."""
    rows = _event_rows(conn, type, user_id, anonymous_id, group_id, limit, True)
    return [(bytes(row[0]), orjson.loads(row[1])) for row in rows]


def _event_rows(
    conn: sqlite3.Connection,
    type: Optional[str],
    user_id: Optional[str],
    anonymous_id: Optional[str],
    group_id: Optional[str],
    limit: Optional[int],
    warnings_only: bool,
) -> list[Any]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("type", type),
        ("user_id", user_id),
        ("anonymous_id", anonymous_id),
        ("group_id", group_id),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if warnings_only:
        clauses.append("warnings IS NOT NULL")
    sql = "SELECT body, warnings FROM events"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY seq DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(max(0, limit))
    rows = conn.execute(sql, params).fetchall()
    rows.reverse()
    return rows


def inspector_events(
    conn: sqlite3.Connection,
    filters: dict[str, str],
    before: Optional[int],
    after: Optional[int],
    limit: int,
) -> dict[str, Any]:
    """One page of event summaries, newest first, matching ``filters`` (see
    ``INSPECTOR_FILTERS``), with ``seq`` below ``before`` or above ``after``.

    Answers ``{"events": [...], "matched": n, "latest": seq}``: ``matched`` counts
    every matching event (above ``after`` when given, so a live update counts only
    what is new) and ``latest`` is the newest ``seq`` stored.
    """
    clauses, params = _filter_sql(filters)
    if after is not None:
        clauses.append("seq > ?")
        params.append(after)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    (matched,) = conn.execute(f"SELECT COUNT(*) FROM events{where}", params).fetchone()
    page_clauses, page_params = list(clauses), list(params)
    if before is not None:
        page_clauses.append("seq < ?")
        page_params.append(before)
    page_where = (" WHERE " + " AND ".join(page_clauses)) if page_clauses else ""
    rows = conn.execute(
        f"SELECT {_SUMMARY_COLUMNS} FROM events{page_where} ORDER BY seq DESC LIMIT ?",
        [*page_params, max(0, limit)],
    ).fetchall()
    (latest,) = conn.execute("SELECT MAX(seq) FROM events").fetchone()
    return {
        "events": [_summary(row) for row in rows],
        "matched": matched,
        "latest": latest or 0,
    }


def event_detail(conn: sqlite3.Connection, seq: int) -> Optional[dict[str, Any]]:
    """``{"seq", "event", "warnings", "request", "duplicates": [...]}`` or None."""
    row = conn.execute(
        f"SELECT {_SUMMARY_COLUMNS}, body, request_id, received_type FROM events WHERE seq = ?",
        (seq,),
    ).fetchone()
    if row is None:
        return None
    summary = _summary(row)
    body, request_id, received_type = row[-3:]
    duplicates = [
        {"receivedAt": at, "request": _request(conn, rid)}
        for at, rid in conn.execute(
            "SELECT received_at, request_id FROM receipts WHERE message_id = ? ORDER BY rowid",
            (summary["messageId"],),
        )
    ]
    return {
        **summary,
        "receivedType": received_type,
        "event": orjson.loads(body),
        "request": _request(conn, request_id),
        "duplicates": duplicates,
    }


def _request(conn: sqlite3.Connection, request_id: Optional[int]) -> Optional[dict[str, Any]]:
    if request_id is None:
        return None
    row = conn.execute(
        "SELECT id, received_at, method, path, headers, size, gzip, retry_count, "
        "batch_size, stored, duplicates FROM requests WHERE id = ?",
        (request_id,),
    ).fetchone()
    if row is None:
        return None
    return {
        "id": row[0],
        "receivedAt": row[1],
        "method": row[2],
        "path": row[3],
        "headers": orjson.loads(row[4]),
        "size": row[5],
        "gzip": bool(row[6]),
        "retryCount": row[7],
        "batchSize": row[8],
        "stored": row[9],
        "duplicates": row[10],
    }


def _trait_history(conn: sqlite3.Connection, kind: str, id: str) -> list[dict[str, Any]]:
    """Every trait change of a profile, found by replaying its identify (user) or group
    (account) calls in arrival order, as ingest merged them. Nothing is kept for this
    at ingest: a history table cost more per stored event than the events table itself,
    while replaying one profile's calls when its page is opened takes milliseconds."""
    sql = "SELECT body, message_id, received_at FROM events WHERE "
    if kind == "user":
        sql += "profile_id = ? AND type = 'identify'"
    else:
        sql += "group_id = ? AND type = 'group'"
    history: list[dict[str, Any]] = []
    traits: dict[str, Any] = {}
    for body, message_id, received_at in conn.execute(sql + " ORDER BY seq", (id,)):
        event = orjson.loads(body)
        update = event.get("traits")
        if not isinstance(update, dict):
            continue
        for trait, value in merge_traits_changes(traits, update):
            history.append(
                {
                    "trait": trait,
                    "value": value,
                    "deleted": value is None,
                    "messageId": message_id,
                    "type": event.get("type"),
                    "timestamp": event.get("timestamp"),
                    "receivedAt": received_at,
                }
            )
    return history


def profile(
    conn: sqlite3.Connection, kind: str, id: str, events_limit: int
) -> Optional[dict[str, Any]]:
    """A user (``kind="user"``) or account with its trait history and recent events:
    the ``user``/``account`` answer plus ``"history"`` (every change, oldest first:
    ``trait``, ``value``, ``deleted``, ``messageId``, ``type``, ``timestamp``,
    ``receivedAt``) and ``"recent"`` (event summaries, newest first)."""
    base = user(conn, id) if kind == "user" else account(conn, id)
    if base is None:
        return None
    history = _trait_history(conn, kind, id)
    column = "profile_id" if kind == "user" else "group_id"
    # ``column`` is one of two constants.
    recent = conn.execute(
        f"SELECT {_SUMMARY_COLUMNS} FROM events WHERE {column} = ? ORDER BY seq DESC LIMIT ?",
        (id, max(0, events_limit)),
    ).fetchall()
    return {**base, "history": history, "recent": [_summary(r) for r in recent]}


def user(conn: sqlite3.Connection, user_id: str) -> Optional[dict[str, Any]]:
    """``{"id", "traits", "accounts", "notGrouped", "events", "identified", "aliases",
    "firstSeen", "lastSeen", "firstReceived", "lastReceived"}`` or None: ``accounts``
    are those a group call linked the user to, ``notGrouped`` those it acted in
    (``context.groupId``) without one."""
    row = conn.execute(
        "SELECT identified, traits, first_seen, last_seen FROM users WHERE id = ?",
        (user_id,),
    ).fetchone()
    if row is None:
        return None
    # Member of an account only through a group call (journy.io's semantics); accounts
    # it acted in without one are listed apart (they earn account_not_grouped).
    accounts: list[str] = []
    not_grouped: list[str] = []
    for account_id, grouped in conn.execute(
        "SELECT account_id, grouped FROM memberships WHERE user_id = ? ORDER BY rowid",
        (user_id,),
    ):
        (accounts if grouped else not_grouped).append(account_id)
    aliases = [
        r[0]
        for r in conn.execute(
            "SELECT previous_id FROM aliases WHERE user_id = ? ORDER BY rowid", (user_id,)
        )
    ]
    events = _event_count(conn, "profile_events", user_id)
    first, last = _seen(conn, "user", user_id)
    return {
        "id": user_id,
        "identified": bool(row[0]),
        "traits": orjson.loads(row[1]),
        "accounts": accounts,
        "notGrouped": not_grouped,
        "events": events,
        "aliases": aliases,
        "firstSeen": first or row[2],
        "lastSeen": last or row[3],
        "firstReceived": row[2],
        "lastReceived": row[3],
    }


def account(conn: sqlite3.Connection, account_id: str) -> Optional[dict[str, Any]]:
    """``{"id", "traits", "members", "notGrouped", "events", "firstSeen", ...}`` or
    None: ``members`` were linked by a group call, ``notGrouped`` users only acted in
    the account's context."""
    row = conn.execute(
        "SELECT traits, first_seen, last_seen FROM accounts WHERE id = ?", (account_id,)
    ).fetchone()
    if row is None:
        return None
    members: list[str] = []
    not_grouped: list[str] = []
    for user_id, grouped in conn.execute(
        "SELECT user_id, grouped FROM memberships WHERE account_id = ? ORDER BY rowid",
        (account_id,),
    ):
        (members if grouped else not_grouped).append(user_id)
    events = _event_count(conn, "account_events", account_id)
    first, last = _seen(conn, "account", account_id)
    return {
        "id": account_id,
        "traits": orjson.loads(row[0]),
        "members": members,
        "notGrouped": not_grouped,
        "events": events,
        "firstSeen": first or row[1],
        "lastSeen": last or row[2],
        "firstReceived": row[1],
        "lastReceived": row[2],
    }


def _event_count(conn: sqlite3.Connection, table: str, id: str) -> int:
    # ``table`` is one of two constants (profile_events, account_events).
    row = conn.execute(f"SELECT n FROM {table} WHERE id = ?", (id,)).fetchone()
    return int(row[0]) if row is not None else 0


def message_ids(conn: sqlite3.Connection) -> set[str]:
    """The distinct messageIds received (ids the collector made up are left out)."""
    rows = conn.execute("SELECT message_id FROM events WHERE generated_id = 0")
    return {r[0] for r in rows}


def stats(conn: sqlite3.Connection) -> dict[str, Any]:
    counters = dict(conn.execute("SELECT name, n FROM counters").fetchall())
    rejected: dict[str, int] = {}
    faults: dict[str, int] = {}
    flat: dict[str, int] = {}
    for name, n in counters.items():
        if name.startswith("rejected."):
            rejected[name[len("rejected.") :]] = n
        elif name.startswith("faults."):
            faults[name[len("faults.") :]] = n
        else:
            flat[name] = n
    (events,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    (users,) = conn.execute("SELECT COUNT(*) FROM users").fetchone()
    (accounts,) = conn.execute("SELECT COUNT(*) FROM accounts").fetchone()
    return {
        "requests": flat.get("requests", 0),
        "accepted_requests": flat.get("accepted_requests", 0),
        "received": flat.get("received", 0),
        "stored": flat.get("stored", 0),
        "duplicates": flat.get("duplicates", 0),
        "rejected": dict(sorted(rejected.items())),
        "faults": dict(sorted(faults.items())),
        "events": events,
        "users": users,
        "accounts": accounts,
    }
