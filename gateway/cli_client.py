"""The client side of the CLI: admin subcommands and the demo, over gRPC."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc

_STATUS = {"active": pb.CUSTOMER_STATUS_ACTIVE, "frozen": pb.CUSTOMER_STATUS_FROZEN,
           "closed": pb.CUSTOMER_STATUS_CLOSED, "overdue": pb.CUSTOMER_STATUS_OVERDUE}


def money(minor: int) -> str:
    """Minor units as a decimal amount, exactly (no floats)."""
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), 100)
    return f"{sign}{whole:,}.{cents:02d}"


def _reason(number: int) -> str:
    return pb.DeclineReason.Name(number).removeprefix("DECLINE_REASON_")


async def wait_serving(channel: grpc.aio.Channel, timeout_s: float = 20.0) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway did not become SERVING in time")
        await asyncio.sleep(0.2)


async def command(args) -> int:
    async with grpc.aio.insecure_channel(args.target) as channel:
        try:
            if args.command == "demo":
                return await demo(channel)
            if args.command == "credit":
                print(await pb_grpc.AuthorizationStub(channel).GetCredit(
                    pb.GetCreditRequest(customer_id=args.customer_id,
                                        product_id=args.product), timeout=5))
                return 0
            admin = pb_grpc.AdminStub(channel)
            if args.action == "show":
                print(await admin.GetCustomer(
                    pb.GetCustomerRequest(customer_id=args.customer_id), timeout=5))
                return 0
            caps = {}
            for item in args.cap:
                node, _, amount = item.partition("=")
                if not amount.isdigit():
                    print(f"--cap {item!r}: expected NODE=AMOUNT_MINOR", file=sys.stderr)
                    return 2
                caps[node] = int(amount)
            print(await admin.PutCustomer(pb.PutCustomerRequest(
                customer_id=args.customer_id, status=_STATUS[args.status],
                timezone=args.timezone, caps_minor=caps), timeout=5))
            return 0
        except grpc.aio.AioRpcError as error:
            print(f"creditgate: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1


async def demo(channel: grpc.aio.Channel) -> int:
    """Create a customer, then authorize, capture and void, printing each answer."""
    await wait_serving(channel)
    admin = pb_grpc.AdminStub(channel)
    auth = pb_grpc.AuthorizationStub(channel)
    customer_id = f"demo-{os.urandom(4).hex()}"
    caps = {"total": 2_000_000, "consumer": 1_500_000, "consumer.scan_pay": 1_000_000,
            "consumer.scan_pay.qr": 500_000, "consumer.scan_pay.pos": 800_000}
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id=customer_id, status=pb.CUSTOMER_STATUS_ACTIVE, timezone="Asia/Shanghai",
        caps_minor=caps), timeout=5)
    print(f"customer {customer_id}: total line {money(caps['total'])} CNY, "
          f"scan-to-pay {money(caps['consumer.scan_pay'])} CNY")

    async def authorize(key: str, amount: int, channel_: int = pb.CHANNEL_POS):
        reply = await auth.Authorize(pb.AuthorizeRequest(
            idempotency_key=f"{customer_id}-{key}", customer_id=customer_id,
            product_id="scan_pay", channel=channel_, merchant_id="shop-0001", mcc="5411",
            amount_minor=amount, currency="CNY"), timeout=5)
        verdict = (f"approved hold {reply.hold_id}" if reply.approved else
                   f"declined {_reason(reply.decline_reason)}"
                   + (f" at {reply.decline_level}" if reply.decline_level else ""))
        print(f"authorize {money(amount):>10} CNY -> {reply.response_code} {verdict}; "
              f"available {money(reply.available_minor)}")
        return reply

    first = await authorize("a1", 150_000)
    again = await authorize("a1", 150_000)
    print(f"  retry with the same key -> same hold: {again.hold_id == first.hold_id}")
    captured = await auth.Capture(pb.CaptureRequest(
        idempotency_key=f"{customer_id}-c1", hold_id=first.hold_id, amount_minor=120_000,
        final=True), timeout=5)
    print(f"capture   {money(captured.captured_minor):>10} CNY -> "
          f"{pb.HoldState.Name(captured.state)}, released {money(captured.released_minor)}")
    second = await authorize("a2", 300_000, pb.CHANNEL_QR_SCAN)
    voided = await auth.Void(pb.VoidRequest(idempotency_key=f"{customer_id}-v1",
                                            hold_id=second.hold_id), timeout=5)
    print(f"void {second.hold_id} -> {pb.HoldState.Name(voided.state)}, "
          f"released {money(voided.released_minor)}")
    await authorize("a3", 900_000)  # more than the scan-to-pay line has left: declined
    try:
        await authorize("a4", -5)
    except grpc.aio.AioRpcError as error:
        print(f"authorize -0.05 CNY -> {error.code().name}: {error.details()}")
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=customer_id,
                                                      product_id="scan_pay"), timeout=5)
    for level in credit.levels:
        print(f"  {level.node:<24} cap {money(level.cap_minor):>12}  held "
              f"{money(level.held_minor):>10}  used {money(level.used_minor):>10}  available "
              f"{money(level.available_minor):>12}")
    ok = (first.approved and again.hold_id == first.hold_id
          and captured.state == pb.HOLD_STATE_CAPTURED and voided.state == pb.HOLD_STATE_VOIDED)
    print("demo ok" if ok else "demo FAILED")
    return 0 if ok else 1
