"""Deny by default, cell by cell: every RPC against every kind of caller over real mutual TLS
and a real Redis, each cell's exact status, and Redis unchanged (every key's value, every
outbox's length) for every refusal. Zero cells may succeed that should not.

The callers: a terminal of merchant M-1 (pos and qr_scan, products scan_pay and ecommerce), a
terminal of merchant M-2, a terminal of M-1 allowed only the ecommerce channel and product, an
acquirer of every merchant, a back office, a billing system, an observer, and an online shop
of M-1 that cannot hold a certificate and calls with an API key (its connection presents a
certificate the callers file does not know, as every connection must under mutual TLS).
"""

from __future__ import annotations

import datetime
import itertools
import time

import grpc
import pytest
import pytest_asyncio

from creditgate.gateway import callers, devpki
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from tests.conftest import CUSTOMER_CAPS, served_gateway, snapshot
from tests.support import api_key, authorize_request

DOMAIN = "spiffe://matrix.example"
API_KEY = api_key("SHOP-1", "a-key-for-the-online-shop")
BAD_API_KEY = api_key("SHOP-1", "not-the-key")
CALLERS_FILE = f"""
[callers.T-M1]
role = "terminal"
identity = "{DOMAIN}/terminal/T-M1"
merchants = ["M-1"]
channels = ["pos", "qr_scan", "ecommerce"]
products = ["scan_pay", "ecommerce"]

[callers.T-M2]
role = "terminal"
identity = "{DOMAIN}/terminal/T-M2"
merchants = ["M-2"]

[callers.T-NARROW]
role = "terminal"
identity = "{DOMAIN}/terminal/T-NARROW"
merchants = ["M-1"]
channels = ["ecommerce"]
products = ["ecommerce"]

[callers.ACQ]
role = "acquirer"
identity = "{DOMAIN}/acquirer/ACQ"
merchants = ["*"]

[callers.BO]
role = "backoffice"
identity = "{DOMAIN}/backoffice/BO"

[callers.BILL]
role = "billing"
identity = "{DOMAIN}/billing/BILL"

[callers.OBS]
role = "observer"
identity = "{DOMAIN}/observer/OBS"

[callers.SHOP-1]
role = "terminal"
api_key_sha256 = "{callers.api_key_hash(API_KEY)}"
merchants = ["M-1"]
"""
IDENTITIES = {
    "terminal": "T-M1", "terminal-other-merchant": "T-M2", "terminal-narrow": "T-NARROW",
    "acquirer": "ACQ", "backoffice": "BO", "billing": "BILL", "observer": "OBS",
}
ROLE_PATHS = {"T-M1": "terminal", "T-M2": "terminal", "T-NARROW": "terminal",
              "ACQ": "acquirer", "BO": "backoffice", "BILL": "billing", "OBS": "observer"}
CUSTOMER = "matrix-1"
OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOBODY = grpc.StatusCode.UNAUTHENTICATED
NO_TLS = grpc.StatusCode.UNAVAILABLE
NOT_FOUND = grpc.StatusCode.NOT_FOUND
RPCS = ("Authorize", "AuthorizeBatch", "Capture", "Void", "Reverse", "Refund",
        "IncrementAuthorization", "ForceCapture", "GetCredit", "PutCustomer", "GetCustomer",
        "SetTemporaryRaise", "Repay")
ALLOWED = {role: rpcs for role, rpcs in callers.ROLE_RPCS.items()}
HOLD_RPCS = {"Capture", "Void", "Reverse", "Refund", "IncrementAuthorization"}


def expected(cell: str, rpc: str) -> grpc.StatusCode:
    """The one right answer of a cell."""
    if cell in ("no-certificate", "other-ca", "expired"):
        return NO_TLS  # the handshake fails: no call reaches the gateway
    if cell in ("unknown-identity", "bad-api-key"):
        return NOBODY
    name = "T-M1" if cell == "good-api-key" else IDENTITIES[cell]
    role = ROLE_PATHS.get(name, "terminal")
    if rpc not in ALLOWED[role]:
        return DENIED
    if cell == "terminal-other-merchant":
        if rpc in ("Authorize", "AuthorizeBatch"):
            return DENIED  # the request names merchant M-1
        if rpc == "Reverse":
            return OK  # what a reversal of an unknown original answers (checked unchanged)
        if rpc in HOLD_RPCS:
            return NOT_FOUND  # M-1's hold does not exist for M-2
    if cell == "terminal-narrow" and rpc in ("Authorize", "AuthorizeBatch", "GetCredit"):
        return DENIED  # pos / scan_pay are outside its lists
    return OK


