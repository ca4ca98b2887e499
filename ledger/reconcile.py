"""`creditgate reconcile`: prove Redis and the ledger agree, level by level.

For every customer and limit level, Redis says `held` (open holds) and `used` (captured, not
repaid) in the customer hash; the ledger says the same from the events it posted (open holds +
captured - refunded - repaid: each event's held and used deltas at every node it drew on). They
are compared only once the outbox streams are drained (nothing pending, nothing unread), since
before that the ledger is legitimately behind.
"""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from ledger.worker import GROUP, entry_order
from limits import keys


class Drift(msgspec.Struct, frozen=True):
    customer_id: str
    level: str
    measure: str  # "held" or "used"
    redis_minor: int
    ledger_minor: int

    def __str__(self) -> str:
        return (f"drift: customer {self.customer_id} level {self.level} {self.measure}: "
                f"redis {self.redis_minor} ledger {self.ledger_minor} "
                f"(difference {self.redis_minor - self.ledger_minor})")


class Report(msgspec.Struct):
    undrained: list[str]  # outbox streams with pending or unread entries
    drifts: list[Drift]
    customers: int
    levels: int
    dead: dict[str, int] = {}  # dead-letter streams with their lengths

    @property
    def ok(self) -> bool:
        return not self.undrained and not self.drifts and not self.dead


async def undrained_streams(redis: aioredis.Redis, partitions: int) -> list[str]:
    found = []
    for partition in range(partitions):
        stream = keys.outbox(keys.base(partition))
        if not await redis.exists(stream):
            continue
        groups = {g["name"].decode(): g for g in await redis.xinfo_groups(stream)}
        group = groups.get(GROUP)
        if group is None:
            if await redis.xlen(stream):
                found.append(stream)
            continue
        lag = group.get("lag")
        if lag is None:  # unknown after an XDEL: compare ids instead
            info = await redis.xinfo_stream(stream)
            lag = int(entry_order(group["last-delivered-id"])
                      < entry_order(info["last-generated-id"]))
        if group["pending"] or lag:
            found.append(stream)
    return found


async def dead_letters(redis: aioredis.Redis, partitions: int) -> dict[str, int]:
    """Dead-letter streams that hold events: each is a change Redis made and the ledger did
    not book, so drift is expected until an operator replays it."""
    found = {}
    for partition in range(partitions):
        stream = keys.dead_letter(keys.base(partition))
        length = await redis.xlen(stream)
        if length:
            found[stream] = length
    return found



async def redis_levels(redis: aioredis.Redis, partitions: int) -> dict[tuple[str, str], list[int]]:
    levels: dict[tuple[str, str], list[int]] = {}
    for partition in range(partitions):
        prefix = keys.customer(keys.base(partition), "")
        async for key in redis.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
            customer_id = key.decode()[len(prefix):]
            for field, value in (await redis.hgetall(key)).items():
                name = field.decode()
                for index, kind in ((0, keys.FIELD_HELD), (1, keys.FIELD_USED)):
                    if name.startswith(kind):
                        levels.setdefault((customer_id, name[len(kind):]), [0, 0])[index] = \
                            int(value)
    return levels


async def ledger_levels(store) -> dict[tuple[str, str], list[int]]:
    levels: dict[tuple[str, str], list[int]] = {}
    rows = await store.fetch(
        "SELECT customer_id, nodes, SUM(held_delta_minor), SUM(used_delta_minor) "
        "FROM ledger_events WHERE nodes <> '' GROUP BY customer_id, nodes")
    for customer_id, nodes, held, used in rows:
        for node in nodes.split(","):
            sums = levels.setdefault((customer_id, node), [0, 0])
            sums[0] += int(held)
            sums[1] += int(used)
    return levels


async def reconcile(redis: aioredis.Redis, store, partitions: int) -> Report:
    undrained = await undrained_streams(redis, partitions)
    in_redis = await redis_levels(redis, partitions)
    in_ledger = await ledger_levels(store)
    drifts = []
    for customer_id, level in sorted(set(in_redis) | set(in_ledger)):
        left = in_redis.get((customer_id, level), [0, 0])
        right = in_ledger.get((customer_id, level), [0, 0])
        for index, measure in enumerate(("held", "used")):
            if left[index] != right[index]:
                drifts.append(Drift(customer_id, level, measure, left[index], right[index]))
    customers = {customer for customer, _ in set(in_redis) | set(in_ledger)}
    return Report(undrained, drifts, len(customers), len(set(in_redis) | set(in_ledger)),
                  await dead_letters(redis, partitions))


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
