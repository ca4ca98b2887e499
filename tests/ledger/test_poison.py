"""A poison event goes to the dead-letter stream with its reason after N deliveries; the
good events around it flow on."""

from __future__ import annotations

import pytest

from ledger import reconcile
from ledger.worker import GROUP
from limits import keys
from tests.conftest import PARTITIONS
from tests.ledger.support import STREAMS, Traffic, ledger_events, pending

CUSTOMER = "c-poison"
BASE = keys.base(keys.partition_of(CUSTOMER, PARTITIONS))


async def good_outbox(redis, poison_id: str) -> list[tuple[str, str]]:
    return [(fields[b"event_id"].decode(), f"{stream} {entry_id.decode()}")
            for stream in STREAMS for entry_id, fields in await redis.xrange(stream)
            if entry_id.decode() != poison_id]


def poison_fields(kind: str) -> tuple[dict[str, str], str]:
    good = {"type": "authorized", "event_id": "999-POISONPOISONPOIS:1",
            "customer_id": CUSTOMER, "hold_id": "999-POISONPOISONPOIS",
            "product_id": "scan_pay", "merchant_id": "m-1", "currency": "CNY",
            "nodes": "total,consumer", "amount_minor": "100", "at_ms": "1800000000000"}
    if kind == "non-digit amount":
        return {**good, "amount_minor": "abc"}, "field 'amount_minor' is not an amount"
    if kind == "missing event_id":
        del good["event_id"]
        return good, "missing field 'event_id'"
    return {**good, "type": "refunded-twice"}, "unknown event type 'refunded-twice'"


@pytest.mark.parametrize("kind", ["non-digit amount", "missing event_id", "unknown type"])
async def test_poison_is_dead_lettered_and_the_rest_flow_on(redis, gateway, admin, auth, store,
                                                            make_worker, kind):
    traffic = Traffic(gateway, admin, auth)
    await traffic.put(CUSTOMER)
    first = (await traffic.authorize(CUSTOMER, 4_000)).hold_id
    fields, reason = poison_fields(kind)
    poison_id = (await redis.xadd(keys.outbox(BASE), fields)).decode()
    await traffic.capture(first, 4_000)
    await traffic.authorize(CUSTOMER, 1_500, channel="qr_scan")

    worker = make_worker("w1", claim_idle_ms=0, deliveries_max=3)
    await worker.start()
    await worker.process(await worker._read(">", None))  # delivery 1
    # The good events: every outbox entry but the poison (which may lack an event id).
    good = dict(await good_outbox(redis, poison_id))
    for delivery in (2, 3):
        assert await redis.xlen(keys.dead_letter(BASE)) == 0
        pending_entries = await redis.xpending_range(keys.outbox(BASE), GROUP, min="-",
                                                     max="+", count=10)
        assert [(p["message_id"].decode(), p["times_delivered"]) for p in pending_entries] \
            == [(poison_id, delivery - 1)]
        await worker.process(await worker._claim())
    assert worker.dead_lettered == 1
    assert worker.posted == traffic.events == 4

    dead = await redis.xrange(keys.dead_letter(BASE))
    assert len(dead) == 1
    dead_fields = {k.decode(): v.decode() for k, v in dead[0][1].items()}
    assert reason in dead_fields.pop("dead_reason")
    assert dead_fields.pop("dead_entry_id") == poison_id
    assert dead_fields.pop("dead_deliveries") == "3"
    assert dead_fields == fields  # the original, unchanged
    # Acknowledged, not dropped from the outbox, never posted.
    assert await pending(redis) == 0
    assert await redis.xlen(keys.outbox(BASE)) == traffic.events + 1
    posted = await ledger_events(store)
    assert len(posted) == traffic.events
    assert not any(entry.endswith(poison_id) for entry in posted.values())
    assert posted == good
    # Reconcile: Redis never saw the poison (it was XADDed by hand), so the books agree.
    report = await reconcile.reconcile(redis, store, PARTITIONS)
    assert report.ok, report
    await worker.drain()
    assert (worker.posted, worker.dead_lettered) == (4, 1)


async def test_database_outage_does_not_dead_letter_good_events(redis, gateway, admin, auth,
                                                                store, make_worker):
    traffic = Traffic(gateway, admin, auth)
    await traffic.put(CUSTOMER)
    await traffic.authorize(CUSTOMER, 4_000)
    worker = make_worker("w1", claim_idle_ms=60_000, deliveries_max=3)
    await worker.start()
    # The database refuses every write for a while (here: its journal table is away).
    await store.execute("ALTER TABLE journal_lines RENAME TO journal_lines_away")
    try:
        await worker.process(await worker._read(">", None))
        assert await store.fetch("SELECT COUNT(*) FROM ledger_events "
                                 "WHERE type = 'authorized'") == [(0,)]
        await worker.drain()  # what a restart does first: re-read own pending entries
    finally:
        await store.execute("ALTER TABLE journal_lines_away RENAME TO journal_lines")
    await worker.drain()
    dead = await redis.xlen(keys.dead_letter(BASE))
    assert (dead, worker.dead_lettered) == (0, 0)
    assert worker.posted == traffic.events
    assert len(await ledger_events(store)) == traffic.events
