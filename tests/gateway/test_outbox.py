"""Invariant 4, atomic outbox: every state change has exactly one event in its partition's
stream, in order, with what the ledger needs; declines, refusals and bad input add none."""

from __future__ import annotations

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import catalog, keys
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, SUITE_CALLER
from tests.support import decision

CUSTOMER = "cust-outbox"
PRODUCTS = catalog.load()
QR_NODES = ",".join(PRODUCTS["scan_pay"].nodes_for("qr_scan"))
ONLINE_NODES = ",".join(PRODUCTS["ecommerce"].nodes_for("ecommerce"))


def stream() -> str:
    return keys.outbox(keys.base(keys.partition_of(CUSTOMER, PARTITIONS)))


async def read_events(redis, after: str = "-") -> list[tuple[str, dict[str, str]]]:
    start = after if after == "-" else "(" + after
    return [(entry_id.decode(), {k.decode(): v.decode() for k, v in fields.items()})
            for entry_id, fields in await redis.xrange(stream(), min=start)]


async def redis_ms(redis) -> int:
    seconds, micros = await redis.time()
    return seconds * 1000 + micros // 1000


class Tail:
    """Reads the events added since the last read."""

    def __init__(self, redis):
        self.redis = redis
        self.last = "-"

    async def new(self) -> list[dict[str, str]]:
        entries = await read_events(self.redis, self.last)
        if entries:
            self.last = entries[-1][0]
        return [fields for _, fields in entries]


def authorize_request(key: str, amount: int, **overrides) -> pb.AuthorizeRequest:
    fields = dict(idempotency_key=key, customer_id=CUSTOMER, product_id="scan_pay",
                  channel=pb.CHANNEL_QR_SCAN, merchant_id="shop-77", mcc="5812",
                  amount_minor=amount, currency="CNY")
    fields.update(overrides)
    return pb.AuthorizeRequest(**fields)


