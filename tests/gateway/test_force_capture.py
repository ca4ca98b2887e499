"""ForceCapture: a late clearing whose hold expired or was never made is posted even over a
cap, and says which levels it took over; an open original must be captured instead, and the
original must be the customer's own. An original is posted once: a captured one is refused,
and so is a second force capture of it. The posting is a new captured hold, refundable."""

from __future__ import annotations

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import catalog, keys
from creditgate.limits.reasons import DeclineReason
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, SUITE_CALLER, snapshot

CUSTOMER = "c-fc"
POS_PATH = ("total", "consumer", "consumer.scan_pay", "consumer.scan_pay.pos")
TTL_MS = catalog.load()["scan_pay"].hold_ttl_s * 1000
# Another customer in the same partition (so only the script can tell the holds apart), and
# one in another partition.
NEIGHBOUR = next(c for c in (f"c-n{i}" for i in range(10_000))
                 if keys.partition_of(c, PARTITIONS) == keys.partition_of(CUSTOMER, PARTITIONS))
STRANGER = next(c for c in (f"c-s{i}" for i in range(10_000))
                if keys.partition_of(c, PARTITIONS) != keys.partition_of(CUSTOMER, PARTITIONS))


def force(key: str = "f1", amount: int = 8_000, original: str = "", customer_id=CUSTOMER,
          **overrides) -> pb.ForceCaptureRequest:
    fields = dict(idempotency_key=key, customer_id=customer_id, product_id="scan_pay",
                  channel=pb.CHANNEL_POS, merchant_id="shop-3", mcc="5411", amount_minor=amount,
                  currency="CNY", original_hold_id=original)
    fields.update(overrides)
    return pb.ForceCaptureRequest(**fields)


async def put(admin, customer_id=CUSTOMER, status=pb.CUSTOMER_STATUS_ACTIVE, caps=None):
    await admin.PutCustomer(pb.PutCustomerRequest(customer_id=customer_id, status=status,
                                                  caps_minor=caps or CUSTOMER_CAPS))


async def authorize(auth, key: str, amount: int = 5_000, customer_id=CUSTOMER):
    reply = await auth.Authorize(pb.AuthorizeRequest(
        idempotency_key=key, customer_id=customer_id, product_id="scan_pay",
        channel=pb.CHANNEL_POS, merchant_id="shop-3", mcc="5411", amount_minor=amount,
        currency="CNY"))
    assert reply.approved
    return reply


async def levels(auth, customer_id=CUSTOMER) -> dict[str, tuple[int, int]]:
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=customer_id))
    return {level.node: (level.held_minor, level.used_minor) for level in credit.levels
            if level.node in POS_PATH}


async def events(redis, kind: str, customer_id=CUSTOMER) -> list[dict]:
    stream = keys.outbox(keys.base(keys.partition_of(customer_id, PARTITIONS)))
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in await redis.xrange(stream) if fields[b"type"] == kind.encode()]


async def test_a_clearing_for_an_expired_hold_is_posted(admin, auth, redis, gateway):
    await put(admin)
    expired = await authorize(auth, "a1")
    gateway.limits.clock_offset_ms = TTL_MS + 1_000
    await auth.GetCredit(pb.GetCreditRequest(customer_id=CUSTOMER))  # releases it
    reply = await auth.ForceCapture(force(original=expired.hold_id))
    assert keys.partition_of_hold(reply.hold_id, PARTITIONS) == keys.partition_of(
        CUSTOMER, PARTITIONS)
    assert reply.hold_id != expired.hold_id
    assert (reply.over_limit, list(reply.over_limit_levels)) == (False, [])
    assert [(level.node, level.held_minor, level.used_minor) for level in reply.levels] == [
        (node, 0, 8_000) for node in POS_PATH]
    assert await levels(auth) == {node: (0, 8_000) for node in POS_PATH}
    (event,) = await events(redis, "force_captured")
    assert event == {
        "type": "force_captured", "event_id": f"{reply.hold_id}:1", "customer_id": CUSTOMER,
        "hold_id": reply.hold_id, "product_id": "scan_pay", "merchant_id": "shop-3",
        "mcc": "5411", "channel": "pos", "currency": "CNY", "nodes": ",".join(POS_PATH),
        "amount_minor": "8000", "over_limit": "", "original_hold_id": expired.hold_id,
        "at_ms": str(reply.decided_at_ms), "caller": SUITE_CALLER}
    # The new hold is closed as captured: it cannot be captured or voided again.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Void(pb.VoidRequest(idempotency_key="v1", hold_id=reply.hold_id))
    assert caught.value.details().startswith("hold_id: the hold was captured in full")


