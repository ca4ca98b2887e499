"""SetTemporaryRaise through gRPC, and how GetCredit shows a level's raise, its expiry, the
outstanding balance and the credit balance. A raise counts in every check while it lasts;
bad input names its field and changes nothing."""

from __future__ import annotations

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import keys
from creditgate.limits.constants import CAP_MINOR_MAX, RAISE_DURATION_S_MAX
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, snapshot

POS = "consumer.scan_pay.pos"
HOUR_MS = 3_600_000


async def _put(admin, auth, customer_id: str) -> int:
    """The customer, and the Redis time now (ms)."""
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id=customer_id, status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
    return (await auth.GetCredit(pb.GetCreditRequest(customer_id=customer_id))).as_of_ms


def _authorize(customer_id: str, amount: int, key: str) -> pb.AuthorizeRequest:
    return pb.AuthorizeRequest(idempotency_key=key, customer_id=customer_id,
                               product_id="scan_pay", channel=pb.CHANNEL_POS,
                               merchant_id="shop-1", mcc="5411", amount_minor=amount,
                               currency="CNY")


async def _level(auth, customer_id: str, node: str) -> pb.LevelHeadroom:
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=customer_id))
    return next(level for level in credit.levels if level.node == node)


async def test_a_raise_counts_while_it_lasts(gateway, admin, auth, redis):
    now = await _put(admin, auth, "c-up")
    await auth.Authorize(_authorize("c-up", 450_000, "a1"))  # 50,000 left at pos
    reply = await admin.SetTemporaryRaise(pb.SetTemporaryRaiseRequest(
        customer_id="c-up", node=POS, raise_minor=100_000, expires_at_ms=now + HOUR_MS))
    assert (reply.level.node, reply.level.cap_minor, reply.level.raise_minor,
            reply.level.raise_expires_at_ms, reply.level.held_minor,
            reply.level.available_minor) == (POS, 500_000, 100_000, now + HOUR_MS, 450_000,
                                             150_000)
    assert reply.decided_at_ms >= now
    level = await _level(auth, "c-up", POS)
    assert (level.cap_minor, level.raise_minor, level.raise_expires_at_ms,
            level.available_minor) == (500_000, 100_000, now + HOUR_MS, 150_000)
    # Authorize checks the effective cap and reports it as the level's cap.
    approved = await auth.Authorize(_authorize("c-up", 120_000, "a2"))
    assert approved.approved
    pos = next(level for level in approved.levels if level.node == POS)
    assert (pos.cap_minor, pos.held_minor, pos.available_minor) == (600_000, 570_000, 30_000)
    # GetCredit with a product counts the raise in what is available.
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id="c-up", product_id="scan_pay"))
    assert credit.available_minor == 30_000  # the product's own levels: scan_pay has 30,000
    # Once it lapses the cap alone counts: the level is above it, nothing is available.
    gateway.limits.clock_offset_ms += HOUR_MS
    lapsed = await _level(auth, "c-up", POS)
    assert (lapsed.cap_minor, lapsed.raise_minor, lapsed.raise_expires_at_ms,
            lapsed.held_minor, lapsed.available_minor) == (500_000, 0, 0, 570_000, 0)
    declined = await auth.Authorize(_authorize("c-up", 100, "a3"))
    assert (declined.approved, declined.decline_level) == (False, POS)
    stream = keys.outbox(keys.base(keys.partition_of("c-up", PARTITIONS)))
    events = [f for _, f in await redis.xrange(stream) if f[b"type"] == b"limit_raised"]
    assert [(f[b"node"], f[b"raise_minor"], f[b"expires_at_ms"]) for f in events] == [
        (POS.encode(), b"100000", str(now + HOUR_MS).encode())]


