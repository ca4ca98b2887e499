"""`creditgate cluster status` on a real cluster: per master its partitions, customers, open
holds, outbox backlog and script calls per second, adding up to what the traffic left."""

from __future__ import annotations

import asyncio
import json

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.ledger import cluster_status
from creditgate.limits import cluster as limits_cluster
from tests.cluster.test_cluster_runner import customers_by_master
from tests.conftest import CUSTOMER_CAPS, PARTITIONS
from tests.gateway.test_authorize_batch import authorize_request
from tests.ledger.test_reconcile_cli import run_cli


async def test_status_per_master(gateway, admin, auth, redis):
    shards = await limits_cluster.shards(redis, PARTITIONS)
    by_master = customers_by_master(shards, per_master=2)
    customers = [customer for ids in by_master.values() for customer in ids]
    for customer in customers:
        await admin.PutCustomer(pb.PutCustomerRequest(
            customer_id=customer, status=pb.CUSTOMER_STATUS_ACTIVE, timezone="Asia/Shanghai",
            caps_minor=CUSTOMER_CAPS))
    first = customers[0]
    for number in range(3):
        assert (await auth.Authorize(authorize_request(f"st-{number}", first))).approved

    stop = asyncio.Event()

    async def busy() -> None:  # script calls on every master while status samples
        while not stop.is_set():
            await asyncio.gather(*(auth.Authorize(authorize_request("st-again", c))
                                   for c in customers))

    running = asyncio.create_task(busy())
    try:
        found = await cluster_status.status(redis, PARTITIONS, interval_s=0.5)
    finally:
        stop.set()
        await running
    assert {entry.master: entry.partitions for entry in found} == shards
    assert {entry.master: entry.customers for entry in found} == {m: 2 for m in shards}
    holds = {entry.master: entry.open_holds for entry in found}
    owner = next(master for master, ids in by_master.items() if first in ids)
    assert holds[owner] >= 4  # st-0..2 and st-again of its customers
    assert sum(holds.values()) == 3 + len(customers)
    # No worker ran: every event (customers put, holds made) waits in the outbox.
    assert sum(entry.outbox_backlog for entry in found) == len(customers) + sum(holds.values())
    assert all(entry.script_calls_per_s > 0 for entry in found)

    code, output = await run_cli("cluster", "status", "--redis-url", gateway.config.redis_url,
                                 "--partitions", str(PARTITIONS), "--interval", "0.1",
                                 "--json")
    assert code == 0, output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert sorted(line["master"] for line in lines) == sorted(shards)
    assert sum(line["customers"] for line in lines) == len(customers)
