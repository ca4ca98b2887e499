"""The slot-aware runner on a real cluster: a tick's calls go one batch per master, each
call to the master of its partition's slot; MOVED, ASK, TRYAGAIN and NOSCRIPT are followed."""

from __future__ import annotations

import asyncio

import pytest

from creditgate.limits import cluster, keys
from creditgate.limits.client import LimitsClient
from tests.cluster_support import control
from tests.conftest import CUSTOMER_CAPS, PARTITIONS


def customers_by_master(shards: dict[str, list[int]], per_master: int = 2) -> dict[str, list]:
    """Customer ids whose partitions each master serves, `per_master` of each."""
    found: dict[str, list[str]] = {master: [] for master in shards}
    owner = {partition: master for master, parts in shards.items() for partition in parts}
    number = 0
    while any(len(ids) < per_master for ids in found.values()):
        customer = f"CL-{number}"
        number += 1
        ids = found[owner[keys.partition_of(customer, PARTITIONS)]]
        if len(ids) < per_master:
            ids.append(customer)
    return found


async def test_a_tick_is_one_batch_per_master(redis):
    runner = cluster.runner_for(redis)
    client = LimitsClient(runner, PARTITIONS)
    await runner.load()
    shards = await cluster.shards(redis, PARTITIONS)
    assert len(shards) == 3
    by_master = customers_by_master(shards, per_master=3)
    customers = [customer for ids in by_master.values() for customer in ids]
    await asyncio.gather(*(client.put_customer(customer, "active", "Asia/Shanghai",
                                               CUSTOMER_CAPS) for customer in customers))
    before = {name: r.batches_sent for name, r in runner._runners.items()}
    states = await asyncio.gather(*(client.credit(customer) for customer in customers))
    assert [state.customer_id for state in states] == customers
    sent = {name: r.batches_sent - before[name] for name, r in runner._runners.items()}
    assert sent == {master: 1 for master in shards}
    # Each customer's keys live on the master the map names for its partition.
    for master, ids in by_master.items():
        for customer in ids:
            key = keys.customer(keys.customer_base(customer, PARTITIONS), customer)
            node = redis.get_node_from_key(key)
            assert node.name == master
            assert await redis.exists(key)
    await runner.close()


async def test_calls_load_scripts_a_master_lacks(redis):
    """NOSCRIPT (a master that never loaded them, as a newly promoted one) loads and resends."""
    client = LimitsClient(cluster.runner_for(redis), PARTITIONS)
    await redis.script_flush()
    result = await client.put_customer("CL-noscript", "active", "Asia/Shanghai", CUSTOMER_CAPS)
    assert result is not None
    assert (await client.credit("CL-noscript")).customer_id == "CL-noscript"
    await client.runner.close()


def test_cluster_urls():
    url = cluster.ClusterUrl("redis+cluster://u:p%40ss@h1:7000,[::1]:7001/0")
    assert url.seeds == [("h1", 7000), ("::1", 7001)]
    assert (url.username, url.password, url.ssl) == ("u", "p@ss", False)
    assert cluster.ClusterUrl("rediss+cluster://h:1").ssl
    assert cluster.is_cluster_url("redis+cluster://h:1")
    assert not cluster.is_cluster_url("redis://h:1/0")
    from creditgate.gateway.logs import redacted_url

    assert redacted_url("redis+cluster://u:secret@h1:1,h2:2/0") == "redis+cluster://***@h1:1,h2:2/0"
    for bad, message in (("redis+cluster:///0", "at least one node"),
                         ("redis+cluster://h:1/2", "database 0 only"),
                         ("redis+cluster://h", "host:port expected")):
        with pytest.raises(ValueError, match=message):
            cluster.ClusterUrl(bad)


def test_durability_settings():
    assert not cluster.Durability("none")
    wait = cluster.Durability("wait:1")
    assert (wait.replicas, wait.timeout_ms) == (1, 500)
    assert cluster.Durability("wait:2:50").timeout_ms == 50
    for bad in ("wait:0", "wait:x", "sync", "wait:1:0", "wait:1:99999"):
        with pytest.raises(ValueError, match="--durability"):
            cluster.Durability(bad)


async def test_start_up_is_refused_while_one_master_may_evict(redis, cluster):
    from creditgate.gateway.server import StartupRefused, refuse_evicting_redis

    await refuse_evicting_redis(redis)
    node = cluster.masters()[1]
    client = control(node.port)
    try:
        client.config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(StartupRefused, match="allkeys-lru"):
            await refuse_evicting_redis(redis)
    finally:
        client.config_set("maxmemory-policy", "noeviction")
        client.close()


async def test_tryagain_is_retried_within_the_calls_time(redis, cluster):
    """A slot MIGRATING with some of a call's keys present answers TRYAGAIN: the runner sends
    the call again after a pause, and it succeeds once the slot is stable again."""
    from creditgate.limits import cluster as limits_cluster

    runner = limits_cluster.runner_for(redis)
    client = LimitsClient(runner, PARTITIONS)
    await client.put_customer("CL-try-0", "active", "Asia/Shanghai", CUSTOMER_CAPS)
    partition = keys.partition_of("CL-try-0", PARTITIONS)
    others = [f"CL-try-{n}" for n in range(1, 400)
              if keys.partition_of(f"CL-try-{n}", PARTITIONS) == partition]
    slot = limits_cluster.partition_slot(partition)
    source = cluster.master_of_slot(slot)
    target = next(node for node in cluster.masters() if node is not source)
    source_client, target_client = control(source.port), control(target.port)
    target_id = target_client.execute_command("CLUSTER MYID")
    try:
        source_client.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        # A new customer: its hash is missing, the partition's outbox is there.
        put = asyncio.ensure_future(client.put_customer(others[0], "active", "Asia/Shanghai",
                                                        CUSTOMER_CAPS))
        await asyncio.sleep(0.2)
        assert not put.done()
    finally:
        source_client.execute_command("CLUSTER SETSLOT", slot, "STABLE")
        source_client.close()
        target_client.close()
    assert await put is not None
    assert runner.redirects["tryagain"] > 0
    assert await redis.exists(keys.customer(keys.base(partition), others[0]))
    await runner.close()