async def test_an_original_past_its_expiry_is_released_before_the_over_limit_check(
        admin, auth, redis, gateway):
    await put(admin, caps={node: 100_000 for node in POS_PATH})
    stale = await authorize(auth, "a1", amount=80_000)
    gateway.limits.clock_offset_ms = TTL_MS + 1_000  # not released yet: nothing touched it
    reply = await auth.ForceCapture(force(original=stale.hold_id, amount=80_000))
    # Released first, the original held nothing more: the 80 000 fit every cap of 100 000.
    assert (reply.over_limit, list(reply.over_limit_levels)) == (False, [])
    assert [(level.node, level.cap_minor, level.held_minor, level.used_minor,
             level.available_minor) for level in reply.levels] == [
        (node, 100_000, 0, 80_000, 20_000) for node in POS_PATH]
    assert await levels(auth) == {node: (0, 80_000) for node in POS_PATH}
    stream = keys.outbox(keys.base(keys.partition_of(CUSTOMER, PARTITIONS)))
    kinds = [(fields[b"type"].decode(), fields.get(b"hold_id", b"").decode())
             for _, fields in await redis.xrange(stream)]
    assert kinds[-2:] == [("expired", stale.hold_id), ("force_captured", reply.hold_id)]
    (expired,) = await events(redis, "expired")
    assert (expired["released_minor"], expired["at_ms"]) == ("80000", str(reply.decided_at_ms))
    (event,) = await events(redis, "force_captured")
    assert event["over_limit"] == ""
    # The release left the customer's open holds and the partition's due set as the sweeper
    # would have.
    base = keys.base(keys.partition_of(CUSTOMER, PARTITIONS))
    assert await redis.zcard(keys.customer_holds(base, CUSTOMER)) == 0
    assert await redis.zscore(keys.due(base), CUSTOMER) is None


async def test_the_customers_other_expired_holds_are_released_first(admin, auth, redis,
                                                                    gateway):
    await put(admin, caps={node: 100_000 for node in POS_PATH})
    stale = await authorize(auth, "a1", amount=80_000)
    gateway.limits.clock_offset_ms = TTL_MS + 1_000
    reply = await auth.ForceCapture(force(amount=80_000))  # names no original
    assert (reply.over_limit, [level.held_minor for level in reply.levels]) == (
        False, [0] * len(POS_PATH))
    (expired,) = await events(redis, "expired")
    assert (expired["hold_id"], expired["released_minor"]) == (stale.hold_id, "80000")


async def test_a_captured_original_is_refused_it_would_post_twice(admin, auth, redis):
    await put(admin)
    hold = await authorize(auth, "a1", amount=10_000)
    captured = await auth.Capture(pb.CaptureRequest(idempotency_key="c1", hold_id=hold.hold_id,
                                                    amount_minor=10_000, final=True))
    assert captured.state == pb.HOLD_STATE_CAPTURED
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.ForceCapture(force(original=hold.hold_id, amount=10_000))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == (
        f"original_hold_id: the hold's purchase was captured at {captured.decided_at_ms} (Unix "
        "ms); a force capture would post it twice; nothing was posted")
    assert await snapshot(redis) == before
    assert await levels(auth) == {node: (0, 10_000) for node in POS_PATH}


