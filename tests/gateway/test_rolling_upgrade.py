"""Rolling upgrade: three `creditgate serve` instances over one Redis, all on catalog v1, and
the ledger worker. While clients authorize, capture and void across the three, each instance
in turn is sent SIGTERM (it drains and exits 0) and started again on its port with catalog v2
(a product's maximum lowered, a product added); the next waits until it answers SERVING.

A client that meets UNAVAILABLE, or a deadline, retries the same request with the same
idempotency key on the next gateway; its channels watch each gateway's health (gRPC's
client-side health checking), so a draining gateway's notice takes it out of their choice.
No call fails otherwise. Every approved key has exactly one hold: a replay of every key on
another gateway after the roll answers the first decision, the holds left open in Redis are
exactly the clients' open ones, the levels hold and use what the clients' purchases add up
to, and the ledger booked one authorization per approved key. No answer was lost (a retry
never answers a decision made before it was sent). The drained worker leaves `creditgate
reconcile` no drift, and after the roll the restarted gateways answer by v2. Every answer is
the decision of the catalog version it records (AuthorizeResponse.catalog_version): v1 if
answered before its gateway's SIGTERM, v2 if sent after it served again, and a key replayed
after the roll answers its first version."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import NamedTuple

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from creditgate.ledger import reconcile
from creditgate.ledger.store import open_store
from creditgate.limits import keys
from creditgate.limits.reasons import DeclineReason
from tests.conftest import PARTITIONS, SUITE_CALLERS
from tests.gateway import test_catalog_reload as reload
from tests.gateway.test_catalog_reload import write
from tests.gateway.test_drain_notice import HEALTH_CHECKED
from tests.gateway.test_server import ROOT, free_port
from tests.support import authorize_request, decision

# The hot-reload test's catalogs (v2: shop's maximum lowered, gift added), with holds that
# outlive the test.
V1, V2 = (text.replace("hold_ttl_s = 60", "hold_ttl_s = 3600") for text in (reload.V1, reload.V2))
MAX_V1, MAX_V2 = 1000, 500
GATEWAYS = 3
CLIENTS = 8
CUSTOMERS = [f"c-roll-{n}" for n in range(12)]
CAPS = {"total": 10**12, "shop": 10**12, "gift": 10**12}
CALL_TIMEOUT_S = 5.0
# A client retries these on the next gateway; any other error fails the call.
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
ATTEMPTS_MAX = 60
RETRY_PAUSE_S = 0.05
# RedisClock's error, and the two clocks' drift over the test: well below RETRY_PAUSE_S, the
# least time between an attempt's decision and the next attempt.
CLOCK_SLACK_MS = 20
PURCHASE_PAUSE_S = 0.01  # each client's, between its authorization and what follows
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
DRAIN_TIMEOUT_S = 30.0
LOAD_BEFORE_S = AFTER_S = 0.5  # clients run alone before the roll and after it
# Reconnect quickly to a gateway that came back (gRPC's default backoff starts at 1 s).
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 50),
                   ("grpc.min_reconnect_backoff_ms", 50),
                   ("grpc.max_reconnect_backoff_ms", 300)]
# The clients' channels also watch their gateway's health: during a drain's notice they send
# it nothing (their calls fail at once with UNAVAILABLE) and it stops with no call arriving.
CLIENT_OPTIONS = CHANNEL_OPTIONS + HEALTH_CHECKED


class Answer(NamedTuple):
    kind: str  # Authorize, Capture, Void
    key: str
    gateway: int  # the gateway that answered
    started: float  # time.monotonic() when the answered attempt was sent
    answered: float
    attempts: int  # 1: the first attempt was answered
    first_started: float  # when the first attempt was sent
    request: object
    reply: object


class Purchase:
    def __init__(self, customer: str, key: str, hold_id: str, amount: int):
        self.customer, self.key, self.hold_id, self.amount = customer, key, hold_id, amount
        self.captured, self.open = 0, True


class Clients:
    """Purchases from several tasks, each call sent to a random gateway and, while it meets
    UNAVAILABLE or a deadline, sent again unchanged to the next one."""

    def __init__(self, stubs):
        self.stubs = stubs
        self.running = True
        self.answers: list[Answer] = []
        self.failures: list[tuple[str, str, str]] = []  # kind, key, why
        self.retries: collections.Counter[str] = collections.Counter()  # by status code
        self.in_flight = [0] * len(stubs)  # calls sent to each gateway and not answered yet
        self.purchases: list[Purchase] = []

    async def call(self, kind: str, key: str, request, first: int):
        first_started = time.monotonic()
        for attempt in range(ATTEMPTS_MAX):
            index = (first + attempt) % len(self.stubs)
            started = time.monotonic()
            self.in_flight[index] += 1
            try:
                reply = await getattr(self.stubs[index], kind)(request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRIED:
                    self.failures.append((kind, key, f"{error.code().name}: {error.details()}"))
                    return None
                self.retries[error.code().name] += 1
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            finally:
                self.in_flight[index] -= 1
            self.answers.append(Answer(kind, key, index, started, time.monotonic(),
                                       attempt + 1, first_started, request, reply))
            return reply
        self.failures.append((kind, key, f"no answer in {ATTEMPTS_MAX} attempts"))
        return None

    async def loop(self, index: int) -> None:
        rng = random.Random(index)
        n = 0
        while self.running:
            customer, key = rng.choice(CUSTOMERS), f"a-{index}-{n}"
            n += 1
            amount = rng.randrange(100, MAX_V1 + 1)  # above MAX_V2 half of the time
            request = authorize_request(key, customer, amount, product_id="shop")
            reply = await self.call("Authorize", key, request, rng.randrange(GATEWAYS))
            await asyncio.sleep(PURCHASE_PAUSE_S)
            if reply is None or not reply.approved:
                continue
            purchase = Purchase(customer, key, reply.hold_id, amount)
            self.purchases.append(purchase)
            fate = rng.random()
            if fate < 0.45:
                await self.capture(purchase, rng.randint(1, amount), rng.random() < 0.7,
                                   rng.randrange(GATEWAYS))
            elif fate < 0.8:
                await self.void(purchase, rng.randrange(GATEWAYS))
            # else the hold stays open

    async def capture(self, purchase: Purchase, amount: int, final: bool, first: int) -> None:
        key = f"{purchase.key}-capture"
        reply = await self.call("Capture", key, pb.CaptureRequest(
            idempotency_key=key, hold_id=purchase.hold_id, amount_minor=amount, final=final),
            first)
        if reply is None:
            return
        left = purchase.amount - amount
        if (reply.captured_minor, reply.released_minor) != (amount, left if final else 0):
            self.failures.append(("Capture", key, f"answered {reply}"))
        purchase.captured = amount
        purchase.open = not final and left > 0

    async def void(self, purchase: Purchase, first: int) -> None:
        key = f"{purchase.key}-void"
        reply = await self.call("Void", key, pb.VoidRequest(idempotency_key=key,
                                                             hold_id=purchase.hold_id), first)
        if reply is None:
            return
        if reply.released_minor != purchase.amount:
            self.failures.append(("Void", key, f"answered {reply}"))
        purchase.open = False


class Fleet:
    """The three gateways: their ports, processes, and when each was restarted."""

    def __init__(self, redis_server, tmp_path: Path):
        self.redis_server = redis_server
        self.ports = [free_port() for _ in range(GATEWAYS)]
        self.processes: list[asyncio.subprocess.Process | None] = [None] * GATEWAYS
        self.logs = [tmp_path / f"gateway-{index}.log" for index in range(GATEWAYS)]
        self.v1, self.v2 = tmp_path / "catalog-v1.toml", tmp_path / "catalog-v2.toml"
        write(self.v1, V1)
        write(self.v2, V2)
        # gateway -> (SIGTERM sent, exited, SERVING again on v2), time.monotonic()
        self.restarts: dict[int, tuple[float, float, float]] = {}
        self.in_flight_at_sigterm: list[int] = []

    async def start(self, index: int, catalog: Path) -> None:
        log = self.logs[index]
        with log.open("ab") as output:  # a file: nobody has to read it for the gateway to go on
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "creditgate.gateway.cli", "serve", "--port",
                str(self.ports[index]), "--redis-url", self.redis_server.url, "--partitions",
                str(PARTITIONS), "--callers", str(SUITE_CALLERS), "--insecure", "--catalog",
                str(catalog), cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                stdout=output, stderr=output, start_new_session=True)
        self.processes[index] = process
        await serving(self.ports[index], process, log)

    async def stop(self, index: int) -> None:
        process = self.processes[index]
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        assert code == 0, tail(self.logs[index])

    async def roll(self, clients: Clients) -> None:
        """Each gateway in turn, once calls are in flight to it: SIGTERM, its exit, started
        again with v2, SERVING."""
        for index in range(GATEWAYS):
            deadline = time.monotonic() + 5.0
            while not clients.in_flight[index]:
                assert time.monotonic() < deadline, "no call in flight to restart under"
                await asyncio.sleep(0)
            self.in_flight_at_sigterm.append(clients.in_flight[index])
            signalled = time.monotonic()
            await self.stop(index)
            exited = time.monotonic()
            await self.start(index, self.v2)
            self.restarts[index] = (signalled, exited, time.monotonic())

    async def close(self) -> None:
        for process in self.processes:
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def serving(port: int, process, log: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until the gateway on `port` answers SERVING, on a channel of its own."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                         options=CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise AssertionError(f"the gateway on port {port} exited: {tail(log)}")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway on port {port} did not become SERVING")


class RedisClock:
    """Redis's clock (the scripts' decided_at_ms) as of a time.monotonic() of this process,
    from the TIME of the quickest of a few round trips: off by at most half of it."""

    async def sample(self, redis) -> None:
        samples = []
        for _ in range(5):
            before = time.monotonic()
            seconds, micros = await redis.time()
            after = time.monotonic()
            samples.append((after - before, (before + after) / 2, seconds * 1000 + micros / 1000))
        _, self.at, self.ms = min(samples)

    def __call__(self, monotonic: float) -> float:
        return self.ms + (monotonic - self.at) * 1000


async def cli(*argv: str, timeout_s: float = 60.0) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "creditgate.gateway.cli", *argv, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    return process.returncode, out.decode(errors="replace")


async def drained(redis) -> None:
    """Until the worker has posted every outbox event (nothing unread or pending)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while await reconcile.undrained_streams(redis, PARTITIONS):
        assert time.monotonic() < deadline, "the ledger worker did not catch up"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_rolling_restart_with_a_new_catalog_fails_no_call(redis, redis_server,
                                                                tmp_path):
    fleet = Fleet(redis_server, tmp_path)
    ledger_dsn = "sqlite:///" + str(tmp_path / "ledger.sqlite3")
    worker_log = tmp_path / "ledger.log"
    with worker_log.open("ab") as output:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "creditgate.gateway.cli", "ledger", "--redis-url",
            redis_server.url, "--ledger-dsn", ledger_dsn, "--partitions", str(PARTITIONS),
            "--claim-idle-ms", "1000", "--consumer", "roll", cwd=ROOT, stdout=output,
            stderr=output)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS)
                for port in fleet.ports]
    try:
        await asyncio.gather(*(fleet.start(index, fleet.v1) for index in range(GATEWAYS)))
        admin = pb_grpc.AdminStub(channels[0])
        for customer in CUSTOMERS:
            await admin.PutCustomer(pb.PutCustomerRequest(
                customer_id=customer, status=pb.CUSTOMER_STATUS_ACTIVE,
                timezone="Asia/Shanghai", caps_minor=CAPS))
        stubs = [pb_grpc.AuthorizationStub(channel) for channel in channels]
        redis_ms = RedisClock()
        await redis_ms.sample(redis)
        clients = Clients(stubs)
        tasks = [asyncio.create_task(clients.loop(index)) for index in range(CLIENTS)]
        await asyncio.sleep(LOAD_BEFORE_S)
        rolled_from = time.monotonic()
        await fleet.roll(clients)
        rolled_at = time.monotonic()
        await asyncio.sleep(AFTER_S)
        clients.running = False
        await asyncio.wait_for(asyncio.gather(*tasks), CALL_TIMEOUT_S * 3)

        authorized = [a for a in clients.answers if a.kind == "Authorize"]
        # Answers the dying gateway gave after its SIGTERM: the calls it drained.
        drained_calls = [sum(signalled < a.answered < exited for a in clients.answers
                             if a.gateway == index)
                         for index, (signalled, exited, _) in sorted(fleet.restarts.items())]
        # A retried call answered with a decision made before its answered attempt was sent:
        # an earlier attempt was decided but its answer never reached the client. A drain
        # answers every call it took, so there are none; each first attempt's decision falls
        # between its sending and its answer, which shows the clock mapping can tell.
        for a in clients.answers:
            if a.attempts == 1:
                assert redis_ms(a.started) - CLOCK_SLACK_MS <= a.reply.decided_at_ms \
                    <= redis_ms(a.answered) + CLOCK_SLACK_MS, a
        lost = [a for a in clients.answers if a.attempts > 1
                and a.reply.decided_at_ms < redis_ms(a.started) - CLOCK_SLACK_MS]
        print(f"\nrolling upgrade: {len(clients.answers)} calls answered "
              f"({len(authorized)} authorizations, {len(clients.purchases)} approved), "
              f"retried {dict(clients.retries)}; calls in flight at each SIGTERM "
              f"{fleet.in_flight_at_sigterm}; roll took {rolled_at - rolled_from:.1f} s; "
              "per gateway (drain s, restart s): "
              f"{[(round(e - s, 2), round(r - e, 2)) for s, e, r in fleet.restarts.values()]}; "
              f"answered while draining {drained_calls}; answers lost {len(lost)}")
        assert clients.failures == [], clients.failures
        assert lost == []
        assert len(fleet.restarts) == GATEWAYS
        assert all(fleet.in_flight_at_sigterm)
        assert sum(drained_calls) > 0  # calls in flight at a SIGTERM were answered
        assert clients.retries["UNAVAILABLE"] > 0  # the roll was met by the clients
        during = [a for a in clients.answers if rolled_from < a.started < rolled_at]
        assert {a.gateway for a in during} == set(range(GATEWAYS))

        # Each answer obeys the catalog of the gateway that gave it: v1 before its SIGTERM,
        # v2 once it served again. A retry may answer an earlier attempt's decision (one
        # another node made), so the rule is checked on first attempts only.
        above = DeclineReason.AMOUNT_ABOVE_MAXIMUM
        for answer in authorized:
            signalled, _, back = fleet.restarts[answer.gateway]
            amount = answer.request.amount_minor
            reason, version = answer.reply.decline_reason, answer.reply.catalog_version
            # Every answer, a retry's too, is the decision of the version it records.
            assert (version, reason) in (
                ("v1", DeclineReason.NONE),
                ("v2", above if amount > MAX_V2 else DeclineReason.NONE)), answer
            if answer.attempts > 1:
                continue
            if answer.answered < signalled:
                assert version == "v1", answer
            elif answer.started > back:
                assert version == "v2", answer

        # No double holds: every key replayed on another gateway answers its first decision.
        for answer in authorized:
            again = await stubs[(answer.gateway + 1) % GATEWAYS].Authorize(
                answer.request, timeout=CALL_TIMEOUT_S)
            assert decision(again) == decision(answer.reply), answer.key
            assert again.catalog_version == answer.reply.catalog_version, answer.key
        approved = {p.key: p for p in clients.purchases}
        assert len({p.hold_id for p in approved.values()}) == len(approved)
        # ...the holds open in Redis are exactly the clients' open ones...
        for customer in CUSTOMERS:
            base = keys.customer_base(customer, PARTITIONS)
            in_redis = {member.decode() for member in await redis.zrange(
                keys.customer_holds(base, customer), 0, -1)}
            assert in_redis == {p.hold_id for p in approved.values()
                                if p.customer == customer and p.open}, customer
        # ...and each customer's levels hold and use what the purchases add up to.
        expected: dict[tuple[str, str], list[int]] = {}
        for purchase in approved.values():
            for node in ("total", "shop"):
                sums = expected.setdefault((purchase.customer, node), [0, 0])
                sums[0] += purchase.amount - purchase.captured if purchase.open else 0
                sums[1] += purchase.captured
        levels = await reconcile.redis_levels(redis, PARTITIONS)
        assert {k: v for k, v in levels.items() if v != [0, 0]} == \
            {k: v for k, v in expected.items() if v != [0, 0]}

        # After the roll: v2 everywhere. The new product authorizes and the lowered maximum
        # declines, on every restarted gateway.
        for index, stub in enumerate(stubs):
            gift = await stub.Authorize(authorize_request(
                f"after-gift-{index}", CUSTOMERS[0], 700, product_id="gift"),
                timeout=CALL_TIMEOUT_S)
            assert gift.approved, gift
            shop = await stub.Authorize(authorize_request(
                f"after-shop-{index}", CUSTOMERS[0], MAX_V2 + 1, product_id="shop"),
                timeout=CALL_TIMEOUT_S)
            assert shop.decline_reason == above, shop
            await stub.Void(pb.VoidRequest(idempotency_key=f"after-void-{index}",
                                           hold_id=gift.hold_id), timeout=CALL_TIMEOUT_S)

        # The worker posts every event; the ledger booked one authorization per approved key
        # and reconcile finds no drift.
        await drained(redis)
        store = open_store(ledger_dsn)
        try:
            rows = await store.fetch("SELECT hold_id FROM ledger_events WHERE type = $1 "
                                     "AND product_id = $2", "authorized", "shop")
        finally:
            await store.close()
        assert sorted(hold_id for (hold_id,) in rows) == \
            sorted(p.hold_id for p in approved.values())
        code, output = await cli("reconcile", "--redis-url", redis_server.url,
                                 "--ledger-dsn", ledger_dsn, "--partitions", str(PARTITIONS))
        assert code == 0, output
        assert f"reconcile: {len(CUSTOMERS)} customers" in output, output
        assert "0 drifts" in output and "drift:" not in output, output
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), STOP_TIMEOUT_S) == 0, tail(worker_log)
    finally:
        for channel in channels:
            await channel.close()
        await fleet.close()
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
