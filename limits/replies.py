"""What the scripts answer, decoded: one struct per reply, read by the names of its layout in
limits/contracts.py. A script's refusal ("ERR|code|detail|at_ms") raises `Refused`.
"""

from __future__ import annotations

import msgspec

from creditgate.limits import calendar, contracts, installments, keys
from creditgate.limits.levels import effective_cap
from creditgate.limits.reasons import DeclineReason, ScriptError


class Refused(Exception):
    """The script refused the call; nothing it was asked to change was changed."""

    def __init__(self, code: ScriptError, detail: str, at_ms: int):
        super().__init__(f"{code.name.lower()}: {detail}" if detail else code.name.lower())
        self.code, self.detail, self.at_ms = code, detail, at_ms


class Level(msgspec.Struct, frozen=True):
    node: str
    cap_minor: int  # in Authorize and IncrementAuthorization replies: cap + live raise
    held_minor: int
    used_minor: int
    available_minor: int
    raise_minor: int = 0  # CustomerState only: a live temporary raise, and when it ends
    raise_expires_at_ms: int = 0


class Authorization(msgspec.Struct, frozen=True):
    reason: DeclineReason
    level: str  # the node that declined, for INSUFFICIENT_CREDIT
    hold_id: str
    available_minor: int
    decided_at_ms: int
    hold_expires_at_ms: int
    levels: tuple[Level, ...]
    approved_amount_minor: int = 0  # what the hold holds (Increment: its amount after the call)
    partial: bool = False  # approved for less than asked (response code "10")
    # On an INSUFFICIENT_CREDIT or VELOCITY_AMOUNT_EXCEEDED decline: the largest amount that
    # would be approved now (0: none at or above the product's minimum) and its binding level
    # (a node, "velocity.day", "velocity.month"; Increment also "amount_max"). A partial
    # approval names its binding level here too.
    counter_offer_minor: int = 0
    counter_offer_level: str = ""
    plan: installments.Plan | None = None  # the installment plan of the approved amount
    # The catalog version that decided it (reserve; '' for what layout 2's scripts decided,
    # and for Increment, whose reply has none).
    catalog_version: str = ""

    @property
    def approved(self) -> bool:
        return self.reason == DeclineReason.NONE


class IncrementResult(msgspec.Struct, frozen=True):
    authorization: Authorization  # approved_amount_minor: the hold's amount after the call
    held_minor: int  # what the hold still holds after the call (amount - captured)


class RaiseResult(msgspec.Struct, frozen=True):
    level: Level  # cap_minor is the cap alone; raise_minor the raise now in force
    decided_at_ms: int
    # The raise stored before the change (0 and 0: none), lapsed or not: for the audit log.
    raise_before_minor: int = 0
    raise_before_expires_at_ms: int = 0


class PutCustomerResult(msgspec.Struct, frozen=True):
    decided_at_ms: int
    # The customer before the change, for the audit log: "" and {} for a new customer.
    status_before: str
    caps_before: dict[str, int]


class CaptureResult(msgspec.Struct, frozen=True):
    state: str
    captured_minor: int
    captured_total_minor: int
    released_minor: int
    held_minor: int
    over_captured_minor: int  # the part of this capture beyond what the hold held
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
    # What the path still owed and was restored as credit; the rest (a refund of what was
    # already repaid) went to the customer's credit balance.
    restored_minor: int
    decided_at_ms: int

    @property
    def overpaid_minor(self) -> int:
        return self.refunded_minor - self.restored_minor


class ReverseResult(msgspec.Struct, frozen=True):
    outcome: str  # released, already_closed, original_declined, tombstoned
    hold_id: str  # the original's hold, if it was approved
    released_minor: int
    decided_at_ms: int


class ForceCaptureResult(msgspec.Struct, frozen=True):
    hold_id: str  # the new hold, closed as captured
    over_limit_levels: tuple[str, ...]  # levels the posting took over their cap (+ raise)
    levels: tuple[Level, ...]  # after the posting; cap_minor is cap + live raise
    decided_at_ms: int


class RepayResult(msgspec.Struct, frozen=True):
    repaid_minor: int  # paid onto balances; repaid + overpaid is the amount
    overpaid_minor: int  # beyond every balance: the customer's credit balance
    outstanding_minor: int  # still owed over all paths after the repayment
    allocations: tuple[tuple[str, int], ...]  # (path, amount) in the order applied
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
    raises: dict[str, tuple[int, int]] = {}  # node -> (raise, expires at ms), live ones only
    balances: dict[str, int] = {}  # path (nodes root first, comma-joined) -> balance
    credit_balance_minor: int = 0  # overpaid: owed to the customer

    @property
    def outstanding_minor(self) -> int:
        """Captured, not refunded or repaid, over all paths."""
        return sum(self.balances.values())

    def level(self, node: str) -> Level:
        """The level as it stands at as_of_ms: its available credit counts a live raise."""
        cap, held, used = self.caps.get(node, 0), self.held.get(node, 0), self.used.get(node, 0)
        raise_minor, expires = self.raises.get(node, (0, 0))
        effective = effective_cap(cap, f"{raise_minor}:{expires}", self.as_of_ms)
        return Level(node, cap, held, used, max(0, effective - held - used),
                     raise_minor if effective > cap else 0, expires if effective > cap else 0)

    def levels(self) -> list[Level]:
        return [self.level(node) for node in sorted(set(self.caps) | set(self.held)
                                                    | set(self.used) | set(self.raises))]


