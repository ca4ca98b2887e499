"""Seed the load-test population: N customers with deterministic ids, caps and statuses.

    .venv/bin/python bench/seed.py [--count 100000] [--seed 20261111]
                                   [--via redis --redis-url URL --partitions N | --via admin]
                                   [--target HOST:PORT] [--concurrency K]
                                   [--cert PEM --key PEM --ca PEM | --insecure]

Customer `i` (0 <= i < count) is `lt0000000`, `lt0000001`, ...: the ids depend on nothing
else, so bench/locustfile.py draws from the same population with only its size. The seed
decides each customer's caps (a credit line of 10,000 to 200,000 CNY, split over the catalog's
limit tree) and status (98 % active, 1 % frozen, 1 % overdue, so the load sees those declines
too). The profiles come from one seeded stream in id order: seeding 2,000 customers gives the
first 2,000 of a 100,000 run, exactly.

Two ways in, both idempotent (a put replaces caps and status and keeps usage and holds):
  --via redis  (default) the put_customer script through limits.transport.ScriptRunner, which
               pipelines the calls of one event-loop tick into one round trip, straight into
               the gateway's Redis (on Redis Cluster, --redis-url redis+cluster://H:P,...:
               the slot-aware runner, one round trip per master). --partitions must be the
               gateway's (`creditgate serve --partitions`, default 256), or the gateway looks
               for the customers elsewhere.
  --via admin  Admin.PutCustomer over gRPC at --target: slower (every put goes through the
               gateway's Python), but needs no Redis access and cannot get the partitions wrong.
Measured on the 2-core machine: docs/benchmarks.md, section "Locust".

With --target, the script then asks the gateway (Admin.GetCustomer) for the first and last
customer and exits 1 if it does not see them (wrong --partitions, wrong Redis).
Every put appends a customer_put event to the outbox, which the ledger worker posts.
Calls to --target go over mutual TLS as make run's back-office (var/tls/BO-1.pem) when those
files exist, or with --cert/--key/--ca, or in plaintext with --insecure (bench/common.py).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent))

import common  # noqa: E402  bench/common.py: how to reach the gateway

from creditgate.limits import catalog  # noqa: E402
from creditgate.limits.constants import PARTITIONS_DEFAULT, TZ_DEFAULT  # noqa: E402

POPULATION_DEFAULT = 100_000
SEED_DEFAULT = 20261111
ID_PREFIX = "lt"
ID_DIGITS = 7  # ids up to lt9999999
POPULATION_MAX = 10**ID_DIGITS
CHUNK_DEFAULT = 4_096  # puts started together; ScriptRunner cuts them into pipelines of 256
ADMIN_CONCURRENCY_DEFAULT = 64  # PutCustomer calls in flight with --via admin
SEED_CALLER = "BO-1"  # the development back-office, whose role may put and get customers

# A customer's credit line (the cap of `total`), in minor units, and how often each occurs.
LINE_TIERS_MINOR = (
    (1_000_000, 20),   # 10,000.00 CNY
    (2_000_000, 30),
    (5_000_000, 30),
    (10_000_000, 15),
    (20_000_000, 5),   # 200,000.00 CNY
)
# Each level's cap as a share of the line, in percent. Every node of the catalog must be here.
CAP_PERCENT = {
    "total": 100,
    "consumer": 80,
    "consumer.scan_pay": 60,
    "consumer.scan_pay.pos": 50,
    "consumer.scan_pay.qr": 40,
    "consumer.online": 70,
    "cash": 20,
}
STATUS_WEIGHTS = (("active", 98), ("frozen", 1), ("overdue", 1))


class Profile(NamedTuple):
    customer_id: str
    status: str
    caps_minor: dict[str, int]


def customer_id(index: int) -> str:
    """The id of the population's customer number `index` (0-based)."""
    assert 0 <= index < POPULATION_MAX, index
    return f"{ID_PREFIX}{index:0{ID_DIGITS}d}"


