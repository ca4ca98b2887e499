"""The ledger's SQL storage: PostgreSQL (asyncpg) in production, SQLite as the embedded
default. One small interface, the same SQL text for both (written with $1 placeholders, which
SQLite reads as numbered parameters ?1).

    open_store("postgresql://user@host/db", schema="ledger")
    open_store("sqlite:///var/ledger.sqlite3")
"""

from __future__ import annotations

import asyncio
import importlib.resources
import re
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, Protocol

_PLACEHOLDER = re.compile(r"\$(\d+)")
_MIGRATION_LOCK = 0x63726564  # pg advisory lock key taken while creating schema and tables
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")


EVENT_COLUMNS = ("event_id", "stream_entry", "type", "customer_id", "hold_id", "product_id",
                 "merchant_id", "currency", "nodes", "amount_minor", "held_delta_minor",
                 "used_delta_minor", "at_ms", "posted_at_ms", "caller", "catalog_version")
INSERT_EVENT = (f"INSERT INTO ledger_events ({', '.join(EVENT_COLUMNS)}) VALUES ("
                + ", ".join(f"${i}" for i in range(1, len(EVENT_COLUMNS) + 1))
                + ") ON CONFLICT (event_id) DO NOTHING RETURNING event_id")
INSERT_LINE = ("INSERT INTO journal_lines (event_id, line_no, account, debit_minor, "
               "credit_minor) VALUES ($1, $2, $3, $4, $5)")
# PostgreSQL posts a batch by binary COPY into two session-local staging tables (emptied at
# every commit and rollback), then one statement moves it: the events not posted before, and
# the journal lines of exactly those events.
LINE_COLUMNS = ("event_id", "line_no", "account", "debit_minor", "credit_minor")
EVENTS_STAGE, LINES_STAGE = "ledger_events_stage", "journal_lines_stage"
CREATE_STAGES = (
    f"CREATE TEMP TABLE IF NOT EXISTS {EVENTS_STAGE} ON COMMIT DELETE ROWS AS "
    f"SELECT {', '.join(EVENT_COLUMNS)} FROM ledger_events WITH NO DATA; "
    f"CREATE TEMP TABLE IF NOT EXISTS {LINES_STAGE} ON COMMIT DELETE ROWS AS "
    f"SELECT {', '.join(LINE_COLUMNS)} FROM journal_lines WITH NO DATA")
MOVE_STAGED = (
    f"WITH posted AS (INSERT INTO ledger_events ({', '.join(EVENT_COLUMNS)}) "
    f"SELECT {', '.join(EVENT_COLUMNS)} FROM {EVENTS_STAGE} "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id), "
    f"lines AS (INSERT INTO journal_lines ({', '.join(LINE_COLUMNS)}) "
    f"SELECT {', '.join(LINE_COLUMNS)} FROM {LINES_STAGE} "
    "WHERE event_id IN (SELECT event_id FROM posted)) "
    "SELECT event_id FROM posted")
# A customer_put event updates the customer unless a later one was posted first.
UPSERT_CUSTOMER = ("INSERT INTO ledger_customers (customer_id, status, timezone, updated_at_ms) "
                   "VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id) DO UPDATE SET "
                   "status = excluded.status, timezone = excluded.timezone, "
                   "updated_at_ms = excluded.updated_at_ms "
                   "WHERE ledger_customers.updated_at_ms <= excluded.updated_at_ms")


INSERT_TIMEZONE = ("INSERT INTO ledger_customer_timezones (customer_id, since_ms, event_id, "
                   "timezone) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")


