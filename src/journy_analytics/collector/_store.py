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

import queue
import sqlite3
import threading
from concurrent.futures import Future
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, TypeVar

import orjson

from journy_analytics.collector._ingest import PreparedEvent

__all__ = ["IngestResult", "Store"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
    body BLOB NOT NULL
);
-- Only what profile counts need: every index costs each commit, and filtering a local
-- collector's events by type or userId scans fast enough.
CREATE INDEX IF NOT EXISTS events_profile ON events(profile_id);
CREATE INDEX IF NOT EXISTS events_group ON events(group_id);
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
"""

_TABLES = ("events", "users", "accounts", "memberships", "aliases", "counters")


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


class IngestResult:
    """Outcome of one accepted request: events newly stored and duplicates ignored."""

    __slots__ = ("duplicates", "stored")

    def __init__(self, stored: int, duplicates: int) -> None:
        self.stored = stored
        self.duplicates = duplicates


# SQLite builds before 3.32 allow at most 999 parameters in one statement.
_CHUNK = 500


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


class _Profiles:
    """Users, accounts and links touched by one transaction: read in bulk, written once."""

    def __init__(self, conn: sqlite3.Connection, now: str) -> None:
        self._conn = conn
        self._now = now
        self.users: dict[str, list[Any]] = {}  # id -> [identified, traits]
        self.accounts: dict[str, dict[str, Any]] = {}
        self.memberships: dict[tuple[str, str], None] = {}  # ordered set
        self.aliases: dict[str, str] = {}

    def preload(self, user_ids: Iterable[str], account_ids: Iterable[str]) -> None:
        users = sorted(set(user_ids) - self.users.keys())
        for chunk in _chunks(users):
            rows = self._conn.execute(
                "SELECT id, identified, traits FROM users WHERE id IN "
                f"({_placeholders(len(chunk))})",
                list(chunk),
            )
            for uid, identified, traits in rows:
                self.users[uid] = [bool(identified), orjson.loads(traits)]
        accounts = sorted(set(account_ids) - self.accounts.keys())
        for chunk in _chunks(accounts):
            rows = self._conn.execute(
                f"SELECT id, traits FROM accounts WHERE id IN ({_placeholders(len(chunk))})",
                list(chunk),
            )
            for aid, traits in rows:
                self.accounts[aid] = orjson.loads(traits)

    def user(self, user_id: str, identified: bool) -> dict[str, Any]:
        entry = self.users.get(user_id)
        if entry is None:
            entry = self.users[user_id] = [False, {}]
        if identified:
            entry[0] = True
        traits: dict[str, Any] = entry[1]
        return traits

    def account(self, account_id: str) -> dict[str, Any]:
        traits = self.accounts.get(account_id)
        if traits is None:
            traits = self.accounts[account_id] = {}
        return traits

    def membership(self, user_id: str, account_id: str) -> None:
        self.account(account_id)
        self.memberships[(user_id, account_id)] = None

    def write(self) -> None:
        now = self._now
        self._conn.executemany(
            "INSERT INTO users (id, identified, traits, first_seen, last_seen) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "identified = excluded.identified, traits = excluded.traits, "
            "last_seen = excluded.last_seen",
            [
                (uid, int(identified), orjson.dumps(traits).decode(), now, now)
                for uid, (identified, traits) in self.users.items()
            ],
        )
        self._conn.executemany(
            "INSERT INTO accounts (id, traits, first_seen, last_seen) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET traits = excluded.traits, "
            "last_seen = excluded.last_seen",
            [
                (aid, orjson.dumps(traits).decode(), now, now)
                for aid, traits in self.accounts.items()
            ],
        )
        self._conn.executemany(
            "INSERT OR IGNORE INTO memberships (user_id, account_id, first_seen) VALUES (?, ?, ?)",
            [(uid, aid, now) for uid, aid in self.memberships],
        )
        self._conn.executemany(
            "INSERT INTO aliases (previous_id, user_id, first_seen) VALUES (?, ?, ?) "
            "ON CONFLICT(previous_id) DO UPDATE SET user_id = excluded.user_id",
            [(prev, uid, now) for prev, uid in self.aliases.items()],
        )


_MAX_GROUP = 64


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
        self._close_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._serve_jobs, name="journy-collector-db", daemon=True
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
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            for job in group:
                job.fail(exc)
            return
        try:
            results = [job.fn(*job.args) for job in group]
            conn.execute("COMMIT")
        except BaseException as exc:
            conn.execute("ROLLBACK")
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
        conn.executescript(_SCHEMA)
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
        self, events: Sequence[PreparedEvent], counters: Optional[Mapping[str, int]] = None
    ) -> Future[IngestResult]:
        """Store one request's events in one transaction, and bump ``counters`` with it."""
        return self._submit(self._ingest, list(events), dict(counters or {}), write=True)

    def count(self, counters: Mapping[str, int]) -> Future[None]:
        """Add to named counters (``requests``, ``rejected.<code>``, ``faults.<kind>``...)."""
        return self._submit(self._count, dict(counters), write=True)

    def reset(self) -> Future[None]:
        """Delete every event, profile and counter."""
        return self._submit(self._reset, write=True)

    def _ingest(self, events: list[PreparedEvent], counters: dict[str, int]) -> IngestResult:
        # A copy: a failed group commit runs this again, and must not count twice.
        counters = dict(counters)
        conn = self._db()
        now = _now()
        seen = self._stored_ids(conn, [ev.message_id for ev in events])
        fresh: list[PreparedEvent] = []
        for ev in events:
            # At-least-once delivery: a retried event changes nothing the second time.
            if ev.message_id not in seen:
                seen.add(ev.message_id)
                fresh.append(ev)
        conn.executemany(
            "INSERT INTO events (message_id, generated_id, type, received_type, user_id, "
            "anonymous_id, profile_id, group_id, event, name, timestamp, received_at, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    ev.message_id,
                    int(ev.generated_message_id),
                    ev.type,
                    ev.received_type,
                    ev.user_id,
                    ev.anonymous_id,
                    ev.profile_id,
                    ev.group_id,
                    ev.event,
                    ev.name,
                    ev.timestamp,
                    now,
                    ev.body,
                )
                for ev in fresh
            ],
        )
        profiles = _Profiles(conn, now)
        profiles.preload(
            (ev.profile_id for ev in fresh if ev.profile_id is not None),
            (ev.group_id for ev in fresh if ev.group_id is not None),
        )
        for ev in fresh:
            self._apply(profiles, ev)
        profiles.write()
        stored, duplicates = len(fresh), len(events) - len(fresh)
        counters["received"] = counters.get("received", 0) + len(events)
        counters["stored"] = counters.get("stored", 0) + stored
        counters["duplicates"] = counters.get("duplicates", 0) + duplicates
        counters["accepted_requests"] = counters.get("accepted_requests", 0) + 1
        self._bump(conn, counters)
        return IngestResult(stored, duplicates)

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

    @staticmethod
    def _apply(profiles: _Profiles, ev: PreparedEvent) -> None:
        profile_id = ev.profile_id
        if ev.type == "group" and ev.group_id is not None:
            merge_traits(profiles.account(ev.group_id), ev.traits)
            if ev.user_id is None and ev.anonymous_id == ev.group_id:
                # journy.io's way to update an account without any user.
                return
        if profile_id is None:
            return
        user_traits = profiles.user(profile_id, identified=ev.user_id is not None)
        if ev.type == "identify":
            merge_traits(user_traits, ev.traits)
        elif ev.type == "alias" and ev.previous_id is not None:
            profiles.aliases[ev.previous_id] = profile_id
        if ev.group_id is not None:
            # group, and track/page/screen "in the context of" an account.
            profiles.membership(profile_id, ev.group_id)

    def _count(self, counters: dict[str, int]) -> None:
        self._bump(self._db(), counters)

    @staticmethod
    def _bump(conn: sqlite3.Connection, counters: Mapping[str, int]) -> None:
        conn.executemany(
            "INSERT INTO counters (name, n) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET n = n + excluded.n",
            [(name, n) for name, n in counters.items() if n],
        )

    def _reset(self) -> None:
        conn = self._db()
        # Table names cannot be SQL parameters; these come from a constant tuple.
        for table in _TABLES:
            conn.execute(f"DELETE FROM {table}")

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

    def _events(
        self,
        type: Optional[str],
        user_id: Optional[str],
        anonymous_id: Optional[str],
        group_id: Optional[str],
        limit: Optional[int],
    ) -> list[bytes]:
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
        sql = "SELECT body FROM events"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))
        rows = self._db().execute(sql, params).fetchall()
        return [bytes(row[0]) for row in reversed(rows)]

    def user(self, user_id: str) -> Future[Optional[dict[str, Any]]]:
        """``{"id", "traits", "accounts", "events", "identified", "aliases"}`` or None."""
        return self._submit(self._user, user_id)

    def _user(self, user_id: str) -> Optional[dict[str, Any]]:
        conn = self._db()
        row = conn.execute(
            "SELECT identified, traits, first_seen, last_seen FROM users WHERE id = ?",
            (user_id,),
        ).fetchone()
        if row is None:
            return None
        accounts = [
            r[0]
            for r in conn.execute(
                "SELECT account_id FROM memberships WHERE user_id = ? ORDER BY rowid", (user_id,)
            )
        ]
        aliases = [
            r[0]
            for r in conn.execute(
                "SELECT previous_id FROM aliases WHERE user_id = ? ORDER BY rowid", (user_id,)
            )
        ]
        (events,) = conn.execute(
            "SELECT COUNT(*) FROM events WHERE profile_id = ?", (user_id,)
        ).fetchone()
        return {
            "id": user_id,
            "identified": bool(row[0]),
            "traits": orjson.loads(row[1]),
            "accounts": accounts,
            "events": events,
            "aliases": aliases,
            "firstSeen": row[2],
            "lastSeen": row[3],
        }

    def account(self, account_id: str) -> Future[Optional[dict[str, Any]]]:
        """``{"id", "traits", "members", "events"}`` or None."""
        return self._submit(self._account, account_id)

    def _account(self, account_id: str) -> Optional[dict[str, Any]]:
        conn = self._db()
        row = conn.execute(
            "SELECT traits, first_seen, last_seen FROM accounts WHERE id = ?", (account_id,)
        ).fetchone()
        if row is None:
            return None
        members = [
            r[0]
            for r in conn.execute(
                "SELECT user_id FROM memberships WHERE account_id = ? ORDER BY rowid",
                (account_id,),
            )
        ]
        (events,) = conn.execute(
            "SELECT COUNT(*) FROM events WHERE group_id = ?", (account_id,)
        ).fetchone()
        return {
            "id": account_id,
            "traits": orjson.loads(row[0]),
            "members": members,
            "events": events,
            "firstSeen": row[1],
            "lastSeen": row[2],
        }

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