class Population:
    """Customer ids drawn Zipf-skewed from the first `size`: the rank-r customer (1-based) has
    weight r^-exponent. Which customers are the popular ones is a seeded permutation of the
    ids, so the hot customers are spread over the partitions rather than being lt0000000,
    lt0000001, ... (bench/locustfile.py draws its customers here)."""

    def __init__(self, size: int, exponent: float, seed: int):
        if not 1 <= size <= POPULATION_MAX:
            raise ValueError(f"population must be within 1..{POPULATION_MAX}")
        if exponent <= 0:
            raise ValueError("zipf_exponent must be > 0")
        self.size = size
        self.cumulative = list(itertools.accumulate(
            rank ** -exponent for rank in range(1, size + 1)))
        self.total = self.cumulative[-1]
        rng = random.Random(seed)
        self.offset = rng.randrange(size)
        self.stride = rng.randrange(1, size) if size > 1 else 1
        while math.gcd(self.stride, size) != 1:
            self.stride += 1

    def index_of_rank(self, rank: int) -> int:
        """0-based rank -> customer index: a bijection of 0..size-1 (stride coprime to size)."""
        return (rank * self.stride + self.offset) % self.size

    def draw_rank(self, rng: random.Random) -> int:
        rank = bisect.bisect_left(self.cumulative, rng.random() * self.total)
        return min(rank, self.size - 1)  # rounding can land one past the end

    def draw(self, rng: random.Random) -> str:
        return customer_id(self.index_of_rank(self.draw_rank(rng)))


def catalog_nodes(products: dict[str, catalog.Product]) -> set[str]:
    nodes = set()
    for product in products.values():
        for channel in product.channels:
            nodes.update(product.nodes_for(channel))
    return nodes


def check_caps_cover(products: dict[str, catalog.Product]) -> None:
    missing = catalog_nodes(products) - CAP_PERCENT.keys()
    if missing:
        raise SystemExit(f"bench/seed.py: CAP_PERCENT has no share for the catalog's nodes "
                         f"{sorted(missing)}")


