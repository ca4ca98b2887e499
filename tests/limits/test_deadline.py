"""A late call leaves nothing: every script that changes state refuses, before anything else,
a call whose deadline (ARGV[2], by the scripts' clock) has passed, on the model and on a real
Redis alike; a call within its deadline runs as if it had none."""

from __future__ import annotations

import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.hotpath import plans
from creditgate.limits import contracts
from creditgate.limits.client import DEADLINE_MS
from creditgate.limits.constants import HOLD_TOKEN_LENGTH
from creditgate.limits.model import ModelRunner
from creditgate.limits.reasons import DeclineReason, ScriptError
from creditgate.limits.replies import Refused
from tests.conftest import snapshot
from tests.support import (
    PARTITIONS,
    PRODUCTS,
    ScriptDriver,
    authorize_request,
)

CAPS = {"total": 10**9, "consumer": 10**9, "consumer.scan_pay": 10**9,
        "consumer.scan_pay.pos": 10**9, "consumer.online": 10**9}
DAY_MS = 86_400_000


async def with_an_expired_hold(driver, customer_id: str) -> str:
    """The customer, one scan_pay hold (7 days) and one ecommerce hold (14 days), then 8 days
    on: the first has expired but is not released yet, so a script that released expired
    holds before refusing a late call would show. Returns the open ecommerce hold."""
    await driver.put(customer_id, CAPS)
    await driver.authorize(authorize_request("k-old", customer_id, 700))
    _, _, hold_id = await driver.authorize(authorize_request(
        "k-1", customer_id, 1_000, product_id="ecommerce", channel="ecommerce", mcc="5999"))
    driver.advance(8 * DAY_MS)
    return hold_id


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
    await with_an_expired_hold(driver, "late-1")
    before = await state(driver, redis)
    now = await scripts_now(driver, redis)
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


async def scripts_now(driver, redis) -> int:
    """The scripts' clock now, read without touching any customer (credit would release the
    expired hold)."""
    runner = driver.client.runner
    if isinstance(runner, ModelRunner):
        return runner.model.clock() + driver.client.clock_offset_ms
    seconds, micros = await redis.time()
    return seconds * 1000 + micros // 1000 + driver.client.clock_offset_ms


@pytest.mark.parametrize("operation", ["capture", "void", "refund", "increment", "reverse",
                                       "repay", "set_raise", "put_customer", "force_capture"])
async def test_each_late_change_is_refused_before_anything(driver, redis, operation):
    hold_id = await with_an_expired_hold(driver, "late-2")
    if operation == "refund":
        driver.advance(-8 * DAY_MS)  # capture while the scan_pay hold is still open
        await driver.capture("cap-1", hold_id, 1_000, final=True)
        driver.advance(8 * DAY_MS)
    before = await state(driver, redis)
    now = await scripts_now(driver, redis)
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
        "force_capture": lambda: client.force_capture(*plans.plan_force_capture(
            pb.ForceCaptureRequest(
                idempotency_key="fc-2", customer_id="late-2", product_id="scan_pay",
                channel=pb.CHANNEL_POS, merchant_id="m-1", mcc="5411", amount_minor=100,
                currency="CNY"), PRODUCTS, PARTITIONS, "A" * HOLD_TOKEN_LENGTH)),
    }
    token = DEADLINE_MS.set(now - 1)
    try:
        with pytest.raises(Refused) as caught:
            await calls[operation]()
    finally:
        DEADLINE_MS.reset(token)
    assert caught.value.code == ScriptError.DEADLINE_PASSED
    assert await state(driver, redis) == before