async def test_every_change_has_one_event_with_the_ledger_fields(redis, gateway, admin, auth):
    tail = Tail(redis)

    # PutCustomer
    start = await redis_ms(redis)
    await admin.PutCustomer(pb.PutCustomerRequest(customer_id=CUSTOMER,
                                                  status=pb.CUSTOMER_STATUS_ACTIVE,
                                                  timezone="Europe/Berlin",
                                                  caps_minor=CUSTOMER_CAPS))
    end = await redis_ms(redis)
    [put] = await tail.new()
    assert put["type"] == "customer_put"
    assert put["customer_id"] == CUSTOMER
    assert put["status"] == "active"
    assert put["timezone"] == "Europe/Berlin"
    assert dict(item.split("=") for item in put["caps"].split(",")) == {
        node: str(cap) for node, cap in CUSTOMER_CAPS.items()}
    assert start <= int(put["at_ms"]) <= end
    assert put["event_id"]
    assert put["caller"] == SUITE_CALLER

    # Authorize (approved)
    auth_reply = await auth.Authorize(authorize_request("a1", 40_000))
    assert auth_reply.approved
    hold_id = auth_reply.hold_id
    [authorized] = await tail.new()
    assert authorized == {
        "type": "authorized", "event_id": authorized["event_id"], "customer_id": CUSTOMER,
        "hold_id": hold_id, "product_id": "scan_pay", "merchant_id": "shop-77", "mcc": "5812",
        "channel": "qr_scan", "currency": "CNY", "nodes": QR_NODES, "amount_minor": "40000",
        "expires_at_ms": str(auth_reply.hold_expires_at_ms),
        "at_ms": str(auth_reply.decided_at_ms), "caller": SUITE_CALLER,
        "catalog_version": auth_reply.catalog_version,
    }
    assert auth_reply.catalog_version  # the served catalog's (limits/products.toml)

    # Capture, partial
    partial = await auth.Capture(pb.CaptureRequest(idempotency_key="c1", hold_id=hold_id,
                                                   amount_minor=15_000))
    [captured] = await tail.new()
    assert captured == {
        "type": "captured", "event_id": captured["event_id"], "customer_id": CUSTOMER,
        "hold_id": hold_id, "product_id": "scan_pay", "merchant_id": "shop-77",
        "currency": "CNY", "nodes": QR_NODES, "amount_minor": "15000", "released_minor": "0",
        "excess_minor": "0", "captured_total_minor": "15000", "final": "0",
        "at_ms": str(partial.decided_at_ms), "caller": SUITE_CALLER,
    }

    # Capture, final: the remainder is released
    final = await auth.Capture(pb.CaptureRequest(idempotency_key="c2", hold_id=hold_id,
                                                 amount_minor=5_000, final=True))
    assert (final.state, final.released_minor) == (pb.HOLD_STATE_CAPTURED, 20_000)
    [closed] = await tail.new()
    assert closed == {
        "type": "captured", "event_id": closed["event_id"], "customer_id": CUSTOMER,
        "hold_id": hold_id, "product_id": "scan_pay", "merchant_id": "shop-77",
        "currency": "CNY", "nodes": QR_NODES, "amount_minor": "5000",
        "released_minor": "20000", "excess_minor": "0", "captured_total_minor": "20000",
        "final": "1",
        "at_ms": str(final.decided_at_ms), "caller": SUITE_CALLER,
    }

    # Void of another hold, on another product
    online = await auth.Authorize(authorize_request(
        "a2", 25_000, product_id="ecommerce", channel=pb.CHANNEL_ECOMMERCE, merchant_id="web-9",
        mcc="5999"))
    [online_event] = await tail.new()
    assert (online_event["type"], online_event["nodes"], online_event["product_id"]) == (
        "authorized", ONLINE_NODES, "ecommerce")
    voided = await auth.Void(pb.VoidRequest(idempotency_key="v1", hold_id=online.hold_id))
    [void_event] = await tail.new()
    assert void_event == {
        "type": "voided", "event_id": void_event["event_id"], "customer_id": CUSTOMER,
        "hold_id": online.hold_id, "product_id": "ecommerce", "merchant_id": "web-9",
        "currency": "CNY", "nodes": ONLINE_NODES, "released_minor": "25000",
        "captured_total_minor": "0", "at_ms": str(voided.decided_at_ms),
        "caller": SUITE_CALLER,
    }

    # Expiry of a third hold, partly captured first
    third = await auth.Authorize(authorize_request("a3", 9_000, channel=pb.CHANNEL_POS))
    await auth.Capture(pb.CaptureRequest(idempotency_key="c3", hold_id=third.hold_id,
                                         amount_minor=1_000))
    assert [e["type"] for e in await tail.new()] == ["authorized", "captured"]
    gateway.limits.clock_offset_ms = third.hold_expires_at_ms - third.decided_at_ms + 1
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=CUSTOMER))
    [expired] = await tail.new()
    assert expired == {
        "type": "expired", "event_id": expired["event_id"], "customer_id": CUSTOMER,
        "hold_id": third.hold_id, "product_id": "scan_pay", "merchant_id": "shop-77",
        "currency": "CNY", "nodes": ",".join(PRODUCTS["scan_pay"].nodes_for("pos")),
        "released_minor": "8000", "captured_total_minor": "1000",
        # Its GetCredit found it due; the event names the expiry, not that call.
        "at_ms": str(credit.as_of_ms), "caller": keys.EXPIRY_CALLER,
    }

    everything = await read_events(redis)
    assert [fields["type"] for _, fields in everything] == [
        "customer_put", "authorized", "captured", "captured", "authorized", "voided",
        "authorized", "captured", "expired"]
    event_ids = [fields["event_id"] for _, fields in everything]
    assert len(set(event_ids)) == len(event_ids)
    at = [int(fields["at_ms"]) for _, fields in everything]
    assert at == sorted(at)

    # The events alone rebuild the customer's usage (what the ledger will do).
    held: dict[str, int] = {}
    used: dict[str, int] = {}
    for _, event in everything:
        nodes = event.get("nodes", "").split(",")
        for node in filter(None, nodes):
            if event["type"] == "authorized":
                held[node] = held.get(node, 0) + int(event["amount_minor"])
            elif event["type"] == "captured":
                moved = int(event["amount_minor"])
                held[node] -= moved + int(event["released_minor"])
                used[node] = used.get(node, 0) + moved
            elif event["type"] in ("voided", "expired"):
                held[node] -= int(event["released_minor"])
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=CUSTOMER))
    for level in credit.levels:
        assert level.held_minor == held.get(level.node, 0), level.node
        assert level.used_minor == used.get(level.node, 0), level.node


