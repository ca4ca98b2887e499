"""Helpers of the ledger tests: traffic through the gateway with a model of what it should
leave behind, and checks of the ledger against the outbox streams."""

from __future__ import annotations

import itertools

import msgspec

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.sweeper import sweep_once
from creditgate.ledger import worker as worker_module
from creditgate.limits import catalog, keys
from tests.conftest import CUSTOMER_CAPS, PARTITIONS

PRODUCTS = catalog.load()
SCAN_PAY = PRODUCTS["scan_pay"]
TTL_MS = SCAN_PAY.hold_ttl_s * 1000
CHANNELS = {"pos": pb.CHANNEL_POS, "qr_scan": pb.CHANNEL_QR_SCAN}
STREAMS = [keys.outbox(keys.base(p)) for p in range(PARTITIONS)]


class Hold(msgspec.Struct):
    customer_id: str
    nodes: tuple[str, ...]
    amount: int
    merchant_id: str
    captured: int = 0
    state: str = "open"


class Traffic:
    """Drives the gateway over gRPC and models the holds it should leave open, captured,
    voided or expired."""

    def __init__(self, gateway, admin, auth):
        self.gateway, self.admin, self.auth = gateway, admin, auth
        self.holds: dict[str, Hold] = {}
        self.captures: list[tuple[str, str, int, int]] = []  # customer, hold, amount, at_ms
        self.events = 0  # outbox events the operations should have written
        self._keys = itertools.count()

    def key(self) -> str:
        return f"k{next(self._keys)}"

    async def put(self, customer_id: str, timezone: str = "Asia/Shanghai") -> None:
        await self.admin.PutCustomer(pb.PutCustomerRequest(
            customer_id=customer_id, status=pb.CUSTOMER_STATUS_ACTIVE, timezone=timezone,
            caps_minor=CUSTOMER_CAPS))
        self.events += 1

    async def authorize(self, customer_id: str, amount: int, channel: str = "pos",
                        merchant_id: str = "m-1") -> pb.AuthorizeResponse:
        reply = await self.auth.Authorize(pb.AuthorizeRequest(
            idempotency_key=self.key(), customer_id=customer_id, product_id="scan_pay",
            channel=CHANNELS[channel], merchant_id=merchant_id, mcc="5411",
            amount_minor=amount, currency="CNY"))
        assert reply.approved, reply
        self.holds[reply.hold_id] = Hold(customer_id, tuple(SCAN_PAY.nodes_for(channel)),
                                         amount, merchant_id)
        self.events += 1
        return reply

    async def capture(self, hold_id: str, amount: int, final: bool = False):
        hold = self.holds[hold_id]
        reply = await self.auth.Capture(pb.CaptureRequest(
            idempotency_key=self.key(), hold_id=hold_id, amount_minor=amount, final=final))
        assert reply.captured_minor == amount
        assert reply.released_minor == (hold.amount - hold.captured - amount if final else 0)
        hold.captured += amount
        if final or hold.captured == hold.amount:
            hold.state = "captured"
        self.captures.append((hold.customer_id, hold_id, amount, reply.decided_at_ms))
        self.events += 1
        return reply

    async def void(self, hold_id: str):
        hold = self.holds[hold_id]
        reply = await self.auth.Void(pb.VoidRequest(idempotency_key=self.key(),
                                                    hold_id=hold_id))
        assert reply.released_minor == hold.amount - hold.captured
        hold.state = "voided"
        self.events += 1
        return reply

    async def expire_all(self) -> int:
        """Move the scripts' clock past every open hold's expiry and sweep."""
        self.gateway.limits.clock_offset_ms += TTL_MS + 1_000
        released = 0
        while swept := await sweep_once(self.gateway.limits):
            released += swept
        opened = [hold for hold in self.holds.values() if hold.state == "open"]
        assert released == len(opened)
        for hold in opened:
            hold.state = "expired"
        self.events += released
        return released

    def open_holds(self) -> list[str]:
        return [hold_id for hold_id, hold in self.holds.items() if hold.state == "open"]

    def levels(self) -> dict[tuple[str, str], list[int]]:
        """(customer, level) -> [held, used] the model expects, zeros left out."""
        levels: dict[tuple[str, str], list[int]] = {}
        for hold in self.holds.values():
            held = hold.amount - hold.captured if hold.state == "open" else 0
            for node in hold.nodes:
                sums = levels.setdefault((hold.customer_id, node), [0, 0])
                sums[0] += held
                sums[1] += hold.captured
        return {key: value for key, value in levels.items() if value != [0, 0]}


def nonzero(levels: dict) -> dict:
    return {key: list(value) for key, value in levels.items() if list(value) != [0, 0]}


async def outbox(redis) -> dict[str, str]:
    """event id -> "<stream> <entry id>" of every entry of every outbox stream."""
    found: dict[str, str] = {}
    for stream in STREAMS:
        for entry_id, fields in await redis.xrange(stream):
            event_id = fields[b"event_id"].decode()
            assert event_id not in found, f"event {event_id} twice in the outbox"
            found[event_id] = f"{stream} {entry_id.decode()}"
    return found


async def outbox_length(redis) -> int:
    return sum([await redis.xlen(stream) for stream in STREAMS])


async def pending(redis) -> int:
    total = 0
    for stream in STREAMS:
        if await redis.exists(stream):
            for group in await redis.xinfo_groups(stream):
                total += group["pending"]
    return total


async def ledger_events(store) -> dict[str, str]:
    return dict(await store.fetch("SELECT event_id, stream_entry FROM ledger_events"))


async def unbalanced(store) -> list[tuple]:
    return await store.fetch(
        "SELECT event_id, SUM(debit_minor), SUM(credit_minor) FROM journal_lines "
        "GROUP BY event_id HAVING SUM(debit_minor) <> SUM(credit_minor)")


async def account_balances(store) -> dict[str, int]:
    """account -> debits - credits, zero balances left out."""
    rows = await store.fetch("SELECT account, SUM(debit_minor) - SUM(credit_minor) "
                             "FROM journal_lines GROUP BY account")
    return {account: int(balance) for account, balance in rows if balance}


async def assert_posted_exactly_once(redis, store) -> dict[str, str]:
    """Every outbox event is in the ledger once, from the entry it was read from; nothing
    else is; nothing is pending; every journal balances."""
    streams = await outbox(redis)
    posted = await ledger_events(store)
    assert len(streams) == await outbox_length(redis)
    (count,) = (await store.fetch("SELECT COUNT(*) FROM ledger_events"))[0]
    assert count == len(streams)
    assert posted == streams
    assert await pending(redis) == 0
    assert await unbalanced(store) == []
    # A money event moves money: it has lines, debits equal credits and equal its amount.
    rows = await store.fetch(
        "SELECT e.event_id, e.type, e.amount_minor, COUNT(l.line_no), "
        "COALESCE(SUM(l.debit_minor), 0), COALESCE(SUM(l.credit_minor), 0) "
        "FROM ledger_events e LEFT JOIN journal_lines l ON l.event_id = e.event_id "
        "GROUP BY e.event_id, e.type, e.amount_minor")
    for event_id, kind, amount, lines, debits, credits in rows:
        if kind == "customer_put":
            assert lines == 0, event_id
        elif amount:
            assert lines >= 2 and debits == credits >= amount, (event_id, kind)
    return streams


def group_name() -> str:
    return worker_module.GROUP
