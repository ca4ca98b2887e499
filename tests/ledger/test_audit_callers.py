"""The audit trail with several callers: a random mix of operations by two acquirers (each
for its own merchant), a back office and a billing system, through a real gateway; every
event names the caller that made it, in Redis and in the ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
import time

import grpc
import pytest
import pytest_asyncio

from creditgate.gateway import callers
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from creditgate.gateway.sweeper import SWEEPER
from tests.conftest import CUSTOMER_CAPS, served_gateway
from tests.ledger.support import STREAMS
from tests.support import api_key, authorize_request

KEYS = {name: api_key(name, f"audit-key-of-{name.lower()}") for name in ("ACQ-A", "ACQ-B", "BO")}
MERCHANTS = {"ACQ-A": "M-A", "ACQ-B": "M-B"}
CUSTOMERS = ("audit-1", "audit-2")


def callers_text() -> str:
    text = ""
    for name, merchant in MERCHANTS.items():
        text += (f'[callers.{name}]\nrole = "acquirer"\nmerchants = ["{merchant}"]\n'
                 f'api_key_sha256 = "{callers.api_key_hash(KEYS[name])}"\n\n')
    text += (f'[callers.BO]\nrole = "backoffice"\n'
             f'api_key_sha256 = "{callers.api_key_hash(KEYS["BO"])}"\n\n'
             '[callers.BILL]\nrole = "billing"\nidentity = "insecure:loopback"\n')
    return text


@pytest_asyncio.fixture
async def audited_gateway(redis, redis_server, tmp_path):
    path = tmp_path / "callers.toml"
    path.write_text(callers_text())
    async with served_gateway(redis_server, callers_path=str(path)) as served:
        yield served


class Mix:
    """Random operations, each by the caller allowed to make it."""

    def __init__(self, channel: grpc.aio.Channel, seed: int):
        self.auth, self.admin = pb_grpc.AuthorizationStub(channel), pb_grpc.AdminStub(channel)
        self.rng = random.Random(seed)
        # (caller, hold id, its Authorize's key, its customer)
        self.holds: list[tuple[str, str, str, str]] = []
        self.count = 0

    def key(self, name: str) -> tuple[tuple[str, str], ...]:
        return () if name == "BILL" else (("x-api-key", KEYS[name]),)

    def next_key(self) -> str:
        self.count += 1
        return f"mix-{self.count}"

    async def step(self) -> None:
        choice = self.rng.choice(("authorize", "authorize", "capture", "void", "refund",
                                  "increment", "reverse", "raise", "repay", "put"))
        customer = self.rng.choice(CUSTOMERS)
        if choice in ("capture", "void", "refund", "increment", "reverse") and self.holds:
            await self.on_hold(choice, *self.rng.choice(self.holds))
        elif choice == "raise":
            await self.admin.SetTemporaryRaise(pb.SetTemporaryRaiseRequest(
                customer_id=customer, node="total", raise_minor=self.rng.randint(1, 9) * 1_000,
                expires_at_ms=int((time.time() + 86_400) * 1000)), metadata=self.key("BO"),
                timeout=10)
        elif choice == "repay":
            await self.admin.Repay(pb.RepayRequest(
                idempotency_key=self.next_key(), customer_id=customer,
                amount_minor=self.rng.randint(1, 500)), metadata=self.key("BILL"), timeout=10)
        elif choice == "put":
            await self.put(customer)
        else:
            await self.authorize(customer)

    async def put(self, customer: str) -> None:
        await self.admin.PutCustomer(pb.PutCustomerRequest(
            customer_id=customer, status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS),
            metadata=self.key("BO"), timeout=10)

    async def authorize(self, customer: str) -> None:
        name = self.rng.choice(tuple(MERCHANTS))
        key = self.next_key()
        online = self.rng.random() < 0.3
        request = authorize_request(
            key, customer, self.rng.randint(1, 20) * 100, merchant_id=MERCHANTS[name],
            **({"product_id": "ecommerce", "channel": "ecommerce", "mcc": "5999"}
               if online else {}))
        reply = await self.auth.Authorize(request, metadata=self.key(name), timeout=10)
        if reply.approved:
            self.holds.append((name, reply.hold_id, key, customer))

    async def on_hold(self, choice: str, name: str, hold_id: str, original: str,
                      customer: str) -> None:
        """The hold's own acquirer acts on it; refusals (a closed hold) are part of the mix."""
        metadata, key = self.key(name), self.next_key()
        calls = {
            "capture": lambda: self.auth.Capture(pb.CaptureRequest(
                idempotency_key=key, hold_id=hold_id, amount_minor=100,
                final=self.rng.random() < 0.5), metadata=metadata, timeout=10),
            "void": lambda: self.auth.Void(pb.VoidRequest(idempotency_key=key, hold_id=hold_id),
                                           metadata=metadata, timeout=10),
            "refund": lambda: self.auth.Refund(pb.RefundRequest(
                idempotency_key=key, hold_id=hold_id, amount_minor=50), metadata=metadata,
                timeout=10),
            "increment": lambda: self.auth.IncrementAuthorization(
                pb.IncrementAuthorizationRequest(idempotency_key=key, hold_id=hold_id,
                                                 amount_minor=100),
                metadata=metadata, timeout=10),
            "reverse": lambda: self.auth.Reverse(pb.ReverseRequest(
                customer_id=customer, original_idempotency_key=original), metadata=metadata,
                timeout=10),
        }
        try:
            await calls[choice]()
        except grpc.aio.AioRpcError as error:
            assert error.code() in (grpc.StatusCode.FAILED_PRECONDITION,
                                    grpc.StatusCode.INVALID_ARGUMENT), error


