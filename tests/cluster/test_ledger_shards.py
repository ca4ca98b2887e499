"""The ledger per shard on a real cluster: one worker per master posts exactly its shard's
events, together exactly once; reconcile across the cluster (and per shard) finds no drift;
a worker that stops stalls its shard only."""

from __future__ import annotations

import asyncio
import random

from creditgate.ledger import reconcile
from creditgate.limits import cluster as limits_cluster
from creditgate.limits import keys
from tests.cluster.test_cluster_runner import customers_by_master
from tests.conftest import PARTITIONS
from tests.ledger.conftest import dsn_of
from tests.ledger.support import Traffic, assert_posted_exactly_once, nonzero
from tests.ledger.test_reconcile_cli import run_cli


async def mix(traffic: Traffic, customers: list[str], seed: int, operations: int) -> None:
    rng = random.Random(seed)
    for _ in range(operations):
        open_ = traffic.open_holds()
        kind = rng.choices(["authorize", "capture", "void"], [5, 3, 2])[0] if open_ \
            else "authorize"
        if kind == "authorize":
            await traffic.authorize(rng.choice(customers), rng.randrange(100, 20_000),
                                    channel=rng.choice(["pos", "qr_scan"]),
                                    merchant_id=rng.choice(["m-1", "m-2"]))
        elif kind == "capture":
            hold_id = rng.choice(open_)
            hold = traffic.holds[hold_id]
            await traffic.capture(hold_id, rng.randint(1, hold.amount - hold.captured),
                                  final=rng.random() < 0.5)
        else:
            await traffic.void(rng.choice(open_))


async def shard_traffic(redis, gateway, admin, auth):
    shards = await limits_cluster.shards(redis, PARTITIONS)
    by_master = customers_by_master(shards, per_master=2)
    traffic = Traffic(gateway, admin, auth)
    customers = [customer for ids in by_master.values() for customer in ids]
    for customer in customers:
        await traffic.put(customer)
    await mix(traffic, customers, seed=5, operations=30)
    return shards, by_master, traffic


async def test_one_worker_per_master_posts_each_event_once(redis, gateway, admin, auth,
                                                           store, make_worker):
    shards, by_master, traffic = await shard_traffic(redis, gateway, admin, auth)
    workers = {master: make_worker(f"w-{index}", shard=master)
               for index, master in enumerate(shards)}
    for master, worker in workers.items():
        await worker.start()
        assert worker.partitions == shards[master]
    await asyncio.gather(*(worker.drain() for worker in workers.values()))
    # Each posted its own shard's events: those of its customers, and only those.
    for master, worker in workers.items():
        mine = [hold for hold in traffic.holds.values() if hold.customer_id in by_master[master]]
        assert worker.posted >= len(mine) + len(by_master[master]) > 0
    assert sum(worker.posted for worker in workers.values()) == traffic.events
    assert sum(worker.duplicates for worker in workers.values()) == 0
    await assert_posted_exactly_once(redis, store)
    assert nonzero(await reconcile.ledger_levels(store)) == traffic.levels()
    report = await reconcile.reconcile(redis, store, PARTITIONS)
    assert report.ok and report.customers == sum(len(ids) for ids in by_master.values())
    for master in shards:
        only = await limits_cluster.shard_partitions(redis, master, PARTITIONS)
        assert (await reconcile.reconcile(redis, store, PARTITIONS, only)).ok

    # `creditgate reconcile` across the cluster, and per shard, exits 0.
    dsn, schema = dsn_of(store)
    url = gateway.config.redis_url
    code, output = await run_cli("reconcile", "--redis-url", url, "--ledger-dsn", dsn,
                                 "--schema", schema, "--partitions", str(PARTITIONS))
    assert code == 0, output
    code, output = await run_cli("reconcile", "--redis-url", url, "--ledger-dsn", dsn,
                                 "--schema", schema, "--partitions", str(PARTITIONS),
                                 "--shard", next(iter(shards)))
    assert code == 0, output


async def test_a_stopped_worker_stalls_only_its_shard(redis, gateway, admin, auth, store,
                                                      make_worker):
    shards, by_master, traffic = await shard_traffic(redis, gateway, admin, auth)
    masters = list(shards)
    workers = {master: make_worker(f"w-{index}", shard=master)
               for index, master in enumerate(masters)}
    stopping = {master: asyncio.Event() for master in masters}
    runs = {master: asyncio.create_task(workers[master].run(stopping[master]))
            for master in masters}
    stopped = masters[0]
    runs[stopped].cancel()  # as killed: nothing of its shard is read any more
    await asyncio.gather(runs[stopped], return_exceptions=True)
    await mix(traffic, [c for ids in by_master.values() for c in ids], seed=7, operations=20)

    async def undrained() -> set[int]:
        streams = await reconcile.undrained_streams(redis, PARTITIONS)
        return {partition for partition in range(PARTITIONS)
                if keys.outbox(keys.base(partition)) in streams}

    for _ in range(100):  # the running workers catch up with their shards
        if await undrained() <= set(shards[stopped]):
            break
        await asyncio.sleep(0.05)
    stalled = await undrained()
    assert stalled and stalled <= set(shards[stopped])
    # A new worker for the stalled shard (the same consumer name) posts what waited.
    replacement = make_worker("w-0", shard=stopped)
    await replacement.start()
    await replacement.drain()
    for master in masters[1:]:
        stopping[master].set()
    await asyncio.gather(*(runs[master] for master in masters[1:]))
    await assert_posted_exactly_once(redis, store)
    assert (await reconcile.reconcile(redis, store, PARTITIONS)).ok
