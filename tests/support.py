"""Drivers that run the same operations against the pure-Python model, the Lua scripts on the
real Redis, and the gRPC gateway, so that one table of cases runs against all three."""

from __future__ import annotations

import itertools
import pathlib

import grpc

from creditgate import hotpath
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import catalog, cluster
from creditgate.limits.client import LimitsClient
from creditgate.limits.model import Model, ModelRunner
from creditgate.limits.reasons import DeclineReason
from creditgate.limits.replies import Refused
from creditgate.limits.transport import ScriptRunner

PARTITIONS = 16
START_MS = 1_795_600_000_000  # the model's clock starts here (2026-11-25, UTC)
PRODUCTS = catalog.load()
RULES = hotpath.compile_products(PRODUCTS)
# The shipped catalog with the products of tests/catalog-elements.toml (every element).
ELEMENTS_CATALOG_TEXT = (catalog.DEFAULT_CATALOG.read_text() + "\n"
                         + pathlib.Path(__file__).with_name("catalog-elements.toml").read_text())
ELEMENTS_PRODUCTS = catalog.parse(ELEMENTS_CATALOG_TEXT, "catalog-elements.toml")
ELEMENTS_RULES = hotpath.compile_products(ELEMENTS_PRODUCTS)
CHANNELS = {"qr_scan": pb.CHANNEL_QR_SCAN, "pos": pb.CHANNEL_POS,
            "ecommerce": pb.CHANNEL_ECOMMERCE, "cash": pb.CHANNEL_CASH}
_tokens = itertools.count()
# The secret parts of the API keys the tests use: tests/conftest.py's no_secrets_in_logs fails
# the run if any of them appears in a log line.
SECRETS: set[str] = set()


def api_key(name: str, secret_part: str) -> str:
    """An API key for the callers `name` (`<name>.<secret>`), its secret registered."""
    SECRETS.add(secret_part)
    return f"{name}.{secret_part}"


def token() -> str:
    """Deterministic, distinct hold-id tokens (16 base32 characters)."""
    return f"{next(_tokens):016d}".translate(str.maketrans("0123456789", "ABCDEFGHJK"))


def authorize_request(key: str, customer_id: str, amount_minor: int, product_id="scan_pay",
                      channel="pos", mcc="5411", merchant_id="m-1", currency="CNY",
                      allow_partial=False, installment_months=0):
    return pb.AuthorizeRequest(idempotency_key=key, customer_id=customer_id,
                               product_id=product_id, channel=CHANNELS[channel],
                               merchant_id=merchant_id, mcc=mcc, amount_minor=amount_minor,
                               currency=currency, allow_partial=allow_partial,
                               installment_months=installment_months)


class ScriptDriver:
    """The scripts through LimitsClient, on the model or on Redis."""

    def __init__(self, client: LimitsClient, rules=RULES):
        self.client = client
        self.rules = rules

    async def put(self, customer_id: str, caps: dict[str, int], status: str = "active",
                  timezone: str = "Asia/Shanghai") -> None:
        await self.client.put_customer(customer_id, status, timezone, caps)

    async def authorize(self, request) -> tuple[DeclineReason, str, str]:
        keys_, args = hotpath.plan_authorize(request, self.rules, PARTITIONS)
        result = await self.client.authorize(keys_, args)
        return result.reason, result.level, result.hold_id

    async def capture(self, key: str, hold_id: str, amount_minor: int, final: bool):
        keys_, args = hotpath.plan_capture(pb.CaptureRequest(
            idempotency_key=key, hold_id=hold_id, amount_minor=amount_minor, final=final),
            PARTITIONS)
        return await self.client.capture(keys_, args)

    def advance(self, ms: int) -> None:
        self.client.clock_offset_ms += ms

    # -- the reserve side: the scripts' whole decoded answers --------------------------------
    async def authorization(self, request):
        """The full decoded reserve reply (limits.replies.Authorization)."""
        keys_, args = hotpath.plan_authorize(request, self.rules, PARTITIONS)
        return await self.client.authorize(keys_, args)

    async def increment(self, key: str, hold_id: str, amount_minor: int):
        from creditgate.hotpath.plans import plan_increment

        return await self.client.increment(*plan_increment(pb.IncrementAuthorizationRequest(
            idempotency_key=key, hold_id=hold_id, amount_minor=amount_minor), PARTITIONS))

    async def set_raise(self, customer_id: str, node: str, raise_minor: int,
                        expires_at_ms: int):
        return await self.client.set_raise(customer_id, node, raise_minor, expires_at_ms)

    async def void(self, key: str, hold_id: str):
        keys_, args = hotpath.plan_void(pb.VoidRequest(idempotency_key=key, hold_id=hold_id),
                                        PARTITIONS)
        return await self.client.void(keys_, args)

    async def credit(self, customer_id: str):
        return await self.client.credit(customer_id)

    async def now_ms(self, customer_id: str) -> int:
        """The scripts' clock now, read through a known customer's credit."""
        return (await self.client.credit(customer_id)).as_of_ms


