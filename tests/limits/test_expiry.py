"""Hold expiry in the scripts: a hold is released at its expiry instant, exactly once, by the
sweeper's script or lazily by the next script touching the customer, never by key expiry."""

from __future__ import annotations

import pytest

from creditgate.limits import keys
from creditgate.limits.model import Model
from creditgate.limits.reasons import ScriptError
from creditgate.limits.replies import Refused
from tests.support import (
    PARTITIONS,
    Clock,
    LimitsClient,
    ModelRunner,
    ScriptDriver,
    authorize_request,
)

CAPS = {"total": 10**6, "consumer": 10**6, "consumer.scan_pay": 10**6,
        "consumer.scan_pay.pos": 10**6}
TTL_MS = 604_800 * 1000  # the scan_pay product's hold TTL


def outbox_of(state: dict, customer_id: str) -> list[dict]:
    return state.get(keys.outbox(keys.base(keys.partition_of(customer_id, PARTITIONS))), [])


async def test_expiry_instant_on_the_model():
    clock = Clock()
    model = Model(clock)
    driver = ScriptDriver(LimitsClient(ModelRunner(model), PARTITIONS))
    await driver.put("c1", CAPS)
    _, _, hold_id = await driver.authorize(authorize_request("k", "c1", 1_000))
    clock.now_ms += TTL_MS - 1
    assert await driver.client.expire("c1") == 0  # one millisecond early: still held
    assert (await driver.client.credit("c1")).held["total"] == 1_000
    clock.now_ms += 1
    assert await driver.client.expire("c1") == 1  # at the expiry instant: released
    assert await driver.client.expire("c1") == 0  # and only once
    state = await driver.client.credit("c1")
    assert (state.level("total").held_minor, state.level("total").used_minor) == (0, 0)
    expired = [e for e in outbox_of(model.state, "c1") if e["type"] == "expired"]
    assert [(e["hold_id"], e["released_minor"]) for e in expired] == [(hold_id, "1000")]
    due_key = keys.due(keys.base(keys.partition_of("c1", PARTITIONS)))
    assert due_key not in model.state  # nothing of c1 is due any more


async def test_lazy_release_then_capture_is_refused(driver):
    await driver.put("c1", CAPS)
    _, _, first = await driver.authorize(authorize_request("k1", "c1", 1_000))
    driver.advance(TTL_MS // 2)
    _, _, second = await driver.authorize(authorize_request("k2", "c1", 2_000))
    driver.advance(TTL_MS // 2 + 1)  # the first hold is due, the second is not
    with pytest.raises(Refused) as refused:
        await driver.capture("c1", first, 500, final=True)
    assert refused.value.code == ScriptError.HOLD_EXPIRED
    state = await driver.client.credit("c1")
    assert state.held["total"] == 2_000  # released once by the refused capture's script
    assert await driver.client.expire("c1") == 0  # the sweeper finds nothing left to release
    captured = await driver.capture("c2", second, 2_000, final=True)
    assert (captured.state, captured.captured_total_minor) == ("captured", 2_000)


async def test_partial_capture_then_expiry_releases_the_remainder(driver):
    await driver.put("c1", CAPS)
    _, _, hold_id = await driver.authorize(authorize_request("k1", "c1", 10_000))
    partial = await driver.capture("c1", hold_id, 4_000, final=False)
    assert (partial.state, partial.held_minor) == ("open", 6_000)
    driver.advance(TTL_MS)
    assert await driver.client.expire("c1") == 1
    state = await driver.client.credit("c1")
    assert (state.held["total"], state.used["total"]) == (0, 4_000)


async def test_capture_of_an_expired_hold_beyond_the_per_call_bound_is_refused(driver):
    """More than EXPIRE_PER_CALL_MAX holds are due: the one a Capture names is released and
    refused even if the bounded lazy release did not reach it."""
    from creditgate.limits.constants import EXPIRE_PER_CALL_MAX

    await driver.put("c1", {**CAPS, "consumer.online": 10**6})
    holds = []
    for index in range(EXPIRE_PER_CALL_MAX + 6):
        reason, _, hold_id = await driver.authorize(authorize_request(
            f"k{index}", "c1", 100, product_id="ecommerce", channel="ecommerce", mcc="5999"))
        assert reason == 0
        holds.append(hold_id)
    driver.advance(15 * 86_400 * 1000)  # past the ecommerce product's 14-day TTL
    with pytest.raises(Refused) as refused:
        await driver.capture("late", holds[-1], 100, final=True)
    assert refused.value.code == ScriptError.HOLD_EXPIRED
    state = await driver.client.credit("c1")
    # The first 64 by the lazy release, the named one by the capture, the rest by credit().
    assert state.level("total").held_minor == 0 and state.level("total").used_minor == 0
