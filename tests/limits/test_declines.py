"""The decline reasons, one row per reason in the documented order, against the model, the
scripts on Redis and the gRPC gateway. Each row's request also breaks every rule checked after
its own, so a row passes only if the documented order holds."""

from __future__ import annotations

import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.hotpath.plans import plan_reverse
from creditgate.limits.reasons import DECLINE_ORDER, RESPONSE_CODE, DeclineReason
from tests.support import (
    PARTITIONS,
    GrpcDriver,
    ScriptDriver,
    authorize_request,
    model_client,
    redis_client,
)

R = DeclineReason
ROOMY = {"total": 10**9, "consumer": 10**9, "consumer.scan_pay": 10**9,
         "consumer.scan_pay.pos": 10**9, "cash": 10**9}
TIGHT = {"total": 10**9, "consumer": 10**9, "consumer.scan_pay": 10**9,
         "consumer.scan_pay.pos": 50, "cash": 5}

# (reason, level, customer status or None for unknown, caps, prior approvals, request kwargs)
# Prior approvals are (product, channel, mcc, amount) authorized before the request, or
# REVERSE_FIRST: a reversal of the request (by its key) arrives before it.
REVERSE_FIRST = ("reverse",)
ROWS = [
    # The tombstone is the request's idempotency record: found before the customer is looked
    # up (this one is unknown) and before every other rule the request breaks.
    (R.REVERSED, "", None, TIGHT, [REVERSE_FIRST],
     dict(product_id="scan_pay", channel="ecommerce", mcc="7995", amount_minor=99)),
    (R.CUSTOMER_UNKNOWN, "", None, TIGHT, [],
     dict(product_id="scan_pay", channel="ecommerce", mcc="7995", amount_minor=99)),
    (R.CUSTOMER_FROZEN, "", "frozen", TIGHT, [],
     dict(product_id="scan_pay", channel="ecommerce", mcc="7995", amount_minor=99)),
    (R.CUSTOMER_CLOSED, "", "closed", TIGHT, [],
     dict(product_id="scan_pay", channel="ecommerce", mcc="7995", amount_minor=99)),
    (R.CUSTOMER_OVERDUE, "", "overdue", TIGHT, [],
     dict(product_id="scan_pay", channel="ecommerce", mcc="7995", amount_minor=99)),
    (R.CHANNEL_NOT_ALLOWED, "", "active", TIGHT, [],
     dict(product_id="scan_pay", channel="ecommerce", mcc="7995", amount_minor=99)),
    (R.MCC_NOT_ALLOWED, "", "active", TIGHT, [],  # denied MCC
     dict(product_id="scan_pay", channel="pos", mcc="7995", amount_minor=99)),
    (R.MCC_NOT_ALLOWED, "", "active", TIGHT, [],  # not on the cash product's allow list
     dict(product_id="cash", channel="cash", mcc="5411", amount_minor=9_999)),
    (R.AMOUNT_BELOW_MINIMUM, "", "active", TIGHT, [],
     dict(product_id="scan_pay", channel="pos", mcc="5411", amount_minor=99)),
    (R.AMOUNT_ABOVE_MAXIMUM, "", "active", TIGHT, [],
     dict(product_id="scan_pay", channel="pos", mcc="5411", amount_minor=5_000_001)),
    # cash allows 3 a day and 2,000,000 a day: the fourth breaks the count (and the amount and
    # the credit left at `cash`).
    (R.VELOCITY_COUNT_EXCEEDED, "", "active", {**ROOMY, "cash": 40_000},
     [("cash", "cash", "6011", 10_000)] * 3,
     dict(product_id="cash", channel="cash", mcc="6011", amount_minor=2_000_000)),
    (R.VELOCITY_AMOUNT_EXCEEDED, "", "active", {**ROOMY, "cash": 2_000_005},
     [("cash", "cash", "6011", 1_000_000)] * 2,
     dict(product_id="cash", channel="cash", mcc="6011", amount_minor=10_000)),
    (R.INSUFFICIENT_CREDIT, "consumer.scan_pay.pos", "active", TIGHT, [],
     dict(product_id="scan_pay", channel="pos", mcc="5411", amount_minor=100)),
    # Root first: when several levels are short, the response names the one nearest the root.
    (R.INSUFFICIENT_CREDIT, "consumer", "active",
     {**ROOMY, "consumer": 150, "consumer.scan_pay.pos": 120}, [],
     dict(product_id="scan_pay", channel="pos", mcc="5411", amount_minor=200)),
    (R.NONE, "", "active", ROOMY, [("scan_pay", "pos", "5411", 1_000)],
     dict(product_id="scan_pay", channel="pos", mcc="5411", amount_minor=5_000_000)),
]


@pytest.fixture(params=["model", "redis", "grpc"])
def driver(request):
    if request.param == "model":
        return ScriptDriver(model_client())
    if request.param == "redis":
        return ScriptDriver(redis_client(request.getfixturevalue("redis")))
    return GrpcDriver(request.getfixturevalue("gateway"), request.getfixturevalue("admin"),
                      request.getfixturevalue("auth"))


def test_rows_cover_every_reason_in_the_documented_order():
    declining = [row[0] for row in ROWS if row[0] != R.NONE]
    assert list(dict.fromkeys(declining)) == list(DECLINE_ORDER)


@pytest.mark.parametrize(("reason", "level", "status", "caps", "prior", "request_"), ROWS,
                         ids=[f"{i:02d}-{row[0].name}" for i, row in enumerate(ROWS)])
async def test_decline_reason(driver, reason, level, status, caps, prior, request_):
    if status is not None:
        await driver.put("cust-1", caps, status="active")
    for index, entry in enumerate(prior):
        if entry == REVERSE_FIRST:
            await reverse(driver, "cust-1", "the-request")
            continue
        product_id, channel, mcc, amount = entry
        got = await driver.authorize(authorize_request(
            f"prior-{index}", "cust-1", amount, product_id=product_id, channel=channel,
            mcc=mcc))
        assert got[0] == R.NONE
    if status not in (None, "active"):
        await driver.put("cust-1", caps, status=status)
    got_reason, got_level, hold_id = await driver.authorize(
        authorize_request("the-request", "cust-1", **request_))
    assert (got_reason, got_level) == (reason, level)
    assert bool(hold_id) == (reason == R.NONE)


async def reverse(driver, customer_id: str, original_key: str) -> None:
    request = pb.ReverseRequest(customer_id=customer_id, original_idempotency_key=original_key)
    if isinstance(driver, GrpcDriver):
        reply = await driver.auth.Reverse(request)
        assert reply.outcome == pb.REVERSE_OUTCOME_TOMBSTONED
    else:
        result = await driver.client.reverse(*plan_reverse(request, PARTITIONS))
        assert result.outcome == "tombstoned"


def test_response_codes():
    assert RESPONSE_CODE[R.NONE] == "00"
    assert RESPONSE_CODE[R.REVERSED] == "12"
    assert RESPONSE_CODE[R.INSUFFICIENT_CREDIT] == "51"
    assert RESPONSE_CODE[R.CUSTOMER_UNKNOWN] == "14"
    assert RESPONSE_CODE[R.VELOCITY_COUNT_EXCEEDED] == "65"
    assert {RESPONSE_CODE[r] for r in (R.CHANNEL_NOT_ALLOWED, R.MCC_NOT_ALLOWED)} == {"57"}
    assert {RESPONSE_CODE[r] for r in (R.CUSTOMER_FROZEN, R.CUSTOMER_CLOSED)} == {"62"}
