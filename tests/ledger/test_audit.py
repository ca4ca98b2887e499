"""Who made each change, in the ledger (SQLite and PostgreSQL): every posted event keeps the
outbox event's caller, a ledger written before callers existed gets the column at start, and
`creditgate journal` shows who captured, refunded, raised a limit or repaid."""

from __future__ import annotations

import argparse
import asyncio
import tomllib
import uuid

import pytest

from creditgate.gateway.sweeper import SWEEPER
from creditgate.ledger import books, cli
from creditgate.ledger import store as store_module
from creditgate.ledger.store import PostgresStore, open_store
from tests.conftest import PARTITIONS, SUITE_CALLER, SUITE_CALLERS
from tests.ledger.conftest import PG_DSN, drop_schema
from tests.ledger.support import STREAMS
from tests.ledger.test_lifecycle_ledger import mixed_run

AT = 1_800_000_000_000
POSTED = AT + 5
NODES = "total,consumer,consumer.scan_pay,consumer.scan_pay.pos"
# The columns a ledger_events row had before 0003 (what the previous release inserts).
OLD_COLUMNS = store_module.EVENT_COLUMNS[:store_module.EVENT_COLUMNS.index("caller")]


def booking(kind: str, event_id: str, caller: str | None, **extra: str) -> books.Booking:
    fields = {"type": kind, "event_id": event_id, "customer_id": "c1", "hold_id": "003-H",
              "product_id": "scan_pay", "merchant_id": "m9", "currency": "CNY",
              "nodes": NODES, "at_ms": str(AT), **extra}
    if kind in ("limit_raised", "repaid"):
        del fields["hold_id"], fields["product_id"], fields["merchant_id"], fields["currency"]
    if caller is not None:
        fields["caller"] = caller
    return books.book("cg:{p:003}:outbox 1800000000000-0", fields, POSTED)


BOOKINGS = [
    booking("authorized", "003-H:1", "T-1", amount_minor="5000"),
    booking("captured", "003-H:2", "T-1", amount_minor="5000", released_minor="0"),
    booking("refunded", "003-H:3", "T-2", amount_minor="1000", restored_minor="1000",
            overpaid_minor="0"),
    booking("limit_raised", "c:c1:2", "BO-1", node="total", raise_minor="5000",
            expires_at_ms=str(AT + 1)),
    booking("repaid", "c:c1:3", "B-1", amount_minor="4000"),
    booking("expired", "003-K:2", None, released_minor="10", hold_id="003-K"),
]


async def post(target, bookings) -> set[str]:
    return await target.post([b.event for b in bookings],
                             [line for b in bookings for line in b.lines], [])


async def test_every_posted_event_keeps_its_caller(store):
    assert await post(store, BOOKINGS) == {b.event[0] for b in BOOKINGS}
    rows = dict(await store.fetch("SELECT event_id, caller FROM ledger_events"))
    assert rows == {"003-H:1": "T-1", "003-H:2": "T-1", "003-H:3": "T-2", "c:c1:2": "BO-1",
                    "c:c1:3": "B-1", "003-K:2": ""}
    lines = await cli.journal(store, "c1", 10)
    # Newest first by posting time, then by event id: one line per journal line, and one for
    # an event that books none (the raise).
    who = [(line.split()[0], line.split()[1], line.split()[5]) for line in lines]
    assert ("003-H:2", "captured", "T-1") in who
    assert ("003-H:3", "refunded", "T-2") in who
    assert ("c:c1:2", "limit_raised", "BO-1") in who
    assert ("c:c1:3", "repaid", "B-1") in who
    assert ("003-K:2", "expired", "-") in who
    assert all(" by " in line for line in lines)


async def fresh_like(store, tmp_path):
    """(an empty ledger on the backend of `store`, its PostgreSQL schema or None)."""
    if isinstance(store, PostgresStore):
        schema = "t_" + uuid.uuid4().hex
        return open_store(PG_DSN, schema), schema
    return open_store("sqlite:///" + str(tmp_path / "old.sqlite3")), None