@pytest.mark.parametrize("close", ["expire", "void", "reverse"])
async def test_an_original_is_force_captured_once(admin, auth, redis, gateway, close):
    await put(admin)
    hold = await authorize(auth, "a1", amount=10_000)
    if close == "void":
        await auth.Void(pb.VoidRequest(idempotency_key="v1", hold_id=hold.hold_id))
    elif close == "reverse":
        await auth.Reverse(pb.ReverseRequest(customer_id=CUSTOMER, original_idempotency_key="a1"))
    else:
        gateway.limits.clock_offset_ms = TTL_MS + 1_000
    first = await auth.ForceCapture(force("f1", 10_000, original=hold.hold_id))
    base = keys.base(keys.partition_of(CUSTOMER, PARTITIONS))
    assert await redis.hget(keys.hold(base, hold.hold_id), "fx") == first.hold_id.encode()
    before = await snapshot(redis)
    # The same key again is the same request: its first answer.
    again = await auth.ForceCapture(force("f1", 10_000, original=hold.hold_id))
    assert again.SerializeToString() == first.SerializeToString()
    # Another key naming the same original would post the purchase twice.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.ForceCapture(force("f2", 10_000, original=hold.hold_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == (
        f"original_hold_id: the hold was already force captured as hold {first.hold_id}; "
        "another force capture would post the purchase twice; nothing was posted")
    assert await snapshot(redis) == before
    assert await levels(auth) == {node: (0, 10_000) for node in POS_PATH}
    assert len(await events(redis, "force_captured")) == 1


async def test_a_clearing_whose_hold_was_never_made_is_posted(admin, auth):
    await put(admin)
    reply = await auth.ForceCapture(force())
    assert not reply.over_limit
    assert await levels(auth) == {node: (0, 8_000) for node in POS_PATH}
    # The original may name a hold of ours that is gone (dropped after its retention).
    gone = keys.hold_id(keys.partition_of(CUSTOMER, PARTITIONS), "A" * 16)
    other = await auth.ForceCapture(force("f2", 1_000, original=gone))
    assert other.hold_id != reply.hold_id


async def test_over_a_cap_it_is_posted_and_flags_the_levels(admin, auth, redis):
    await put(admin, caps={**CUSTOMER_CAPS, "consumer.scan_pay": 9_000,
                           "consumer.scan_pay.pos": 6_000})
    await authorize(auth, "a1", amount=2_000)
    reply = await auth.ForceCapture(force(amount=8_000))
    assert reply.over_limit
    assert list(reply.over_limit_levels) == ["consumer.scan_pay", "consumer.scan_pay.pos"]
    by_node = {level.node: level for level in reply.levels}
    assert (by_node["consumer.scan_pay.pos"].cap_minor, by_node["consumer.scan_pay.pos"].held_minor,
            by_node["consumer.scan_pay.pos"].used_minor,
            by_node["consumer.scan_pay.pos"].available_minor) == (6_000, 2_000, 8_000, 0)
    assert by_node["total"].available_minor == CUSTOMER_CAPS["total"] - 10_000
    (event,) = await events(redis, "force_captured")
    assert event["over_limit"] == "consumer.scan_pay,consumer.scan_pay.pos"
    # Nothing more is approved on the over-limit level until credit comes back.
    declined = await auth.Authorize(pb.AuthorizeRequest(
        idempotency_key="a2", customer_id=CUSTOMER, product_id="scan_pay",
        channel=pb.CHANNEL_POS, merchant_id="m", mcc="5411", amount_minor=100, currency="CNY"))
    assert (declined.decline_reason, declined.decline_level) == (
        DeclineReason.INSUFFICIENT_CREDIT, "consumer.scan_pay")
    # Velocity windows count approvals only: the force capture is not one.
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=CUSTOMER,
                                                      product_id="scan_pay"))
    day = [w for w in credit.velocity if w.period == "day"]
    assert [(w.amount_minor, w.count) for w in day] == [(2_000, 1)]