def _text(reply: bytes | str) -> str:
    return reply.decode() if isinstance(reply, bytes) else reply


_ERROR = contracts.ERROR


def _fields(reply: bytes | str) -> list[str]:
    """The fields of an "OK|..." reply, after OK; an "ERR|..." reply raises Refused."""
    parts = _text(reply).split("|")
    if parts[0] == "ERR":
        error = parts[1:]
        raise Refused(ScriptError(int(error[_ERROR.code])), error[_ERROR.detail],
                      int(error[_ERROR.at_ms]))
    return parts[1:]


def _levels(fields: list[str], start: int) -> tuple[Level, ...]:
    """The repeated (node, cap, held, used) groups from `start` on; available is never < 0."""
    return tuple([Level(node, cap, held, used, max(0, cap - held - used))
                  for node, cap, held, used in zip(
                      fields[start::4], map(int, fields[start + 1::4]),
                      map(int, fields[start + 2::4]), map(int, fields[start + 3::4]),
                      strict=True)])


# The reasons as a reply spells them: a dict lookup, cheaper than DeclineReason(int(text)).
_REASONS = {str(int(reason)): reason for reason in DeclineReason}
_A = contracts.AUTHORIZATION
_A_FIXED = len(_A)
_AUTHORIZATION_NAMES = (
    "reason", "level", "hold_id", "available_minor", "decided_at_ms", "hold_expires_at_ms",
    "approved_amount_minor", "partial", "counter_offer_minor", "counter_offer_level", "plan")
assert _A.names == _AUTHORIZATION_NAMES, "unpack them in _authorization as declared"
assert contracts.INCREMENT.reply.names == _A.names and contracts.RESERVE.reply is _A
assert _A.tail == ("catalog_version",)
assert _A.rest == contracts.LEVEL == contracts.FORCE_CAPTURE.reply.rest


def decode_authorization(reply: bytes | str) -> Authorization:
    """reserve's reply (contracts.AUTHORIZATION): the fields, the levels, the catalog version."""
    f = _fields(reply)
    return _authorization(f, len(f) - 1, f[-1])


def _authorization(f: list[str], end: int, catalog_version: str = "") -> Authorization:
    # Every AuthorizeBatch item decodes one of these, so the fixed fields are unpacked in one
    # step, under their declared names (_AUTHORIZATION_NAMES, asserted against the contract),
    # and each number is converted once. The levels run from the fixed fields to `end`.
    (reason, level, hold_id, available_minor, decided_at_ms, hold_expires_at_ms,
     approved_amount_minor, partial, counter_offer_minor, counter_offer_level,
     plan) = f[:_A_FIXED]
    approved = int(approved_amount_minor)
    return Authorization(
        _REASONS[reason], level, hold_id, int(available_minor), int(decided_at_ms),
        int(hold_expires_at_ms), _levels(f[:end], _A_FIXED), approved, partial == "1",
        int(counter_offer_minor), counter_offer_level, installments.parse(plan, approved),
        catalog_version)


def decode_increment(reply: bytes | str) -> IncrementResult:
    """increment's reply: an authorization reply, then what the hold still holds."""
    f = _fields(reply)
    assert contracts.INCREMENT.reply.tail == ("hold_held_minor",)
    return IncrementResult(_authorization(f, len(f) - 1), int(f[-1]))


def decode_raise(node: str, expires_at_ms: int, reply: bytes | str) -> RaiseResult:
    f = contracts.SET_RAISE.reply.bind(list(map(int, _fields(reply))))
    level = Level(node, f.cap_minor, f.held_minor, f.used_minor,
                  max(0, f.cap_minor + f.raise_minor - f.held_minor - f.used_minor),
                  f.raise_minor, expires_at_ms if f.raise_minor else 0)
    return RaiseResult(level, f.decided_at_ms, f.raise_before_minor,
                       f.raise_before_expires_at_ms)


def decode_capture(reply: bytes | str) -> CaptureResult:
    f = contracts.CAPTURE.reply.bind(_fields(reply))
    return CaptureResult(f.state, int(f.captured_minor), int(f.captured_total_minor),
                         int(f.released_minor), int(f.held_minor),
                         int(f.over_captured_minor), int(f.decided_at_ms))


