"""The posting worker on both backends: real traffic through the gateway is posted exactly
once, every journal balances, reconcile is clean; migrations and trimming are safe."""

from __future__ import annotations

import asyncio
import time
import uuid

from creditgate.ledger import reconcile
from creditgate.ledger.store import PostgresStore, open_store
from creditgate.limits import keys
from tests.conftest import PARTITIONS
from tests.ledger.conftest import PG_DSN, drop_schema
from tests.ledger.support import (
    STREAMS,
    Traffic,
    account_balances,
    assert_posted_exactly_once,
    group_name,
    ledger_events,
    nonzero,
    outbox_length,
)
from tests.support import without_generation


async def drive(traffic: Traffic) -> dict[str, str]:
    """A little of everything; returns named hold ids."""
    await traffic.put("c-w1")
    await traffic.put("c-w2", timezone="America/New_York")
    h1 = (await traffic.authorize("c-w1", 10_000)).hold_id
    await traffic.capture(h1, 4_000)
    await traffic.capture(h1, 3_000, final=True)  # releases 3,000
    h2 = (await traffic.authorize("c-w1", 5_000, channel="qr_scan")).hold_id
    await traffic.void(h2)
    h3 = (await traffic.authorize("c-w2", 7_000, merchant_id="m-2")).hold_id
    await traffic.capture(h3, 2_000)
    await traffic.void(h3)  # releases 5,000; 2,000 stays used
    h4 = (await traffic.authorize("c-w2", 8_000)).hold_id
    assert await traffic.expire_all() == 1  # h4
    h5 = (await traffic.authorize("c-w1", 2_500, channel="qr_scan")).hold_id
    return {"h1": h1, "h2": h2, "h3": h3, "h4": h4, "h5": h5}


async def test_traffic_is_posted_exactly_once_and_balances(redis, gateway, admin, auth, store,
                                                           make_worker):
    traffic = Traffic(gateway, admin, auth)
    holds = await drive(traffic)
    assert await outbox_length(redis) == traffic.events == 13
    worker = make_worker("w1")
    await worker.start()  # the group is created at 0: the events written before it count
    await worker.drain()
    assert (worker.posted, worker.duplicates, worker.dead_lettered) == (13, 0, 0)
    await assert_posted_exactly_once(redis, store)

    kinds = dict(await store.fetch("SELECT type, COUNT(*) FROM ledger_events GROUP BY type"))
    assert kinds == {"customer_put": 2, "authorized": 5, "captured": 3, "voided": 2,
                     "expired": 1}
    assert await account_balances(store) == {
        "customer:c-w1:receivable": 7_000,
        "customer:c-w2:receivable": 2_000,
        "merchant:m-1:settlement_payable": -7_000,
        "merchant:m-2:settlement_payable": -2_000,
        "customer:c-w1:open_holds": 2_500,  # h5 only
        "memo:open_holds_contra": -2_500,
    }
    # Each journal says which hold it came from.
    h3_events = await store.fetch("SELECT event_id, type, held_delta_minor, used_delta_minor "
                                  "FROM ledger_events WHERE hold_id = $1 ORDER BY event_id",
                                  holds["h3"])
    h3_events = [(without_generation(event_id), *rest) for event_id, *rest in h3_events]
    assert h3_events == [(f"{holds['h3']}:1", "authorized", 7_000, 0),
                         (f"{holds['h3']}:2", "captured", -2_000, 2_000),
                         (f"{holds['h3']}:3", "voided", -5_000, 0)]
    timezones = dict(await store.fetch("SELECT customer_id, timezone FROM ledger_customers"))
    assert timezones == {"c-w1": "Asia/Shanghai", "c-w2": "America/New_York"}

    # The ledger's levels are the model's, and Redis agrees.
    assert nonzero(await reconcile.ledger_levels(store)) == traffic.levels()
    report = await reconcile.reconcile(redis, store, PARTITIONS)
    assert (report.undrained, report.drifts) == ([], [])
    assert report.ok and report.customers == 2

    # Draining again posts nothing new.
    await worker.drain()
    assert (worker.posted, worker.duplicates) == (13, 0)
    assert len(await ledger_events(store)) == 13

    # New traffic: only it is posted.
    await traffic.capture(holds["h5"], 1_000, final=True)
    report = await reconcile.reconcile(redis, store, PARTITIONS)
    partition = keys.partition_of("c-w1", PARTITIONS)
    assert report.undrained == [keys.outbox(keys.base(partition))]
    await worker.drain()
    assert (worker.posted, worker.duplicates) == (14, 0)
    await assert_posted_exactly_once(redis, store)
    report = await reconcile.reconcile(redis, store, PARTITIONS)
    assert report.ok, report