async def test_an_open_original_is_refused_capture_it_instead(admin, auth, redis):
    await put(admin)
    open_hold = await authorize(auth, "a1")
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.ForceCapture(force(original=open_hold.hold_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == (
        f"original_hold_id: the hold is still open until {open_hold.hold_expires_at_ms} (Unix "
        "ms): capture it instead; nothing was posted")
    assert await snapshot(redis) == before


async def test_another_customers_hold_is_refused(admin, auth, redis):
    await put(admin)
    await put(admin, customer_id=NEIGHBOUR)
    theirs = await authorize(auth, "a1", customer_id=NEIGHBOUR)
    await auth.Void(pb.VoidRequest(idempotency_key="v1", hold_id=theirs.hold_id))
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.ForceCapture(force(original=theirs.hold_id))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "original_hold_id: the hold belongs to another customer; nothing was posted")
    assert await snapshot(redis) == before
    # One in another partition is refused before any Redis trip.
    await put(admin, customer_id=STRANGER)
    stranger = await authorize(auth, "a1", customer_id=STRANGER)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.ForceCapture(force(original=stranger.hold_id))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "original_hold_id: not a hold of this customer"


@pytest.mark.parametrize("status", [pb.CUSTOMER_STATUS_FROZEN, pb.CUSTOMER_STATUS_CLOSED,
                                    pb.CUSTOMER_STATUS_OVERDUE])
async def test_any_status_may_be_force_captured_and_it_stays(admin, auth, status):
    await put(admin, status=status)
    reply = await auth.ForceCapture(force())
    assert reply.hold_id
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=CUSTOMER))
    assert credit.status == status


async def test_an_unknown_customer_is_not_found(auth, redis):
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.ForceCapture(force(customer_id="c-nobody"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "customer_id: unknown customer"
    assert await snapshot(redis) == before


async def test_a_force_capture_is_refunded_like_any_capture(admin, auth, redis):
    await put(admin, caps={**CUSTOMER_CAPS, "consumer.scan_pay.pos": 6_000})
    posted = await auth.ForceCapture(force(amount=8_000))
    assert posted.over_limit
    refund = await auth.Refund(pb.RefundRequest(idempotency_key="r1", hold_id=posted.hold_id,
                                                amount_minor=3_000))
    assert (refund.refunded_total_minor, refund.refundable_minor) == (3_000, 5_000)
    assert await levels(auth) == {node: (0, 5_000) for node in POS_PATH}
    (event,) = await events(redis, "refunded")
    assert (event["restored_minor"], event["overpaid_minor"]) == ("3000", "0")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Refund(pb.RefundRequest(idempotency_key="r2", hold_id=posted.hold_id,
                                           amount_minor=5_001))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_force_capture_is_idempotent_by_its_key(admin, auth, redis):
    await put(admin)
    first = await auth.ForceCapture(force())
    before = await snapshot(redis)
    again = await auth.ForceCapture(force())
    assert again.SerializeToString() == first.SerializeToString()
    assert await snapshot(redis) == before
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.ForceCapture(force(amount=8_001))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await snapshot(redis) == before


@pytest.mark.parametrize(("field", "overrides"), [
    ("idempotency_key", dict(idempotency_key="")),
    ("customer_id", dict(customer_id="a b")),
    ("product_id", dict(product_id="")),
    ("product_id", dict(product_id="mortgage")),
    ("channel", dict(channel=pb.CHANNEL_UNSPECIFIED)),
    ("channel", dict(channel=9)),
    ("merchant_id", dict(merchant_id="")),
    ("mcc", dict(mcc="54a1")),
    ("mcc", dict(mcc="541")),
    ("amount_minor", dict(amount_minor=0)),
    ("amount_minor", dict(amount_minor=-5)),
    ("amount_minor", dict(amount_minor=100_000_000_001)),
    ("currency", dict(currency="")),
    ("currency", dict(currency="USD")),
    ("original_hold_id", dict(original_hold_id="x" * 65)),
    ("original_hold_id", dict(original_hold_id="nope")),
    ("original_hold_id", dict(original_hold_id="999-AAAAAAAAAAAAAAAA")),
])
async def test_bad_force_capture_input(admin, auth, redis, field, overrides):
    await put(admin)
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.ForceCapture(force(**overrides))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field + ": ")
    assert await snapshot(redis) == before
