"""Authorize through gRPC: partial approval (response code "10"), counter-offers with the
installment plans that fit them, and the plan of an installment purchase."""

from __future__ import annotations

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import installments, keys
from creditgate.limits.reasons import DeclineReason
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, snapshot

POS = "consumer.scan_pay.pos"


async def _put(admin, customer_id: str, caps: dict[str, int] | None = None) -> None:
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id=customer_id, status=pb.CUSTOMER_STATUS_ACTIVE,
        caps_minor={**CUSTOMER_CAPS, **(caps or {})}))


def _request(customer_id: str, amount: int, key: str = "a1", product_id: str = "scan_pay",
             **kwargs) -> pb.AuthorizeRequest:
    channel, mcc = {"scan_pay": (pb.CHANNEL_POS, "5411"),
                    "ecommerce": (pb.CHANNEL_ECOMMERCE, "5999"),
                    "cash": (pb.CHANNEL_CASH, "6011")}[product_id]
    return pb.AuthorizeRequest(idempotency_key=key, customer_id=customer_id,
                               product_id=product_id, channel=channel, merchant_id="shop-1",
                               mcc=mcc, amount_minor=amount, currency="CNY", **kwargs)


def _plan_fields(plan: pb.InstallmentPlan) -> tuple:
    return (plan.months, plan.principal_minor, plan.first_installment_minor,
            plan.installment_minor, plan.fee_per_installment_minor, plan.fee_total_minor,
            plan.monthly_fee_bps)


async def test_partial_approval_holds_what_fits_and_says_so(admin, auth, redis):
    # consumer.scan_pay.pos has 500,000; 120,000 is already held.
    await _put(admin, "c-part")
    first = await auth.Authorize(_request("c-part", 120_000, key="a0"))
    assert first.approved and first.response_code == "00" and not first.partial
    assert first.approved_amount_minor == 120_000
    reply = await auth.Authorize(_request("c-part", 450_000, allow_partial=True))
    assert (reply.approved, reply.partial, reply.response_code) == (True, True, "10")
    assert reply.decline_reason == DeclineReason.NONE and reply.decline_level == ""
    assert (reply.approved_amount_minor, reply.counter_offer_minor,
            reply.counter_offer_level) == (380_000, 0, POS)
    assert reply.available_minor == 0
    pos = next(level for level in reply.levels if level.node == POS)
    assert (pos.cap_minor, pos.held_minor, pos.available_minor) == (500_000, 500_000, 0)
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id="c-part"))
    assert {level.node: level.held_minor for level in credit.levels}[POS] == 500_000
    stream = keys.outbox(keys.base(keys.partition_of("c-part", PARTITIONS)))
    event = [fields for _, fields in await redis.xrange(stream)
             if fields[b"type"] == b"authorized"][-1]
    assert (event[b"amount_minor"], event[b"requested_minor"], event[b"partial"]) == (
        b"380000", b"450000", b"1")
    # A retry gets the first answer, byte for byte, and changes nothing.
    before = await snapshot(redis)
    again = await auth.Authorize(_request("c-part", 450_000, allow_partial=True))
    assert again.SerializeToString() == reply.SerializeToString()
    assert await snapshot(redis) == before


async def test_a_decline_offers_the_largest_amount_and_the_plans_that_fit_it(admin, auth, redis):
    await _put(admin, "c-offer", {"consumer.scan_pay": 30_001})
    reply = await auth.Authorize(_request("c-offer", 50_000, installment_months=6))
    assert (reply.approved, reply.decline_reason, reply.response_code, reply.decline_level) == (
        False, DeclineReason.INSUFFICIENT_CREDIT, "51", "consumer.scan_pay")
    assert (reply.counter_offer_minor, reply.counter_offer_level) == (30_001,
                                                                      "consumer.scan_pay")
    assert not reply.hold_id and reply.approved_amount_minor == 0
    assert not reply.HasField("installment_plan")
    # Every term the product offers (3, 6, 12 months at 0.60 % a month), for the offer.
    assert [_plan_fields(plan) for plan in reply.counter_offer_plans] == [
        (3, 30_001, 10_001, 10_000, 180, 540, 60),
        (6, 30_001, 5_001, 5_000, 180, 1_080, 60),
        (12, 30_001, 2_501, 2_500, 180, 2_160, 60),
    ]
    for plan in reply.counter_offer_plans:
        assert plan.first_installment_minor + plan.installment_minor * (plan.months - 1) == 30_001
    # The offer is approvable as offered.
    taken = await auth.Authorize(_request("c-offer", reply.counter_offer_minor, key="a2",
                                          installment_months=6))
    assert taken.approved and _plan_fields(taken.installment_plan) == _plan_fields(
        reply.counter_offer_plans[1])


@pytest.mark.parametrize(("product_id", "caps", "amount", "expected"), [
    # A product without installments offers no plans.
    ("cash", {"cash": 50_000}, 60_000, (DeclineReason.INSUFFICIENT_CREDIT, 50_000, "cash", 0)),
    # Below the product's minimum nothing is offered, but the binding level is named.
    ("scan_pay", {POS: 99}, 1_000, (DeclineReason.INSUFFICIENT_CREDIT, 0, POS, 0)),
    # Declines that are not about the amount carry no offer.
    ("scan_pay", {POS: 99}, 5_000_001, (DeclineReason.AMOUNT_ABOVE_MAXIMUM, 0, "", 0)),
    ("ecommerce", {"consumer.online": 1_000}, 1_500,
     (DeclineReason.INSUFFICIENT_CREDIT, 1_000, "consumer.online", 4)),
])
async def test_offer_rows(admin, auth, product_id, caps, amount, expected):
    await _put(admin, "c-row", caps)
    reply = await auth.Authorize(_request("c-row", amount, product_id=product_id,
                                          allow_partial=True))
    assert (reply.decline_reason, reply.counter_offer_minor, reply.counter_offer_level,
            len(reply.counter_offer_plans)) == expected
    assert not reply.approved and not reply.partial


async def test_an_installment_purchase_carries_its_plan(admin, auth, redis):
    await _put(admin, "c-inst")
    reply = await auth.Authorize(_request("c-inst", 100_000, product_id="ecommerce",
                                          installment_months=24))
    assert reply.approved and reply.response_code == "00"
    assert _plan_fields(reply.installment_plan) == _plan_fields(
        pb.InstallmentPlan(months=24, principal_minor=100_000, first_installment_minor=4_182,
                           installment_minor=4_166, fee_per_installment_minor=500,
                           fee_total_minor=12_000, monthly_fee_bps=50))
    assert len(reply.counter_offer_plans) == 0
    # The full principal is held.
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id="c-inst"))
    assert {level.node: level.held_minor for level in credit.levels}["consumer.online"] == 100_000
    stream = keys.outbox(keys.base(keys.partition_of("c-inst", PARTITIONS)))
    event = [fields for _, fields in await redis.xrange(stream)
             if fields[b"type"] == b"authorized"][-1]
    assert event[b"installment_plan"] == installments.plan(100_000, 24, 50).text().encode()


async def test_a_term_the_product_does_not_offer_is_bad_input(admin, auth, redis):
    await _put(admin, "c-term")
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Authorize(_request("c-term", 100_000, installment_months=24))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("installment_months: ")
    assert await snapshot(redis) == before