async def test_declines_refusals_and_bad_input_add_no_event(redis, gateway, admin, auth):
    caps = dict(CUSTOMER_CAPS, **{"consumer.scan_pay.qr": 10_000})
    await admin.PutCustomer(pb.PutCustomerRequest(customer_id=CUSTOMER,
                                                  status=pb.CUSTOMER_STATUS_ACTIVE,
                                                  caps_minor=caps))
    approved = await auth.Authorize(authorize_request("ok", 6_000))
    assert approved.approved
    await auth.Capture(pb.CaptureRequest(idempotency_key="cap", hold_id=approved.hold_id,
                                         amount_minor=6_000, final=True))
    before = await read_events(redis)
    assert [e["type"] for _, e in before] == ["customer_put", "authorized", "captured"]

    declines = [
        authorize_request("d-credit", 5_000),  # 4,000 left on the QR level
        authorize_request("d-mcc", 100, mcc="7995"),
        authorize_request("d-min", 99),
        authorize_request("d-max", 5_000_001),
        authorize_request("d-channel", 500, channel=pb.CHANNEL_CASH),
        authorize_request("d-unknown", 500, customer_id="nobody"),
    ]
    for request in declines:
        reply = await auth.Authorize(request)
        assert not reply.approved, request.idempotency_key
        assert reply.decline_reason != pb.DECLINE_REASON_UNSPECIFIED

    refusals = [
        (auth.Capture, pb.CaptureRequest(idempotency_key="cap-2", hold_id=approved.hold_id,
                                         amount_minor=1)),
        (auth.Void, pb.VoidRequest(idempotency_key="void", hold_id=approved.hold_id)),
        (auth.Authorize, authorize_request("ok", 6_001)),  # same key, other payload
        (auth.Capture, pb.CaptureRequest(idempotency_key="cap", hold_id=approved.hold_id,
                                         amount_minor=5_000, final=True)),
        (auth.Authorize, authorize_request("bad", 0)),
        (auth.Authorize, authorize_request("bad", 100, mcc="54x1")),
        (admin.PutCustomer, pb.PutCustomerRequest(customer_id=CUSTOMER,
                                                  status=pb.CUSTOMER_STATUS_ACTIVE,
                                                  timezone="Nowhere/Land")),
        (admin.PutCustomer, pb.PutCustomerRequest(customer_id=CUSTOMER,
                                                  status=pb.CUSTOMER_STATUS_UNSPECIFIED)),
    ]
    for call, request in refusals:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request)
        assert caught.value.code() in (grpc.StatusCode.FAILED_PRECONDITION,
                                       grpc.StatusCode.ALREADY_EXISTS,
                                       grpc.StatusCode.INVALID_ARGUMENT), request

    # Retries of the approved calls add nothing either.
    # (The first decision; the headroom is as of the retry: the hold was captured since.)
    assert decision(await auth.Authorize(authorize_request("ok", 6_000))) == decision(approved)
    assert await read_events(redis) == before


async def test_events_of_two_customers_go_to_their_own_partitions(redis, admin, auth):
    # Two customers in different partitions.
    others = [f"other-{i}" for i in range(40)]
    other = next(c for c in others if keys.partition_of(c, PARTITIONS)
                 != keys.partition_of(CUSTOMER, PARTITIONS))
    for customer_id in (CUSTOMER, other):
        await admin.PutCustomer(pb.PutCustomerRequest(customer_id=customer_id,
                                                      status=pb.CUSTOMER_STATUS_ACTIVE,
                                                      caps_minor=CUSTOMER_CAPS))
    await auth.Authorize(authorize_request("a", 1_000, customer_id=other))
    mine = await read_events(redis)
    assert [e["type"] for _, e in mine] == ["customer_put"]
    theirs = await redis.xrange(keys.outbox(keys.base(keys.partition_of(other, PARTITIONS))))
    assert [fields[b"type"] for _, fields in theirs] == [b"customer_put", b"authorized"]
    assert {fields[b"customer_id"] for _, fields in theirs} == {other.encode()}