async def test_a_raise_of_zero_removes_it(admin, auth):
    now = await _put(admin, auth, "c-rm")
    await admin.SetTemporaryRaise(pb.SetTemporaryRaiseRequest(
        customer_id="c-rm", node="total", raise_minor=5_000, expires_at_ms=now + HOUR_MS))
    assert (await _level(auth, "c-rm", "total")).raise_minor == 5_000
    reply = await admin.SetTemporaryRaise(pb.SetTemporaryRaiseRequest(
        customer_id="c-rm", node="total", raise_minor=0))
    assert (reply.level.raise_minor, reply.level.raise_expires_at_ms,
            reply.level.available_minor) == (0, 0, 1_000_000)
    level = await _level(auth, "c-rm", "total")
    assert (level.raise_minor, level.available_minor) == (0, 1_000_000)


async def test_get_credit_shows_outstanding_and_credit_balance(admin, auth):
    await _put(admin, auth, "c-bal")
    hold = await auth.Authorize(_authorize("c-bal", 80_000, "a1"))
    await auth.Capture(pb.CaptureRequest(idempotency_key="c1", hold_id=hold.hold_id,
                                         amount_minor=80_000, final=True))
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id="c-bal"))
    assert (credit.outstanding_minor, credit.credit_balance_minor) == (80_000, 0)
    await admin.Repay(pb.RepayRequest(idempotency_key="p1", customer_id="c-bal",
                                      amount_minor=100_000))
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id="c-bal"))
    assert (credit.outstanding_minor, credit.credit_balance_minor) == (0, 20_000)


def _raise(**fields) -> pb.SetTemporaryRaiseRequest:
    return pb.SetTemporaryRaiseRequest(**{"customer_id": "c-bad", "node": POS,
                                          "raise_minor": 1_000, **fields})


@pytest.mark.parametrize(("field", "fields"), [
    ("customer_id", dict(customer_id="")),
    ("customer_id", dict(customer_id="has space")),
    ("node", dict(node="")),
    ("node", dict(node="Consumer")),
    ("node", dict(node="a" * 49)),
    ("raise_minor", dict(raise_minor=-1)),
    ("raise_minor", dict(raise_minor=CAP_MINOR_MAX + 1)),
    ("expires_at_ms", dict(expires_at_ms=0)),
    ("expires_at_ms", dict(expires_at_ms=-5)),
    ("expires_at_ms", dict(raise_minor=0, expires_at_ms=-5)),
    # The script's checks, against Redis' clock: in the past, too far ahead.
    ("expires_at_ms", dict(expires_at_ms=1_000)),
    ("expires_at_ms", dict(expires_at_ms="too long")),
])
async def test_bad_raise_input_names_the_field_and_changes_nothing(admin, auth, redis, field,
                                                                 fields):
    fields = dict(fields)  # the parameter's dict is shared by every run of this case
    now = await _put(admin, auth, "c-bad")
    if fields.get("expires_at_ms") == "too long":
        fields["expires_at_ms"] = now + RAISE_DURATION_S_MAX * 1000 + 60_000
    elif "expires_at_ms" not in fields:
        fields["expires_at_ms"] = now + HOUR_MS
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.SetTemporaryRaise(_raise(**fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field + ": ")
    assert await snapshot(redis) == before


async def test_a_raise_in_the_past_names_redis_now(admin, auth):
    now = await _put(admin, auth, "c-past")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.SetTemporaryRaise(pb.SetTemporaryRaiseRequest(
            customer_id="c-past", node=POS, raise_minor=1_000, expires_at_ms=now - 1))
    message = caught.value.details()
    assert message.startswith("expires_at_ms: must be after now (")
    said_now = int(message.split("(")[1].split(" ")[0])
    assert now <= said_now < now + 60_000


async def test_a_raise_for_an_unknown_customer_is_not_found(admin, redis):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.SetTemporaryRaise(pb.SetTemporaryRaiseRequest(
            customer_id="nobody", node=POS, raise_minor=1_000, expires_at_ms=2**40))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details().startswith("customer_id: ")
    assert await snapshot(redis) == {}
