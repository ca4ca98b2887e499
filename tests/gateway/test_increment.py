"""IncrementAuthorization through gRPC: an open hold of an incremental product grows when every
level fits the increment; declines are answers (remembered), refusals are statuses, bad input
names its field; nothing changes but what the approval says."""

from __future__ import annotations

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import keys
from creditgate.limits.reasons import DeclineReason
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, snapshot

ONLINE_PATH = ("total", "consumer", "consumer.online")


async def _hold(admin, auth, customer_id: str, amount: int, product_id="ecommerce",
                caps: dict[str, int] | None = None) -> str:
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id=customer_id, status=pb.CUSTOMER_STATUS_ACTIVE,
        caps_minor={**CUSTOMER_CAPS, **(caps or {})}))
    channel, mcc = {"ecommerce": (pb.CHANNEL_ECOMMERCE, "5999"),
                    "scan_pay": (pb.CHANNEL_POS, "5411")}[product_id]
    reply = await auth.Authorize(pb.AuthorizeRequest(
        idempotency_key="a1", customer_id=customer_id, product_id=product_id, channel=channel,
        merchant_id="hotel-1", mcc=mcc, amount_minor=amount, currency="CNY"))
    assert reply.approved
    return reply.hold_id


async def _held(auth, customer_id: str) -> dict[str, int]:
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=customer_id))
    return {level.node: level.held_minor for level in credit.levels}


def _increment(hold_id: str, amount: int, key: str = "i1") -> pb.IncrementAuthorizationRequest:
    return pb.IncrementAuthorizationRequest(idempotency_key=key, hold_id=hold_id,
                                            amount_minor=amount)


async def test_an_increment_grows_the_hold_at_every_level(admin, auth, redis):
    hold_id = await _hold(admin, auth, "c-inc", 100_000)
    await auth.Capture(pb.CaptureRequest(idempotency_key="c1", hold_id=hold_id,
                                         amount_minor=40_000))
    reply = await auth.IncrementAuthorization(_increment(hold_id, 25_000))
    assert (reply.approved, reply.decline_reason, reply.response_code) == (
        True, DeclineReason.NONE, "00")
    assert (reply.hold_id, reply.amount_total_minor, reply.held_minor) == (
        hold_id, 125_000, 85_000)
    # consumer.online: 700,000 cap, 40,000 used, 85,000 held.
    online = next(level for level in reply.levels if level.node == "consumer.online")
    assert (online.cap_minor, online.held_minor, online.used_minor, online.available_minor) == (
        700_000, 85_000, 40_000, 575_000)
    assert [level.node for level in reply.levels] == list(ONLINE_PATH)
    held = await _held(auth, "c-inc")
    assert all(held[node] == 85_000 for node in ONLINE_PATH)
    stream = keys.outbox(keys.base(keys.partition_of("c-inc", PARTITIONS)))
    events = [f for _, f in await redis.xrange(stream) if f[b"type"] == b"incremented"]
    assert [(f[b"hold_id"], f[b"amount_minor"], f[b"amount_total_minor"], f[b"merchant_id"])
            for f in events] == [(hold_id.encode(), b"25000", b"125000", b"hotel-1")]
    # A retry answers the same and changes nothing; the key with another amount is refused.
    before = await snapshot(redis)
    again = await auth.IncrementAuthorization(_increment(hold_id, 25_000))
    assert again.SerializeToString() == reply.SerializeToString()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.IncrementAuthorization(_increment(hold_id, 25_001))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await snapshot(redis) == before


async def test_a_declined_increment_changes_nothing_but_its_record(admin, auth, redis):
    hold_id = await _hold(admin, auth, "c-dec", 100_000, caps={"consumer.online": 150_000})
    before = await snapshot(redis)
    reply = await auth.IncrementAuthorization(_increment(hold_id, 60_000))
    assert (reply.approved, reply.decline_reason, reply.response_code, reply.decline_level) == (
        False, DeclineReason.INSUFFICIENT_CREDIT, "51", "consumer.online")
    assert (reply.amount_total_minor, reply.held_minor, reply.available_minor) == (
        100_000, 100_000, 50_000)
    # The counter-offer: the largest increment that fits now, and the level that binds it.
    assert (reply.counter_offer_minor, reply.counter_offer_level) == (50_000, "consumer.online")
    after = await snapshot(redis)
    record = keys.idempotency_increment(keys.base(keys.partition_of_hold(hold_id, PARTITIONS)),
                                        hold_id, "i1").encode()
    assert set(after) - set(before) == {record}
    assert {k: v for k, v in after.items() if k != record} == before


async def test_a_frozen_customer_cannot_increment(admin, auth):
    hold_id = await _hold(admin, auth, "c-frz", 100_000)
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="c-frz", status=pb.CUSTOMER_STATUS_FROZEN, caps_minor=CUSTOMER_CAPS))
    reply = await auth.IncrementAuthorization(_increment(hold_id, 1_000))
    assert (reply.approved, reply.decline_reason, reply.response_code) == (
        False, DeclineReason.CUSTOMER_FROZEN, "62")


async def test_refusals(admin, auth, redis):
    not_incremental = await _hold(admin, auth, "c-ref", 10_000, product_id="scan_pay")
    voided = await _hold(admin, auth, "c-ref2", 10_000)
    await auth.Void(pb.VoidRequest(idempotency_key="v1", hold_id=voided))
    before = await snapshot(redis)
    cases = [
        (not_incremental, grpc.StatusCode.FAILED_PRECONDITION,
         "hold_id: the hold's product does not allow incremental authorization"),
        (voided, grpc.StatusCode.FAILED_PRECONDITION, "hold_id: the hold was voided"),
        ("001-AAAAAAAAAAAAAAAA", grpc.StatusCode.NOT_FOUND, "hold_id: no such hold"),
    ]
    for hold_id, code, message in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await auth.IncrementAuthorization(_increment(hold_id, 1_000))
        assert caught.value.code() == code
        assert caught.value.details().startswith(message)
    assert await snapshot(redis) == before


@pytest.mark.parametrize(("field", "request_"), [
    ("idempotency_key", dict(idempotency_key="", hold_id="001-AAAAAAAAAAAAAAAA",
                             amount_minor=1)),
    ("hold_id", dict(idempotency_key="k", hold_id="", amount_minor=1)),
    ("hold_id", dict(idempotency_key="k", hold_id="999-AAAAAAAAAAAAAAAA", amount_minor=1)),
    ("amount_minor", dict(idempotency_key="k", hold_id="001-AAAAAAAAAAAAAAAA",
                          amount_minor=0)),
    ("amount_minor", dict(idempotency_key="k", hold_id="001-AAAAAAAAAAAAAAAA",
                          amount_minor=-5)),
    ("amount_minor", dict(idempotency_key="k", hold_id="001-AAAAAAAAAAAAAAAA",
                          amount_minor=100_000_000_001)),
])
async def test_bad_increment_input(auth, redis, field, request_):
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.IncrementAuthorization(pb.IncrementAuthorizationRequest(**request_))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field + ": ")
    assert await snapshot(redis) == before
