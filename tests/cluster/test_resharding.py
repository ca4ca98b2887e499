"""Resharding under load, on a cluster of the test's own: a partition's slot moves to another
master (CLUSTER SETSLOT ... IMPORTING/MIGRATING, MIGRATE, SETSLOT ... NODE) while clients
authorize for its customers. No call fails (the runner follows ASK and MOVED and retries
TRYAGAIN within the call's time), no hold is lost or doubled, the outbox stream moves with its
customers, and the ledger posts each event once."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import redis.asyncio as aioredis

from creditgate.limits import cluster as limits_cluster
from creditgate.limits import keys
from tests.cluster.load import Load, conservation, lost_holds
from tests.conftest import PARTITIONS, served_gateway
from tests.ledger.support import assert_posted_exactly_once

MIGRATE_TIMEOUT_MS = 5000


def customers_of(partition: int, count: int) -> list[str]:
    found, number = [], 0
    while len(found) < count:
        customer = f"RS-{number}"
        number += 1
        if keys.partition_of(customer, PARTITIONS) == partition:
            found.append(customer)
    return found


async def node_id(client: aioredis.Redis) -> str:
    return (await client.execute_command("CLUSTER MYID")).decode()


async def move_slot(slot: int, source: aioredis.Redis, target: aioredis.Redis,
                    target_port: int, masters: list[aioredis.Redis]) -> float:
    """Move one slot with its keys, as redis-cli --cluster reshard does; the seconds it took."""
    started = time.monotonic()
    source_id, target_id = await node_id(source), await node_id(target)
    await target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
    await source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
    while names := await source.execute_command("CLUSTER GETKEYSINSLOT", slot, 10_000):
        await source.execute_command("MIGRATE", "127.0.0.1", target_port, "", 0,
                                     MIGRATE_TIMEOUT_MS, "KEYS", *names)
        await asyncio.sleep(0.02)  # calls keep flowing between the batches of keys
    for client in (target, source, *masters):
        await client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
    return time.monotonic() - started


async def test_a_partition_moves_under_load(own_cluster, store, make_worker):
    partition = 3
    slot = limits_cluster.partition_slot(partition)
    source_node = own_cluster.master_of_slot(slot)
    target_node = next(node for node in own_cluster.masters() if node is not source_node)
    moving = customers_of(partition, 6)
    async with served_gateway(SimpleNamespace(url=own_cluster.url)) as gateway:
        others = [f"RS-other-{n}" for n in range(12)
                  if keys.partition_of(f"RS-other-{n}", PARTITIONS) != partition]
        load = Load(gateway.port, moving + others)
        await load.put_customers()
        stop = asyncio.Event()
        running = asyncio.create_task(load.run(stop))
        await asyncio.sleep(0.5)
        clients = {node.port: aioredis.Redis(port=node.port) for node in own_cluster.masters()}
        try:
            move_s = await move_slot(slot, clients[source_node.port],
                                     clients[target_node.port], target_node.port,
                                     list(clients.values()))
        finally:
            for client in clients.values():
                await client.aclose()
        await asyncio.sleep(1.0)
        stop.set()
        await running
        errors = dict(gateway.runner.redirects)  # answers followed, by kind

    failed = [answer for answer in load.answers if answer.code is not None]
    assert failed == [], f"{len(failed)} calls failed during a move of {move_s:.2f} s"
    assert load.of(moving) and all(a.hold_id or a.declined for a in load.of(moving))
    own_cluster.wait_healthy()
    assert own_cluster.master_of_slot(slot).port == target_node.port
    client = limits_cluster.connect(own_cluster.url)
    try:
        assert await lost_holds(client, load.answers) == []
        assert await conservation(client, load.customers) == {}
        # No hold doubled: each customer has exactly the holds of its approved answers.
        for customer in load.customers:
            base = keys.customer_base(customer, PARTITIONS)
            held = {hold.decode() for hold in
                    await client.zrange(keys.customer_holds(base, customer), 0, -1)}
            assert held == {a.hold_id for a in load.of([customer]) if a.hold_id}
        # The partition's outbox stream is on the target now, with every event.
        outbox = keys.outbox(keys.base(partition))
        assert client.get_node_from_key(outbox).port == target_node.port
        assert await client.xlen(outbox) > 0
    finally:
        await client.aclose()
    worker = make_worker("w-reshard")
    worker.redis = limits_cluster.connect(own_cluster.url)
    await worker.start()
    await worker.drain()
    await assert_posted_exactly_once(worker.redis, store)
    print(f"\nresharding: slot {slot} moved in {move_s:.2f} s under load; "
          f"{len(load.answers)} calls, none failed; redirects {errors}")
