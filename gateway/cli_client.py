"""The client side of the CLI: admin subcommands and the demo, over gRPC.

A command reaches the gateway over mutual TLS as one of the development callers of
`creditgate certs init` (gateway/devpki.py), from their files under --tls-dir, unless
--cert/--key/--ca name other files; --insecure reaches a plaintext gateway instead.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from creditgate.gateway import devpki, tls
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc

# The development caller (gateway/devpki.py DEV_CALLERS) each command presents by default:
# the one whose role may make its calls.
COMMAND_CALLERS = {"customer": "BO-1", "credit": "BILL-1"}
DEMO_MERCHANT = "M-0001"  # the development terminal's merchant
DEMO_REPAY_MINOR = 20_000  # billing repays part of the demo's capture

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


class NoCredentials(Exception):
    """A TLS file the command needs is missing; the message says how to get it."""


def open_channel(args, caller: str) -> grpc.aio.Channel:
    """A channel to --target: plaintext with --insecure, else mutual TLS with --cert/--key,
    or `caller`'s development files under --tls-dir, and --ca or --tls-dir's ca.pem."""
    if args.insecure:
        return grpc.aio.insecure_channel(args.target)
    folder = Path(args.tls_dir)
    cert = args.cert or str(folder / f"{caller}.pem")
    key = args.key or str(folder / f"{caller}.key")
    ca = args.ca or (str(folder / "ca.pem") if (folder / "ca.pem").is_file() else "")
    missing = [path for path in (cert, key) if not Path(path).is_file()]
    if missing:
        raise NoCredentials(f"no {' or '.join(missing)}: run `creditgate certs init --dir "
                            f"{folder}` (make run does), give --cert/--key/--ca, or "
                            f"--insecure for a plaintext gateway")
    return grpc.aio.secure_channel(args.target, tls.channel_credentials(cert, key, ca))


async def command(args) -> int:
    try:
        if args.command == "demo":
            if args.cert or args.key:
                print("creditgate demo: it presents the development callers' certificates "
                      "under --tls-dir; --cert/--key do not apply", file=sys.stderr)
                return 2
            return await demo(DemoCallers(args))
        channel = open_channel(args, COMMAND_CALLERS[args.command])
    except (NoCredentials, tls.TlsFilesError) as error:
        print(f"creditgate: {error}", file=sys.stderr)
        return 2
    async with channel:
        try:
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


class DemoCallers:
    """The demo's callers: the development terminal, back-office and billing identities,
    each on its own mutual-TLS channel; with --insecure, one plaintext channel for all (the
    loopback caller), where the terminal's refused call cannot be shown."""

    def __init__(self, args):
        names = {caller.role: caller.name for caller in devpki.DEV_CALLERS}
        self.terminal_name = names["terminal"]
        self.separate = not args.insecure
        self.channels: dict[str, grpc.aio.Channel] = {}
        try:
            for role in ("terminal", "backoffice", "billing"):
                if self.separate or not self.channels:
                    self.channels[role] = open_channel(args, names[role])
                else:
                    self.channels[role] = self.channels["terminal"]
        except BaseException:
            self.close_now()
            raise
        self.terminal = pb_grpc.AuthorizationStub(self.channels["terminal"])
        self.terminal_admin = pb_grpc.AdminStub(self.channels["terminal"])
        self.backoffice = pb_grpc.AdminStub(self.channels["backoffice"])
        self.billing = pb_grpc.AdminStub(self.channels["billing"])

    def close_now(self) -> None:
        for channel in set(self.channels.values()):
            asyncio.ensure_future(channel.close())

    async def close(self) -> None:
        for channel in set(self.channels.values()):
            await channel.close()


async def demo(callers: DemoCallers) -> int:
    """Create a customer as the back-office; authorize, capture and void as the terminal;
    repay as billing; then the terminal tries to raise the customer's line, which the gateway
    must refuse. Prints each answer."""
    try:
        await wait_serving(callers.channels["terminal"])
        customer_id = f"demo-{os.urandom(4).hex()}"
        caps = {"total": 2_000_000, "consumer": 1_500_000, "consumer.scan_pay": 1_000_000,
                "consumer.scan_pay.qr": 500_000, "consumer.scan_pay.pos": 800_000}
        await callers.backoffice.PutCustomer(pb.PutCustomerRequest(
            customer_id=customer_id, status=pb.CUSTOMER_STATUS_ACTIVE,
            timezone="Asia/Shanghai", caps_minor=caps), timeout=5)
        print(f"customer {customer_id}: total line {money(caps['total'])} CNY, "
              f"scan-to-pay {money(caps['consumer.scan_pay'])} CNY")
        ok = await _purchases(callers.terminal, customer_id)
        repaid = await callers.billing.Repay(pb.RepayRequest(
            idempotency_key=f"{customer_id}-r1", customer_id=customer_id,
            amount_minor=DEMO_REPAY_MINOR), timeout=5)
        print(f"repay     {money(repaid.repaid_minor):>10} CNY (billing) -> outstanding "
              f"{money(repaid.outstanding_minor)}")
        ok = await _refused_raise(callers, customer_id) and ok
        await _print_credit(callers.terminal, customer_id)
    finally:
        await callers.close()
    print("demo ok" if ok else "demo FAILED")
    return 0 if ok else 1


async def _purchases(auth: pb_grpc.AuthorizationStub, customer_id: str) -> bool:
    """The terminal's purchases: an approval, its retry, a capture, a void, a decline and an
    invalid amount; whether each answered as it should."""

    async def authorize(key: str, amount: int, channel_: int = pb.CHANNEL_POS):
        reply = await auth.Authorize(pb.AuthorizeRequest(
            idempotency_key=f"{customer_id}-{key}", customer_id=customer_id,
            product_id="scan_pay", channel=channel_, merchant_id=DEMO_MERCHANT, mcc="5411",
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
    return (first.approved and again.hold_id == first.hold_id
            and captured.state == pb.HOLD_STATE_CAPTURED and voided.state == pb.HOLD_STATE_VOIDED)


async def _refused_raise(callers: DemoCallers, customer_id: str) -> bool:
    """The terminal tries Admin.SetTemporaryRaise, which its role does not allow: the answer
    must be PERMISSION_DENIED, and a success fails the demo."""
    who = f"terminal {callers.terminal_name} -> Admin.SetTemporaryRaise"
    if not callers.separate:
        print(f"{who}: not tried (plaintext: every call is the same loopback caller; "
              "without --insecure the demo shows the refusal)")
        return True
    expires_at_ms = int(time.time() * 1000) + 24 * 3600 * 1000
    try:
        await callers.terminal_admin.SetTemporaryRaise(pb.SetTemporaryRaiseRequest(
            customer_id=customer_id, node="total", raise_minor=1_000_000,
            expires_at_ms=expires_at_ms), timeout=5)
    except grpc.aio.AioRpcError as error:
        print(f"{who}: refused, {error.code().name}: {error.details()}")
        return error.code() == grpc.StatusCode.PERMISSION_DENIED
    print(f"{who}: OK -- the gateway let a terminal raise a credit line; it must refuse it "
          "(PERMISSION_DENIED)", file=sys.stderr)
    return False


async def _print_credit(auth: pb_grpc.AuthorizationStub, customer_id: str) -> None:
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=customer_id,
                                                      product_id="scan_pay"), timeout=5)
    for level in credit.levels:
        print(f"  {level.node:<24} cap {money(level.cap_minor):>12}  held "
              f"{money(level.held_minor):>10}  used {money(level.used_minor):>10}  available "
              f"{money(level.available_minor):>12}")
