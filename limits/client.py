"""The thin async client of the limit scripts: builds what the hot path does not, calls a
script through a runner (Redis, or the pure-Python model in tests) and decodes its reply.

Three tiers of failure, as in asyncpg: `Refused` is the peer's answer (the script refused and
changed nothing it was asked to change); bad arguments never get here (the hot path raises
InvalidArgument); anything else is a bug or a broken connection and propagates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Protocol

import msgspec

from limits import calendar, keys
from limits.model import Model
from limits.reasons import DeclineReason, ScriptError


class Runner(Protocol):
    def call(self, name: str, keys_: Sequence[str], args: Sequence[str]) -> Awaitable: ...


class ModelRunner:
    """Runs the pure-Python model behind the same interface as limits.scripts.ScriptRunner."""

    def __init__(self, model: Model):
        self.model = model

    def call(self, name: str, keys_: Sequence[str], args: Sequence[str]) -> Awaitable:
        future = asyncio.get_running_loop().create_future()
        future.set_result(self.model.call(name, keys_, args))
        return future


class Refused(Exception):
    """The script refused the call; nothing it was asked to change was changed."""

    def __init__(self, code: ScriptError, detail: str, at_ms: int):
        super().__init__(f"{code.name.lower()}: {detail}" if detail else code.name.lower())
        self.code, self.detail, self.at_ms = code, detail, at_ms


class Level(msgspec.Struct, frozen=True):
    node: str
    cap_minor: int
    held_minor: int
    used_minor: int
    available_minor: int


class Authorization(msgspec.Struct, frozen=True):
    reason: DeclineReason
    level: str  # the node that declined, for INSUFFICIENT_CREDIT
    hold_id: str
    available_minor: int
    decided_at_ms: int
    hold_expires_at_ms: int
    levels: tuple[Level, ...]

    @property
    def approved(self) -> bool:
        return self.reason == DeclineReason.NONE


class CaptureResult(msgspec.Struct, frozen=True):
    state: str
    captured_minor: int
    captured_total_minor: int
    released_minor: int
    held_minor: int
    decided_at_ms: int


class VoidResult(msgspec.Struct, frozen=True):
    state: str
    released_minor: int
    captured_total_minor: int
    decided_at_ms: int


class RefundResult(msgspec.Struct, frozen=True):
    refunded_minor: int
    refunded_total_minor: int
    refundable_minor: int
    decided_at_ms: int


class Window(msgspec.Struct, frozen=True):
    amount_minor: int
    count: int


class CustomerState(msgspec.Struct, frozen=True):
    customer_id: str
    status: str
    timezone: str
    caps: dict[str, int]
    held: dict[str, int]
    used: dict[str, int]
    day: dict[str, Window]  # product -> the current local day's approved amount and count
    month: dict[str, Window]
    day_resets_at_ms: int  # when the customer's local day and month end
    month_resets_at_ms: int
    as_of_ms: int

    def level(self, node: str) -> Level:
        cap, held, used = self.caps.get(node, 0), self.held.get(node, 0), self.used.get(node, 0)
        return Level(node, cap, held, used, max(0, cap - held - used))

    def levels(self) -> list[Level]:
        return [self.level(node) for node in sorted(set(self.caps) | set(self.held)
                                                    | set(self.used))]


def _text(reply: bytes | str) -> str:
    return reply.decode() if isinstance(reply, bytes) else reply


def _fields(reply: bytes | str) -> list[str]:
    parts = _text(reply).split("|")
    if parts[0] == "ERR":
        raise Refused(ScriptError(int(parts[1])), parts[2], int(parts[3]))
    return parts[1:]


def decode_authorization(reply: bytes | str) -> Authorization:
    f = _fields(reply)
    levels = tuple(
        Level(f[i], int(f[i + 1]), int(f[i + 2]), int(f[i + 3]),
              max(0, int(f[i + 1]) - int(f[i + 2]) - int(f[i + 3])))
        for i in range(6, len(f), 4)
    )
    return Authorization(DeclineReason(int(f[0])), f[1], f[2], int(f[3]), int(f[4]), int(f[5]),
                         levels)


def decode_capture(reply: bytes | str) -> CaptureResult:
    f = _fields(reply)
    return CaptureResult(f[0], int(f[1]), int(f[2]), int(f[3]), int(f[4]), int(f[5]))


def decode_void(reply: bytes | str) -> VoidResult:
    f = _fields(reply)
    return VoidResult(f[0], int(f[1]), int(f[2]), int(f[3]))


class LimitsClient:
    def __init__(self, runner: Runner, partitions: int, clock_offset_ms: int = 0):
        self.runner = runner
        self.partitions = partitions
        # Added to Redis' TIME by every script; tests move time with it, production leaves 0.
        self.clock_offset_ms = clock_offset_ms

    def _call(self, name: str, keys_: Sequence[str], args: Sequence[str]) -> Awaitable:
        return self.runner.call(name, keys_, [str(self.clock_offset_ms), *args])

    def _base(self, customer_id: str) -> str:
        return keys.base(keys.partition_of(customer_id, self.partitions))

    async def authorize(self, keys_: Sequence[str], args: Sequence[str]) -> Authorization:
        """Run a reservation planned by hotpath.plan_authorize."""
        return decode_authorization(await self._call("reserve", keys_, args))

    async def capture(self, keys_: Sequence[str], args: Sequence[str]) -> CaptureResult:
        return decode_capture(await self._call("capture", keys_, args))

    async def void(self, keys_: Sequence[str], args: Sequence[str]) -> VoidResult:
        return decode_void(await self._call("void", keys_, args))

    async def refund(self, keys_: Sequence[str], args: Sequence[str]) -> RefundResult:
        """Run a refund planned by gateway.service.plan_refund."""
        f = _fields(await self._call("refund", keys_, args))
        return RefundResult(int(f[0]), int(f[1]), int(f[2]), int(f[3]))

    async def expire(self, customer_id: str) -> int:
        """Release the customer's holds whose TTL has passed; the number released."""
        base = self._base(customer_id)
        reply = await self._call(
            "expire",
            [keys.customer_holds(base, customer_id), keys.due(base), keys.outbox(base)],
            [base, customer_id],
        )
        return int(_text(reply).split("|")[0])

    async def credit(self, customer_id: str) -> CustomerState | None:
        """The customer's caps, usage and velocity windows now, or None if unknown."""
        base = self._base(customer_id)
        reply = await self._call(
            "credit", [keys.customer(base, customer_id), keys.due(base), keys.outbox(base)],
            [base, customer_id])
        now = int(reply[0])
        if len(reply) == 1:
            return None
        fields = dict(zip(map(_text, reply[1::2]), map(_text, reply[2::2]), strict=True))
        return decode_customer(customer_id, fields, now)

    async def put_customer(self, customer_id: str, status: str, timezone: str,
                           caps: dict[str, int]) -> int:
        """Create or replace the customer; returns the Redis time of the change (ms)."""
        base = self._base(customer_id)
        # The schedule starts two days before this host's time: a skew of seconds is harmless.
        start_s = int(time.time()) + self.clock_offset_ms // 1000
        schedule = calendar.offset_schedule(timezone, start_s)
        args = [customer_id, status, timezone, schedule]
        for node, cap in sorted(caps.items()):
            args += [node, str(cap)]
        reply = _fields(await self._call(
            "put_customer", [keys.customer(base, customer_id), keys.outbox(base)], args))
        return int(reply[0])


def decode_customer(customer_id: str, fields: dict[str, str], now_ms: int) -> CustomerState:
    caps, held, used = {}, {}, {}
    day, month = {}, {}
    schedule = fields.get(keys.FIELD_TZ_SCHEDULE, "0")
    day_number, month_number = calendar.window_numbers(schedule, now_ms)
    day_reset, month_reset = calendar.window_resets_ms(schedule, now_ms)
    for field, value in fields.items():
        for prefix, into in ((keys.FIELD_CAP, caps), (keys.FIELD_HELD, held),
                             (keys.FIELD_USED, used)):
            if field.startswith(prefix):
                into[field[len(prefix):]] = int(value)
        for prefix, into, current in ((keys.FIELD_VELOCITY_DAY, day, day_number),
                                      (keys.FIELD_VELOCITY_MONTH, month, month_number)):
            if field.startswith(prefix):
                number, amount, count = map(int, value.split(":"))
                if number == current:  # an older window counts nothing now
                    into[field[len(prefix):]] = Window(amount, count)
    return CustomerState(customer_id, fields.get(keys.FIELD_STATUS, ""),
                         fields.get(keys.FIELD_TIMEZONE, ""), caps, held, used, day, month,
                         day_reset, month_reset, now_ms)
