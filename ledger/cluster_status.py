"""`creditgate cluster status`: per Redis master, its partitions, customers, open holds,
outbox backlog and the script calls per second it serves, so an operator sees how the
partitions balance and which shard is hot. On one Redis, that server is the only master.

Customers and holds are counted with SCAN on each master (a few seconds for millions of
keys); script calls per second are the growth of INFO commandstats' EVALSHA and FCALL calls
between two samples `interval_s` apart.
"""

from __future__ import annotations

import asyncio
import json
import sys

import msgspec
import redis.asyncio as aioredis

from creditgate.ledger.worker import GROUP
from creditgate.limits import cluster as limits_cluster
from creditgate.limits import keys

SCAN_COUNT = 1000
SCRIPT_COMMANDS = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall")


class MasterStatus(msgspec.Struct):
    master: str  # host:port
    partitions: list[int]
    customers: int = 0
    open_holds: int = 0
    outbox_backlog: int = 0  # outbox entries the ledger has not yet acknowledged
    script_calls_per_s: float = 0.0


async def masters(redis, partitions: int) -> dict[str, tuple[aioredis.Redis, list[int]]]:
    """master host:port -> (a client of that master alone, its partitions)."""
    if not limits_cluster.is_cluster(redis):
        kwargs = redis.connection_pool.connection_kwargs
        name = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return {name: (redis, list(range(partitions)))}
    shards = await limits_cluster.shards(redis, partitions)
    found = {}
    for node in redis.get_primaries():
        kwargs = redis.nodes_manager.connection_kwargs
        client = aioredis.Redis(host=node.host, port=node.port, username=kwargs.get("username"),
                                password=kwargs.get("password"))
        found[node.name] = (client, shards.get(node.name, []))
    return found


async def _count_keys(client: aioredis.Redis, kind: str) -> list[bytes]:
    pattern = f"{keys.PREFIX}:*:{kind}*"
    return [key async for key in client.scan_iter(match=pattern, count=SCAN_COUNT)
            if key.decode().split("}:", 1)[-1].startswith(kind)]


async def _backlog(client: aioredis.Redis, partitions: list[int]) -> int:
    pipe = client.pipeline(transaction=False)
    for partition in partitions:
        pipe.xinfo_groups(keys.outbox(keys.base(partition)))
        pipe.xlen(keys.outbox(keys.base(partition)))
    replies = await pipe.execute(raise_on_error=False)
    backlog = 0
    for groups, length in zip(replies[::2], replies[1::2], strict=True):
        if isinstance(groups, Exception) or isinstance(length, Exception):
            continue  # no stream yet
        group = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
        if group is None:
            backlog += length  # no worker has read it yet
        else:
            lag = group.get("lag")
            backlog += group["pending"] + (lag if lag is not None else 0)
    return backlog


async def _script_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(stats.get(name, {}).get("calls", 0)) for name in SCRIPT_COMMANDS)


async def status(redis, partitions: int, interval_s: float = 1.0) -> list[MasterStatus]:
    """Every master's status, sorted by address."""
    found = await masters(redis, partitions)
    before = {name: await _script_calls(client) for name, (client, _) in found.items()}
    started = asyncio.get_running_loop().time()
    result = []
    for name, (client, parts) in sorted(found.items()):
        customers = await _count_keys(client, keys.KIND_CUSTOMER)
        holds = await _count_keys(client, keys.KIND_CUSTOMER_HOLDS)
        pipe = client.pipeline(transaction=False)
        for key in holds:
            pipe.zcard(key)
        result.append(MasterStatus(name, parts, len(customers), sum(await pipe.execute()),
                                   await _backlog(client, parts)))
    await asyncio.sleep(max(0.0, interval_s - (asyncio.get_running_loop().time() - started)))
    elapsed_s = asyncio.get_running_loop().time() - started
    for entry in result:
        client = found[entry.master][0]
        entry.script_calls_per_s = round(
            (await _script_calls(client) - before[entry.master]) / elapsed_s, 1)
    if limits_cluster.is_cluster(redis):
        for client, _ in found.values():
            await client.aclose()
    return result


def command(args) -> int:
    try:
        return asyncio.run(_command(args))
    except (OSError, aioredis.RedisError, ValueError) as error:
        print(f"creditgate cluster status: {type(error).__name__}: {str(error)[:300]}",
              file=sys.stderr)
        return 2


async def _command(args) -> int:
    redis = limits_cluster.connect(args.redis_url)
    try:
        found = await status(redis, args.partitions, args.interval)
    finally:
        await redis.aclose()
    for entry in found:
        if args.json:
            print(json.dumps(msgspec.to_builtins(entry), sort_keys=True))
            continue
        print(f"{entry.master:<22} partitions {len(entry.partitions):>4}  customers "
              f"{entry.customers:>9}  open holds {entry.open_holds:>9}  outbox backlog "
              f"{entry.outbox_backlog:>8}  script calls/s {entry.script_calls_per_s:>9.1f}")
    if not args.json:
        print(f"{len(found)} masters, {sum(len(e.partitions) for e in found)} partitions, "
              f"{sum(e.customers for e in found)} customers, "
              f"{sum(e.open_holds for e in found)} open holds")
    return 0
