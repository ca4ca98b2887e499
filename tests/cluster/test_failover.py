"""Failover of a master under load, on a cluster of the test's own: SIGKILL one master while
clients authorize for customers on every shard. Its replica is promoted; the gateway carries
on without a restart; the dead shard's calls fail UNAVAILABLE within their deadline while the
other shards' calls keep succeeding; afterwards no customer holds more than its open holds
(conservation, no double spend). With --durability wait:1 no approved answer lost its hold;
without it the loss is counted and reported."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import grpc
import pytest

from creditgate.limits import cluster as limits_cluster
from tests.cluster.load import DEADLINE_S, Load, conservation, lost_holds
from tests.cluster.test_cluster_runner import customers_by_master
from tests.conftest import PARTITIONS, served_gateway

PROMOTION_TIMEOUT_S = 20.0


async def promoted(cluster, dead_port: int) -> float:
    """Wait until no slot names the dead master; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < PROMOTION_TIMEOUT_S:
        try:  # in a thread: the gateway under test serves on this loop
            masters = await asyncio.to_thread(cluster.masters)
            if dead_port not in {node.port for node in masters}:
                return time.monotonic() - started
        except Exception:  # noqa: BLE001 - a node still deciding
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"no replica took over from {dead_port}")


@pytest.mark.parametrize("durability", ["wait:1", "none"])
async def test_failover_under_load(own_cluster, durability, capsys):
    async with served_gateway(SimpleNamespace(url=own_cluster.url),
                              durability=durability) as gateway:
        cluster_client = gateway.redis
        shards = await limits_cluster.shards(cluster_client, PARTITIONS)
        by_master = customers_by_master(shards, per_master=10)
        dead = next(iter(shards))
        load = Load(gateway.port, [c for ids in by_master.values() for c in ids])
        await load.put_customers()
        stop = asyncio.Event()
        running = asyncio.create_task(load.run(stop))
        await asyncio.sleep(0.5)
        killed_at = time.monotonic()
        await asyncio.to_thread(own_cluster.node(int(dead.rsplit(":", 1)[1])).kill)
        took_s = await promoted(own_cluster, int(dead.rsplit(":", 1)[1]))
        if durability != "none":
            # The new master has no replica left: WAIT 1 cannot be met until the old master
            # comes back as its replica.
            await asyncio.to_thread(own_cluster.node(int(dead.rsplit(":", 1)[1])).start)
        # The load goes on until the dead shard's customers are served again (bounded).
        deadline = time.monotonic() + PROMOTION_TIMEOUT_S
        while time.monotonic() < deadline and not any(
                a.hold_id for a in load.of(by_master[dead]) if a.started_s > killed_at + took_s):
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        stop.set()
        await running

    others = [c for master, ids in by_master.items() if master != dead for c in ids]
    dead_shard = by_master[dead]
    # The other shards never failed.
    assert [a for a in load.of(others) if a.code is not None] == []
    # The dead shard's calls failed UNAVAILABLE, each within its deadline, and it serves again.
    failed = [a for a in load.of(dead_shard) if a.code is not None]
    assert failed and {a.code for a in failed} == {grpc.StatusCode.UNAVAILABLE}
    # Within the deadline, give or take the client's own scheduling on a busy 2-core machine
    # (2.013 s was seen once with the suite and a reviewer's tests sharing it).
    assert max(a.took_s for a in failed) < DEADLINE_S + 0.25
    recovered = [a for a in load.of(dead_shard) if a.hold_id and a.started_s > killed_at]
    assert recovered, "the dead shard's customers were never served again"

    own_cluster.wait_healthy()
    client = limits_cluster.connect(own_cluster.url)
    try:
        lost = await lost_holds(client, load.answers)
        assert await conservation(client, load.customers) == {}
    finally:
        await client.aclose()
    approved = sum(1 for a in load.answers if a.hold_id)
    served_again_s = min(a.started_s for a in recovered) - killed_at
    with capsys.disabled():
        print(f"\nfailover ({durability}): promoted in {took_s:.1f} s, the shard served "
              f"again {served_again_s:.1f} s after the kill; {approved} approved, "
              f"{len(failed)} failed UNAVAILABLE on the dead shard, {len(lost)} approved "
              f"holds lost")
    if durability != "none":
        assert lost == []
