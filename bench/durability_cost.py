"""What `--durability wait:1` costs: the same reservations through the slot-aware runner on a
3-master, 3-replica Redis Cluster, with and without WAIT after each batch, in one run.

    .venv/bin/python bench/durability_cost.py [--redis-url redis+cluster://H:P,...]
        [--rounds 4] [--seconds 2] [--batch 32] [--concurrency 8] [--json PATH]

Without --redis-url it starts a private cluster (tests/cluster_support.py: free ports, a
temporary folder, stopped at the end). Rounds alternate none and wait:1, each `--seconds`
long; each keeps `--concurrency` batches of `--batch` new purchases (unique idempotency keys,
random customers of every shard) in flight. It reports reservations per second and the
latency of a batch (median, p99) for each setting, and their ratios: compare ratios measured
in one run, on one machine, not figures from different runs.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import pathlib
import random
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTITIONS = 256
CUSTOMERS = 3_000
CAPS = {"total": 10**11, "consumer": 10**11, "consumer.scan_pay": 10**11,
        "consumer.scan_pay.pos": 10**11, "consumer.scan_pay.qr": 10**11,
        "consumer.online": 10**11, "cash": 10**10}


def customer_id(index: int) -> str:
    return f"dur-{index:06d}"


async def seed(client) -> None:
    for start in range(0, CUSTOMERS, 1024):
        await asyncio.gather(*(client.put_customer(customer_id(i), "active", "Asia/Shanghai",
                                                   CAPS)
                               for i in range(start, min(CUSTOMERS, start + 1024))))


async def one_round(client, rules, seconds: float, batch: int, concurrency: int,
                    keys_: itertools.count) -> tuple[int, list[float]]:
    from creditgate import hotpath
    from creditgate.gateway.pb import creditgate_pb2 as pb

    rng = random.Random(7)
    done, latencies = 0, []
    ends = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < ends:
            calls = []
            for _ in range(batch):
                request = pb.AuthorizeRequest(
                    idempotency_key=f"d{next(keys_)}",
                    customer_id=customer_id(rng.randrange(CUSTOMERS)), product_id="ecommerce",
                    channel=pb.CHANNEL_ECOMMERCE, merchant_id="m-1", mcc="5999",
                    amount_minor=100, currency="CNY")
                calls.append(client.reserve(*hotpath.plan_authorize(request, rules,
                                                                    PARTITIONS)))
            started = time.perf_counter()
            await asyncio.gather(*calls)
            latencies.append(time.perf_counter() - started)
            done += batch

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, latencies


async def measure(url: str, args) -> dict:
    from creditgate import hotpath
    from creditgate.limits import catalog
    from creditgate.limits import cluster as limits_cluster
    from creditgate.limits.client import LimitsClient

    rules = hotpath.compile_products(catalog.load())
    redis = limits_cluster.connect(url)
    clients = {}
    for setting in ("none", "wait:1"):
        runner = limits_cluster.runner_for(redis, durability=limits_cluster.Durability(setting))
        await runner.load()
        clients[setting] = LimitsClient(runner, PARTITIONS)
    await seed(clients["none"])
    results = {setting: {"reservations": 0, "seconds": 0.0, "latencies": []}
               for setting in clients}
    keys_ = itertools.count()
    for _ in range(args.rounds):
        for setting, client in clients.items():
            done, latencies = await one_round(client, rules, args.seconds, args.batch,
                                              args.concurrency, keys_)
            results[setting]["reservations"] += done
            results[setting]["seconds"] += args.seconds
            results[setting]["latencies"] += latencies
    for client in clients.values():
        await client.runner.close()
    await redis.aclose()
    return summary(results, args)


def summary(results: dict, args) -> dict:
    out = {"batch": args.batch, "concurrency": args.concurrency, "rounds": args.rounds,
           "seconds_per_round": args.seconds, "settings": {}}
    for setting, result in results.items():
        latencies = sorted(result["latencies"])
        out["settings"][setting] = {
            "reservations_per_s": round(result["reservations"] / result["seconds"]),
            "batch_latency_ms_p50": round(statistics.median(latencies) * 1000, 2),
            "batch_latency_ms_p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 2)}
    none, wait = out["settings"]["none"], out["settings"]["wait:1"]
    out["throughput_ratio_wait_to_none"] = round(
        wait["reservations_per_s"] / none["reservations_per_s"], 3)
    out["latency_ratio_p50_wait_to_none"] = round(
        wait["batch_latency_ms_p50"] / none["batch_latency_ms_p50"], 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    cluster = None
    if not args.redis_url:
        from tests.cluster_support import start_cluster

        cluster = start_cluster(pathlib.Path(tempfile.mkdtemp(prefix="creditgate-dur-")))
    try:
        import uvloop

        found = uvloop.run(measure(args.redis_url or cluster.url, args))
    finally:
        if cluster is not None:
            cluster.stop()
    text = json.dumps(found, indent=2)
    print(text)
    if args.json:
        pathlib.Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