def _timezone_row(customer: tuple) -> tuple:
    event_id, customer_id, _status, timezone, at_ms = customer
    return customer_id, at_ms, event_id, timezone


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every file in ledger/migrations, in order."""
    folder = importlib.resources.files("creditgate.ledger").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_")[0]), entry.name, entry.read_text()))
    return sorted(found)


def _statements(sql: str) -> list[str]:
    lines = [line.split("--")[0] for line in sql.splitlines()]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]


class Store(Protocol):
    async def execute(self, query: str, *args: Any) -> None: ...
    async def fetch(self, query: str, *args: Any) -> list[tuple]: ...
    async def post(self, events: Sequence[tuple], lines: Sequence[tuple],
                   customers: Sequence[tuple]) -> set[str]: ...
    async def replace(self, deletes: Sequence[tuple[str, Sequence[Any]]],
                      inserts: Sequence[tuple[str, Sequence[tuple]]]) -> None: ...
    async def migrate(self) -> list[int]: ...
    async def close(self) -> None: ...


class SqliteStore:
    """SQLite through the standard library, one connection used from one worker thread."""

    def __init__(self, path: str):
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self.path, isolation_level=None,
                                         check_same_thread=False, timeout=10.0)
            connection.execute("PRAGMA busy_timeout=10000")  # first: the next ones may wait
            # Switching to WAL does not wait on the busy handler when another connection is
            # switching too (workers starting together); it is retried for a while.
            for attempt in range(100):
                try:
                    connection.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 99:
                        raise
                    time.sleep(0.05)
            connection.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut
            connection.execute("PRAGMA foreign_keys=ON")
            self._connection = connection
        return self._connection

    async def _run(self, function, *args):
        async with self._lock:
            return await asyncio.to_thread(function, *args)

    async def execute(self, query: str, *args: Any) -> None:
        await self._run(lambda: self._connect().execute(_PLACEHOLDER.sub(r"?\1", query), args))

    async def fetch(self, query: str, *args: Any) -> list[tuple]:
        return await self._run(
            lambda: self._connect().execute(_PLACEHOLDER.sub(r"?\1", query), args).fetchall())

    async def post(self, events: Sequence[tuple], lines: Sequence[tuple],
                   customers: Sequence[tuple]) -> set[str]:
        """Insert a batch in one transaction; events already posted are skipped with their
        lines. Returns the event ids posted by this call."""

        def run() -> set[str]:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                posted = set()
                for row in events:
                    if connection.execute(_sqlite(INSERT_EVENT), row).fetchall():
                        posted.add(row[0])
                connection.executemany(_sqlite(INSERT_LINE),
                                       [line for line in lines if line[0] in posted])
                connection.executemany(_sqlite(UPSERT_CUSTOMER),
                                       [c[1:] for c in customers if c[0] in posted])
                connection.executemany(_sqlite(INSERT_TIMEZONE),
                                       [_timezone_row(c) for c in customers if c[0] in posted])
                connection.execute("COMMIT")
                return posted
            except BaseException:
                connection.execute("ROLLBACK")
                raise

        return await self._run(run)

    async def replace(self, deletes: Sequence[tuple[str, Sequence[Any]]],
                      inserts: Sequence[tuple[str, Sequence[tuple]]]) -> None:
        """Delete, then insert rows, in one transaction."""

        def run() -> None:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                for query, args in deletes:
                    connection.execute(_sqlite(query), args)
                for query, rows in inserts:
                    connection.executemany(_sqlite(query), rows)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

        await self._run(run)

    async def migrate(self) -> list[int]:
        def run() -> list[int]:
            connection = self._connect()
            # One writer at a time from the first read on: two workers starting together
            # cannot both see a migration as missing.
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                                   "(version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
                done = {row[0] for row in
                        connection.execute("SELECT version FROM schema_migrations")}
                applied = []
                for version, name, sql in migrations():
                    if version in done:
                        continue
                    for statement in _statements(sql):
                        connection.execute(statement)
                    connection.execute("INSERT INTO schema_migrations VALUES (?, ?)",
                                       (version, name))
                    applied.append(version)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            return applied

        return await self._run(run)

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await self._run(connection.close)


class PostgresStore:
    """PostgreSQL through asyncpg, in a schema of its own (created if missing)."""

    def __init__(self, dsn: str, schema: str = "public"):
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"bad schema name {schema!r}")
        self.dsn, self.schema = dsn, schema
        self._pool = None

    async def _pool_(self):
        if self._pool is None:
            import asyncpg

            async def setup(connection):
                # CREATE ... IF NOT EXISTS races in the catalog when two workers start at
                # once; a transaction-scoped advisory lock makes them take turns.
                async with connection.transaction():
                    await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                    await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')

            bootstrap = await asyncpg.connect(self.dsn)
            try:
                await setup(bootstrap)
            finally:
                await bootstrap.close()
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=4,
                server_settings={"search_path": self.schema})
        return self._pool

    async def execute(self, query: str, *args: Any) -> None:
        pool = await self._pool_()
        await pool.execute(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[tuple]:
        pool = await self._pool_()
        return [tuple(record) for record in await pool.fetch(query, *args)]

    async def post(self, events: Sequence[tuple], lines: Sequence[tuple],
                   customers: Sequence[tuple]) -> set[str]:
        """As SqliteStore.post: the batch is COPYed into the staging tables, then one
        statement inserts the events not posted before and the lines of exactly those."""
        if not events:
            return set()
        pool = await self._pool_()
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(CREATE_STAGES)  # once per session; then a no-op
            await connection.copy_records_to_table(EVENTS_STAGE, records=events,
                                                   columns=EVENT_COLUMNS)
            if lines:
                await connection.copy_records_to_table(LINES_STAGE, records=lines,
                                                       columns=LINE_COLUMNS)
            posted = {r[0] for r in await connection.fetch(MOVE_STAGED)}
            for customer in customers:
                if customer[0] in posted:
                    await connection.execute(UPSERT_CUSTOMER, *customer[1:])
                    await connection.execute(INSERT_TIMEZONE, *_timezone_row(customer))
            return posted

    async def replace(self, deletes: Sequence[tuple[str, Sequence[Any]]],
                      inserts: Sequence[tuple[str, Sequence[tuple]]]) -> None:
        pool = await self._pool_()
        async with pool.acquire() as connection, connection.transaction():
            for query, args in deletes:
                await connection.execute(query, *args)
            for query, rows in inserts:
                if rows:
                    await connection.executemany(query, rows)

    async def migrate(self) -> list[int]:
        pool = await self._pool_()
        # Two workers starting at once: one applies, the other waits and finds it done.
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                                     "(version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
            done = {r[0] for r in await connection.fetch("SELECT version FROM "
                                                         "schema_migrations")}
            applied = []
            for version, name, sql in migrations():
                if version in done:
                    continue
                for statement in _statements(sql):
                    await connection.execute(statement)
                await connection.execute("INSERT INTO schema_migrations VALUES ($1, $2)",
                                         version, name)
                applied.append(version)
        return applied

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


def _sqlite(query: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", query)


def open_store(dsn: str, schema: str = "public") -> SqliteStore | PostgresStore:
    if dsn.startswith("sqlite:///"):
        return SqliteStore(dsn.removeprefix("sqlite:///") or ":memory:")
    if dsn.startswith(("postgresql://", "postgres://")):
        return PostgresStore(dsn, schema)
    raise ValueError("LEDGER_DSN must start with sqlite:/// or postgresql://")
