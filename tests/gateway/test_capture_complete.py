"""Capture, complete: several partial captures of one hold, `final` releasing the rest, and
over-capture (tips) up to the product's tolerance, whose excess must fit every level's free
credit; a refused capture changes nothing."""

from __future__ import annotations

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import catalog, keys
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, snapshot

POS_PATH = ("total", "consumer", "consumer.scan_pay", "consumer.scan_pay.pos")
ONLINE_PATH = ("total", "consumer", "consumer.online")
TOLERANCE_BPS = catalog.load()["scan_pay"].capture_tolerance_bps
assert TOLERANCE_BPS == 2_000  # the example catalog: tips up to 20 %


async def hold(admin, auth, amount: int, caps=None, product_id="scan_pay",
               channel=pb.CHANNEL_POS, customer_id="c-cap") -> str:
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id=customer_id, status=pb.CUSTOMER_STATUS_ACTIVE,
        caps_minor=caps or CUSTOMER_CAPS))
    reply = await auth.Authorize(pb.AuthorizeRequest(
        idempotency_key="a1", customer_id=customer_id, product_id=product_id, channel=channel,
        merchant_id="shop-7", mcc="5812", amount_minor=amount, currency="CNY"))
    assert reply.approved and reply.approved_amount_minor == amount
    return reply.hold_id


def capture(hold_id: str, key: str, amount: int, final: bool = False) -> pb.CaptureRequest:
    return pb.CaptureRequest(idempotency_key=key, hold_id=hold_id, amount_minor=amount,
                             final=final)


async def state(auth, customer_id="c-cap", product_id=""):
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=customer_id,
                                                      product_id=product_id))
    return {level.node: (level.held_minor, level.used_minor) for level in credit.levels}, credit


async def balances(redis, customer_id="c-cap") -> dict[str, int]:
    record = await redis.hgetall(keys.customer(keys.base(keys.partition_of(
        customer_id, PARTITIONS)), customer_id))
    return {k.decode()[len(keys.FIELD_BALANCE):]: int(v) for k, v in record.items()
            if k.decode().startswith(keys.FIELD_BALANCE)}


async def captured_events(redis, customer_id="c-cap") -> list[dict]:
    stream = keys.outbox(keys.base(keys.partition_of(customer_id, PARTITIONS)))
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in await redis.xrange(stream) if fields[b"type"] == b"captured"]


