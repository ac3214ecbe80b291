"""The collector database's tables, and opening it: created, or upgraded in place.

The file format is ``SCHEMA_VERSION``; every table is here but ``rest_calls`` (``rest.py``).
"""

from __future__ import annotations

import sqlite3

from journy_analytics.collector._store.rest import REST_SCHEMA

__all__ = ["SCHEMA_VERSION", "TABLES", "open_database"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    generated_id INTEGER NOT NULL DEFAULT 0,
    type TEXT NOT NULL,
    received_type TEXT NOT NULL,
    user_id TEXT,
    anonymous_id TEXT,
    profile_id TEXT,
    group_id TEXT,
    event TEXT,
    name TEXT,
    timestamp TEXT,
    received_at TEXT NOT NULL,
    body BLOB NOT NULL,
    request_id INTEGER,  -- the request that brought it (requests.id)
    warnings TEXT  -- JSON list of journy.io rules it breaks, NULL when none
);
-- No index besides messageId's: each one costs several microseconds per stored event.
-- Profile event counts are kept in profile_events and account_events instead, and
-- filtering a local collector's events by type, userId or groupId scans fast enough.
CREATE TABLE IF NOT EXISTS profile_events (
    id TEXT PRIMARY KEY,  -- an event's userId, else its anonymousId
    n INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS account_events (
    id TEXT PRIMARY KEY,  -- an event's groupId or context.groupId
    n INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    identified INTEGER NOT NULL DEFAULT 0,
    traits TEXT NOT NULL DEFAULT '{}',
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    traits TEXT NOT NULL DEFAULT '{}',
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS memberships (
    user_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    grouped INTEGER NOT NULL DEFAULT 0,  -- 1 once a group call linked them
    PRIMARY KEY (user_id, account_id)
);
CREATE INDEX IF NOT EXISTS memberships_account ON memberships(account_id);
CREATE TABLE IF NOT EXISTS aliases (
    previous_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    first_seen TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS aliases_user ON aliases(user_id);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    n INTEGER NOT NULL
);
-- What the inspector shows about each accepted request (the key redacted).
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    headers TEXT NOT NULL,
    size INTEGER NOT NULL,
    gzip INTEGER NOT NULL,
    retry_count INTEGER,
    batch_size INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    duplicates INTEGER NOT NULL
);
-- Each later receipt of a stored messageId (its first is events.request_id).
CREATE TABLE IF NOT EXISTS receipts (
    message_id TEXT NOT NULL,
    request_id INTEGER,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS receipts_message ON receipts(message_id);
"""
_SCHEMA += REST_SCHEMA

# PRAGMA user_version of a database this collector wrote. 0: before versions were kept
# (counts in indexes, or in profile_events/account_events); 2: requests, receipts, trait
# history, warnings and group-call memberships; 3: rest_calls (the REST API's calls).
SCHEMA_VERSION = 3

# Columns added to tables an older collector created: (table, column, declaration).
# Links recorded before version 2 may come from a group call or not: they count as
# grouped, so an old database earns no false warning.
_ADDED_COLUMNS = (
    ("events", "request_id", "INTEGER"),
    ("events", "warnings", "TEXT"),
    ("memberships", "grouped", "INTEGER NOT NULL DEFAULT 1"),
)

# Every table: what a reset empties.
TABLES = (
    "events",
    "users",
    "accounts",
    "memberships",
    "aliases",
    "counters",
    "profile_events",
    "account_events",
    "requests",
    "receipts",
    "rest_calls",
)

# A database written by an earlier collector indexed events by profile and account
# instead of counting them: count them once, then drop those indexes.
_MIGRATE_COUNTS = """
INSERT INTO profile_events (id, n)
    SELECT profile_id, COUNT(*) FROM events WHERE profile_id IS NOT NULL GROUP BY profile_id;
INSERT INTO account_events (id, n)
    SELECT group_id, COUNT(*) FROM events WHERE group_id IS NOT NULL GROUP BY group_id;
DROP INDEX IF EXISTS events_profile;
DROP INDEX IF EXISTS events_group;
"""


def open_database(path: str) -> sqlite3.Connection:
    """Open (create, upgrade) the database at ``path`` for the calling thread alone."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a crash or kill of the process; only an OS
        # crash can lose the last transactions, an acceptable trade for a local tool.
        conn.execute("PRAGMA synchronous=NORMAL")
        # Fewer, larger checkpoints: each one pays for an fsync.
        conn.execute("PRAGMA wal_autocheckpoint=16384")
    # Index pages of a large collection stay in memory (64 MB at most).
    conn.execute("PRAGMA cache_size=-65536")
    existing = {
        row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    migrate = "events" in existing and "profile_events" not in existing
    # One transaction: a crash half-way leaves the database as it was.
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, declaration in _ADDED_COLUMNS:
            if table in existing:
                columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    # Names and declarations come from the constant _ADDED_COLUMNS.
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        for statement in (_SCHEMA + (_MIGRATE_COUNTS if migrate else "")).split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        conn.close()
        raise
    return conn