def decode_void(reply: bytes | str) -> VoidResult:
    f = contracts.VOID.reply.bind(_fields(reply))
    return VoidResult(f.state, int(f.released_minor), int(f.captured_total_minor),
                      int(f.decided_at_ms))


def decode_refund(reply: bytes | str) -> RefundResult:
    f = contracts.REFUND.reply.bind(_fields(reply))
    return RefundResult(int(f.refunded_minor), int(f.refunded_total_minor),
                        int(f.refundable_minor), int(f.restored_minor), int(f.decided_at_ms))


def decode_reverse(reply: bytes | str) -> ReverseResult:
    f = contracts.REVERSE.reply.bind(_fields(reply))
    return ReverseResult(f.outcome, f.hold_id, int(f.released_minor), int(f.decided_at_ms))


def decode_force_capture(reply: bytes | str) -> ForceCaptureResult:
    layout = contracts.FORCE_CAPTURE.reply
    fields = _fields(reply)
    f = layout.bind(fields[:len(layout)])
    over = tuple(f.over_limit_levels.split(",")) if f.over_limit_levels else ()
    return ForceCaptureResult(f.hold_id, over, _levels(fields, len(layout)),
                              int(f.decided_at_ms))


def decode_repay(reply: bytes | str) -> RepayResult:
    f = contracts.REPAY.reply.bind(_fields(reply))
    allocations = tuple((path, int(amount)) for path, amount in f.rest)
    return RepayResult(int(f.repaid_minor), int(f.overpaid_minor), int(f.outstanding_minor),
                       allocations, int(f.decided_at_ms))


def decode_put_customer(reply: bytes | str) -> PutCustomerResult:
    """put_customer's reply: the Redis time of the change (ms) and the customer's status and
    caps before it ("node=cap" joined by ',')."""
    f = contracts.PUT_CUSTOMER.reply.bind(_fields(reply))
    caps = dict(pair.split("=") for pair in f.caps_before.split(",") if pair)
    return PutCustomerResult(int(f.decided_at_ms), f.status_before,
                             {node: int(cap) for node, cap in caps.items()})


def decode_expire(reply: bytes | str) -> int:
    """expire's reply: how many holds it released."""
    return int(contracts.EXPIRE.reply.bind(_text(reply).split("|")).released)


def _list(reply: list | bytes | str) -> list:
    """A list reply; a script that refused answers "ERR|..." instead, which raises Refused."""
    if isinstance(reply, bytes | str):
        _fields(reply)
        raise ValueError(f"a list reply expected, got {_text(reply)[:80]!r}")
    return reply


def decode_due(reply: list | bytes | str) -> list[str]:
    """due's reply: the customers whose earliest hold has expired."""
    return [_text(customer) for customer in contracts.DUE.reply.bind(_list(reply)).rest]


def decode_credit(customer_id: str, reply: list | bytes | str) -> CustomerState | None:
    """credit's reply: the customer's state, or None if unknown."""
    f = contracts.CREDIT.reply.bind(_list(reply))
    if not f.rest:
        return None
    fields = {_text(field): _text(value) for field, value in f.rest}
    return decode_customer(customer_id, fields, int(f.now_ms))


def decode_customer(customer_id: str, fields: dict[str, str], now_ms: int) -> CustomerState:
    caps, held, used, balances = {}, {}, {}, {}
    day, month = {}, {}
    raises = {}
    schedule = fields.get(keys.FIELD_TZ_SCHEDULE, "0")
    day_number, month_number = calendar.window_numbers(schedule, now_ms)
    day_reset, month_reset = calendar.window_resets_ms(schedule, now_ms)
    for node, level in keys.levels_of(fields).items():
        if level.cap is not None:
            caps[node] = level.cap
        held[node], used[node] = level.held, level.used
        if level.raise_minor and level.raise_expires_ms > now_ms:  # a lapsed raise: nothing
            raises[node] = (level.raise_minor, level.raise_expires_ms)
    for field, value in fields.items():
        if field.startswith(keys.FIELD_BALANCE):
            balances[field[len(keys.FIELD_BALANCE):]] = int(value)
        if field.startswith(keys.FIELD_VELOCITY):
            product = field[len(keys.FIELD_VELOCITY):]
            numbers = [int(number) for number in value.split(keys.LEVEL_SEPARATOR)]
            for into, (number, amount, count), current in ((day, numbers[:3], day_number),
                                                           (month, numbers[3:], month_number)):
                if number == current:  # an older window counts nothing now
                    into[product] = Window(amount, count)
    return CustomerState(customer_id, fields.get(keys.FIELD_STATUS, ""),
                         fields.get(keys.FIELD_TIMEZONE, ""), caps, held, used, day, month,
                         day_reset, month_reset, now_ms, raises, balances,
                         int(fields.get(keys.FIELD_CREDIT_BALANCE, 0)))
