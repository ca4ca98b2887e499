"""Invariant 3, idempotency: a retry with the same key returns the first answer and changes
nothing; the same key with another payload is ALREADY_EXISTS and changes nothing."""

from __future__ import annotations

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import keys
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, snapshot

CUSTOMER = "cust-idem"


def authorize_request(**overrides) -> pb.AuthorizeRequest:
    fields = dict(idempotency_key="auth-1", customer_id=CUSTOMER, product_id="scan_pay",
                  channel=pb.CHANNEL_POS, merchant_id="shop-1", mcc="5411", amount_minor=10_000,
                  currency="CNY")
    fields.update(overrides)
    return pb.AuthorizeRequest(**fields)


def outbox_key(customer_id: str = CUSTOMER) -> str:
    return keys.outbox(keys.base(keys.partition_of(customer_id, PARTITIONS)))


async def outbox_length(redis, customer_id: str = CUSTOMER) -> int:
    return await redis.xlen(outbox_key(customer_id))


async def put_customer(admin, caps=None) -> None:
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id=CUSTOMER, status=pb.CUSTOMER_STATUS_ACTIVE,
        caps_minor=CUSTOMER_CAPS if caps is None else caps))


async def expect_already_exists(redis, call, request) -> None:
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS, caught.value.details()
    assert caught.value.details().startswith("idempotency_key: ")
    assert await snapshot(redis) == before


async def test_authorize_retry_returns_the_first_answer_and_changes_nothing(redis, admin, auth):
    await put_customer(admin)
    first = await auth.Authorize(authorize_request())
    assert first.approved and first.hold_id
    events = await outbox_length(redis)
    before = await snapshot(redis)
    for _ in range(3):
        again = await auth.Authorize(authorize_request())
        assert again.SerializeToString(deterministic=True) == first.SerializeToString(
            deterministic=True)
    assert await snapshot(redis) == before
    assert await outbox_length(redis) == events
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=CUSTOMER))
    held = {level.node: level.held_minor for level in credit.levels}
    assert held["consumer.scan_pay.pos"] == 10_000  # held once, not four times


async def test_authorize_retry_after_time_passed_is_still_the_first_answer(
        redis, gateway, admin, auth):
    await put_customer(admin)
    first = await auth.Authorize(authorize_request())
    gateway.limits.clock_offset_ms = 60_000  # a retry a minute later
    again = await auth.Authorize(authorize_request())
    assert again == first
    assert again.decided_at_ms == first.decided_at_ms


@pytest.mark.parametrize(("field", "value"), [
    ("amount_minor", 10_001),
    ("merchant_id", "shop-2"),
    ("mcc", "5812"),
    ("channel", pb.CHANNEL_QR_SCAN),
    ("product_id", "ecommerce"),
])
async def test_authorize_same_key_other_payload_is_already_exists(redis, admin, auth, field,
                                                                  value):
    await put_customer(admin)
    first = await auth.Authorize(authorize_request())
    assert first.approved
    other = authorize_request(**{field: value})
    if field == "product_id":
        other.channel = pb.CHANNEL_ECOMMERCE
    await expect_already_exists(redis, auth.Authorize, other)
    # The key still answers its own payload with the first answer.
    assert await auth.Authorize(authorize_request()) == first


async def test_authorize_keys_are_scoped_to_the_customer(admin, auth):
    await put_customer(admin)
    await admin.PutCustomer(pb.PutCustomerRequest(customer_id="other",
                                                  status=pb.CUSTOMER_STATUS_ACTIVE,
                                                  caps_minor=CUSTOMER_CAPS))
    mine = await auth.Authorize(authorize_request())
    theirs = await auth.Authorize(authorize_request(customer_id="other"))
    assert mine.approved and theirs.approved
    assert mine.hold_id != theirs.hold_id


async def test_declined_retry_stays_declined_after_caps_are_raised(redis, admin, auth):
    caps = dict(CUSTOMER_CAPS, **{"consumer.scan_pay.pos": 5_000})
    await put_customer(admin, caps)
    first = await auth.Authorize(authorize_request(amount_minor=6_000))
    assert not first.approved
    assert first.decline_reason == pb.DECLINE_REASON_INSUFFICIENT_CREDIT
    assert first.decline_level == "consumer.scan_pay.pos"
    assert first.response_code == "51"

    await put_customer(admin, dict(caps, **{"consumer.scan_pay.pos": 50_000}))
    events = await outbox_length(redis)
    before = await snapshot(redis)
    again = await auth.Authorize(authorize_request(amount_minor=6_000))
    assert again.SerializeToString(deterministic=True) == first.SerializeToString(
        deterministic=True)
    assert await snapshot(redis) == before
    assert await outbox_length(redis) == events

    fresh = await auth.Authorize(authorize_request(idempotency_key="auth-2", amount_minor=6_000))
    assert fresh.approved
    assert fresh.hold_id
    assert await outbox_length(redis) == events + 1


