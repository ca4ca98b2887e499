"""Load against a gateway on a cluster, for the failover and resharding tests: clients
authorize small amounts for customers on every shard and record every answer."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import grpc

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from creditgate.limits import keys
from tests.conftest import CUSTOMER_CAPS, PARTITIONS

AMOUNT_MINOR = 100
DEADLINE_S = 2.0


@dataclass
class Answer:
    customer_id: str
    key: str
    started_s: float
    took_s: float
    hold_id: str = ""  # approved
    code: grpc.StatusCode | None = None  # failed
    declined: bool = False


@dataclass
class Load:
    port: int
    customers: list[str]
    answers: list[Answer] = field(default_factory=list)
    _keys: itertools.count = field(default_factory=itertools.count)

    async def put_customers(self) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            admin = pb_grpc.AdminStub(channel)
            for customer in self.customers:
                await admin.PutCustomer(pb.PutCustomerRequest(
                    customer_id=customer, status=pb.CUSTOMER_STATUS_ACTIVE,
                    timezone="Asia/Shanghai", caps_minor=CUSTOMER_CAPS))

    async def run(self, stop: asyncio.Event, clients: int = 8) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            auth = pb_grpc.AuthorizationStub(channel)
            await asyncio.gather(*(self._client(auth, stop, index)
                                   for index in range(clients)))

    async def _client(self, auth, stop: asyncio.Event, index: int) -> None:
        customers = itertools.cycle(self.customers[index:] + self.customers[:index])
        while not stop.is_set():
            customer = next(customers)
            key = f"load-{next(self._keys)}"
            started = time.monotonic()
            answer = Answer(customer, key, started, 0.0)
            try:
                reply = await auth.Authorize(pb.AuthorizeRequest(
                    idempotency_key=key, customer_id=customer, product_id="scan_pay",
                    channel=pb.CHANNEL_POS, merchant_id="shop-1", mcc="5411",
                    amount_minor=AMOUNT_MINOR, currency="CNY"), timeout=DEADLINE_S)
                answer.hold_id = reply.hold_id if reply.approved else ""
                answer.declined = not reply.approved  # a velocity limit, in a long run
            except grpc.aio.AioRpcError as error:
                answer.code = error.code()
                await asyncio.sleep(0.01)  # a failing shard is not hammered
            answer.took_s = time.monotonic() - started
            self.answers.append(answer)

    def of(self, customers) -> list[Answer]:
        chosen = set(customers)
        return [answer for answer in self.answers if answer.customer_id in chosen]


async def lost_holds(redis, answers: list[Answer]) -> list[str]:
    """The approved answers whose hold Redis no longer has."""
    lost = []
    for answer in answers:
        if answer.hold_id:
            partition = keys.partition_of_hold(answer.hold_id, PARTITIONS)
            if not await redis.exists(keys.hold(keys.base(partition), answer.hold_id)):
                lost.append(answer.hold_id)
    return lost


async def conservation(redis, customers: list[str]) -> dict[str, tuple[int, int]]:
    """customer -> (held at its root, the sum of its open holds), for the customers where
    they differ, or where usage exceeds the cap (no double spend)."""
    broken = {}
    for customer in customers:
        base = keys.customer_base(customer, PARTITIONS)
        state = await redis.hgetall(keys.customer(base, customer))
        root = keys.levels_of({field.decode(): value.decode()
                               for field, value in state.items()})["total"]
        held, used, cap = root.held, root.used, root.cap
        total = 0
        for hold_id in await redis.zrange(keys.customer_holds(base, customer), 0, -1):
            hold = await redis.hgetall(keys.hold(base, hold_id.decode()))
            fields = keys.HOLD_FIELDS
            if hold.get(fields["STATE"].encode()) == b"open":
                total += int(hold[fields["AMOUNT"].encode()]) - int(
                    hold.get(fields["CAPTURED"].encode(), 0))
        if held != total or held + used > cap:
            broken[customer] = (held, total)
    return broken
