"""`serve --shard HOST:PORT` sweeps one shard: the sweeper releases the expired holds of the
partitions that shard serves, and leaves the other shards' to their own sweepers."""

from __future__ import annotations

import pytest

from creditgate.gateway import sweeper
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from creditgate.gateway.server import Config, StartupRefused, check_redis_settings
from creditgate.limits import cluster as limits_cluster
from tests.cluster.test_cluster_runner import customers_by_master
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, served_gateway
from tests.gateway.test_authorize_batch import authorize_request
from tests.ledger.support import TTL_MS


async def test_a_shard_sweeper_releases_only_its_shards_holds(redis, redis_server):
    import grpc

    shards = await limits_cluster.shards(redis, PARTITIONS)
    by_master = customers_by_master(shards, per_master=1)
    mine = next(iter(shards))
    async with served_gateway(redis_server, shard=mine) as gateway:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            admin, auth = pb_grpc.AdminStub(channel), pb_grpc.AuthorizationStub(channel)
            for master, (customer,) in by_master.items():
                await admin.PutCustomer(pb.PutCustomerRequest(
                    customer_id=customer, status=pb.CUSTOMER_STATUS_ACTIVE,
                    timezone="Asia/Shanghai", caps_minor=CUSTOMER_CAPS))
                assert (await auth.Authorize(authorize_request(f"sw-{master}",
                                                               customer))).approved
        gateway.limits.clock_offset_ms += TTL_MS + 1_000
        partitions = await gateway._shard_partitions()
        assert partitions == shards[mine]
        assert await sweeper.sweep_once(gateway.limits, partitions) == 1
        assert await sweeper.sweep_once(gateway.limits, partitions) == 0
        assert await sweeper.sweep_once(gateway.limits) == len(shards) - 1  # the others'


def test_cluster_settings_are_checked_before_start():
    with pytest.raises(StartupRefused, match="--shard names a shard of a Redis Cluster"):
        check_redis_settings(Config(shard="127.0.0.1:7000"))
    with pytest.raises(StartupRefused, match="--durability 'wait:0'"):
        check_redis_settings(Config(durability="wait:0"))
    with pytest.raises(StartupRefused, match="database 0 only"):
        check_redis_settings(Config(redis_url="redis+cluster://h:1/3"))
    check_redis_settings(Config(redis_url="redis+cluster://h:1", shard="h:1",
                                durability="wait:1:100"))