async def test_migrations_apply_once(store, tmp_path):
    assert await store.migrate() == []
    assert await store.fetch("SELECT version, name FROM schema_migrations ORDER BY version") == [
        (1, "0001_ledger.sql"), (2, "0002_customer_timezones.sql"), (3, "0003_event_caller.sql"),
        (4, "0004_event_catalog_version.sql")]
    fresh = open_store("sqlite:///" + str(tmp_path / "fresh.sqlite3"))
    try:
        assert await fresh.migrate() == [1, 2, 3, 4]
        assert await fresh.migrate() == []
        assert await fresh.fetch("SELECT COUNT(*) FROM bills") == [(0,)]
    finally:
        await fresh.close()


async def test_workers_starting_together_migrate_once(store, tmp_path):
    for attempt in range(10):
        if isinstance(store, PostgresStore):
            schema = f"t_{uuid.uuid4().hex}"
            stores = [open_store(PG_DSN, schema) for _ in range(4)]
        else:
            schema = None
            stores = [open_store(f"sqlite:///{tmp_path}/race{attempt}.sqlite3")
                      for _ in range(4)]
        try:
            results = await asyncio.gather(*(s.migrate() for s in stores),
                                           return_exceptions=True)
        finally:
            for opened in stores:
                await opened.close()
            if schema:
                await drop_schema(schema)
        outcomes = sorted(repr(result) if isinstance(result, list)
                          else f"{type(result).__name__}: {result}" for result in results)
        assert outcomes == ["[1, 2, 3, 4]", "[]", "[]", "[]"], attempt


def authorized(index: int) -> dict[str, str]:
    return {"type": "authorized", "event_id": f"000-T{index:015d}:1", "customer_id": "c-t",
            "hold_id": f"000-T{index:015d}", "product_id": "scan_pay", "merchant_id": "m",
            "currency": "CNY", "nodes": "total", "amount_minor": str(100 + index),
            "at_ms": str(1_800_000_000_000 + index)}


async def test_trim_keeps_pending_and_removes_acknowledged(redis, store, make_worker):
    stream = STREAMS[0]
    worker = make_worker("w1")
    await worker.start()
    ids = [(await redis.xadd(stream, authorized(i))).decode() for i in range(10)]
    entries = await worker._read(">", None)  # delivered, not acknowledged
    assert [e.entry_id for e in entries] == ids
    assert await worker.trim() == 0
    assert [i.decode() for i, _ in await redis.xrange(stream)] == ids

    # Acknowledge 0-2 and 5-9: only 0-2 may go (3 and 4 are pending).
    await worker.process(entries[:3] + entries[5:])
    assert worker.posted == 8
    assert await worker.trim() == 3
    assert [i.decode() for i, _ in await redis.xrange(stream)] == ids[3:]
    pending = await redis.xpending_range(stream, group_name(), min="-", max="+", count=100)
    assert [p["message_id"].decode() for p in pending] == ids[3:5]

    # An entry not yet delivered is kept too.
    late = (await redis.xadd(stream, authorized(10))).decode()
    await worker.process(entries[3:5])
    # Everything delivered is acknowledged: all but the last delivered entry go; `late` stays.
    assert await worker.trim() == 6
    assert [i.decode() for i, _ in await redis.xrange(stream)] == [ids[-1], late]
    await worker.drain()
    assert worker.posted == 11
    assert len(await ledger_events(store)) == 11


async def test_refunds_are_posted_reconciled_and_billed(redis, gateway, admin, auth, store,
                                                      make_worker):
    from creditgate.gateway.pb import creditgate_pb2 as pb
    from creditgate.ledger import bills

    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="c-rb", status=pb.CUSTOMER_STATUS_ACTIVE,
        caps_minor={"total": 10**6, "consumer": 10**6, "consumer.scan_pay": 10**6,
                    "consumer.scan_pay.pos": 10**6}))
    reply = await auth.Authorize(pb.AuthorizeRequest(
        idempotency_key="a", customer_id="c-rb", product_id="scan_pay", channel=pb.CHANNEL_POS,
        merchant_id="m", mcc="5411", amount_minor=9_000, currency="CNY"))
    await auth.Capture(pb.CaptureRequest(idempotency_key="c", hold_id=reply.hold_id,
                                         amount_minor=9_000, final=True))
    await auth.Refund(pb.RefundRequest(idempotency_key="r", hold_id=reply.hold_id,
                                       amount_minor=4_000))
    worker = make_worker("w-refund")
    await worker.start()
    await worker.drain()
    report = await reconcile.reconcile(redis, store, PARTITIONS)
    assert report.ok, report
    cycle = time.strftime("%Y-%m", time.gmtime(reply.decided_at_ms / 1000 + 8 * 3600))
    closed = [b for b in await bills.close(store, cycle) if b.customer_id == "c-rb"]
    assert [(b.purchases_minor, b.refunds_minor, b.total_minor) for b in closed] == [
        (9_000, 4_000, 5_000)]
    assert [line[1] for line in closed[0].lines] == ["purchase", "refund"]