async def test_a_ledger_of_the_previous_release_gets_the_caller_column_at_start(
        store, tmp_path, monkeypatch):
    old, schema = await fresh_like(store, tmp_path)
    try:
        every = store_module.migrations()
        monkeypatch.setattr(store_module, "migrations",
                            lambda: [m for m in every if m[0] < 3])
        assert await old.migrate() == [1, 2]
        insert_old = (f"INSERT INTO ledger_events ({', '.join(OLD_COLUMNS)}) VALUES ("
                      + ", ".join(f"${i}" for i in range(1, len(OLD_COLUMNS) + 1)) + ")")
        await old.execute(insert_old, *BOOKINGS[0].event[:len(OLD_COLUMNS)])
        monkeypatch.setattr(store_module, "migrations", lambda: every)
        assert await old.migrate() == [3, 4]  # what a worker does when it starts
        await post(old, BOOKINGS[1:2])
        # The previous release's worker, still running during the upgrade, posts as before.
        await old.execute(insert_old, *BOOKINGS[2].event[:len(OLD_COLUMNS)])
        rows = dict(await old.fetch("SELECT event_id, caller FROM ledger_events"))
        assert rows == {"003-H:1": "", "003-H:2": "T-1", "003-H:3": ""}
    finally:
        await old.close()
        if schema:
            await drop_schema(schema)


def test_the_journal_command_prints_who(tmp_path, capsys, redis_server):
    dsn = "sqlite:///" + str(tmp_path / "journal.sqlite3")

    async def prepare():
        target = open_store(dsn)
        try:
            await target.migrate()
            await post(target, BOOKINGS)
        finally:
            await target.close()

    asyncio.run(prepare())
    args = argparse.Namespace(command="journal", ledger_dsn=dsn, schema="public",
                              redis_url=redis_server.url, customer="c1", limit=10,
                              partitions=PARTITIONS)
    assert cli.command(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert any("limit_raised" in line and "by BO-1" in line for line in printed)
    assert any("captured" in line and "by T-1" in line for line in printed)
    assert any("repaid" in line and "by B-1" in line for line in printed)


async def test_a_mixed_run_names_its_caller_on_every_event_in_redis_and_the_ledger(
        redis, gateway, admin, auth, store, make_worker):
    suite = SUITE_CALLER
    assert suite in tomllib.loads(SUITE_CALLERS.read_text())["callers"]
    await mixed_run(gateway, admin, auth)
    in_redis = [{k.decode(): v.decode() for k, v in fields.items()}
                for stream in STREAMS for _, fields in await redis.xrange(stream)]
    assert in_redis and all(
        event["caller"] == (SWEEPER if event["type"] == "expired" else suite)
        for event in in_redis), {(event["type"], event.get("caller")) for event in in_redis}
    worker = make_worker("w1")
    await worker.start()
    await worker.drain()
    posted = await store.fetch("SELECT event_id, type, caller FROM ledger_events")
    assert len(posted) == len(in_redis)
    assert {(kind, caller) for _, kind, caller in posted} == \
        {(kind, SWEEPER if kind == "expired" else suite) for kind in books.EVENT_TYPES}
    for customer_id in ("c-l1", "c-l2"):
        lines = await cli.journal(store, customer_id, 100)
        assert lines and all(f"by {suite}" in line or f"by {SWEEPER}" in line
                             for line in lines)


@pytest.mark.parametrize("caller", ["", "T-0001"])
def test_the_caller_is_read_from_bytes_and_text_alike(caller):
    raw = {"type": "authorized", "event_id": "003-H:1", "customer_id": "c1",
           "hold_id": "003-H", "product_id": "scan_pay", "merchant_id": "m9",
           "currency": "CNY", "nodes": NODES, "at_ms": str(AT), "amount_minor": "5",
           "caller": caller}
    as_bytes = {k.encode(): v.encode() for k, v in raw.items()}
    caller_at = store_module.EVENT_COLUMNS.index("caller")
    assert books.book("e", raw, POSTED).event[caller_at] == books.book(
        "e", as_bytes, POSTED).event[caller_at] \
        == caller
