"""The collector's SQLite store, with journy.io's profile semantics.

Every statement runs on one dedicated thread: SQLite wants a single writer, a ``:memory:``
database exists only inside its one connection, and the HTTP event loop must never wait
on disk. Public methods return ``concurrent.futures.Future`` objects, so the server awaits
them (``asyncio.wrap_future``) and synchronous callers take ``.result()``.

Writes queued together are committed together (group commit): a commit costs far more
than the rows of a typical batch, and the SDK sends several requests at once. A future is
resolved only after its transaction committed.
"""

from __future__ import annotations

import itertools
import queue
import sqlite3
import threading
from concurrent.futures import Future
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, TypeVar

import orjson

from journy_analytics._lifecycle import signal_free
from journy_analytics.collector._ingest import PreparedEvent
from journy_analytics.collector._rest_store import REST_SCHEMA, Ingest

__all__ = ["IngestResult", "Store"]

T = TypeVar("T")

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

_TABLES = (
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def merge_traits(current: dict[str, Any], update: Optional[Mapping[str, Any]]) -> bool:
    """journy.io's incremental traits: union, and a trait sent as ``null`` is deleted.

    The merge is shallow: a nested object replaces the previous value of its key.
    Returns whether anything changed.
    """
    changed = False
    for key, value in (update or {}).items():
        if value is None:
            if key in current:
                del current[key]
                changed = True
        elif current.get(key, _MISSING) != value:
            current[key] = value
            changed = True
    return changed


_MISSING = object()


def merge_traits_changes(
    current: dict[str, Any], update: Mapping[str, Any]
) -> list[tuple[str, Any]]:
    """``merge_traits`` returning what changed: ``(key, value)``, value None = deleted."""
    changes: list[tuple[str, Any]] = []
    for key, value in update.items():
        if value is None:
            if key in current:
                del current[key]
                changes.append((key, None))
        elif current.get(key, _MISSING) != value:
            current[key] = value
            changes.append((key, value))
    return changes


def _stored_key_collisions(
    current: Mapping[str, Any], update: Mapping[str, Any], where: str
) -> list[dict[str, str]]:
    """Keys of ``update`` new to the profile that collide with a stored key once
    lower-cased and trimmed (collisions inside ``update`` are the ingest path's)."""
    if not current:
        return []
    new_keys = update.keys() - current.keys()  # one set operation for the usual "none"
    if not new_keys:
        return []
    fresh = [k for k in update if k in new_keys and update[k] is not None]
    if not fresh:
        return []
    stored = {k.strip().lower(): k for k in current}
    found = []
    for key in fresh:
        other = stored.get(key.strip().lower())
        if other is not None and other != key:
            found.append(
                {
                    "rule": "trait_key_collision",
                    "message": f"{where} key {key!r} is the stored trait {other!r} once "
                    "lower-cased and trimmed",
                }
            )
    return found


class IngestResult:
    """Outcome of one accepted request: events newly stored and duplicates ignored."""

    __slots__ = ("duplicates", "request_id", "stored")

    def __init__(self, stored: int, duplicates: int, request_id: Optional[int] = None) -> None:
        self.stored = stored
        self.duplicates = duplicates
        self.request_id = request_id


# SQLite builds before 3.32 allow at most 999 parameters in one statement.
_CHUNK = 500


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


# SQLite's limit on the parameters of one statement (999 before 3.32, 32766 since).
_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
_MAX_ROWS_PER_STATEMENT = 500


def _insert_rows(
    conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]], tail: str = ""
) -> None:
    """``head VALUES (...), (...), ... tail`` for every row, in a few large statements.

    The same as ``executemany(head + " VALUES (?, ...) " + tail, rows)``, but much faster
    in a busy process: the sqlite3 module releases and takes back the GIL around every
    statement step, and while the HTTP thread holds the GIL each take-back can wait for a
    whole switch interval; ``executemany`` steps once per row, this once per statement.
    """
    if not rows:
        return
    width = len(rows[0])
    per_statement = max(1, min(_MAX_ROWS_PER_STATEMENT, _MAX_VARIABLES // width))
    values = "(" + _placeholders(width) + ")"
    full_sql = ""
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        if len(chunk) == per_statement and full_sql:
            sql = full_sql
        else:
            sql = f"{head} VALUES {','.join([values] * len(chunk))} {tail}"
            if len(chunk) == per_statement:
                full_sql = sql
        conn.execute(sql, list(itertools.chain.from_iterable(chunk)))


class _Cache:
    """Profile rows as committed, kept by the store thread so that a transaction neither
    reads nor decodes the rows it merges into, and encodes traits only when they changed.

    Only the store thread touches it. It mirrors the database exactly after every commit;
    a rolled-back transaction may have changed it, so a rollback clears it (it refills from
    the database), and so does a reset. It holds at most ``limit`` users or accounts.
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        # id -> [identified, traits, traits as committed JSON or None when changed]
        self.users: dict[str, list[Any]] = {}
        # id -> [traits, JSON or None]
        self.accounts: dict[str, list[Any]] = {}
        # (profile id, account id) -> linked by a group call; complete for the profiles in
        # links_loaded
        self.links: dict[tuple[str, str], bool] = {}
        self.links_loaded: set[str] = set()

    def clear(self) -> None:
        self.users.clear()
        self.accounts.clear()
        self.links.clear()
        self.links_loaded.clear()

    def trim(self) -> None:
        if (
            len(self.users) > self.limit
            or len(self.accounts) > self.limit
            or len(self.links) > self.limit
        ):
            self.clear()


class _Transaction:
    """Everything one group commit writes, gathered in memory and written in one go."""

    def __init__(self, conn: sqlite3.Connection, cache: _Cache) -> None:
        self.conn = conn
        self.cache = cache
        self.now = _now()
        self.events: list[list[Any]] = []
        self.message_ids: set[str] = set()
        self.users: dict[str, list[Any]] = {}  # touched: id -> cache entry
        self.accounts: dict[str, list[Any]] = {}
        self.memberships: dict[tuple[str, str], int] = {}  # new or now grouped, in order
        self.aliases: dict[str, str] = {}
        self.profile_events: dict[str, int] = {}
        self.account_events: dict[str, int] = {}
        self.counters: dict[str, int] = {}
        self.requests: list[list[Any]] = []
        self.receipts: list[tuple[str, Optional[int], str]] = []

    def load(self, user_ids: Iterable[str], account_ids: Iterable[str]) -> None:
        """Bring the rows of these users and accounts into the cache (absent: created)."""
        cache = self.cache
        users = sorted(set(user_ids) - cache.users.keys())
        for chunk in _chunks(users):
            rows = self.conn.execute(
                "SELECT id, identified, traits FROM users WHERE id IN "
                f"({_placeholders(len(chunk))})",
                list(chunk),
            )
            for uid, identified, traits in rows:
                cache.users[uid] = [bool(identified), orjson.loads(traits), traits]
        for uid in users:
            if uid not in cache.users:
                cache.users[uid] = [False, {}, None]
        accounts = sorted(set(account_ids) - cache.accounts.keys())
        for chunk in _chunks(accounts):
            rows = self.conn.execute(
                f"SELECT id, traits FROM accounts WHERE id IN ({_placeholders(len(chunk))})",
                list(chunk),
            )
            for aid, traits in rows:
                cache.accounts[aid] = [orjson.loads(traits), traits]
        for aid in accounts:
            if aid not in cache.accounts:
                cache.accounts[aid] = [{}, None]
        unlinked = sorted(set(user_ids) - cache.links_loaded)
        for chunk in _chunks(unlinked):
            rows = self.conn.execute(
                "SELECT user_id, account_id, grouped FROM memberships WHERE user_id IN "
                f"({_placeholders(len(chunk))})",
                list(chunk),
            )
            for uid, aid, grouped in rows:
                cache.links[(uid, aid)] = bool(grouped)
        cache.links_loaded.update(unlinked)

    def bump(self, counters: Mapping[str, int]) -> None:
        mine = self.counters
        for name, n in counters.items():
            mine[name] = mine.get(name, 0) + n

    def flush(self) -> None:
        """Write what was gathered so far, and start gathering afresh."""
        self.write()
        self.events = []
        self.message_ids = set()
        self.users = {}
        self.accounts = {}
        self.memberships = {}
        self.aliases = {}
        self.profile_events = {}
        self.account_events = {}
        self.counters = {}
        self.requests = []
        self.receipts = []

    def write(self) -> None:
        conn, now = self.conn, self.now
        if self.requests:
            _insert_rows(
                conn,
                "INSERT INTO requests (id, received_at, method, path, headers, size, gzip, "
                "retry_count, batch_size, stored, duplicates)",
                self.requests,
            )
        if self.receipts:
            _insert_rows(
                conn, "INSERT INTO receipts (message_id, request_id, received_at)", self.receipts
            )
        if self.events:
            for row in self.events:
                found = row[_WARNINGS]
                row[_WARNINGS] = orjson.dumps(found).decode() if found else None
            _insert_rows(
                conn,
                "INSERT INTO events (message_id, generated_id, type, received_type, user_id, "
                "anonymous_id, profile_id, group_id, event, name, timestamp, received_at, "
                "body, warnings, request_id)",
                self.events,
            )
        if self.users:
            rows = []
            for uid, entry in self.users.items():
                if entry[2] is None:
                    entry[2] = orjson.dumps(entry[1]).decode()
                rows.append((uid, int(entry[0]), entry[2], now, now))
            _insert_rows(
                conn,
                "INSERT INTO users (id, identified, traits, first_seen, last_seen)",
                rows,
                "ON CONFLICT(id) DO UPDATE SET identified = excluded.identified, "
                "traits = excluded.traits, last_seen = excluded.last_seen",
            )
        if self.accounts:
            account_rows = []
            for aid, entry in self.accounts.items():
                if entry[1] is None:
                    entry[1] = orjson.dumps(entry[0]).decode()
                account_rows.append((aid, entry[1], now, now))
            _insert_rows(
                conn,
                "INSERT INTO accounts (id, traits, first_seen, last_seen)",
                account_rows,
                "ON CONFLICT(id) DO UPDATE SET traits = excluded.traits, "
                "last_seen = excluded.last_seen",
            )
        if self.memberships:
            _insert_rows(
                conn,
                "INSERT INTO memberships (user_id, account_id, first_seen, grouped)",
                [(uid, aid, now, grouped) for (uid, aid), grouped in self.memberships.items()],
                "ON CONFLICT(user_id, account_id) DO UPDATE SET "
                "grouped = MAX(grouped, excluded.grouped)",
            )
        if self.aliases:
            _insert_rows(
                conn,
                "INSERT INTO aliases (previous_id, user_id, first_seen)",
                [(prev, uid, now) for prev, uid in self.aliases.items()],
                "ON CONFLICT(previous_id) DO UPDATE SET user_id = excluded.user_id",
            )
        for table, counts in (
            ("profile_events", self.profile_events),
            ("account_events", self.account_events),
        ):
            if counts:
                # Table names cannot be SQL parameters; these two are constants.
                _insert_rows(
                    conn,
                    f"INSERT INTO {table} (id, n)",
                    list(counts.items()),
                    "ON CONFLICT(id) DO UPDATE SET n = n + excluded.n",
                )
        Store._bump(conn, self.counters)


_MAX_GROUP = 64

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


# Where an event row (a list, see Store._ingest) keeps its warnings until written.
_WARNINGS = 13


class _Job:
    __slots__ = ("args", "fn", "future", "write")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], future: Future[Any], write: bool
    ) -> None:
        self.fn = fn
        self.args = args
        self.future = future
        self.write = write

    def run(self) -> None:
        try:
            result = self.fn(*self.args)
        except BaseException as exc:
            self.fail(exc)
        else:
            self.succeed(result)

    def succeed(self, result: Any) -> None:
        if self.future.set_running_or_notify_cancel():
            self.future.set_result(result)

    def fail(self, exc: Optional[BaseException]) -> None:
        if self.future.set_running_or_notify_cancel():
            self.future.set_exception(exc)


class Store:
    """SQLite store for the collector. ``path`` is a file or ``":memory:"``.

    Thread-safe: every call is queued to the store's own thread.
    """

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self._jobs: queue.SimpleQueue[Optional[_Job]] = queue.SimpleQueue()
        self._conn: Optional[sqlite3.Connection] = None
        self._cache = _Cache()
        self._next_request_id = 1  # set from the database when it opens
        self._close_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=signal_free(self._serve_jobs), name="journy-collector-db", daemon=True
        )
        self._thread.start()
        try:
            self._submit(self._open).result()
        except BaseException:
            self._jobs.put(None)
            self._thread.join()
            raise

    # -- plumbing ---------------------------------------------------------------------

    def _submit(self, fn: Callable[..., T], *args: Any, write: bool = False) -> Future[T]:
        if self._closed:
            raise RuntimeError("the collector store is closed")
        future: Future[T] = Future()
        self._jobs.put(_Job(fn, args, future, write))
        return future

    def _serve_jobs(self) -> None:
        carry: Optional[_Job] = None
        while True:
            job = carry if carry is not None else self._jobs.get()
            carry = None
            if job is None:
                return
            if not job.write:
                job.run()
                continue
            group = [job]
            stop = False
            while len(group) < _MAX_GROUP:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if not nxt.write:
                    carry = nxt
                    break
                group.append(nxt)
            self._commit_group(group)
            if stop:
                return

    def _commit_group(self, group: list[_Job]) -> None:
        try:
            conn = self._db()
            self._cache.trim()
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            for job in group:
                job.fail(exc)
            return
        try:
            tx = _Transaction(conn, self._cache)
            results = [job.fn(tx, *job.args) for job in group]
            tx.write()
            conn.execute("COMMIT")
        except BaseException as exc:
            conn.execute("ROLLBACK")
            # The cache may hold changes of the transaction that did not happen.
            self._cache.clear()
            if len(group) == 1:
                group[0].fail(exc)
                return
            # One bad job must not sink the others: retry each in its own transaction.
            for job in group:
                self._commit_group([job])
            return
        for job, result in zip(group, results):
            job.succeed(result)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the collector store is closed")
        return self._conn

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        if self.path != ":memory:":
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
        (last,) = conn.execute("SELECT MAX(id) FROM requests").fetchone()
        self._next_request_id = (last or 0) + 1
        self._conn = conn

    def close(self) -> None:
        """Wait for queued work (every write is committed when its future resolves), close."""
        with self._close_lock:
            if self._closed:
                return
            self._submit(self._close).result()
            self._closed = True
            self._jobs.put(None)
        self._thread.join()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def closed(self) -> bool:
        return self._closed

    # -- writes -----------------------------------------------------------------------

    def ingest(
        self,
        events: Sequence[PreparedEvent],
        counters: Optional[Mapping[str, int]] = None,
        request: Optional[Mapping[str, Any]] = None,
    ) -> Future[IngestResult]:
        """Store one request's events in one transaction, and bump ``counters`` with it.

        ``request``, when given, is what the inspector shows about the request:
        ``method``, ``path``, ``headers`` (already redacted), ``size``, ``gzip`` and
        ``retry_count``; it is stored with the events and receipts of duplicates.
        """
        return self._submit(
            self._ingest,
            list(events),
            dict(counters or {}),
            dict(request) if request is not None else None,
            write=True,
        )

    def count(self, counters: Mapping[str, int]) -> Future[None]:
        """Add to named counters (``requests``, ``rejected.<code>``, ``faults.<kind>``...)."""
        return self._submit(self._count, dict(counters), write=True)

    def reset(self) -> Future[None]:
        """Delete every event, profile and counter."""
        return self._submit(self._reset, write=True)

    def _ingest(
        self,
        tx: _Transaction,
        events: list[PreparedEvent],
        counters: dict[str, int],
        request: Optional[dict[str, Any]],
    ) -> IngestResult:
        # A copy: a failed group commit runs this again, and must not count twice.
        counters = dict(counters)
        seen = tx.message_ids
        stored = self._stored_ids(
            tx.conn, [ev.message_id for ev in events if ev.message_id not in seen]
        )
        now = tx.now
        request_id: Optional[int] = None
        request_row: Optional[list[Any]] = None
        if request is not None:
            request_id = self._next_request_id
            self._next_request_id += 1
            request_row = [
                request_id,
                now,
                str(request.get("method", "POST")),
                str(request.get("path", "")),
                orjson.dumps(request.get("headers") or {}).decode(),
                int(request.get("size") or 0),
                int(bool(request.get("gzip"))),
                request.get("retry_count"),
                len(events),
                0,
                0,
            ]
            tx.requests.append(request_row)
        fresh: list[PreparedEvent] = []
        for ev in events:
            # At-least-once delivery: a retried event changes nothing the second time.
            message_id = ev.message_id
            if message_id not in seen and message_id not in stored:
                seen.add(message_id)
                fresh.append(ev)
            elif request_id is not None:
                tx.receipts.append((message_id, request_id, now))
        tx.load(
            {ev.profile_id for ev in fresh if ev.profile_id is not None},
            {ev.group_id for ev in fresh if ev.group_id is not None},
        )
        rows = tx.events
        cached_users, cached_accounts = tx.cache.users, tx.cache.accounts
        known_links = tx.cache.links
        users, accounts, links = tx.users, tx.accounts, tx.memberships
        profile_events, account_events = tx.profile_events, tx.account_events
        for ev in fresh:
            user_id, group_id, kind = ev.user_id, ev.group_id, ev.type
            profile_id = user_id if user_id is not None else ev.anonymous_id
            row: list[Any] = [
                ev.message_id,
                int(ev.generated_message_id),
                kind,
                ev.received_type,
                user_id,
                ev.anonymous_id,
                profile_id,
                group_id,
                ev.event,
                ev.name,
                ev.timestamp,
                now,
                ev.body,
                ev.warnings,  # _WARNINGS: encoded when written
                request_id,
            ]
            rows.append(row)
            if group_id is not None:
                account_events[group_id] = account_events.get(group_id, 0) + 1
                account = accounts.get(group_id)
                if account is None:
                    account = accounts[group_id] = cached_accounts[group_id]
                if kind == "group":
                    if ev.traits:
                        found = _stored_key_collisions(account[0], ev.traits, "account trait")
                        if found:
                            row[_WARNINGS] = [*(row[_WARNINGS] or ()), *found]
                        if merge_traits(account[0], ev.traits):
                            account[1] = None
                    if user_id is None and ev.anonymous_id == group_id:
                        # journy.io's way to update an account without any user.
                        if profile_id is not None:
                            profile_events[profile_id] = profile_events.get(profile_id, 0) + 1
                        continue
            if profile_id is None:
                continue
            profile_events[profile_id] = profile_events.get(profile_id, 0) + 1
            user = users.get(profile_id)
            if user is None:
                user = users[profile_id] = cached_users[profile_id]
            if user_id is not None:
                user[0] = True
            if kind == "identify":
                if ev.traits:
                    found = _stored_key_collisions(user[1], ev.traits, "trait")
                    if found:
                        row[_WARNINGS] = [*(row[_WARNINGS] or ()), *found]
                    if merge_traits(user[1], ev.traits):
                        user[2] = None
            elif kind == "alias" and ev.previous_id is not None:
                tx.aliases[ev.previous_id] = profile_id
            if group_id is not None:
                # group, and track/page/screen "in the context of" an account.
                link = (profile_id, group_id)
                grouped = known_links.get(link)
                if kind == "group":
                    if not grouped:
                        known_links[link] = True
                        links[link] = 1
                else:
                    if not grouped:
                        row[_WARNINGS] = [
                            *(row[_WARNINGS] or ()),
                            {
                                "rule": "account_not_grouped",
                                "message": f"{kind} in the context of account {group_id!r}, "
                                f"but no group call linked {profile_id!r} to it",
                            },
                        ]
                    if grouped is None:
                        known_links[link] = False
                        links[link] = 0
        stored_count, duplicates = len(fresh), len(events) - len(fresh)
        if request_row is not None:
            request_row[9], request_row[10] = stored_count, duplicates
        counters["received"] = counters.get("received", 0) + len(events)
        counters["stored"] = counters.get("stored", 0) + stored_count
        counters["duplicates"] = counters.get("duplicates", 0) + duplicates
        counters["accepted_requests"] = counters.get("accepted_requests", 0) + 1
        tx.bump(counters)
        return IngestResult(stored_count, duplicates, request_id)

    @staticmethod
    def _stored_ids(conn: sqlite3.Connection, message_ids: list[str]) -> set[str]:
        found: set[str] = set()
        unique = sorted(set(message_ids))
        for chunk in _chunks(unique):
            rows = conn.execute(
                f"SELECT message_id FROM events WHERE message_id IN ({_placeholders(len(chunk))})",
                list(chunk),
            )
            found.update(r[0] for r in rows)
        return found

    def _count(self, tx: _Transaction, counters: dict[str, int]) -> None:
        tx.bump(counters)

    @staticmethod
    def _bump(conn: sqlite3.Connection, counters: Mapping[str, int]) -> None:
        _insert_rows(
            conn,
            "INSERT INTO counters (name, n)",
            [(name, n) for name, n in counters.items() if n],
            "ON CONFLICT(name) DO UPDATE SET n = n + excluded.n",
        )

    def _reset(self, tx: _Transaction) -> None:
        # What earlier requests of this transaction gathered goes in first, then goes.
        tx.flush()
        conn = self._db()
        # Table names cannot be SQL parameters; these come from a constant tuple.
        for table in _TABLES:
            conn.execute(f"DELETE FROM {table}")
        self._cache.clear()

    # -- the REST API (what its calls do is in _rest_store) -------------------------

    def rest_write(self, fn: Callable[..., T], *args: Any, ingest: bool = False) -> Future[T]:
        """Run ``fn(tx, *args)`` in a write transaction, after ``tx`` wrote what earlier
        jobs of its group gathered (so plain SQL sees it all). With ``ingest=True``, ``fn``
        gets ``ingest(events, request)`` after ``tx``: it stores events as a batch would."""
        return self._submit(self._rest_write, fn, args, ingest, write=True)

    def _rest_write(
        self, tx: _Transaction, fn: Callable[..., T], args: tuple[Any, ...], ingest: bool
    ) -> T:
        tx.flush()
        if not ingest:
            return fn(tx, *args)

        def store(events: Sequence[PreparedEvent], request: Mapping[str, Any]) -> IngestResult:
            return self._ingest(tx, list(events), {}, dict(request))

        store_events: Ingest = store
        return fn(tx, store_events, *args)

    def rest_read(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(connection, *args)`` on the store's thread."""
        return self._submit(lambda: fn(self._db(), *args))

    # -- reads ------------------------------------------------------------------------

    def events_json(
        self,
        type: Optional[str] = None,
        user_id: Optional[str] = None,
        anonymous_id: Optional[str] = None,
        group_id: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> Future[list[bytes]]:
        """Encoded events in arrival order; with ``limit``, the most recent ``limit`` ones."""
        return self._submit(self._events, type, user_id, anonymous_id, group_id, limit)

    def events_with_warnings(
        self,
        type: Optional[str] = None,
        user_id: Optional[str] = None,
        anonymous_id: Optional[str] = None,
        group_id: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> Future[list[tuple[bytes, list[dict[str, str]]]]]:
        """Like ``events_json``, only the events that break a rule, each with its warnings."""
        return self._submit(
            self._events_with_warnings, type, user_id, anonymous_id, group_id, limit
        )

    def _events(
        self,
        type: Optional[str],
        user_id: Optional[str],
        anonymous_id: Optional[str],
        group_id: Optional[str],
        limit: Optional[int],
    ) -> list[bytes]:
        rows = self._event_rows(type, user_id, anonymous_id, group_id, limit, False)
        return [bytes(row[0]) for row in rows]

    def _events_with_warnings(
        self,
        type: Optional[str],
        user_id: Optional[str],
        anonymous_id: Optional[str],
        group_id: Optional[str],
        limit: Optional[int],
    ) -> list[tuple[bytes, list[dict[str, str]]]]:
        rows = self._event_rows(type, user_id, anonymous_id, group_id, limit, True)
        return [(bytes(row[0]), orjson.loads(row[1])) for row in rows]

    def _event_rows(
        self,
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
        rows = self._db().execute(sql, params).fetchall()
        rows.reverse()
        return rows

    # -- the inspector's reads --------------------------------------------------------

    def inspector_events(
        self,
        filters: Mapping[str, str],
        before: Optional[int] = None,
        after: Optional[int] = None,
        limit: int = 100,
    ) -> Future[dict[str, Any]]:
        """One page of event summaries, newest first, matching ``filters`` (see
        ``INSPECTOR_FILTERS``), with ``seq`` below ``before`` or above ``after``.

        Answers ``{"events": [...], "matched": n, "latest": seq}``: ``matched`` counts
        every matching event (above ``after`` when given, so a live update counts only
        what is new) and ``latest`` is the newest ``seq`` stored.
        """
        return self._submit(self._inspector_events, dict(filters), before, after, limit)

    def _inspector_events(
        self,
        filters: dict[str, str],
        before: Optional[int],
        after: Optional[int],
        limit: int,
    ) -> dict[str, Any]:
        conn = self._db()
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

    def event_detail(self, seq: int) -> Future[Optional[dict[str, Any]]]:
        """``{"seq", "event", "warnings", "request", "duplicates": [...]}`` or None."""
        return self._submit(self._event_detail, seq)

    def _event_detail(self, seq: int) -> Optional[dict[str, Any]]:
        conn = self._db()
        row = conn.execute(
            f"SELECT {_SUMMARY_COLUMNS}, body, request_id, received_type FROM events WHERE seq = ?",
            (seq,),
        ).fetchone()
        if row is None:
            return None
        summary = _summary(row)
        body, request_id, received_type = row[-3:]
        duplicates = [
            {"receivedAt": at, "request": self._request(conn, rid)}
            for at, rid in conn.execute(
                "SELECT received_at, request_id FROM receipts WHERE message_id = ? ORDER BY rowid",
                (summary["messageId"],),
            )
        ]
        return {
            **summary,
            "receivedType": received_type,
            "event": orjson.loads(body),
            "request": self._request(conn, request_id),
            "duplicates": duplicates,
        }

    @staticmethod
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

    def profile(
        self, kind: str, id: str, events_limit: int = 50
    ) -> Future[Optional[dict[str, Any]]]:
        """A user (``kind="user"``) or account with its trait history and recent events:
        the ``user``/``account`` answer plus ``"history"`` (every change, oldest first:
        ``trait``, ``value``, ``deleted``, ``messageId``, ``type``, ``timestamp``,
        ``receivedAt``) and ``"recent"`` (event summaries, newest first)."""
        if kind not in ("user", "account"):
            raise ValueError(f"kind must be 'user' or 'account', got {kind!r}")
        return self._submit(self._profile, kind, id, events_limit)

    @staticmethod
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

    def _profile(self, kind: str, id: str, events_limit: int) -> Optional[dict[str, Any]]:
        base = self._user(id) if kind == "user" else self._account(id)
        if base is None:
            return None
        conn = self._db()
        history = self._trait_history(conn, kind, id)
        column = "profile_id" if kind == "user" else "group_id"
        # ``column`` is one of two constants.
        recent = conn.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM events WHERE {column} = ? ORDER BY seq DESC LIMIT ?",
            (id, max(0, events_limit)),
        ).fetchall()
        return {**base, "history": history, "recent": [_summary(r) for r in recent]}

    def user(self, user_id: str) -> Future[Optional[dict[str, Any]]]:
        """``{"id", "traits", "accounts", "notGrouped", "events", "identified", "aliases",
        "firstSeen", "lastSeen", "firstReceived", "lastReceived"}`` or None: ``accounts``
        are those a group call linked the user to, ``notGrouped`` those it acted in
        (``context.groupId``) without one."""
        return self._submit(self._user, user_id)

    def _user(self, user_id: str) -> Optional[dict[str, Any]]:
        conn = self._db()
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
        events = self._event_count(conn, "profile_events", user_id)
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

    def account(self, account_id: str) -> Future[Optional[dict[str, Any]]]:
        """``{"id", "traits", "members", "notGrouped", "events", "firstSeen", ...}`` or
        None: ``members`` were linked by a group call, ``notGrouped`` users only acted in
        the account's context."""
        return self._submit(self._account, account_id)

    def _account(self, account_id: str) -> Optional[dict[str, Any]]:
        conn = self._db()
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
        events = self._event_count(conn, "account_events", account_id)
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

    @staticmethod
    def _event_count(conn: sqlite3.Connection, table: str, id: str) -> int:
        # ``table`` is one of two constants (profile_events, account_events).
        row = conn.execute(f"SELECT n FROM {table} WHERE id = ?", (id,)).fetchone()
        return int(row[0]) if row is not None else 0

    def message_ids(self) -> Future[set[str]]:
        """The distinct messageIds received (ids the collector made up are left out)."""
        return self._submit(self._message_ids)

    def _message_ids(self) -> set[str]:
        rows = self._db().execute("SELECT message_id FROM events WHERE generated_id = 0")
        return {r[0] for r in rows}

    def stats(self) -> Future[dict[str, Any]]:
        return self._submit(self._stats)

    def _stats(self) -> dict[str, Any]:
        conn = self._db()
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
