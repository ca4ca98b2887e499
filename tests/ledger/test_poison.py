"""A poison event goes to the dead-letter stream with its reason after N deliveries; the
good events around it flow on."""

from __future__ import annotations

import asyncio

import pytest

from creditgate.ledger import reconcile
from creditgate.ledger.worker import GROUP
from creditgate.limits import keys
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
    # Reconcile: Redis never saw the poison (it was XADDed by hand), so the levels agree; the
    # dead letter itself is reported, so the check does not pass until an operator acts.
    report = await reconcile.reconcile(redis, store, PARTITIONS)
    assert (report.undrained, report.drifts) == ([], [])
    assert report.dead == {keys.dead_letter(BASE): 1} and not report.ok
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


async def test_invalid_utf8_is_dead_lettered_not_fatal(redis, store, make_worker):
    """A byte sequence that is not UTF-8 in one event must not stop the worker: that event is
    dead-lettered, its neighbours post."""
    worker = make_worker("w-utf8", claim_idle_ms=0, deliveries_max=2)
    await worker.start()
    stream = keys.outbox(BASE)
    good = {"type": "customer_put", "customer_id": "c-u", "status": "active",
            "timezone": "Asia/Shanghai", "at_ms": "1795600000000"}
    await redis.xadd(stream, {**good, "event_id": "c:c-u:1"})
    bad_id = await redis.xadd(stream, {**good, "event_id": "c:c-u:2", "status": b"\xff\xfe"})
    await redis.xadd(stream, {**good, "event_id": "c:c-u:3"})
    for _ in range(3):
        await worker.drain()
        await worker.process(await worker._claim())
    letters = await redis.xrange(keys.dead_letter(BASE))
    assert [fields[b"dead_entry_id"] for _, fields in letters] == [bad_id]
    assert b"not UTF-8" in letters[0][1][b"dead_reason"]
    assert worker.posted == 2
    assert (await redis.xpending(stream, "ledger"))["pending"] == 0


async def test_two_workers_dead_letter_one_entry_once(redis, store, make_worker):
    a = make_worker("w-a", claim_idle_ms=0, deliveries_max=1)
    b = make_worker("w-b", claim_idle_ms=0, deliveries_max=1)
    await a.start()
    stream = keys.outbox(BASE)
    await redis.xadd(stream, {"type": "authorized", "event_id": "x:1", "customer_id": "c",
                              "at_ms": "1", "amount_minor": "abc"})
    entries = await a._read(">", None)
    claimed = await b._claim()  # the same entry, now also delivered to b
    await asyncio.gather(a.process(entries), b.process(claimed))
    assert await redis.xlen(keys.dead_letter(BASE)) == 1
    assert a.dead_lettered + b.dead_lettered == 1


async def test_a_stalled_worker_resumes_when_its_pending_entries_were_taken_over(
        redis, store, make_worker):
    a = make_worker("w-stall", claim_idle_ms=0)
    b = make_worker("w-rescue", claim_idle_ms=0)
    await a.start()
    await redis.xadd(keys.outbox(BASE), {
        "type": "customer_put", "event_id": "c:c-s:1", "customer_id": "c-s",
        "status": "active", "timezone": "Asia/Shanghai", "at_ms": "1795600000000"})
    assert len(await a._read(">", None)) == 1  # delivered to a, which then lost its store
    a.stalled = True
    await b.process(await b._claim())  # b takes the entry over and posts it
    assert b.posted == 1
    await a._retry_own_pending(asyncio.Event())
    assert a.stalled is False  # nothing of a's is pending: it goes back to reading new ones
