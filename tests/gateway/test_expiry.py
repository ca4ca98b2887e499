"""Hold expiry over gRPC: a hold not captured within its product's TTL is released exactly once,
by whichever comes first (a call touching the customer, or the sweeper)."""

from __future__ import annotations

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.sweeper import sweep_once
from creditgate.limits import catalog, keys
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, snapshot

TTL_MS = catalog.load()["scan_pay"].hold_ttl_s * 1000
POS_PATH = ("total", "consumer", "consumer.scan_pay", "consumer.scan_pay.pos")


def outbox_key(customer_id: str) -> str:
    return keys.outbox(keys.base(keys.partition_of(customer_id, PARTITIONS)))


async def events(redis, customer_id: str) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in await redis.xrange(outbox_key(customer_id))]


async def put(admin, customer_id: str) -> None:
    await admin.PutCustomer(pb.PutCustomerRequest(customer_id=customer_id,
                                                  status=pb.CUSTOMER_STATUS_ACTIVE,
                                                  caps_minor=CUSTOMER_CAPS))


async def hold(auth, customer_id: str, amount: int, key: str = "a1") -> pb.AuthorizeResponse:
    reply = await auth.Authorize(pb.AuthorizeRequest(
        idempotency_key=key, customer_id=customer_id, product_id="scan_pay",
        channel=pb.CHANNEL_POS, merchant_id="shop-1", mcc="5411", amount_minor=amount,
        currency="CNY"))
    assert reply.approved
    assert reply.hold_expires_at_ms == reply.decided_at_ms + TTL_MS
    return reply


async def levels(auth, customer_id: str) -> dict[str, pb.LevelHeadroom]:
    reply = await auth.GetCredit(pb.GetCreditRequest(customer_id=customer_id))
    return {level.node: level for level in reply.levels}


def move_past_expiry(gateway, reply: pb.AuthorizeResponse) -> None:
    """Move the scripts' clock just past the hold's expiry (Redis time keeps running)."""
    gateway.limits.clock_offset_ms = reply.hold_expires_at_ms - reply.decided_at_ms + 1


