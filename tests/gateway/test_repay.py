"""Repay: the billing system's repayment restores credit at once, paying the customer's path
balances in the catalog's allocation order; what exceeds them is kept as a credit balance, and
so is a later refund of what was already repaid."""

from __future__ import annotations

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.hotpath.plans import repayment_order
from creditgate.limits import catalog, keys
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, snapshot

CUSTOMER = "c-pay"
PRODUCTS = catalog.load()
POS = "total,consumer,consumer.scan_pay,consumer.scan_pay.pos"
QR = "total,consumer,consumer.scan_pay,consumer.scan_pay.qr"
ONLINE = "total,consumer,consumer.online"
CASH = "total,cash"
# (product, channel, mcc) of a purchase on each path.
PURCHASES = {POS: ("scan_pay", pb.CHANNEL_POS, "5411"),
             QR: ("scan_pay", pb.CHANNEL_QR_SCAN, "5812"),
             ONLINE: ("ecommerce", pb.CHANNEL_ECOMMERCE, "5999"),
             CASH: ("cash", pb.CHANNEL_CASH, "6011")}


def test_the_allocation_order_of_the_example_catalog():
    # cash has repayment priority 10, the others 100 (then by id: ecommerce, scan_pay); a
    # product's channels in catalog order (qr_scan before pos).
    assert repayment_order(PRODUCTS) == (CASH, ONLINE, QR, POS)


async def put(admin, status=pb.CUSTOMER_STATUS_ACTIVE, customer_id=CUSTOMER):
    await admin.PutCustomer(pb.PutCustomerRequest(customer_id=customer_id, status=status,
                                                  caps_minor=CUSTOMER_CAPS))


async def purchase(auth, path: str, amount: int, key: str) -> str:
    product_id, channel, mcc = PURCHASES[path]
    reply = await auth.Authorize(pb.AuthorizeRequest(
        idempotency_key=key, customer_id=CUSTOMER, product_id=product_id, channel=channel,
        merchant_id="m-1", mcc=mcc, amount_minor=amount, currency="CNY"))
    assert reply.approved, reply
    await auth.Capture(pb.CaptureRequest(idempotency_key="c", hold_id=reply.hold_id,
                                         amount_minor=amount, final=True))
    return reply.hold_id


def repay(amount: int, key: str = "p1", customer_id=CUSTOMER) -> pb.RepayRequest:
    return pb.RepayRequest(idempotency_key=key, customer_id=customer_id, amount_minor=amount)


async def used(auth) -> dict[str, int]:
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=CUSTOMER))
    return {level.node: level.used_minor for level in credit.levels if level.used_minor}


async def customer_events(redis, *kinds: str) -> list[dict]:
    stream = keys.outbox(keys.base(keys.partition_of(CUSTOMER, PARTITIONS)))
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in await redis.xrange(stream) if fields[b"type"].decode() in kinds]


async def test_repayment_pays_paths_in_allocation_order(admin, auth, redis):
    await put(admin)
    for index, (path, amount) in enumerate([(POS, 30_000), (QR, 20_000), (ONLINE, 15_000),
                                            (CASH, 12_000)]):
        await purchase(auth, path, amount, f"a{index}")
    reply = await admin.Repay(repay(40_000))
    assert [(a.path, a.amount_minor) for a in reply.allocations] == [
        (CASH, 12_000), (ONLINE, 15_000), (QR, 13_000)]
    assert (reply.customer_id, reply.repaid_minor, reply.overpaid_minor,
            reply.outstanding_minor) == (CUSTOMER, 40_000, 0, 37_000)
    assert await used(auth) == {"total": 37_000, "consumer": 37_000,
                                "consumer.scan_pay": 37_000, "consumer.scan_pay.qr": 7_000,
                                "consumer.scan_pay.pos": 30_000}
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=CUSTOMER))
    assert (credit.outstanding_minor, credit.credit_balance_minor) == (37_000, 0)
    events = await customer_events(redis, "repaid", "overpaid")
    assert [(e["type"], e["nodes"], e["amount_minor"]) for e in events] == [
        ("repaid", CASH, "12000"), ("repaid", ONLINE, "15000"), ("repaid", QR, "13000")]
    assert len({e["event_id"] for e in events}) == 3
    assert all(e["event_id"].startswith(f"c:{CUSTOMER}:") for e in events)
    assert all(e["at_ms"] == str(reply.decided_at_ms) for e in events)
    # Credit is back at once: the repaid cash line lends again.
    again = await auth.Authorize(pb.AuthorizeRequest(
        idempotency_key="a9", customer_id=CUSTOMER, product_id="cash",
        channel=pb.CHANNEL_CASH, merchant_id="m-1", mcc="6011",
        amount_minor=CUSTOMER_CAPS["cash"], currency="CNY"))
    assert again.approved


