"""Two workers racing on the same pending entries still post each event exactly once."""

from __future__ import annotations

import asyncio

import pytest

from creditgate.ledger import reconcile
from tests.conftest import PARTITIONS
from tests.ledger.support import Traffic, assert_posted_exactly_once, outbox


async def traffic_mix(gateway, admin, auth) -> int:
    traffic = Traffic(gateway, admin, auth)
    for index in range(6):
        customer = f"c-race-{index}"
        await traffic.put(customer)
        for amount in (1_000, 2_000):
            hold = (await traffic.authorize(customer, amount + index)).hold_id
            await traffic.capture(hold, amount // 2, final=bool(index % 2))
    return traffic.events


@pytest.mark.parametrize("mode", ["claim concurrently", "both hold the same entries"])
async def test_two_workers_racing_post_once(redis, gateway, admin, auth, store, make_worker,
                                            mode):
    total = await traffic_mix(gateway, admin, auth)
    a = make_worker("a", claim_idle_ms=0, own_store=True)
    b = make_worker("b", claim_idle_ms=0, own_store=True)
    await a.start()
    await b.start()
    # A reads everything and "crashes" before processing: all of it is pending at A.
    assert len(await a._read(">", None)) == total

    if mode == "claim concurrently":
        async def claim_and_process(worker):
            await worker.process(await worker._claim())

        await asyncio.gather(claim_and_process(a), claim_and_process(b))
    else:
        mine = await a._claim()
        theirs = await b._claim()  # idle 0: B takes all of them over from A
        assert len(mine) == len(theirs) == total
        await asyncio.gather(a.process(mine), b.process(theirs))
        assert a.duplicates + b.duplicates == total
    await asyncio.gather(a.drain(), b.drain())

    assert a.posted + b.posted == total == len(await outbox(redis))
    assert a.dead_lettered == b.dead_lettered == 0
    await assert_posted_exactly_once(redis, store)
    report = await reconcile.reconcile(redis, store, PARTITIONS)
    assert report.ok, report


async def test_claiming_walks_a_long_pending_list(redis, store, make_worker):
    """XAUTOCLAIM takes a bounded step per stream; successive claims resume at its cursor,
    so every entry another consumer left pending is reached, not only the list's head."""
    from creditgate.limits import keys

    crashed = make_worker("w-crashed")
    await crashed.start()
    stream = keys.outbox(keys.base(0))
    ids = [await redis.xadd(stream, {"type": "customer_put", "event_id": f"c:walk:{i}",
                                     "customer_id": "walk", "status": "active",
                                     "timezone": "UTC", "at_ms": str(1_000 + i)})
           for i in range(10)]
    assert len(await crashed._read(">", None)) == 10  # delivered, never acknowledged
    rescuer = make_worker("w-rescuer")
    rescuer.count_per_stream = 2
    seen = []
    for _ in range(5):
        seen += [entry.entry_id for entry in await rescuer._claim() if entry.stream == stream]
    assert sorted(seen) == sorted(i.decode() for i in ids)
