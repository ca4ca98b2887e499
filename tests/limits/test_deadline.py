"""A late call leaves nothing: every script that changes state refuses, before anything else,
a call whose deadline (ARGV[2], by the scripts' clock) has passed, on the model and on a real
Redis alike; a call within its deadline runs as if it had none."""

from __future__ import annotations

import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.hotpath import plans
from creditgate.limits import contracts
from creditgate.limits.client import DEADLINE_MS
from creditgate.limits.model import ModelRunner
from creditgate.limits.reasons import DeclineReason, ScriptError
from creditgate.limits.replies import Refused
from tests.conftest import snapshot
from tests.support import (
    PARTITIONS,
    ScriptDriver,
    authorize_request,
)

CAPS = {"total": 10**9, "consumer": 10**9, "consumer.scan_pay": 10**9,
        "consumer.scan_pay.pos": 10**9}


async def state(driver: ScriptDriver, redis) -> dict:
    runner = driver.client.runner
    if isinstance(runner, ModelRunner):
        return {key: (dict(value) if isinstance(value, dict) else list(value))
                for key, value in runner.model.state.items()}
    return await snapshot(redis)


def test_every_script_that_changes_state_takes_the_deadline():
    changing = {name for name, script in contracts.SCRIPTS.items() if script.deadline}
    assert changing == {"reserve", "increment", "capture", "void", "refund", "reverse",
                        "force_capture", "repay", "set_raise", "put_customer"}


async def test_a_late_reservation_makes_no_hold_no_event_and_no_record(driver, redis):
    await driver.put("late-1", CAPS)
    now = await driver.now_ms("late-1")
    before = await state(driver, redis)
    token = DEADLINE_MS.set(now)  # the deadline is the scripts' now: already passed
    try:
        with pytest.raises(Refused) as caught:
            await driver.authorize(authorize_request("k-late", "late-1", 1_000))
    finally:
        DEADLINE_MS.reset(token)
    assert caught.value.code == ScriptError.DEADLINE_PASSED
    assert caught.value.detail == str(now)
    assert await state(driver, redis) == before
    # The retry with the same key, in time, is a new decision: nothing was recorded.
    token = DEADLINE_MS.set(now + 60_000)
    try:
        reason, _, hold_id = await driver.authorize(authorize_request("k-late", "late-1", 1_000))
    finally:
        DEADLINE_MS.reset(token)
    assert reason == DeclineReason.NONE and hold_id


@pytest.mark.parametrize("operation", ["capture", "void", "refund", "increment", "reverse",
                                       "repay", "set_raise", "put_customer"])
async def test_each_late_change_is_refused_before_anything(driver, redis, operation):
    await driver.put("late-2", CAPS)
    _, _, hold_id = await driver.authorize(authorize_request("k-1", "late-2", 1_000))
    if operation == "refund":
        await driver.capture("cap-1", hold_id, 1_000, final=True)
    now = await driver.now_ms("late-2")
    before = await state(driver, redis)
    client = driver.client
    calls = {
        "capture": lambda: driver.capture("cap-2", hold_id, 500, final=True),
        "void": lambda: driver.void("void-2", hold_id),
        "refund": lambda: client.refund(*plans.plan_refund(pb.RefundRequest(
            idempotency_key="ref-2", hold_id=hold_id, amount_minor=100), PARTITIONS)),
        "increment": lambda: driver.increment("inc-2", hold_id, 100),
        "reverse": lambda: client.reverse(*plans.plan_reverse(pb.ReverseRequest(
            customer_id="late-2", original_idempotency_key="k-1"), PARTITIONS)),
        "repay": lambda: client.repay(*plans.plan_repay(pb.RepayRequest(
            idempotency_key="rep-2", customer_id="late-2", amount_minor=100),
            ("total,consumer,consumer.scan_pay,consumer.scan_pay.pos",), PARTITIONS)),
        "set_raise": lambda: client.set_raise("late-2", "total", 100, now + 3_600_000),
        "put_customer": lambda: client.put_customer("late-2", "frozen", "UTC", CAPS),
    }
    token = DEADLINE_MS.set(now - 1)
    try:
        with pytest.raises(Refused) as caught:
            await calls[operation]()
    finally:
        DEADLINE_MS.reset(token)
    assert caught.value.code == ScriptError.DEADLINE_PASSED
    assert await state(driver, redis) == before
