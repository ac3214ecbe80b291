"""The store's write side: the group-commit transaction and what each write does in it.

Writes queued together are committed together (group commit): a commit costs far more
than the rows of a typical batch, and the SDK sends several requests at once. A future is
resolved only after its transaction committed. A ``Transaction`` gathers the rows of every
write of its group in memory and writes them in a few large statements.
"""

from __future__ import annotations

import itertools
import sqlite3
from datetime import datetime, timezone
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
)

import orjson

from journy_analytics.collector._ingest import PreparedEvent
from journy_analytics.collector._store.schema import TABLES

if TYPE_CHECKING:
    from journy_analytics.collector._store.database_thread import Job
    from journy_analytics.collector._store.rest import Ingest

__all__ = [
    "IngestResult",
    "Transaction",
    "Writer",
    "merge_traits",
    "merge_traits_changes",
]

T = TypeVar("T")

# Where an event row (a list, see Writer.ingest) keeps its warnings until written.
_WARNINGS = 13


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


class Transaction:
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
        _bump(conn, self.counters)


def _bump(conn: sqlite3.Connection, counters: Mapping[str, int]) -> None:
    _insert_rows(
        conn,
        "INSERT INTO counters (name, n)",
        [(name, n) for name, n in counters.items() if n],
        "ON CONFLICT(name) DO UPDATE SET n = n + excluded.n",
    )


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


class Writer:
    """What lives across write transactions: the profile cache and the next request id.
    Only the database thread calls it, each write inside a transaction."""

    def __init__(self) -> None:
        self._cache = _Cache()
        self._next_request_id = 1  # set from the database when it opens

    def opened(self, conn: sqlite3.Connection) -> None:
        (last,) = conn.execute("SELECT MAX(id) FROM requests").fetchone()
        self._next_request_id = (last or 0) + 1

    def commit(self, conn: sqlite3.Connection, group: list[Job]) -> None:
        """Run ``group``'s jobs in one transaction; each future resolves once it committed."""
        try:
            self._cache.trim()
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            for job in group:
                job.fail(exc)
            return
        try:
            tx = Transaction(conn, self._cache)
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
                self.commit(conn, [job])
            return
        for job, result in zip(group, results):
            job.succeed(result)

    def ingest(
        self,
        tx: Transaction,
        events: list[PreparedEvent],
        counters: dict[str, int],
        request: Optional[dict[str, Any]],
    ) -> IngestResult:
        # A copy: a failed group commit runs this again, and must not count twice.
        counters = dict(counters)
        seen = tx.message_ids
        stored = _stored_ids(tx.conn, [ev.message_id for ev in events if ev.message_id not in seen])
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

    def count(self, tx: Transaction, counters: dict[str, int]) -> None:
        tx.bump(counters)

    def reset(self, tx: Transaction) -> None:
        # What earlier requests of this transaction gathered goes in first, then goes.
        tx.flush()
        conn = tx.conn
        # Table names cannot be SQL parameters; these come from a constant tuple.
        for table in TABLES:
            conn.execute(f"DELETE FROM {table}")
        self._cache.clear()

    def rest_write(
        self, tx: Transaction, fn: Callable[..., T], args: tuple[Any, ...], ingest: bool
    ) -> T:
        tx.flush()
        if not ingest:
            return fn(tx, *args)

        def store(events: Sequence[PreparedEvent], request: Mapping[str, Any]) -> IngestResult:
            return self.ingest(tx, list(events), {}, dict(request))

        store_events: Ingest = store
        return fn(tx, store_events, *args)
