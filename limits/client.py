"""The thin async client of the limit scripts: runs a script's call through a runner (Redis,
or the pure-Python model in tests) and decodes its reply (limits/replies.py).

The calls of purchases and holds come planned by the hot path (hotpath.plan_authorize and its
siblings, hotpath/plans.py): (keys, args) in the order limits/contracts.py declares. The client
builds the calls that name a customer or a partition: put_customer, set_raise, expire, credit
and due (their arguments validated first, where they come from a request, by hotpath/plans).

Three tiers of failure, as in asyncpg: `Refused` is the peer's answer (the script refused and
changed nothing it was asked to change); bad arguments never get here (the hot path raises
InvalidArgument); anything else is a bug or a broken connection and propagates.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Sequence
from typing import Protocol

from creditgate.limits import calendar, contracts, keys, replies
from creditgate.limits.replies import (
    Authorization,
    CaptureResult,
    CustomerState,
    ForceCaptureResult,
    IncrementResult,
    PutCustomerResult,
    RaiseResult,
    RefundResult,
    RepayResult,
    ReverseResult,
    VoidResult,
)

Keys = Sequence[str]
Args = Sequence[str]

# The deadline of the call being served, in ms by the scripts' clock (0: none). The gateway
# sets it for each call's task; every script the task runs receives it (contracts.CALL_HEADER).
DEADLINE_MS: contextvars.ContextVar[int] = contextvars.ContextVar("deadline_ms", default=0)
# Who the call being served is: (caller name, merchant scope). The gateway sets it for each
# call's task as it sets DEADLINE_MS; every event a script writes carries the name, and the
# scripts acting on a hold see only holds of the scope's merchants ("" = any merchant). The
# default ("", "") is a direct library call outside the gateway.
CALLER: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "caller", default=("", ""))


class Runner(Protocol):
    def call(self, name: str, keys_: Keys, args: Args) -> Awaitable: ...


class LimitsClient:
    def __init__(self, runner: Runner, partitions: int, clock_offset_ms: int = 0):
        self.runner = runner
        self.partitions = partitions
        # Added to Redis' TIME by every script; tests move time with it, production leaves 0.
        self.clock_offset_ms = clock_offset_ms

    def _call(self, script: contracts.Script, keys_: Keys, args: Args) -> Awaitable:
        header = contracts.call_header(self.clock_offset_ms, DEADLINE_MS.get(), *CALLER.get())
        return self.runner.call(script.name, keys_, [*header, *args])

    def reserve(self, keys_: Keys, args: Args) -> Awaitable:
        """Queue a reservation now, not when awaited; the awaitable resolves to the reply, for
        replies.decode_authorization. AuthorizeBatch queues every item this way before it
        awaits any: no task per item."""
        return self._call(contracts.RESERVE, keys_, args)

    def shadow_reserve(self, keys_: Keys, args: Args) -> Awaitable:
        """Queue reserve's read-only shadow (limits/lua_source.SHADOW_SCRIPTS): reserve's
        KEYS, ARGV and reply, or SKIP|<why>; it changes nothing."""
        header = contracts.call_header(self.clock_offset_ms, DEADLINE_MS.get(), *CALLER.get())
        return self.runner.call("shadow_reserve", keys_, [*header, *args])

    def replay(self, keys_: Keys, args: Args) -> Awaitable:
        """Queue the read-only replay (limits/lua/replay.lua): the decision the key already has
        for this fingerprint, as reserve's reply, or contracts.REPLAY_NONE; it changes
        nothing."""
        return self._call(contracts.REPLAY, keys_, args)

    async def authorize(self, keys_: Keys, args: Args) -> Authorization:
        return replies.decode_authorization(await self.reserve(keys_, args))

    async def increment(self, keys_: Keys, args: Args) -> IncrementResult:
        return replies.decode_increment(await self._call(contracts.INCREMENT, keys_, args))

    async def set_raise(self, customer_id: str, node: str, raise_minor: int,
                        expires_at_ms: int) -> RaiseResult:
        """Set (or, with 0, remove) a temporary raise of one level's cap."""
        base = keys.customer_base(customer_id, self.partitions)
        script = contracts.SET_RAISE
        reply = await self._call(
            script,
            script.keys.pack(customer=keys.customer(base, customer_id), outbox=keys.outbox(base)),
            script.args.pack(customer_id=customer_id, node=node, raise_minor=str(raise_minor),
                             expires_at_ms=str(expires_at_ms)))
        return replies.decode_raise(node, expires_at_ms, reply)

    async def capture(self, keys_: Keys, args: Args) -> CaptureResult:
        return replies.decode_capture(await self._call(contracts.CAPTURE, keys_, args))

    async def void(self, keys_: Keys, args: Args) -> VoidResult:
        return replies.decode_void(await self._call(contracts.VOID, keys_, args))

    async def refund(self, keys_: Keys, args: Args) -> RefundResult:
        return replies.decode_refund(await self._call(contracts.REFUND, keys_, args))

    async def reverse(self, keys_: Keys, args: Args) -> ReverseResult:
        return replies.decode_reverse(await self._call(contracts.REVERSE, keys_, args))

    async def force_capture(self, keys_: Keys, args: Args) -> ForceCaptureResult:
        reply = await self._call(contracts.FORCE_CAPTURE, keys_, args)
        return replies.decode_force_capture(reply)

    async def repay(self, keys_: Keys, args: Args) -> RepayResult:
        return replies.decode_repay(await self._call(contracts.REPAY, keys_, args))

    async def put_customer(self, customer_id: str, status: str, timezone: str,
                           caps: dict[str, int]) -> PutCustomerResult:
        """Create or replace the customer; returns the Redis time of the change (ms) and the
        status and caps the customer had before it."""
        base = keys.customer_base(customer_id, self.partitions)
        # The schedule starts two days before this host's time: a skew of seconds is harmless.
        start_s = int(time.time()) + self.clock_offset_ms // 1000
        script = contracts.PUT_CUSTOMER
        reply = await self._call(
            script,
            script.keys.pack(customer=keys.customer(base, customer_id),
                             outbox=keys.outbox(base), timezones=keys.timezones(base)),
            script.args.pack(customer_id=customer_id, status=status, timezone=timezone,
                             schedule=calendar.offset_schedule(timezone, start_s),
                             rest=[text for node, cap in sorted(caps.items())
                                   for text in (node, str(cap))]))
        return replies.decode_put_customer(reply)

    async def expire(self, customer_id: str) -> int:
        """Release the customer's holds whose TTL has passed; the number released."""
        base = keys.customer_base(customer_id, self.partitions)
        script = contracts.EXPIRE
        reply = await self._call(
            script,
            script.keys.pack(customer_holds=keys.customer_holds(base, customer_id),
                             due=keys.due(base), outbox=keys.outbox(base)),
            script.args.pack(base=base, customer_id=customer_id))
        return replies.decode_expire(reply)

    async def credit(self, customer_id: str) -> CustomerState | None:
        """The customer's caps, usage and velocity windows now, or None if unknown."""
        base = keys.customer_base(customer_id, self.partitions)
        script = contracts.CREDIT
        reply = await self._call(
            script,
            script.keys.pack(customer=keys.customer(base, customer_id), due=keys.due(base),
                             outbox=keys.outbox(base)),
            script.args.pack(base=base, customer_id=customer_id))
        return replies.decode_credit(customer_id, reply)

    async def due(self, partition: int, count_max: int) -> list[str]:
        """The partition's customers whose earliest open hold has expired (at most count_max),
        by Redis' clock: the sweeper's question."""
        script = contracts.DUE
        reply = await self._call(script, script.keys.pack(due=keys.due(keys.base(partition))),
                                 script.args.pack(count_max=str(count_max)))
        return replies.decode_due(reply)