CELLS = ("no-certificate", "other-ca", "expired", "unknown-identity", "bad-api-key",
         "good-api-key", *IDENTITIES)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    authority = devpki.Authority.create()
    authority.pair.write(folder, "ca")
    authority.issue_server().write(folder, "server")
    for name, role in ROLE_PATHS.items():
        authority.issue_client(f"{DOMAIN}/{role}/{name}").write(folder, name)
    authority.issue_client(f"{DOMAIN}/terminal/UNKNOWN").write(folder, "unknown")
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    authority.issue_client(f"{DOMAIN}/terminal/T-M1", valid_days=1,
                           not_before=past).write(folder, "expired")
    devpki.Authority.create("another CA").issue_client(
        f"{DOMAIN}/terminal/T-M1").write(folder, "other-ca")
    (folder / "callers.toml").write_text(CALLERS_FILE)
    return folder


@pytest_asyncio.fixture
async def tls_gateway(redis, redis_server, pki):
    async with served_gateway(redis_server, insecure=False, tls_cert=str(pki / "server.pem"),
                              tls_key=str(pki / "server.key"), tls_ca=str(pki / "ca.pem"),
                              callers_path=str(pki / "callers.toml")) as served:
        yield served


def channel_for(pki, port: int, cert: str | None) -> grpc.aio.Channel:
    pair = {} if cert is None else {
        "certificate_chain": (pki / f"{cert}.pem").read_bytes(),
        "private_key": (pki / f"{cert}.key").read_bytes()}
    credentials = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes(), **pair)
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials,
                                   options=[("grpc.use_local_subchannel_pool", 1)])


def cert_and_key(cell: str) -> tuple[str | None, str | None]:
    """The certificate a cell's connection presents, and its API key."""
    return {
        "no-certificate": (None, None), "other-ca": ("other-ca", None),
        "expired": ("expired", None), "unknown-identity": ("unknown", None),
        "bad-api-key": ("unknown", BAD_API_KEY), "good-api-key": ("unknown", API_KEY),
    }.get(cell, (IDENTITIES.get(cell), None))


class Setup:
    """The acquirer and back office make what each cell acts on: the customer, and a fresh
    hold of merchant M-1 (captured, for Refund) per cell."""

    def __init__(self, pki, port: int):
        self.acquirer = channel_for(pki, port, "ACQ")
        self.backoffice = channel_for(pki, port, "BO")
        self.keys = itertools.count()

    async def customer(self) -> None:
        await pb_grpc.AdminStub(self.backoffice).PutCustomer(pb.PutCustomerRequest(
            customer_id=CUSTOMER, status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS),
            timeout=10)

    async def hold(self, captured: bool = False, product: str = "scan_pay") -> tuple[str, str]:
        """A new hold of M-1: (its id, its Authorize's idempotency key)."""
        auth = pb_grpc.AuthorizationStub(self.acquirer)
        key = f"setup-{next(self.keys)}"
        channel = "ecommerce" if product == "ecommerce" else "pos"
        reply = await auth.Authorize(authorize_request(
            key, CUSTOMER, 1_000, product_id=product, channel=channel, merchant_id="M-1"),
            timeout=10)
        assert reply.approved, reply
        if captured:
            await auth.Capture(pb.CaptureRequest(idempotency_key=f"{key}-c", hold_id=reply.hold_id,
                                                 amount_minor=1_000, final=True), timeout=10)
        return reply.hold_id, key

    async def close(self) -> None:
        await self.acquirer.close()
        await self.backoffice.close()


async def request_for(rpc: str, setup: Setup, cell: str):
    """A request for `rpc` that the right caller would see served."""
    key = f"{cell}-{rpc}"
    purchase = authorize_request(key, CUSTOMER, 500, merchant_id="M-1")
    if rpc == "Authorize":
        return purchase
    if rpc == "AuthorizeBatch":
        return pb.AuthorizeBatchRequest(requests=[purchase])
    if rpc in ("Capture", "Void", "Refund"):
        hold_id, _ = await setup.hold(captured=rpc == "Refund")
        message = {"Capture": pb.CaptureRequest, "Void": pb.VoidRequest,
                   "Refund": pb.RefundRequest}[rpc]
        amount = {} if rpc == "Void" else {"amount_minor": 500}
        return message(idempotency_key=key, hold_id=hold_id, **amount)
    if rpc == "Reverse":
        _, original = await setup.hold()
        return pb.ReverseRequest(customer_id=CUSTOMER, original_idempotency_key=original)
    if rpc == "IncrementAuthorization":
        hold_id, _ = await setup.hold(product="ecommerce")
        return pb.IncrementAuthorizationRequest(idempotency_key=key, hold_id=hold_id,
                                                amount_minor=100)
    if rpc == "ForceCapture":
        return pb.ForceCaptureRequest(idempotency_key=key, customer_id=CUSTOMER,
                                      product_id="scan_pay", channel=pb.CHANNEL_POS,
                                      merchant_id="M-1", mcc="5411", amount_minor=500,
                                      currency="CNY")
    if rpc == "GetCredit":
        return pb.GetCreditRequest(customer_id=CUSTOMER, product_id="scan_pay")
    if rpc == "PutCustomer":
        return pb.PutCustomerRequest(customer_id=CUSTOMER, status=pb.CUSTOMER_STATUS_ACTIVE,
                                     caps_minor={**CUSTOMER_CAPS, "total": 2_000_001})
    if rpc == "GetCustomer":
        return pb.GetCustomerRequest(customer_id=CUSTOMER)
    if rpc == "SetTemporaryRaise":
        in_a_week_ms = int((time.time() + 7 * 86_400) * 1000)
        return pb.SetTemporaryRaiseRequest(customer_id=CUSTOMER, node="total",
                                           raise_minor=1_000, expires_at_ms=in_a_week_ms)
    assert rpc == "Repay"
    return pb.RepayRequest(idempotency_key=key, customer_id=CUSTOMER, amount_minor=100)


