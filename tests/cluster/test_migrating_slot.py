"""A slot half moved: the runner never runs a script on the importing node after ASK. An
expiry whose declared keys have moved while the customer hash has not would, run there, read
the customer as missing, release the hold's credit on a stray hash and write its `expired`
event (docs/design.md, "A slot in migration"). Instead the call waits for the move and fails
UNAVAILABLE when it does not end in time: nothing is written on either node."""

from __future__ import annotations

import redis.asyncio as aioredis

from creditgate import hotpath
from creditgate.limits import cluster as limits_cluster
from creditgate.limits import keys
from creditgate.limits.client import LimitsClient
from tests.conftest import PARTITIONS
from tests.support import RULES, authorize_request

DAY_MS = 86_400_000
CAPS = {"total": 100_000, "consumer": 100_000, "consumer.scan_pay": 100_000,
        "consumer.scan_pay.pos": 100_000}


async def test_an_expiry_during_a_move_runs_nowhere_and_writes_nothing(own_cluster):
    client_redis = limits_cluster.connect(own_cluster.url)
    runner = limits_cluster.runner_for(client_redis)
    client = LimitsClient(runner, PARTITIONS)
    await runner.load()
    customer = next(f"mig-{i}" for i in range(10_000) if keys.partition_of(f"mig-{i}",
                                                                          PARTITIONS) == 3)
    base, slot = keys.customer_base(customer, PARTITIONS), limits_cluster.partition_slot(3)
    await client.put_customer(customer, "active", "Asia/Shanghai", CAPS)
    planned = hotpath.plan_authorize(authorize_request("mig-1", customer, 40_000), RULES,
                                     PARTITIONS)
    hold_id = (await client.authorize(*planned)).hold_id
    source_node = own_cluster.master_of_slot(slot)
    target_node = next(m for m in own_cluster.masters() if m is not source_node)
    source, target = (aioredis.Redis(port=node.port) for node in (source_node, target_node))
    try:
        await target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING",
                                     await source.execute_command("CLUSTER MYID"))
        await source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING",
                                     await target.execute_command("CLUSTER MYID"))
        moved = [keys.customer_holds(base, customer), keys.due(base), keys.outbox(base),
                 keys.hold(base, hold_id), keys.paths(base)]
        await source.execute_command("MIGRATE", "127.0.0.1", target_node.port, "", 0, 5000,
                                     "KEYS", *moved)
        events_before = await _asking(target, "XLEN", keys.outbox(base))
        late = LimitsClient(runner, PARTITIONS, clock_offset_ms=8 * DAY_MS)  # TTL: 7 days
        failed = None
        try:
            await late.expire(customer)
        except limits_cluster.ShardUnavailable as error:
            failed = error
        assert failed is not None and runner.redirects["ask"] > 0
        # Nothing written: no stray customer on the target, the hold still open, no event.
        assert await _asking(target, "EXISTS", keys.customer(base, customer)) == 0
        state = await _asking(target, "HGET", keys.hold(base, hold_id),
                              keys.HOLD_FIELDS["STATE"])
        assert state == b"open"
        assert await _asking(target, "XLEN", keys.outbox(base)) == events_before
        assert await source.exists(keys.customer(base, customer)) == 1
    finally:
        await runner.close()
        for client_ in (source, target):
            await client_.aclose()


async def _asking(client: aioredis.Redis, *command):
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("ASKING")
    pipe.execute_command(*command)
    return (await pipe.execute())[1]