def expected_caller(event: dict[str, str], authorized_by: dict[str, str]) -> str:
    """Who must have made `event`: known by its type, else by its merchant, else (a reversal
    of a hold already closed names none) by the Authorize key in its id, z:<customer>|<key>:."""
    if event["type"] in ("customer_put", "limit_raised"):
        return "BO"
    if event["type"] in ("repaid", "overpaid"):
        return "BILL"
    if event["type"] == "expired":
        return SWEEPER
    if event["merchant_id"]:
        return {merchant: name for name, merchant in MERCHANTS.items()}[event["merchant_id"]]
    assert event["type"] == "reversed", event
    return authorized_by[event["event_id"].partition("|")[2].rpartition(":")[0]]


@pytest.mark.parametrize("seed", [1, 2])
async def test_every_event_names_the_caller_that_made_it(
        audited_gateway, redis, store, make_worker, seed):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{audited_gateway.port}") as channel:
        mix = Mix(channel, seed)
        for customer in CUSTOMERS:
            await mix.put(customer)
        for _ in range(120):
            await mix.step()
    events = [{k.decode(): v.decode() for k, v in fields.items()}
              for stream in STREAMS for _, fields in await redis.xrange(stream)]
    kinds = {event["type"] for event in events}
    assert {"customer_put", "authorized", "captured", "limit_raised"} <= kinds, kinds
    authorized_by = {key: name for name, _, key, _ in mix.holds}
    wrong = [(event["type"], event.get("merchant_id"), event.get("caller"))
             for event in events if event.get("caller") != expected_caller(event, authorized_by)]
    assert not wrong, wrong[:10]
    assert {event["caller"] for event in events} >= {"ACQ-A", "ACQ-B", "BO"}

    worker = make_worker("w1")
    await worker.start()
    await worker.drain()
    posted = await store.fetch("SELECT event_id, type, merchant_id, caller FROM ledger_events")
    assert len(posted) == len(events)
    by_id = {event["event_id"]: event for event in events}
    for event_id, kind, merchant_id, caller in posted:
        event = {"type": kind, "merchant_id": merchant_id, "event_id": event_id}
        assert caller == by_id[event_id]["caller"] == expected_caller(event, authorized_by), \
            (event_id, kind, caller)