async def call(channel: grpc.aio.Channel, rpc: str, request, api_key: str | None):
    service = pb_grpc.AdminStub if rpc in ("PutCustomer", "GetCustomer", "SetTemporaryRaise",
                                           "Repay") else pb_grpc.AuthorizationStub
    metadata = (("x-api-key", api_key),) if api_key else None
    try:
        await getattr(service(channel), rpc)(request, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details()
    return OK, ""


@pytest.mark.parametrize("cell", CELLS)
async def test_every_rpc_answers_each_caller_exactly_and_refusals_change_nothing(
        tls_gateway, redis, pki, cell):
    setup = Setup(pki, tls_gateway.port)
    await setup.customer()
    cert, api_key = cert_and_key(cell)
    wrong = []
    try:
        for rpc in RPCS:
            request = await request_for(rpc, setup, cell)
            want = expected(cell, rpc)
            unchanged = want != OK or (cell, rpc) == ("terminal-other-merchant", "Reverse")
            before = await snapshot(redis) if unchanged else None
            # A connection per call: a failed handshake does not poison the next cell.
            async with channel_for(pki, tls_gateway.port, cert) as channel:
                got, details = await call(channel, rpc, request, api_key)
            if got != want:
                wrong.append(f"{rpc}: {got.name} ({details[:120]}), expected {want.name}")
            elif before is not None and await snapshot(redis) != before:
                wrong.append(f"{rpc}: answered {got.name}, but Redis changed")
            if api_key:
                assert api_key.partition(".")[2] not in details  # never echoed
    finally:
        await setup.close()
    assert not wrong, "\n".join(wrong)


async def test_a_terminal_cannot_tell_another_merchants_hold_from_no_hold(tls_gateway, pki):
    setup = Setup(pki, tls_gateway.port)
    await setup.customer()
    hold_id, original = await setup.hold()
    try:
        async with channel_for(pki, tls_gateway.port, "T-M2") as channel:
            stub = pb_grpc.AuthorizationStub(channel)
            answers = {}
            for target in (hold_id, hold_id[:-4] + "AAAA"):  # M-1's hold; a hold that is not
                for rpc, request in (
                        ("Capture", pb.CaptureRequest(idempotency_key="p-c", hold_id=target,
                                                      amount_minor=1)),
                        ("Void", pb.VoidRequest(idempotency_key="p-v", hold_id=target)),
                        ("Refund", pb.RefundRequest(idempotency_key="p-r", hold_id=target,
                                                    amount_minor=1)),
                        ("IncrementAuthorization", pb.IncrementAuthorizationRequest(
                            idempotency_key="p-i", hold_id=target, amount_minor=1))):
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await getattr(stub, rpc)(request, timeout=10)
                    answers.setdefault(rpc, []).append(
                        (caught.value.code(), caught.value.details(),
                         caught.value.trailing_metadata()))
            for rpc, (theirs, nothing) in answers.items():
                assert theirs[0] == nothing[0] == NOT_FOUND, rpc
                assert theirs[1] == nothing[1], rpc
            reversed_ = await stub.Reverse(pb.ReverseRequest(
                customer_id=CUSTOMER, original_idempotency_key=original), timeout=10)
            unknown = await stub.Reverse(pb.ReverseRequest(
                customer_id=CUSTOMER, original_idempotency_key="never-used"), timeout=10)
            assert (reversed_.outcome, reversed_.released_minor) == (
                unknown.outcome, unknown.released_minor)
    finally:
        await setup.close()