class GrpcDriver:
    def __init__(self, gateway, admin, auth):
        self.gateway, self.admin, self.auth = gateway, admin, auth

    async def put(self, customer_id: str, caps: dict[str, int], status: str = "active",
                  timezone: str = "Asia/Shanghai") -> None:
        statuses = {"active": pb.CUSTOMER_STATUS_ACTIVE, "frozen": pb.CUSTOMER_STATUS_FROZEN,
                    "closed": pb.CUSTOMER_STATUS_CLOSED, "overdue": pb.CUSTOMER_STATUS_OVERDUE}
        await self.admin.PutCustomer(pb.PutCustomerRequest(
            customer_id=customer_id, status=statuses[status], timezone=timezone,
            caps_minor=caps))

    async def authorize(self, request) -> tuple[DeclineReason, str, str]:
        reply = await self.auth.Authorize(request)
        assert reply.approved == (reply.decline_reason == 0)
        return DeclineReason(reply.decline_reason), reply.decline_level, reply.hold_id

    async def capture(self, key: str, hold_id: str, amount_minor: int, final: bool):
        try:
            return await self.auth.Capture(pb.CaptureRequest(
                idempotency_key=key, hold_id=hold_id, amount_minor=amount_minor, final=final))
        except grpc.aio.AioRpcError as error:
            raise Refused from error

    def advance(self, ms: int) -> None:
        self.gateway.limits.clock_offset_ms += ms

    async def now_ms(self, customer_id: str) -> int:
        """The scripts' clock now, read through a known customer's credit."""
        reply = await self.auth.GetCredit(pb.GetCreditRequest(customer_id=customer_id))
        return reply.as_of_ms


async def move_to_local_minute(driver, customer_id: str, minute: int,
                               utc_offset_s: int = 8 * 3600) -> None:
    """Moves the driver's clock forward (at most a day) so that the customer's local time
    (a zone of this fixed UTC offset) is `minute` of the day, 30 s in: the calls that follow
    within seconds see that minute."""
    now = await driver.now_ms(customer_id)
    local_ms = (now + utc_offset_s * 1000) % 86_400_000
    driver.advance((minute * 60_000 + 30_000 - local_ms) % 86_400_000)


class Clock:
    def __init__(self, now_ms: int = START_MS):
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def model_client() -> LimitsClient:
    return LimitsClient(ModelRunner(Model(Clock())), PARTITIONS)


def redis_client(redis) -> LimitsClient:
    """The library is not loaded up front: the first call finds no function and loads it.
    A RedisCluster client gets the slot-aware runner."""
    if cluster.is_cluster(redis):
        return LimitsClient(cluster.runner_for(redis), PARTITIONS)
    return LimitsClient(ScriptRunner(redis), PARTITIONS)


def decision(message):
    """An Authorize answer (or an AuthorizeBatch answer) without its headroom: a retry of an
    approval repeats the first decision exactly, with `levels` and `available_minor` as they
    stand at the retry (the hold keeps no snapshot of them: one key per open hold)."""
    copy = type(message)()
    copy.CopyFrom(message)
    responses = [item.response for item in copy.items] if hasattr(copy, "items") else [copy]
    for response in responses:
        response.ClearField("levels")
        response.ClearField("available_minor")
    return copy.SerializeToString(deterministic=True)


def hold_event(hold_id: str, expires_ms: int, seq: int) -> str:
    """A hold's event id: "<hold id>:<expiry ms>:<seq>" (limits/lua/_lib.lua hold_event_id)."""
    return f"{hold_id}:{expires_ms}:{seq}"


def without_generation(event_id: str) -> str:
    """A hold's event id without its generation (the expiry): "<hold id>:<seq>"."""
    parts = event_id.split(":")
    return f"{parts[0]}:{parts[-1]}" if len(parts) == 3 and "-" in parts[0] else event_id
