"""bench/seed.py --via redis seeds a cluster through the slot-aware runner: every customer
lands on the master of its partition."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from creditgate.limits import cluster as limits_cluster
from creditgate.limits import keys
from tests.conftest import PARTITIONS

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import seed  # noqa: E402


async def test_seed_py_seeds_the_cluster(redis, redis_server):
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "seed.py"), "--count", "40", "--via", "redis",
        "--redis-url", redis_server.url, "--partitions", str(PARTITIONS), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, output.decode()
    shards = await limits_cluster.shards(redis, PARTITIONS)
    owner = {partition: master for master, parts in shards.items() for partition in parts}
    seen = set()
    for index in range(40):
        customer = seed.customer_id(index)
        partition = keys.partition_of(customer, PARTITIONS)
        key = keys.customer(keys.base(partition), customer)
        assert await redis.exists(key)
        assert redis.get_node_from_key(key).name == owner[partition]
        seen.add(owner[partition])
    assert seen == set(shards)
