"""The lifecycle scripts' refusals, one row per code, against the pure-Python model and the
scripts on the real Redis: each refuses with its code and detail and changes nothing."""

from __future__ import annotations

import copy

import pytest

from creditgate import hotpath
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.hotpath.plans import (
    plan_force_capture,
    plan_repay,
    plan_reverse,
    repayment_order,
)
from creditgate.limits import keys
from creditgate.limits.reasons import ScriptError as E
from creditgate.limits.replies import Refused
from tests.conftest import CUSTOMER_CAPS, snapshot
from tests.support import (
    PARTITIONS,
    PRODUCTS,
    RULES,
    authorize_request,
    model_client,
    redis_client,
    token,
)

CUSTOMER = "cust-1"
NEIGHBOUR = next(c for c in (f"n-{i}" for i in range(10_000))
                 if keys.partition_of(c, PARTITIONS) == keys.partition_of(CUSTOMER, PARTITIONS))
POS = "total,consumer,consumer.scan_pay,consumer.scan_pay.pos"
QR = "total,consumer,consumer.scan_pay,consumer.scan_pay.qr"
CASH = "total,cash"
ORDER = repayment_order(PRODUCTS)


class Driver:
    """The scripts through LimitsClient, with a picture of the whole state to compare."""

    def __init__(self, client, redis=None):
        self.client, self.redis = client, redis

    async def state(self):
        if self.redis is not None:
            return await snapshot(self.redis)
        return copy.deepcopy(self.client.runner.model.state)

    async def events(self, customer_id=CUSTOMER) -> list[tuple[str, str]]:
        """(type, hold id) of the partition's outbox events that name a hold, in order."""
        stream = keys.outbox(keys.base(keys.partition_of(customer_id, PARTITIONS)))
        if self.redis is None:
            entries = self.client.runner.model.state.get(stream, [])
        else:
            entries = [{k.decode(): v.decode() for k, v in fields.items()}
                       for _, fields in await self.redis.xrange(stream)]
        return [(event["type"], event["hold_id"]) for event in entries if "hold_id" in event]

    async def put(self, customer_id=CUSTOMER, caps=None):
        await self.client.put_customer(customer_id, "active", "Asia/Shanghai",
                                       caps or CUSTOMER_CAPS)

    async def authorize(self, key: str, amount: int, customer_id=CUSTOMER, product_id="scan_pay",
                        channel="pos", mcc="5411"):
        result = await self.client.authorize(*hotpath.plan_authorize(authorize_request(
            key, customer_id, amount, product_id=product_id, channel=channel, mcc=mcc),
            RULES, PARTITIONS))
        assert result.approved, result
        return result

    async def capture(self, hold_id: str, amount: int, key="c1", final=False):
        return await self.client.capture(*hotpath.plan_capture(pb.CaptureRequest(
            idempotency_key=key, hold_id=hold_id, amount_minor=amount, final=final), PARTITIONS))

    async def void(self, hold_id: str, key="v1"):
        return await self.client.void(*hotpath.plan_void(pb.VoidRequest(
            idempotency_key=key, hold_id=hold_id), PARTITIONS))

    async def reverse(self, key: str):
        return await self.client.reverse(*plan_reverse(pb.ReverseRequest(
            customer_id=CUSTOMER, original_idempotency_key=key), PARTITIONS))

    async def force_capture(self, amount: int, original: str = "", customer_id=CUSTOMER,
                            key="f1"):
        return await self.client.force_capture(*plan_force_capture(pb.ForceCaptureRequest(
            idempotency_key=key, customer_id=customer_id, product_id="scan_pay",
            channel=pb.CHANNEL_POS, merchant_id="m-1", mcc="5411", amount_minor=amount,
            currency="CNY", original_hold_id=original), PRODUCTS, PARTITIONS, token()))

    async def repay(self, amount: int, key="p1", customer_id=CUSTOMER, order=ORDER):
        return await self.client.repay(*plan_repay(pb.RepayRequest(
            idempotency_key=key, customer_id=customer_id, amount_minor=amount), order,
            PARTITIONS))


@pytest.fixture(params=["model", "redis"])
def driver(request):
    if request.param == "model":
        return Driver(model_client())
    redis = request.getfixturevalue("redis")
    return Driver(redis_client(redis), redis)


async def capture_a_reversed_hold(d: Driver):
    await d.put()
    hold = await d.authorize("a1", 5_000)
    reversal = await d.reverse("a1")
    return (lambda: d.capture(hold.hold_id, 1_000)), str(reversal.decided_at_ms)


async def over_capture_beyond_a_levels_credit(d: Driver):
    await d.put(caps={**CUSTOMER_CAPS, "consumer.scan_pay": 10_400})
    hold = await d.authorize("a1", 10_000)
    return (lambda: d.capture(hold.hold_id, 10_500)), "consumer.scan_pay"


async def over_capture_beyond_the_tolerance(d: Driver):
    await d.put()
    hold = await d.authorize("a1", 10_000)
    await d.capture(hold.hold_id, 3_000)
    return (lambda: d.capture(hold.hold_id, 9_001, key="c2")), "9000"


async def force_capture_an_open_hold(d: Driver):
    await d.put()
    hold = await d.authorize("a1", 5_000)
    return (lambda: d.force_capture(5_000, hold.hold_id)), str(hold.hold_expires_at_ms)


