"""SIGKILL the worker process after the SQL commit (before the ack) and before the commit;
after a restart every event is posted exactly once and every journal balances."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from creditgate.ledger import reconcile
from creditgate.ledger.worker import FAULT_ENV
from tests.conftest import PARTITIONS
from tests.ledger.conftest import dsn_of
from tests.ledger.support import (
    Traffic,
    assert_posted_exactly_once,
    ledger_events,
    outbox,
    pending,
)

ROOT = Path(__file__).resolve().parents[2]


def worker_command(redis_url: str, store, consumer: str) -> list[str]:
    dsn, schema = dsn_of(store)
    return [sys.executable, "-m", "creditgate.gateway.cli", "ledger", "--redis-url", redis_url,
            "--ledger-dsn", dsn, "--schema", schema, "--partitions", str(PARTITIONS),
            "--claim-idle-ms", "200", "--consumer", consumer]


async def run_worker(command: list[str], fault: str | None, timeout_s: float = 30,
                     stop_after=None):
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        if stop_after is not None:
            await asyncio.wait_for(stop_after(), timeout_s)
            process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    return process.returncode, output.decode(errors="replace")


async def traffic_mix(gateway, admin, auth) -> Traffic:
    traffic = Traffic(gateway, admin, auth)
    for index in range(4):
        customer = f"c-crash-{index}"
        await traffic.put(customer)
        hold = (await traffic.authorize(customer, 3_000 + index)).hold_id
        await traffic.capture(hold, 1_000)
        if index % 2:
            await traffic.void(hold)
        await traffic.authorize(customer, 500, channel="qr_scan")
    await traffic.expire_all()
    return traffic


@pytest.mark.parametrize("restart", ["same consumer", "other consumer claims"])
@pytest.mark.parametrize("fault", ["after_commit", "before_commit"])
async def test_sigkill_then_restart_posts_exactly_once(redis, redis_server, gateway, admin,
                                                       auth, store, make_worker, fault,
                                                       restart):
    traffic = await traffic_mix(gateway, admin, auth)
    events = await outbox(redis)
    assert len(events) == traffic.events

    code, output = await run_worker(worker_command(redis_server.url, store, "doomed"), fault)
    assert code == -signal.SIGKILL, output
    assert f"SIGKILL at {fault}" in output
    # Killed between its two steps: everything read is still pending in Redis; the ledger
    # has all of it (after the commit) or none of it (before).
    assert await pending(redis) == len(events)
    committed = await ledger_events(store)
    assert committed == (events if fault == "after_commit" else {})

    if restart == "same consumer":
        worker = make_worker("doomed")
        await worker.start()
    else:
        worker = make_worker("rescuer", claim_idle_ms=0)
        await worker.start()
        claimed = await worker._claim()
        assert len(claimed) == len(events)
        await worker.process(claimed)
    await worker.drain()
    if fault == "after_commit":
        assert (worker.posted, worker.duplicates) == (0, len(events))
    else:
        assert (worker.posted, worker.duplicates) == (len(events), 0)
    assert worker.dead_lettered == 0
    await assert_posted_exactly_once(redis, store)
    report = await reconcile.reconcile(redis, store, PARTITIONS)
    assert report.ok, report


async def test_sigterm_stops_cleanly_after_posting(redis, redis_server, gateway, admin, auth,
                                                   store):
    traffic = await traffic_mix(gateway, admin, auth)

    async def all_posted():
        while len(await ledger_events(store)) < traffic.events or await pending(redis):
            await asyncio.sleep(0.05)

    code, output = await run_worker(worker_command(redis_server.url, store, "calm"), None,
                                    stop_after=all_posted)
    assert code == 0, output
    assert f"{traffic.events} posted, 0 duplicates skipped, 0 dead-lettered" in output
    await assert_posted_exactly_once(redis, store)
    assert (await reconcile.reconcile(redis, store, PARTITIONS)).ok