async def test_several_partial_captures_then_a_final_one_releasing_the_rest(admin, auth, redis):
    hold_id = await hold(admin, auth, 10_000)
    steps = [(2_000, False, "open", 2_000, 0, 8_000), (3_000, False, "open", 5_000, 0, 5_000),
             (1_500, True, "captured", 6_500, 3_500, 0)]
    for index, (amount, final, state_, total, released, held) in enumerate(steps):
        reply = await auth.Capture(capture(hold_id, f"c{index}", amount, final))
        assert (reply.state, reply.captured_minor, reply.captured_total_minor,
                reply.released_minor, reply.held_minor, reply.over_captured_minor) == (
            getattr(pb, f"HOLD_STATE_{state_.upper()}"), amount, total, released, held, 0)
        levels, _ = await state(auth)
        assert {node: levels[node] for node in POS_PATH} == {
            node: (held, total) for node in POS_PATH}
    assert await balances(redis) == {",".join(POS_PATH): 6_500}
    assert [(e["amount_minor"], e["released_minor"], e["excess_minor"], e["final"])
            for e in await captured_events(redis)] == [
        ("2000", "0", "0", "0"), ("3000", "0", "0", "0"), ("1500", "3500", "0", "1")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Capture(capture(hold_id, "c9", 1))
    assert caught.value.details().startswith("hold_id: the hold was captured in full")


async def test_capturing_exactly_what_is_held_closes_the_hold(admin, auth):
    hold_id = await hold(admin, auth, 10_000)
    await auth.Capture(capture(hold_id, "c1", 4_000))
    reply = await auth.Capture(capture(hold_id, "c2", 6_000))
    assert (reply.state, reply.released_minor, reply.held_minor) == (
        pb.HOLD_STATE_CAPTURED, 0, 0)


async def test_over_capture_within_the_tolerance(admin, auth, redis):
    hold_id = await hold(admin, auth, 10_000)
    reply = await auth.Capture(capture(hold_id, "c1", 11_500))
    assert (reply.state, reply.captured_minor, reply.captured_total_minor, reply.released_minor,
            reply.held_minor, reply.over_captured_minor) == (
        pb.HOLD_STATE_CAPTURED, 11_500, 11_500, 0, 0, 1_500)
    levels, credit = await state(auth, product_id="scan_pay")
    assert {node: levels[node] for node in POS_PATH} == {node: (0, 11_500) for node in POS_PATH}
    assert credit.outstanding_minor == 11_500
    assert await balances(redis) == {",".join(POS_PATH): 11_500}
    (event,) = await captured_events(redis)
    assert (event["amount_minor"], event["excess_minor"], event["released_minor"]) == (
        "11500", "1500", "0")
    # Velocity windows count what was approved, not the tip.
    day = [w for w in credit.velocity if w.product_id == "scan_pay" and w.period == "day"]
    assert [(w.amount_minor, w.count) for w in day] == [(10_000, 1)]


async def test_partial_captures_may_end_over_the_authorization(admin, auth):
    hold_id = await hold(admin, auth, 10_000)
    await auth.Capture(capture(hold_id, "c1", 4_000))
    reply = await auth.Capture(capture(hold_id, "c2", 8_000))  # 12,000 in all: the maximum
    assert (reply.captured_total_minor, reply.over_captured_minor, reply.state) == (
        12_000, 2_000, pb.HOLD_STATE_CAPTURED)
    levels, _ = await state(auth)
    assert {node: levels[node] for node in POS_PATH} == {node: (0, 12_000) for node in POS_PATH}


@pytest.mark.parametrize(("captured_before", "amount", "may_capture"), [
    (0, 12_001, 12_000), (4_000, 8_001, 8_000)])
async def test_beyond_the_tolerance_is_refused_and_changes_nothing(
        admin, auth, redis, captured_before, amount, may_capture):
    hold_id = await hold(admin, auth, 10_000)
    if captured_before:
        await auth.Capture(capture(hold_id, "c0", captured_before))
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Capture(capture(hold_id, "c1", amount, final=True))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details().startswith(
        f"amount_minor: more than the {may_capture} minor units the hold may still capture")
    assert await snapshot(redis) == before


async def test_a_product_without_tolerance_captures_at_most_what_is_held(admin, auth, redis):
    hold_id = await hold(admin, auth, 10_000, product_id="ecommerce",
                         channel=pb.CHANNEL_ECOMMERCE)
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Capture(capture(hold_id, "c1", 10_001))
    assert caught.value.details().startswith("amount_minor: more than the 10000 minor units")
    assert await snapshot(redis) == before


@pytest.mark.parametrize(("tight", "named"), [
    ({"consumer.scan_pay.pos": 10_500}, "consumer.scan_pay.pos"),
    # Several levels short: the one nearest the root is named.
    ({"consumer": 10_200, "consumer.scan_pay.pos": 10_100}, "consumer"),
])
async def test_an_excess_that_does_not_fit_a_level_is_refused(admin, auth, redis, tight, named):
    hold_id = await hold(admin, auth, 10_000, caps={**CUSTOMER_CAPS, **tight})
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Capture(capture(hold_id, "c1", 11_000))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == (
        "amount_minor: the part beyond what the hold holds does not fit the available credit "
        f"of level {named}; nothing was captured")
    assert await snapshot(redis) == before
    # What fits is captured: the excess up to the free credit of the tightest level.
    fits = min(tight.values()) - 10_000
    reply = await auth.Capture(capture(hold_id, "c2", 10_000 + fits))
    assert reply.over_captured_minor == fits


async def test_a_live_temporary_raise_makes_room_for_an_excess(admin, auth):
    hold_id = await hold(admin, auth, 10_000, caps={**CUSTOMER_CAPS,
                                                     "consumer.scan_pay.pos": 10_000})
    _, credit = await state(auth)
    await admin.SetTemporaryRaise(pb.SetTemporaryRaiseRequest(
        customer_id="c-cap", node="consumer.scan_pay.pos", raise_minor=2_000,
        expires_at_ms=credit.as_of_ms + 3_600_000))
    reply = await auth.Capture(capture(hold_id, "c1", 12_000))
    assert reply.over_captured_minor == 2_000


async def test_over_capture_is_idempotent(admin, auth, redis):
    hold_id = await hold(admin, auth, 10_000)
    first = await auth.Capture(capture(hold_id, "c1", 11_000))
    before = await snapshot(redis)
    again = await auth.Capture(capture(hold_id, "c1", 11_000))
    assert again.SerializeToString() == first.SerializeToString()
    assert await snapshot(redis) == before
