"""Ledger fixtures: a migrated store on each backend (SQLite file, PostgreSQL schema of its
own, dropped afterwards) and a factory of posting workers on the private Redis."""

from __future__ import annotations

import os
import uuid

import pytest
import pytest_asyncio

from creditgate.ledger.store import PostgresStore, migrations, open_store
from creditgate.ledger.worker import Worker, WorkerConfig
from creditgate.limits import cluster as limits_cluster
from tests.conftest import PARTITIONS

ALL_MIGRATIONS = [version for version, _, _ in migrations()]

PG_DSN = os.environ.get("CREDITGATE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
_pg_state: dict[str, str | None] = {}


async def _pg_unreachable() -> str | None:
    """None if PostgreSQL answers, else why not (asked once per session)."""
    if "error" not in _pg_state:
        import asyncpg

        try:
            connection = await asyncpg.connect(PG_DSN, timeout=5)
            await connection.close()
            _pg_state["error"] = None
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            _pg_state["error"] = f"{type(error).__name__}: {error}"
    return _pg_state["error"]


async def require_postgres() -> None:
    error = await _pg_unreachable()
    if error is None:
        return
    message = f"PostgreSQL at {PG_DSN} is unreachable ({error})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI=true requires it")
    pytest.skip(message)


async def drop_schema(schema: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(PG_DSN)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


def dsn_of(store) -> tuple[str, str]:
    """(ledger DSN, schema) that reach the same ledger as `store`, for another process."""
    if isinstance(store, PostgresStore):
        return store.dsn, store.schema
    return "sqlite:///" + store.path, "public"


def reopen(store):
    """A second, independent connection to the same ledger."""
    dsn, schema = dsn_of(store)
    return open_store(dsn, schema)


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def store(request, tmp_path):
    schema = None
    if request.param == "sqlite":
        opened = open_store("sqlite:///" + str(tmp_path / "ledger.sqlite3"))
    else:
        await require_postgres()
        schema = "t_" + uuid.uuid4().hex
        opened = open_store(PG_DSN, schema=schema)
    try:
        assert await opened.migrate() == ALL_MIGRATIONS
        yield opened
    finally:
        await opened.close()
        if schema:
            await drop_schema(schema)


@pytest_asyncio.fixture
async def make_worker(redis_server, store):
    """make_worker(consumer, claim_idle_ms=0, deliveries_max=3, own_store=False, shard=""): a
    Worker on its own Redis connection (a RedisCluster client on a cluster), posting into
    `store` (or, with own_store, into a second connection to the same ledger)."""
    made: list[tuple[Worker, object]] = []

    def make(consumer: str = "w1", claim_idle_ms: int = 0, deliveries_max: int = 3,
             own_store: bool = False, shard: str = "") -> Worker:
        target = reopen(store) if own_store else store
        worker = Worker(WorkerConfig(partitions=PARTITIONS, claim_idle_ms=claim_idle_ms,
                                     deliveries_max=deliveries_max, consumer=consumer,
                                     shard=shard),
                        redis=limits_cluster.connect(redis_server.url), store=target)
        made.append((worker, target if own_store else None))
        return worker

    yield make
    for worker, own in made:
        await worker.redis.aclose()
        if own is not None:
            await own.close()