async def test_unknown_customer_decline_is_remembered(redis, admin, auth):
    """A decline for an unknown customer is an answer too: a retry after the customer is
    created returns it unchanged."""
    first = await auth.Authorize(authorize_request())
    assert first.decline_reason == pb.DECLINE_REASON_CUSTOMER_UNKNOWN
    await put_customer(admin)
    assert await auth.Authorize(authorize_request()) == first


async def _approved_hold(admin, auth, amount: int = 10_000) -> str:
    await put_customer(admin)
    reply = await auth.Authorize(authorize_request(amount_minor=amount))
    assert reply.approved
    return reply.hold_id


@pytest.mark.parametrize("final", [False, True])
async def test_capture_retry_returns_the_first_answer(redis, admin, auth, final):
    hold_id = await _approved_hold(admin, auth)
    request = pb.CaptureRequest(idempotency_key="cap-1", hold_id=hold_id, amount_minor=4_000,
                                final=final)
    first = await auth.Capture(request)
    assert first.captured_total_minor == 4_000
    assert first.held_minor == (0 if final else 6_000)
    events = await outbox_length(redis)
    before = await snapshot(redis)
    again = await auth.Capture(request)
    assert again.SerializeToString(deterministic=True) == first.SerializeToString(
        deterministic=True)
    assert await snapshot(redis) == before
    assert await outbox_length(redis) == events


@pytest.mark.parametrize(("amount", "final"), [(4_001, False), (4_000, True), (1, False)])
async def test_capture_same_key_other_payload_is_already_exists(redis, admin, auth, amount,
                                                                final):
    hold_id = await _approved_hold(admin, auth)
    first = await auth.Capture(pb.CaptureRequest(idempotency_key="cap-1", hold_id=hold_id,
                                                 amount_minor=4_000))
    await expect_already_exists(redis, auth.Capture, pb.CaptureRequest(
        idempotency_key="cap-1", hold_id=hold_id, amount_minor=amount, final=final))
    assert first.held_minor == 6_000


async def test_capture_keys_are_scoped_to_the_hold(admin, auth):
    await put_customer(admin)
    one = await auth.Authorize(authorize_request(idempotency_key="a1", amount_minor=3_000))
    two = await auth.Authorize(authorize_request(idempotency_key="a2", amount_minor=5_000))
    first = await auth.Capture(pb.CaptureRequest(idempotency_key="cap", hold_id=one.hold_id,
                                                 amount_minor=1_000))
    second = await auth.Capture(pb.CaptureRequest(idempotency_key="cap", hold_id=two.hold_id,
                                                  amount_minor=1_000))
    assert (first.held_minor, second.held_minor) == (2_000, 4_000)


async def test_void_retry_returns_the_first_answer(redis, admin, auth):
    hold_id = await _approved_hold(admin, auth)
    first = await auth.Void(pb.VoidRequest(idempotency_key="void-1", hold_id=hold_id))
    assert (first.state, first.released_minor) == (pb.HOLD_STATE_VOIDED, 10_000)
    events = await outbox_length(redis)
    before = await snapshot(redis)
    again = await auth.Void(pb.VoidRequest(idempotency_key="void-1", hold_id=hold_id))
    assert again.SerializeToString(deterministic=True) == first.SerializeToString(
        deterministic=True)
    assert await snapshot(redis) == before
    assert await outbox_length(redis) == events
    # Another key for the same void is refused: the hold is closed.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Void(pb.VoidRequest(idempotency_key="void-2", hold_id=hold_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await snapshot(redis) == before


async def test_capture_retry_after_a_later_void_returns_the_first_capture(redis, admin, auth):
    hold_id = await _approved_hold(admin, auth)
    request = pb.CaptureRequest(idempotency_key="cap-1", hold_id=hold_id, amount_minor=2_500)
    first = await auth.Capture(request)
    assert (first.state, first.held_minor) == (pb.HOLD_STATE_OPEN, 7_500)
    voided = await auth.Void(pb.VoidRequest(idempotency_key="void-1", hold_id=hold_id))
    assert (voided.released_minor, voided.captured_total_minor) == (7_500, 2_500)
    events = await outbox_length(redis)
    before = await snapshot(redis)
    again = await auth.Capture(request)
    assert again.SerializeToString(deterministic=True) == first.SerializeToString(
        deterministic=True)
    assert await snapshot(redis) == before
    assert await outbox_length(redis) == events
    # A new capture key is refused: the hold was voided.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Capture(pb.CaptureRequest(idempotency_key="cap-2", hold_id=hold_id,
                                             amount_minor=100))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "voided" in caught.value.details()
    assert await snapshot(redis) == before