def profiles(count: int, seed: int) -> Iterator[Profile]:
    """The first `count` customers of the population of `seed`, in id order."""
    assert 0 < count <= POPULATION_MAX, count
    rng = random.Random(seed)
    lines = [line for line, _ in LINE_TIERS_MINOR]
    line_weights = [weight for _, weight in LINE_TIERS_MINOR]
    statuses = [status for status, _ in STATUS_WEIGHTS]
    status_weights = [weight for _, weight in STATUS_WEIGHTS]
    for index in range(count):
        line = rng.choices(lines, line_weights)[0]
        status = rng.choices(statuses, status_weights)[0]
        caps = {node: line * percent // 100 for node, percent in CAP_PERCENT.items()}
        yield Profile(customer_id(index), status, caps)


async def seed_redis(count: int, seed: int, redis_url: str, partitions: int,
                     chunk: int = CHUNK_DEFAULT) -> None:
    """put_customer straight into Redis (one Redis, or a cluster's masters by a
    redis+cluster:// URL), `chunk` calls per event-loop tick."""
    from creditgate.limits import cluster
    from creditgate.limits.client import LimitsClient

    redis = cluster.connect(redis_url)
    runner = cluster.runner_for(redis)
    try:
        await runner.load()
        limits = LimitsClient(runner, partitions)
        batch = []
        for profile in profiles(count, seed):
            batch.append(limits.put_customer(profile.customer_id, profile.status, TZ_DEFAULT,
                                             profile.caps_minor))
            if len(batch) == chunk:
                await asyncio.gather(*batch)
                batch = []
        await asyncio.gather(*batch)
    finally:
        await runner.close()
        await redis.aclose()


def _admin_request(profile: Profile):
    from creditgate.gateway.pb import creditgate_pb2 as pb

    status = {"active": pb.CUSTOMER_STATUS_ACTIVE, "frozen": pb.CUSTOMER_STATUS_FROZEN,
              "overdue": pb.CUSTOMER_STATUS_OVERDUE}[profile.status]
    return pb.PutCustomerRequest(customer_id=profile.customer_id, status=status,
                                 timezone=TZ_DEFAULT, caps_minor=profile.caps_minor)


async def seed_admin(count: int, seed: int, target: str,
                     concurrency: int = ADMIN_CONCURRENCY_DEFAULT,
                     transport: common.Transport = common.PLAINTEXT) -> None:
    """Admin.PutCustomer over one channel, `concurrency` calls in flight."""
    from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc

    queue = iter(profiles(count, seed))
    async with transport.aio_channel(target) as channel:
        admin = pb_grpc.AdminStub(channel)

        async def worker() -> None:
            for profile in queue:  # the iterator is shared: each profile is taken once
                await admin.PutCustomer(_admin_request(profile), timeout=30)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def verify(target: str, count: int,
                 transport: common.Transport = common.PLAINTEXT) -> str | None:
    """None if the gateway at `target` sees the first and last customer, else why not."""
    import grpc

    from creditgate.gateway.pb import creditgate_pb2 as pb
    from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc

    async with transport.aio_channel(target) as channel:
        admin = pb_grpc.AdminStub(channel)
        for index in sorted({0, count - 1}):
            try:
                await admin.GetCustomer(pb.GetCustomerRequest(customer_id=customer_id(index)),
                                        timeout=10)
            except grpc.aio.AioRpcError as error:
                return (f"the gateway at {target} does not see {customer_id(index)}: "
                        f"{error.code().name}: {error.details()} (same Redis? same --partitions?)")
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=POPULATION_DEFAULT,
                        help="customers to seed (default %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED_DEFAULT)
    parser.add_argument("--via", choices=("redis", "admin"), default="redis")
    parser.add_argument("--redis-url",
                        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6399/0"),
                        help="the gateway's Redis, or its cluster as redis+cluster://H:P,... "
                        "(default: $REDIS_URL, else make run's)")
    parser.add_argument("--partitions", type=int,
                        default=int(os.environ.get("CREDITGATE_PARTITIONS", PARTITIONS_DEFAULT)),
                        help="the gateway's partition count (default %(default)s)")
    parser.add_argument("--target", default="",
                        help="the gateway (HOST:PORT): required with --via admin; with --via "
                        "redis, checked afterwards")
    parser.add_argument("--concurrency", type=int, default=ADMIN_CONCURRENCY_DEFAULT,
                        help="--via admin: calls in flight (default %(default)s)")
    common.add_transport_options(parser, SEED_CALLER)
    return parser


async def _main(args: argparse.Namespace) -> int:
    check_caps_cover(catalog.load())
    transport = common.transport_of(args, SEED_CALLER)
    started = time.perf_counter()
    if args.via == "redis":
        await seed_redis(args.count, args.seed, args.redis_url, args.partitions)
    else:
        await seed_admin(args.count, args.seed, args.target, args.concurrency, transport)
    elapsed_s = time.perf_counter() - started
    print(f"seeded {args.count:,} customers ({customer_id(0)} .. {customer_id(args.count - 1)}, "
          f"seed {args.seed}) via {args.via} in {elapsed_s:.2f} s "
          f"({args.count / elapsed_s:,.0f}/s)")
    if args.target:
        problem = await verify(args.target, args.count, transport)
        if problem:
            print(f"bench/seed.py: {problem}", file=sys.stderr)
            return 1
        print(f"the gateway at {args.target} sees them")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0 < args.count <= POPULATION_MAX:
        print(f"--count must be within 1..{POPULATION_MAX}", file=sys.stderr)
        return 2
    if args.via == "admin" and not args.target:
        print("--via admin needs --target HOST:PORT", file=sys.stderr)
        return 2
    import uvloop

    return uvloop.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