async def test_hold_not_captured_in_time_is_released_once(redis, gateway, admin, auth):
    await put(admin, "c-exp")
    other = await hold(auth, "c-exp", 3_000, key="a0")
    reply = await hold(auth, "c-exp", 12_345)
    # Just before the TTL nothing is released.
    gateway.limits.clock_offset_ms = TTL_MS - 60_000
    before = await levels(auth, "c-exp")
    assert before["consumer.scan_pay.pos"].held_minor == 3_000 + 12_345

    gateway.limits.clock_offset_ms = TTL_MS + 1_000
    after = await levels(auth, "c-exp")
    for node in POS_PATH:
        assert after[node].held_minor == 0, node
        assert after[node].available_minor == CUSTOMER_CAPS[node]
    expired = [e for e in await events(redis, "c-exp") if e["type"] == "expired"]
    assert sorted((e["hold_id"], int(e["released_minor"])) for e in expired) == sorted(
        [(reply.hold_id, 12_345), (other.hold_id, 3_000)])
    mine = next(e for e in expired if e["hold_id"] == reply.hold_id)
    assert int(mine["at_ms"]) >= reply.hold_expires_at_ms
    assert mine["captured_total_minor"] == "0"
    assert mine["event_id"] == f"{reply.hold_id}:{reply.hold_expires_at_ms}:2"

    stream_length = await redis.xlen(outbox_key("c-exp"))
    state = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Capture(pb.CaptureRequest(idempotency_key="cap", hold_id=reply.hold_id,
                                             amount_minor=100))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details().startswith("hold_id: the hold expired: its TTL passed and it "
                                             "was released at ")
    assert mine["at_ms"] in caught.value.details()  # the time it was released
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Void(pb.VoidRequest(idempotency_key="void", hold_id=reply.hold_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "expired" in caught.value.details()

    assert await sweep_once(gateway.limits) == 0
    assert await redis.xlen(outbox_key("c-exp")) == stream_length
    assert await snapshot(redis) == state
    assert (await levels(auth, "c-exp"))["total"].held_minor == 0


async def test_sweeper_releases_an_untouched_customer_once(redis, gateway, admin, auth):
    await put(admin, "c-idle")
    await put(admin, "c-busy")
    idle = await hold(auth, "c-idle", 7_000)
    gateway.limits.clock_offset_ms = 5_000  # the second hold is 5 s younger
    busy = await hold(auth, "c-busy", 9_000)
    assert await sweep_once(gateway.limits) == 0

    move_past_expiry(gateway, idle)
    lengths = {c: await redis.xlen(outbox_key(c)) for c in ("c-idle", "c-busy")}
    assert await sweep_once(gateway.limits) == 1
    idle_events = [e for e in await events(redis, "c-idle") if e["type"] == "expired"]
    assert [(e["hold_id"], e["released_minor"]) for e in idle_events] == [
        (idle.hold_id, "7000")]
    assert await redis.xlen(outbox_key("c-idle")) == lengths["c-idle"] + 1
    if outbox_key("c-busy") != outbox_key("c-idle"):
        assert await redis.xlen(outbox_key("c-busy")) == lengths["c-busy"]
    # The customer's record shows the release without anyone calling for it.
    customer_key = keys.customer(keys.base(keys.partition_of("c-idle", PARTITIONS)), "c-idle")
    assert keys.read_level((await redis.hget(customer_key, keys.FIELD_LEVEL + "total")).decode()
                           ).held == 0
    busy_key = keys.customer(keys.base(keys.partition_of("c-busy", PARTITIONS)), "c-busy")
    assert keys.read_level((await redis.hget(busy_key, keys.FIELD_LEVEL + "total")).decode()
                           ).held == 9_000

    state = await snapshot(redis)
    assert await sweep_once(gateway.limits) == 0
    assert await snapshot(redis) == state

    # Later the other hold is due too, and is released once.
    gateway.limits.clock_offset_ms = busy.hold_expires_at_ms - idle.decided_at_ms + 1
    assert await sweep_once(gateway.limits) == 1
    assert await sweep_once(gateway.limits) == 0
    busy_events = [e for e in await events(redis, "c-busy") if e["type"] == "expired"]
    assert [(e["hold_id"], e["released_minor"]) for e in busy_events] == [
        (busy.hold_id, "9000")]
    for customer in ("c-idle", "c-busy"):
        assert all(level.held_minor == 0 for level in (await levels(auth, customer)).values())
        due = keys.due(keys.base(keys.partition_of(customer, PARTITIONS)))
        assert await redis.zscore(due, customer) is None


async def test_partly_captured_hold_releases_only_the_remainder(redis, gateway, admin, auth):
    await put(admin, "c-part")
    reply = await hold(auth, "c-part", 10_000)
    captured = await auth.Capture(pb.CaptureRequest(idempotency_key="cap", hold_id=reply.hold_id,
                                                    amount_minor=3_500, final=False))
    assert (captured.state, captured.held_minor) == (pb.HOLD_STATE_OPEN, 6_500)
    move_past_expiry(gateway, reply)
    assert await sweep_once(gateway.limits) == 1
    after = await levels(auth, "c-part")
    for node in POS_PATH:
        assert after[node].held_minor == 0, node
        assert after[node].used_minor == 3_500, node
        assert after[node].available_minor == CUSTOMER_CAPS[node] - 3_500, node
    expired = [e for e in await events(redis, "c-part") if e["type"] == "expired"]
    assert [(e["released_minor"], e["captured_total_minor"]) for e in expired] == [
        ("6500", "3500")]
    assert await sweep_once(gateway.limits) == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Capture(pb.CaptureRequest(idempotency_key="cap-2", hold_id=reply.hold_id,
                                             amount_minor=1_000, final=True))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await levels(auth, "c-part"))["total"].used_minor == 3_500


async def test_authorize_after_expiry_sees_the_released_credit(redis, gateway, admin, auth):
    """A new authorization for the customer releases the expired hold first, then decides."""
    caps = dict(CUSTOMER_CAPS, **{"consumer.scan_pay.pos": 10_000})
    await admin.PutCustomer(pb.PutCustomerRequest(customer_id="c-again",
                                                  status=pb.CUSTOMER_STATUS_ACTIVE,
                                                  caps_minor=caps))
    first = await hold(auth, "c-again", 8_000)
    move_past_expiry(gateway, first)
    second = await auth.Authorize(pb.AuthorizeRequest(
        idempotency_key="a2", customer_id="c-again", product_id="scan_pay",
        channel=pb.CHANNEL_POS, merchant_id="shop-1", mcc="5411", amount_minor=8_000,
        currency="CNY"))
    assert second.approved
    types = [e["type"] for e in await events(redis, "c-again")]
    assert types == ["customer_put", "authorized", "expired", "authorized"]
    assert await sweep_once(gateway.limits) == 0
