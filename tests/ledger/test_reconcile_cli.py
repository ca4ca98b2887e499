"""After a random mix of authorize/capture/void/expire through the gateway, drained,
`creditgate reconcile` finds no drift; one corrupted Redis counter is reported exactly."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import pytest

from creditgate.ledger import reconcile
from creditgate.limits import keys
from tests.conftest import PARTITIONS
from tests.ledger.conftest import dsn_of
from tests.ledger.support import Traffic, assert_posted_exactly_once, nonzero

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = ["c-mix-a", "c-mix-b", "c-mix-c", "c-mix-d"]


async def random_mix(traffic: Traffic, seed: int, operations: int = 40) -> dict[str, int]:
    """Seeded random operations; returns how many of each ran."""
    rng = random.Random(seed)
    for customer in CUSTOMERS:
        await traffic.put(customer, timezone=rng.choice(["Asia/Shanghai", "America/New_York"]))
    done = {"authorize": 0, "capture": 0, "void": 0, "expire": 0}
    for _ in range(operations):
        open_ = traffic.open_holds()
        kind = rng.choices(["authorize", "capture", "void", "expire"], [5, 3, 2, 1])[0]
        if kind != "authorize" and not open_:
            kind = "authorize"
        if kind == "authorize":
            await traffic.authorize(rng.choice(CUSTOMERS), rng.randrange(100, 20_000),
                                    channel=rng.choice(["pos", "qr_scan"]),
                                    merchant_id=rng.choice(["m-1", "m-2", "m-3"]))
        elif kind == "capture":
            hold_id = rng.choice(open_)
            hold = traffic.holds[hold_id]
            left = hold.amount - hold.captured
            await traffic.capture(hold_id, rng.randint(1, left), final=rng.random() < 0.5)
        elif kind == "void":
            await traffic.void(rng.choice(open_))
        else:
            await traffic.expire_all()
        done[kind] += 1
    return done


async def run_cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "creditgate.gateway.cli", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, output.decode(errors="replace")


def customer_key(customer_id: str) -> str:
    return keys.customer(keys.base(keys.partition_of(customer_id, PARTITIONS)), customer_id)


async def drained_mix(redis, gateway, admin, auth, store, make_worker, seed):
    traffic = Traffic(gateway, admin, auth)
    done = await random_mix(traffic, seed)
    assert all(done.values()), done  # the mix has every kind of operation
    worker = make_worker("w1")
    await worker.start()
    await worker.drain()
    assert worker.posted == traffic.events
    await assert_posted_exactly_once(redis, store)
    assert nonzero(await reconcile.ledger_levels(store)) == traffic.levels()
    return traffic


@pytest.mark.parametrize("seed", [3, 11])
async def test_reconcile_cli_finds_no_drift_then_exactly_the_corrupted_counter(
        redis, redis_server, gateway, admin, auth, store, make_worker, seed):
    traffic = await drained_mix(redis, gateway, admin, auth, store, make_worker, seed)
    dsn, schema = dsn_of(store)
    command = ["reconcile", "--redis-url", redis_server.url, "--ledger-dsn", dsn,
               "--schema", schema, "--partitions", str(PARTITIONS)]
    code, output = await run_cli(*command)
    assert code == 0, output
    assert "0 drifts" in output and "drift:" not in output and "FAILED" not in output
    assert f"reconcile: {len(CUSTOMERS)} customers" in output

    victim = max(CUSTOMERS, key=lambda c: sum(v[0] + v[1] for (who, _), v
                                              in traffic.levels().items() if who == c))
    await add_to_level(redis, customer_key(victim), "consumer", held=7)
    code, output = await run_cli(*command)
    assert code == 1, output
    drift_lines = [line for line in output.splitlines() if line.startswith("drift:")]
    assert len(drift_lines) == 1, output
    assert drift_lines[0].startswith(f"drift: customer {victim} level consumer held: ")
    assert drift_lines[0].endswith("(difference 7)")
    assert "1 drifts" in output and "FAILED" in output


async def add_to_level(redis, key: str, node: str, held: int = 0, used: int = 0) -> None:
    """Corrupts one level of a customer hash (limits/keys.py FIELD_LEVEL) by hand."""
    level = keys.read_level((await redis.hget(key, keys.FIELD_LEVEL + node)).decode())
    await redis.hset(key, keys.FIELD_LEVEL + node, keys.level_text(
        level.cap, level.held + held, level.used + used, level.raise_minor,
        level.raise_expires_ms))


async def test_reconcile_in_process_finds_the_corrupted_counter(redis, gateway, admin, auth,
                                                                store, make_worker):
    traffic = await drained_mix(redis, gateway, admin, auth, store, make_worker, 5)
    report = await reconcile.reconcile(redis, store, PARTITIONS)
    assert report.ok and report.drifts == [] and report.undrained == []
    victim = CUSTOMERS[1]
    before = traffic.levels().get((victim, "consumer.scan_pay"), [0, 0])
    await add_to_level(redis, customer_key(victim), "consumer.scan_pay", used=-7)
    report = await reconcile.reconcile(redis, store, PARTITIONS)
    assert not report.ok and report.undrained == []
    assert report.drifts == [reconcile.Drift(victim, "consumer.scan_pay", "used",
                                             before[1] - 7, before[1])]