async def test_an_overpayment_becomes_the_customers_credit_balance(admin, auth, redis):
    await put(admin)
    await purchase(auth, POS, 10_000, "a1")
    reply = await admin.Repay(repay(25_000))
    assert [(a.path, a.amount_minor) for a in reply.allocations] == [(POS, 10_000)]
    assert (reply.repaid_minor, reply.overpaid_minor, reply.outstanding_minor) == (
        10_000, 15_000, 0)
    assert await used(auth) == {}
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=CUSTOMER))
    assert (credit.outstanding_minor, credit.credit_balance_minor) == (0, 15_000)
    overpaid = await customer_events(redis, "overpaid")
    assert [(e["nodes"], e["amount_minor"]) for e in overpaid] == [("", "15000")]
    # With nothing owed, all of a repayment is overpaid.
    second = await admin.Repay(repay(1_000, key="p2"))
    assert (second.repaid_minor, second.overpaid_minor, list(second.allocations)) == (
        0, 1_000, [])
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=CUSTOMER))
    assert credit.credit_balance_minor == 16_000


@pytest.mark.parametrize(("repaid", "refund", "restored"), [
    (10_000, 4_000, 0),  # all repaid: the whole refund is owed back to the customer
    (7_000, 5_000, 3_000),  # 3,000 still owed: that is restored, 2,000 owed back
    (0, 5_000, 5_000),  # nothing repaid: all restored (as before repayments existed)
])
async def test_a_refund_after_repayment_goes_to_the_credit_balance(admin, auth, redis, repaid,
                                                                   refund, restored):
    await put(admin)
    hold_id = await purchase(auth, POS, 10_000, "a1")
    if repaid:
        await admin.Repay(repay(repaid))
    reply = await auth.Refund(pb.RefundRequest(idempotency_key="r1", hold_id=hold_id,
                                               amount_minor=refund))
    assert (reply.refunded_minor, reply.refundable_minor) == (refund, 10_000 - refund)
    owed = 10_000 - repaid - restored
    assert await used(auth) == ({node: owed for node in POS.split(",")} if owed else {})
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=CUSTOMER))
    assert (credit.outstanding_minor, credit.credit_balance_minor) == (owed, refund - restored)
    (event,) = await customer_events(redis, "refunded")
    assert (event["amount_minor"], event["restored_minor"], event["overpaid_minor"]) == (
        str(refund), str(restored), str(refund - restored))


async def test_repay_is_idempotent_by_its_key(admin, auth, redis):
    await put(admin)
    await purchase(auth, POS, 10_000, "a1")
    first = await admin.Repay(repay(6_000))
    before = await snapshot(redis)
    again = await admin.Repay(repay(6_000))
    assert again.SerializeToString() == first.SerializeToString()
    assert await snapshot(redis) == before
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.Repay(repay(6_001))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await snapshot(redis) == before


async def test_an_unknown_customer_is_not_found(admin, redis):
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.Repay(repay(1_000, customer_id="c-nobody"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "customer_id: unknown customer"
    assert await snapshot(redis) == before


@pytest.mark.parametrize("status", [pb.CUSTOMER_STATUS_FROZEN, pb.CUSTOMER_STATUS_CLOSED,
                                    pb.CUSTOMER_STATUS_OVERDUE])
async def test_frozen_closed_and_overdue_customers_repay_and_keep_their_status(admin, auth,
                                                                             status):
    await put(admin)
    await purchase(auth, POS, 10_000, "a1")
    await put(admin, status=status)
    reply = await admin.Repay(repay(10_000))
    assert (reply.repaid_minor, reply.outstanding_minor) == (10_000, 0)
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=CUSTOMER))
    assert credit.status == status  # the credit-decision system owns the status
    assert await used(auth) == {}


@pytest.mark.parametrize(("field", "request_"), [
    ("idempotency_key", dict(idempotency_key="", customer_id=CUSTOMER, amount_minor=1)),
    ("customer_id", dict(idempotency_key="p", customer_id="", amount_minor=1)),
    ("customer_id", dict(idempotency_key="p", customer_id="a{b}", amount_minor=1)),
    ("amount_minor", dict(idempotency_key="p", customer_id=CUSTOMER, amount_minor=0)),
    ("amount_minor", dict(idempotency_key="p", customer_id=CUSTOMER,
                          amount_minor=100_000_000_001)),
])
async def test_bad_repay_input(admin, auth, redis, field, request_):
    await put(admin)
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.Repay(pb.RepayRequest(**request_))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field + ": ")
    assert await snapshot(redis) == before
