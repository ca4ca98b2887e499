"""`creditgate reconcile`: prove Redis and the ledger agree, level by level.

For every customer and limit level, Redis says `held` (open holds) and `used` (captured, not
refunded or repaid) in the customer hash; the ledger says the same from the events it posted
(open holds + captured - restored by refunds - repaid: each event's held and used deltas at
every node it drew on). For every path (the nodes of a purchase, root first) Redis keeps its
balance `b:<path>`; in the ledger it is the sum of the used deltas of the events on that path.
The customer's credit balance `cr` (overpaid) is the balance of the ledger account
customer:<id>:credit_balance. They are compared only once the outbox streams are drained
(nothing pending, nothing unread), since before that the ledger is legitimately behind.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

from creditgate.ledger.worker import GROUP, entry_order
from creditgate.limits import cluster as limits_cluster
from creditgate.limits import keys


class Drift(msgspec.Struct, frozen=True):
    customer_id: str
    level: str  # a node; for "balance" a path; "" for "credit_balance"
    measure: str  # "held", "used", "balance" (of a path) or "credit_balance"
    redis_minor: int
    ledger_minor: int

    def __str__(self) -> str:
        where = {"balance": f" path {self.level}", "credit_balance": ""}.get(
            self.measure, f" level {self.level}")
        return (f"drift: customer {self.customer_id}{where} {self.measure}: "
                f"redis {self.redis_minor} ledger {self.ledger_minor} "
                f"(difference {self.redis_minor - self.ledger_minor})")


class Report(msgspec.Struct):
    undrained: list[str]  # outbox streams with pending or unread entries
    drifts: list[Drift]
    customers: int
    levels: int
    dead: dict[str, int] = {}  # dead-letter streams with their lengths
    paths: int = 0  # (customer, path) balances compared

    @property
    def ok(self) -> bool:
        return not self.undrained and not self.drifts and not self.dead


def partition_list(partitions: int | Sequence[int]) -> Sequence[int]:
    """Every partition of a count, or the given ones (one shard's)."""
    return range(partitions) if isinstance(partitions, int) else partitions


async def undrained_streams(redis: aioredis.Redis, partitions: int | Sequence[int]
                            ) -> list[str]:
    found = []
    for partition in partition_list(partitions):
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


async def dead_letters(redis: aioredis.Redis, partitions: int | Sequence[int]
                       ) -> dict[str, int]:
    """Dead-letter streams that hold events: each is a change Redis made and the ledger did
    not book, so drift is expected until an operator replays it."""
    found = {}
    for partition in partition_list(partitions):
        stream = keys.dead_letter(keys.base(partition))
        length = await redis.xlen(stream)
        if length:
            found[stream] = length
    return found



class Accounts(msgspec.Struct):
    """What one side says: (customer, node) -> [held, used]; (customer, path) -> balance;
    customer -> credit balance. Zero balances are left out."""

    levels: dict[tuple[str, str], list[int]]
    balances: dict[tuple[str, str], int]
    credits: dict[str, int]


async def redis_accounts(redis: aioredis.Redis, partitions: int | Sequence[int]) -> Accounts:
    found = Accounts({}, {}, {})
    async for customer_id, key in customer_keys(redis, partitions):
        fields = {field.decode(): value.decode()
                  for field, value in (await redis.hgetall(key)).items()}
        # Either layout: a customer keeps layout 1 until a script touches it.
        for node, level in keys.levels_of(fields).items():
            found.levels[customer_id, node] = [level.held, level.used]
        for name, value in fields.items():
            if name.startswith(keys.FIELD_BALANCE) and int(value):
                found.balances[customer_id, name[len(keys.FIELD_BALANCE):]] = int(value)
            if name == keys.FIELD_CREDIT_BALANCE and int(value):
                found.credits[customer_id] = int(value)
    return found


async def customer_keys(redis, partitions: int | Sequence[int]):
    """(customer id, its hash's key) of every customer of the partitions. On a cluster one
    SCAN per master for every partition's customers (each partition's own pattern would scan
    every master once per partition)."""
    if limits_cluster.is_cluster(redis):
        wanted = {keys.base(partition) for partition in partition_list(partitions)}
        pattern = f"{keys.PREFIX}:*:{keys.KIND_CUSTOMER}*"
        async for key in redis.scan_iter(match=pattern, count=1000):
            text = key.decode()
            base = text[:len(keys.base(0))]
            if base in wanted and text[len(base):].startswith(keys.KIND_CUSTOMER):
                yield text[len(base) + len(keys.KIND_CUSTOMER):], key
        return
    for partition in partition_list(partitions):
        prefix = keys.customer(keys.base(partition), "")
        async for key in redis.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
            yield key.decode()[len(prefix):], key


async def redis_levels(redis: aioredis.Redis, partitions: int) -> dict[tuple[str, str], list[int]]:
    return (await redis_accounts(redis, partitions)).levels


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


async def ledger_balances(store) -> dict[tuple[str, str], int]:
    """(customer, path) -> the sum of the used changes of the events on that path."""
    rows = await store.fetch(
        "SELECT customer_id, nodes, SUM(used_delta_minor) FROM ledger_events "
        "WHERE nodes <> '' GROUP BY customer_id, nodes")
    return {(customer_id, nodes): int(used) for customer_id, nodes, used in rows if int(used)}


async def ledger_credits(store) -> dict[str, int]:
    """customer -> the balance of its credit_balance account (credits - debits)."""
    prefix, suffix = "customer:", ":credit_balance"
    rows = await store.fetch(
        "SELECT account, SUM(credit_minor) - SUM(debit_minor) FROM journal_lines "
        "WHERE account LIKE 'customer:%:credit_balance' GROUP BY account")
    return {account[len(prefix):-len(suffix)]: int(balance) for account, balance in rows
            if account.startswith(prefix) and account.endswith(suffix) and int(balance)}


async def reconcile(redis: aioredis.Redis, store, partitions: int,
                    only: Sequence[int] | None = None) -> Report:
    """Redis against the ledger, for every partition, or `only` these (one shard's)."""
    chosen = partition_list(partitions if only is None else only)
    undrained = await undrained_streams(redis, chosen)
    in_redis = await redis_accounts(redis, chosen)
    in_ledger = Accounts(await ledger_levels(store), await ledger_balances(store),
                         await ledger_credits(store))
    if only is not None:
        in_ledger = _of_partitions(in_ledger, partitions, set(only))
    drifts = []
    levels = set(in_redis.levels) | set(in_ledger.levels)
    for customer_id, level in sorted(levels):
        left = in_redis.levels.get((customer_id, level), [0, 0])
        right = in_ledger.levels.get((customer_id, level), [0, 0])
        for index, measure in enumerate(("held", "used")):
            if left[index] != right[index]:
                drifts.append(Drift(customer_id, level, measure, left[index], right[index]))
    paths = set(in_redis.balances) | set(in_ledger.balances)
    for customer_id, path in sorted(paths):
        left_balance = in_redis.balances.get((customer_id, path), 0)
        right_balance = in_ledger.balances.get((customer_id, path), 0)
        if left_balance != right_balance:
            drifts.append(Drift(customer_id, path, "balance", left_balance, right_balance))
    for customer_id in sorted(set(in_redis.credits) | set(in_ledger.credits)):
        left_credit = in_redis.credits.get(customer_id, 0)
        right_credit = in_ledger.credits.get(customer_id, 0)
        if left_credit != right_credit:
            drifts.append(Drift(customer_id, "", "credit_balance", left_credit, right_credit))
    customers = {customer for customer, _ in levels | paths} | set(in_redis.credits) | set(
        in_ledger.credits)
    return Report(undrained, drifts, len(customers), len(levels),
                  await dead_letters(redis, chosen), len(paths))


def _of_partitions(accounts: Accounts, partitions: int, chosen: set[int]) -> Accounts:
    """The accounts of the customers of the chosen partitions only."""
    def mine(customer_id: str) -> bool:
        return keys.partition_of(customer_id, partitions) in chosen

    return Accounts({key: value for key, value in accounts.levels.items() if mine(key[0])},
                    {key: value for key, value in accounts.balances.items() if mine(key[0])},
                    {key: value for key, value in accounts.credits.items() if mine(key)})


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
