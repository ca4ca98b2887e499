"""Reverse (ISO 8583 0400): a terminal that got no answer reverses by the original request's
idempotency key. Every outcome, the first answer kept for every repeat, and the reversal that
arrives before its original: the late original and its retries are declined REVERSED ("12")
and nothing is held, also when the two race."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import catalog, keys
from creditgate.limits.reasons import DeclineReason
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, SUITE_CALLER, snapshot
from tests.support import decision

POS_PATH = ("total", "consumer", "consumer.scan_pay", "consumer.scan_pay.pos")
TTL_MS = catalog.load()["scan_pay"].hold_ttl_s * 1000


def authorize_request(key: str, customer_id: str = "c-rev", amount: int = 10_000,
                      merchant_id: str = "shop-1") -> pb.AuthorizeRequest:
    return pb.AuthorizeRequest(idempotency_key=key, customer_id=customer_id,
                               product_id="scan_pay", channel=pb.CHANNEL_POS,
                               merchant_id=merchant_id, mcc="5411", amount_minor=amount,
                               currency="CNY")


def reverse_request(key: str, customer_id: str = "c-rev") -> pb.ReverseRequest:
    return pb.ReverseRequest(customer_id=customer_id, original_idempotency_key=key)


async def put(admin, customer_id: str = "c-rev", status=pb.CUSTOMER_STATUS_ACTIVE,
              caps=None) -> None:
    await admin.PutCustomer(pb.PutCustomerRequest(customer_id=customer_id, status=status,
                                                  caps_minor=caps or CUSTOMER_CAPS))


async def levels(auth, customer_id: str = "c-rev") -> dict[str, tuple[int, int]]:
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=customer_id))
    return {level.node: (level.held_minor, level.used_minor) for level in credit.levels
            if level.node in POS_PATH}


async def events(redis, customer_id: str = "c-rev", kind: str = "reversed") -> list[dict]:
    stream = keys.outbox(keys.base(keys.partition_of(customer_id, PARTITIONS)))
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in await redis.xrange(stream) if fields[b"type"] == kind.encode()]


async def test_an_approved_open_hold_is_released_and_closed(admin, auth, redis):
    await put(admin)
    original = await auth.Authorize(authorize_request("a1", amount=12_000))
    assert original.approved
    assert await levels(auth) == {node: (12_000, 0) for node in POS_PATH}

    reply = await auth.Reverse(reverse_request("a1"))
    assert (reply.outcome, reply.hold_id, reply.released_minor) == (
        pb.REVERSE_OUTCOME_RELEASED, original.hold_id, 12_000)
    assert reply.decided_at_ms >= original.decided_at_ms
    assert await levels(auth) == {node: (0, 0) for node in POS_PATH}
    assert await events(redis) == [{
        "type": "reversed", "event_id": f"{original.hold_id}:{original.hold_expires_at_ms}:2",
        "customer_id": "c-rev",
        "hold_id": original.hold_id, "product_id": "scan_pay", "merchant_id": "shop-1",
        "currency": "CNY", "nodes": ",".join(POS_PATH), "outcome": "released",
        "released_minor": "12000", "at_ms": str(reply.decided_at_ms),
        "caller": SUITE_CALLER}]
    # The hold is closed as reversed: a late capture is refused and changes nothing.
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Capture(pb.CaptureRequest(idempotency_key="c1", hold_id=original.hold_id,
                                             amount_minor=1_000))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == (f"hold_id: the hold was reversed at "
                                      f"{reply.decided_at_ms} (Unix ms); nothing was changed")
    assert await snapshot(redis) == before


async def test_a_partly_captured_hold_releases_only_its_remainder(admin, auth):
    await put(admin)
    original = await auth.Authorize(authorize_request("a1", amount=10_000))
    await auth.Capture(pb.CaptureRequest(idempotency_key="c1", hold_id=original.hold_id,
                                         amount_minor=3_000))
    reply = await auth.Reverse(reverse_request("a1"))
    assert (reply.outcome, reply.released_minor) == (pb.REVERSE_OUTCOME_RELEASED, 7_000)
    assert await levels(auth) == {node: (0, 3_000) for node in POS_PATH}


async def test_reversing_twice_returns_the_first_answer_and_changes_nothing(admin, auth, redis):
    await put(admin)
    await auth.Authorize(authorize_request("a1"))
    first = await auth.Reverse(reverse_request("a1"))
    before = await snapshot(redis)
    for _ in range(2):
        again = await auth.Reverse(reverse_request("a1"))
        assert again.SerializeToString() == first.SerializeToString()
    assert await snapshot(redis) == before
    assert len(await events(redis)) == 1


async def test_a_declined_original_is_reported_and_nothing_is_released(admin, auth, redis):
    await put(admin, caps={**CUSTOMER_CAPS, "consumer.scan_pay.pos": 500})
    declined = await auth.Authorize(authorize_request("a1", amount=10_000))
    assert declined.decline_reason == DeclineReason.INSUFFICIENT_CREDIT
    reply = await auth.Reverse(reverse_request("a1"))
    assert (reply.outcome, reply.hold_id, reply.released_minor) == (
        pb.REVERSE_OUTCOME_ORIGINAL_DECLINED, "", 0)
    # The original's retry still gets its own first answer.
    again = await auth.Authorize(authorize_request("a1", amount=10_000))
    assert again.SerializeToString() == declined.SerializeToString()
    (event,) = await events(redis)
    assert (event["outcome"], event["hold_id"], event["nodes"], event["released_minor"]) == (
        "original_declined", "", "", "0")


@pytest.mark.parametrize("closed_by", ["capture", "void", "expiry"])
async def test_a_closed_hold_is_already_closed(admin, auth, redis, gateway, closed_by):
    await put(admin)
    original = await auth.Authorize(authorize_request("a1", amount=8_000))
    expected = (0, 0)
    if closed_by == "capture":
        await auth.Capture(pb.CaptureRequest(idempotency_key="c1", hold_id=original.hold_id,
                                             amount_minor=8_000))
        expected = (0, 8_000)  # a capture stays used: refund it instead
    elif closed_by == "void":
        await auth.Void(pb.VoidRequest(idempotency_key="v1", hold_id=original.hold_id))
    else:
        gateway.limits.clock_offset_ms = TTL_MS + 1_000  # released by the reversal's own call
    reply = await auth.Reverse(reverse_request("a1"))
    assert (reply.outcome, reply.hold_id, reply.released_minor) == (
        pb.REVERSE_OUTCOME_ALREADY_CLOSED, original.hold_id, 0)
    assert await levels(auth) == {node: expected for node in POS_PATH}
    if closed_by == "expiry":
        assert [e["hold_id"] for e in await events(redis, kind="expired")] == [original.hold_id]
    (event,) = await events(redis)
    assert (event["outcome"], event["hold_id"], event["released_minor"]) == (
        "already_closed", original.hold_id, "0")


async def test_a_reversal_before_its_original_declines_the_late_original(admin, auth, redis):
    await put(admin)
    reply = await auth.Reverse(reverse_request("a1"))
    assert (reply.outcome, reply.hold_id, reply.released_minor) == (
        pb.REVERSE_OUTCOME_TOMBSTONED, "", 0)
    late = await auth.Authorize(authorize_request("a1"))
    assert (late.approved, late.decline_reason, late.response_code, late.hold_id) == (
        False, DeclineReason.REVERSED, "12", "")
    # Its retry, and the same key with any other payload, get the same decline.
    for request in (authorize_request("a1"), authorize_request("a1", amount=5_000)):
        again = await auth.Authorize(request)
        assert again.SerializeToString() == late.SerializeToString()
    assert await levels(auth) == {node: (0, 0) for node in POS_PATH}  # nothing was held
    assert await events(redis, kind="authorized") == []
    (event,) = await events(redis)
    assert (event["outcome"], event["nodes"], event["released_minor"]) == ("tombstoned", "", "0")
    # Another key of the same customer is unaffected.
    assert (await auth.Authorize(authorize_request("a2"))).approved


async def test_an_unknown_customer_gets_a_tombstone_too(auth, redis):
    reply = await auth.Reverse(reverse_request("a1", customer_id="c-nobody"))
    assert reply.outcome == pb.REVERSE_OUTCOME_TOMBSTONED
    late = await auth.Authorize(authorize_request("a1", customer_id="c-nobody"))
    assert late.decline_reason == DeclineReason.REVERSED


@pytest.mark.parametrize("status", [pb.CUSTOMER_STATUS_FROZEN, pb.CUSTOMER_STATUS_CLOSED,
                                    pb.CUSTOMER_STATUS_OVERDUE])
async def test_frozen_closed_and_overdue_customers_may_reverse(admin, auth, status):
    await put(admin)
    original = await auth.Authorize(authorize_request("a1", amount=4_000))
    await put(admin, status=status)
    reply = await auth.Reverse(reverse_request("a1"))
    assert (reply.outcome, reply.hold_id, reply.released_minor) == (
        pb.REVERSE_OUTCOME_RELEASED, original.hold_id, 4_000)
    assert await levels(auth) == {node: (0, 0) for node in POS_PATH}


@pytest.mark.parametrize(("field", "request_"), [
    ("customer_id", dict(customer_id="", original_idempotency_key="a1")),
    ("customer_id", dict(customer_id="c rev", original_idempotency_key="a1")),
    ("original_idempotency_key", dict(customer_id="c-rev", original_idempotency_key="")),
    ("original_idempotency_key", dict(customer_id="c-rev", original_idempotency_key="k" * 65)),
    ("original_idempotency_key", dict(customer_id="c-rev", original_idempotency_key="a|b")),
])
async def test_bad_reverse_input(auth, redis, field, request_):
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Reverse(pb.ReverseRequest(**request_))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field + ": ")
    assert await snapshot(redis) == before


async def test_authorize_and_its_reversal_racing_always_agree(admin, auth, redis):
    """Sent together, either the authorization came first (approved, then released by the
    reversal) or the reversal did (tombstone, then the authorization declined REVERSED);
    never an approved hold left open, never a reversal that found nothing yet let it pass."""
    await put(admin)
    seen = set()
    for round_ in range(40):
        key = f"race-{round_}"
        authorize = auth.Authorize(authorize_request(key, amount=1_000 + round_))
        reverse = auth.Reverse(reverse_request(key))
        if round_ % 2:
            reversed_, authorized = await asyncio.gather(reverse, authorize)
        else:
            authorized, reversed_ = await asyncio.gather(authorize, reverse)
        if reversed_.outcome == pb.REVERSE_OUTCOME_RELEASED:
            assert authorized.approved
            assert (reversed_.hold_id, reversed_.released_minor) == (
                authorized.hold_id, 1_000 + round_)
        else:
            assert reversed_.outcome == pb.REVERSE_OUTCOME_TOMBSTONED
            assert (authorized.approved, authorized.decline_reason, authorized.response_code,
                    authorized.hold_id) == (False, DeclineReason.REVERSED, "12", "")
        seen.add(reversed_.outcome)
        # Whichever won, a retry of the original now gets the same answer.
        retry = await auth.Authorize(authorize_request(key, amount=1_000 + round_))
        assert decision(retry) == decision(authorized)
    assert all(held == 0 and used == 0 for held, used in (await levels(auth)).values())
    assert len(await events(redis)) == 40
    # Which outcomes occur depends on arrival order (on this machine both, in either order of
    # sending); each pair above was one of the two consistent ones.
    assert seen <= {pb.REVERSE_OUTCOME_RELEASED, pb.REVERSE_OUTCOME_TOMBSTONED}