async def force_capture_another_customers_hold(d: Driver):
    await d.put()
    await d.put(customer_id=NEIGHBOUR)
    theirs = await d.authorize("a1", 5_000, customer_id=NEIGHBOUR)
    return (lambda: d.force_capture(5_000, theirs.hold_id)), ""


async def force_capture_a_captured_hold(d: Driver):
    await d.put()
    hold = await d.authorize("a1", 10_000)
    captured = await d.capture(hold.hold_id, 10_000, final=True)
    assert captured.state == "captured"
    return (lambda: d.force_capture(10_000, hold.hold_id)), str(captured.decided_at_ms)


async def force_capture_an_original_again_with_a_new_key(d: Driver):
    await d.put()
    hold = await d.authorize("a1", 10_000)
    await d.void(hold.hold_id)
    first = await d.force_capture(10_000, hold.hold_id, key="f1")
    return (lambda: d.force_capture(10_000, hold.hold_id, key="f2")), first.hold_id


async def force_capture_for_an_unknown_customer(d: Driver):
    return (lambda: d.force_capture(5_000, customer_id="nobody")), ""


async def repay_for_an_unknown_customer(d: Driver):
    return (lambda: d.repay(5_000, customer_id="nobody")), ""


async def repay_again_with_another_amount(d: Driver):
    await d.put()
    await d.repay(5_000)
    return (lambda: d.repay(5_001)), ""


async def repay_walking_too_many_paths(d: Driver):
    await d.put()
    order = tuple(f"total,p{i}" for i in range(65))
    return (lambda: d.repay(5_000, order=order)), "repay"


ROWS = [
    (E.HOLD_REVERSED, capture_a_reversed_hold),
    (E.CAPTURE_EXCEEDS_CREDIT, over_capture_beyond_a_levels_credit),
    (E.CAPTURE_EXCEEDS_HELD, over_capture_beyond_the_tolerance),
    (E.HOLD_STILL_OPEN, force_capture_an_open_hold),
    (E.HOLD_OF_OTHER_CUSTOMER, force_capture_another_customers_hold),
    (E.HOLD_CAPTURED, force_capture_a_captured_hold),
    (E.ALREADY_FORCE_CAPTURED, force_capture_an_original_again_with_a_new_key),
    (E.CUSTOMER_UNKNOWN, force_capture_for_an_unknown_customer),
    (E.CUSTOMER_UNKNOWN, repay_for_an_unknown_customer),
    (E.IDEMPOTENCY_MISMATCH, repay_again_with_another_amount),
    (E.BAD_ARGUMENT, repay_walking_too_many_paths),
]


@pytest.mark.parametrize(("code", "setup"), ROWS, ids=[row[1].__name__ for row in ROWS])
async def test_refusal(driver, code, setup):
    call, detail = await setup(driver)
    before = await driver.state()
    with pytest.raises(Refused) as caught:
        await call()
    assert (caught.value.code, caught.value.detail) == (code, detail)
    assert await driver.state() == before


async def test_force_capture_releases_an_unswept_original_first(driver):
    # Every level of the path has a cap of 100 000; the original of 80 000 expired, and no
    # sweeper or later call released it: counted as held, 80 000 more would be over the caps.
    await driver.put(caps={**CUSTOMER_CAPS, **{node: 100_000 for node in POS.split(",")}})
    hold = await driver.authorize("a1", 80_000)
    driver.client.clock_offset_ms = PRODUCTS["scan_pay"].hold_ttl_s * 1000 + 1_000
    result = await driver.force_capture(80_000, hold.hold_id)
    assert result.over_limit_levels == ()
    assert [(level.node, level.cap_minor, level.held_minor, level.used_minor)
            for level in result.levels] == [(node, 100_000, 0, 80_000) for node in POS.split(",")]
    assert await driver.events() == [("authorized", hold.hold_id), ("expired", hold.hold_id),
                                     ("force_captured", result.hold_id)]
    state = await driver.client.credit(CUSTOMER)
    assert (state.held["total"], state.used["total"]) == (0, 80_000)


async def test_repay_pays_unlisted_paths_after_the_listed_ones_by_name(driver):
    await driver.put()
    for key, amount, product_id, channel, mcc in [("a1", 1_000, "scan_pay", "pos", "5411"),
                                                  ("a2", 2_000, "scan_pay", "qr_scan", "5812"),
                                                  ("a3", 30_000, "cash", "cash", "6011")]:
        hold = await driver.authorize(key, amount, product_id=product_id, channel=channel,
                                      mcc=mcc)
        await driver.capture(hold.hold_id, amount, final=True)
    result = await driver.repay(32_500, order=(POS,))
    # "total,cash" sorts before "total,consumer,...".
    assert result.allocations == ((POS, 1_000), (CASH, 30_000), (QR, 1_500))
    assert (result.repaid_minor, result.overpaid_minor, result.outstanding_minor) == (
        32_500, 0, 500)
    state = await driver.client.credit(CUSTOMER)
    assert state.balances == {QR: 500}
    # Every level of the customer answers its used, drawn on or not.
    assert state.used == {"total": 500, "consumer": 500, "consumer.scan_pay": 500,
                          "consumer.scan_pay.qr": 500, "consumer.scan_pay.pos": 0, "cash": 0,
                          "consumer.online": 0}
