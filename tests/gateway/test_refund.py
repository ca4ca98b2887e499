"""Refund: a merchant gives back part or all of a captured purchase; the credit comes back at
every level the purchase used, never more than was captured less what was refunded."""

from __future__ import annotations

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import keys
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, snapshot

POS_PATH = ("total", "consumer", "consumer.scan_pay", "consumer.scan_pay.pos")


async def _captured_hold(admin, auth, customer_id: str, amount: int, captured: int) -> str:
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id=customer_id, status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
    reply = await auth.Authorize(pb.AuthorizeRequest(
        idempotency_key="a1", customer_id=customer_id, product_id="scan_pay",
        channel=pb.CHANNEL_POS, merchant_id="shop-9", mcc="5411", amount_minor=amount,
        currency="CNY"))
    assert reply.approved
    await auth.Capture(pb.CaptureRequest(idempotency_key="c1", hold_id=reply.hold_id,
                                         amount_minor=captured, final=True))
    return reply.hold_id


async def _used(auth, customer_id: str) -> dict[str, int]:
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=customer_id))
    return {level.node: level.used_minor for level in credit.levels}


async def test_partial_then_full_refund_restores_credit_at_every_level(admin, auth, redis):
    hold_id = await _captured_hold(admin, auth, "c-ref", 10_000, 8_000)
    assert all(v == 8_000 for n, v in (await _used(auth, "c-ref")).items() if n in POS_PATH)
    first = await auth.Refund(pb.RefundRequest(idempotency_key="r1", hold_id=hold_id,
                                               amount_minor=3_000))
    assert (first.refunded_minor, first.refunded_total_minor, first.refundable_minor) == (
        3_000, 3_000, 5_000)
    assert {n: v for n, v in (await _used(auth, "c-ref")).items() if n in POS_PATH} == {
        node: 5_000 for node in POS_PATH}
    second = await auth.Refund(pb.RefundRequest(idempotency_key="r2", hold_id=hold_id,
                                                amount_minor=5_000))
    assert (second.refunded_total_minor, second.refundable_minor) == (8_000, 0)
    assert {n: v for n, v in (await _used(auth, "c-ref")).items() if n in POS_PATH} == {
        node: 0 for node in POS_PATH}
    stream = keys.outbox(keys.base(keys.partition_of("c-ref", PARTITIONS)))
    refunds = [fields for _, fields in await redis.xrange(stream)
               if fields[b"type"] == b"refunded"]
    assert [(f[b"amount_minor"], f[b"refunded_total_minor"], f[b"merchant_id"])
            for f in refunds] == [(b"3000", b"3000", b"shop-9"), (b"5000", b"8000", b"shop-9")]
    assert len({f[b"event_id"] for f in refunds}) == 2


async def test_refund_beyond_what_was_captured_changes_nothing(admin, auth, redis):
    hold_id = await _captured_hold(admin, auth, "c-over", 10_000, 4_000)
    await auth.Refund(pb.RefundRequest(idempotency_key="r1", hold_id=hold_id,
                                       amount_minor=1_000))
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Refund(pb.RefundRequest(idempotency_key="r2", hold_id=hold_id,
                                           amount_minor=3_001))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details().startswith("amount_minor: more than the 3000 minor units")
    assert await snapshot(redis) == before


async def test_refund_is_idempotent_by_its_key(admin, auth, redis):
    hold_id = await _captured_hold(admin, auth, "c-idem", 10_000, 6_000)
    request = pb.RefundRequest(idempotency_key="r1", hold_id=hold_id, amount_minor=2_000)
    first = await auth.Refund(request)
    before = await snapshot(redis)
    again = await auth.Refund(request)
    assert again.SerializeToString() == first.SerializeToString()
    assert await snapshot(redis) == before
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Refund(pb.RefundRequest(idempotency_key="r1", hold_id=hold_id,
                                           amount_minor=2_001))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await snapshot(redis) == before


@pytest.mark.parametrize(("field", "request_"), [
    ("idempotency_key", dict(idempotency_key="", hold_id="001-AAAAAAAAAAAAAAAA",
                             amount_minor=1)),
    ("hold_id", dict(idempotency_key="k", hold_id="nope", amount_minor=1)),
    ("hold_id", dict(idempotency_key="k", hold_id="999-AAAAAAAAAAAAAAAA", amount_minor=1)),
    ("amount_minor", dict(idempotency_key="k", hold_id="001-AAAAAAAAAAAAAAAA",
                          amount_minor=0)),
    ("amount_minor", dict(idempotency_key="k", hold_id="001-AAAAAAAAAAAAAAAA",
                          amount_minor=100_000_000_001)),
])
async def test_bad_refund_input(auth, redis, field, request_):
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Refund(pb.RefundRequest(**request_))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field + ": ")
    assert await snapshot(redis) == before


async def test_refund_of_an_unknown_hold_is_not_found(auth):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Refund(pb.RefundRequest(idempotency_key="k", hold_id="001-AAAAAAAAAAAAAAAA",
                                           amount_minor=1))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
