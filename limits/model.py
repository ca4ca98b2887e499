"""The pure-Python model of the Lua scripts: the same KEYS and ARGV, the same replies, the same
writes, over an in-memory picture of the Redis keys. It is the readable specification of the
scripts; tests run one table of cases against both and, with hypothesis, compare the whole
Redis state with the model's after every step.

Each script method reads its KEYS and ARGV by the names limits/contracts.py declares
(`k.customer`, `a.amount_minor`, `a.rest` for a repeated tail), names the fields of a hold
hash through keys.HOLD_FIELDS, builds its reply from the contract's reply fields in wire order,
and follows the steps of its Lua script: check the arguments, replay an idempotent answer, read,
check in the documented order, then write.

State layout (as Redis would hold it): a hash is dict[str, str], a sorted set dict[str, int],
a string str, a stream list[dict[str, str]]. Key expiry (PEXPIRE/EX) is not modelled: it only
forgets closed holds and old idempotency records long after they matter.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from creditgate.limits import calendar, constants, contracts, installments, keys
from creditgate.limits.contracts import Fields, Layout
from creditgate.limits.levels import effective_cap
from creditgate.limits.reasons import PRODUCT_RULE_REASON_MAX
from creditgate.limits.reasons import DeclineReason as R
from creditgate.limits.reasons import ScriptError as E

HOLD_TTL_MS_MAX = constants.HOLD_TTL_S_MAX * 1000
RAISE_DURATION_MS_MAX = constants.RAISE_DURATION_S_MAX * 1000
# The fingerprint of every reversal: it has no payload of its own (limits/lua/reverse.lua).
_REVERSAL = "reverse"
# due.lua's bound on the customers one call lists.
_DUE_COUNT_MAX = constants.SWEEP_CUSTOMERS_PER_PARTITION_MAX

# The fields of a hold hash (what each holds: keys.HOLD_FIELDS).
_STATE = keys.HOLD_FIELDS["STATE"]
_CUSTOMER = keys.HOLD_FIELDS["CUSTOMER"]
_PRODUCT = keys.HOLD_FIELDS["PRODUCT"]
_AMOUNT = keys.HOLD_FIELDS["AMOUNT"]
_CAPTURED = keys.HOLD_FIELDS["CAPTURED"]
_NODES = keys.HOLD_FIELDS["NODES"]
_EXPIRES = keys.HOLD_FIELDS["EXPIRES"]
_SEQ = keys.HOLD_FIELDS["SEQ"]
_MERCHANT = keys.HOLD_FIELDS["MERCHANT"]
_CURRENCY = keys.HOLD_FIELDS["CURRENCY"]
_FINGERPRINT = keys.HOLD_FIELDS["FINGERPRINT"]
_TOLERANCE_BPS = keys.HOLD_FIELDS["TOLERANCE_BPS"]
_INCREMENT_MAX = keys.HOLD_FIELDS["INCREMENT_MAX"]
_VELOCITY_MAX = keys.HOLD_FIELDS["VELOCITY_MAX"]
_PLAN = keys.HOLD_FIELDS["PLAN"]
_PARTIAL_LEVEL = keys.HOLD_FIELDS["PARTIAL_LEVEL"]
_FIRST_AMOUNT = keys.HOLD_FIELDS["FIRST_AMOUNT"]
_CLOSED_AT = keys.HOLD_FIELDS["CLOSED_AT"]
_REFUNDED = keys.HOLD_FIELDS["REFUNDED"]
_FORCE_CAPTURED_AS = keys.HOLD_FIELDS["FORCE_CAPTURED_AS"]
_ORIGINAL_HOLD = keys.HOLD_FIELDS["ORIGINAL_HOLD"]
_FORCE_CAPTURE = keys.HOLD_FIELDS["FORCE_CAPTURE"]
_CREATED_AT = keys.HOLD_FIELDS["CREATED_AT"]
_CATALOG_VERSION = keys.HOLD_FIELDS["CATALOG_VERSION"]
_HOLD_TTL_MS = keys.HOLD_FIELDS["HOLD_TTL_MS"]

# The previous layout (2), which the model also runs (Model.call's `layout`) for the tests of
# a rolling upgrade, where both layouts' scripts share the data: its scripts differ from this
# layout's in reserve alone, whose product rules had no catalog version, whose reply ended with
# the levels, and which recorded no version (hold, event, decline record).
LAYOUT_PREVIOUS = 2
RULES_LAYOUT_2 = Layout(
    "product_id", "channel", "currency", "hold_ttl_ms",
    "day_amount_max_minor", "day_count_max", "month_amount_max_minor", "month_count_max",
    "amount_min_minor", "amount_max_minor", "capture_tolerance_bps", "incremental",
    "installment_fee_bps", "nodes")
AUTHORIZATION_LAYOUT_2 = Layout(*contracts.AUTHORIZATION_FIELDS, rest=contracts.LEVEL)

# The statuses that decline every authorization (active declines nothing).
_STATUS_DECLINES = {"frozen": R.CUSTOMER_FROZEN, "closed": R.CUSTOMER_CLOSED,
                    "overdue": R.CUSTOMER_OVERDUE}
# A closed hold's state and the refusal of a call that needs it open.
_CLOSED_REFUSALS = {"expired": E.HOLD_EXPIRED, "voided": E.HOLD_VOIDED,
                    "captured": E.HOLD_CAPTURED, "reversed": E.HOLD_REVERSED}

# The numbers of reserve's product rules (contracts.PRODUCT_RULES) and their bounds (int_arg
# in limits/lua/_lib.lua product_rules).
_RULE_BOUNDS: dict[str, tuple[int, int]] = {
    "hold_ttl_ms": (1, HOLD_TTL_MS_MAX),
    "day_amount_max_minor": (0, constants.VELOCITY_AMOUNT_MINOR_MAX),
    "day_count_max": (0, constants.VELOCITY_AMOUNT_MINOR_MAX),
    "month_amount_max_minor": (0, constants.VELOCITY_AMOUNT_MINOR_MAX),
    "month_count_max": (0, constants.VELOCITY_AMOUNT_MINOR_MAX),
    "amount_min_minor": (0, constants.AMOUNT_MINOR_MAX),
    "amount_max_minor": (0, constants.AMOUNT_MINOR_MAX),
    "capture_tolerance_bps": (0, constants.CAPTURE_TOLERANCE_BPS_MAX),
    "incremental": (0, 1),
    "installment_fee_bps": (0, constants.INSTALLMENT_FEE_BPS_MAX),
    "effective_from_ms": (0, constants.EFFECTIVE_MS_MAX),
    "effective_until_ms": (0, constants.EFFECTIVE_MS_MAX),
    "first_purchase_max_minor": (0, constants.AMOUNT_MINOR_MAX),
}
# reserve's own numeric ARGV and their bounds; "0" and "1" of partial_approval only.
_PURCHASE_BOUNDS: dict[str, tuple[int, int]] = {
    "amount_minor": (1, constants.AMOUNT_MINOR_MAX),
    "rule_decline": (0, PRODUCT_RULE_REASON_MAX),
    "installment_months": (0, constants.INSTALLMENT_MONTHS_MAX),
}


def _int_arg(value: str, low: int, high: int) -> int | None:
    try:
        number = int(value)
    except ValueError:
        return None
    return number if low <= number <= high else None


# -- replies ------------------------------------------------------------------------------
def _wire(layout: Layout, rest: Sequence[Sequence[object]] = (), **fields: object) -> list[str]:
    """A reply's values as text in the layout's wire order (Layout.pack): its named fields,
    each group of the repeated part, then the tail."""
    flat = [value for group in rest for value in group]
    return [str(value) for value in layout.pack(rest=flat, **fields)]


def _ok(layout: Layout, rest: Sequence[Sequence[object]] = (), **fields: object) -> str:
    """An "OK|..." reply of the layout."""
    return "|".join(["OK", *_wire(layout, rest, **fields)])


def _err(code: E, detail: str, now: int) -> str:
    """A refusal "ERR|code|detail|at_ms": nothing the call asked for was changed."""
    return "|".join(["ERR", *_wire(contracts.ERROR, code=int(code), detail=detail, at_ms=now)])


def authorization_reply(reason: int, level: str, hold_id: str, available: int, now: int,
                        expires: int, approved: int, partial: bool, offer: int,
                        offer_level: str, plan: str, levels: Sequence[Sequence[object]],
                        held: int | None = None) -> str:
    """authorization_reply of limits/lua/_lib.lua: reserve's reply without its catalog version
    (AUTHORIZATION_LAYOUT_2; reserve adds the version), one group per level; with `held` (what
    the hold still holds), increment's."""
    fields = dict(reason=int(reason), level=level, hold_id=hold_id, available_minor=available,
                  decided_at_ms=now, hold_expires_at_ms=expires, approved_amount_minor=approved,
                  partial=int(partial), counter_offer_minor=offer,
                  counter_offer_level=offer_level, plan=plan)
    if held is None:
        return _ok(AUTHORIZATION_LAYOUT_2, levels, **fields)
    return _ok(contracts.INCREMENT.reply, levels, hold_held_minor=held, **fields)


# -- what the checks read -----------------------------------------------------------------
@dataclass(frozen=True)
class _Purchase:
    """reserve's numeric ARGV and its product rules (contracts.PRODUCT_RULES), checked, under
    the contract's names."""

    amount_minor: int
    rule_decline: int
    partial_approval: int
    installment_months: int
    product_id: str
    channel: str
    currency: str
    nodes: tuple[str, ...]
    hold_ttl_ms: int
    day_amount_max_minor: int
    day_count_max: int
    month_amount_max_minor: int
    month_count_max: int
    amount_min_minor: int
    amount_max_minor: int
    capture_tolerance_bps: int
    incremental: int
    installment_fee_bps: int
    effective_from_ms: int
    effective_until_ms: int
    allowed_hours: tuple[tuple[int, int], ...]
    first_purchase_max_minor: int
    catalog_version: str

    def effective_at(self, now: int) -> bool:
        """Whether the product answers at a time: from <= now < until (0: an open end)."""
        return self.effective_from_ms <= now and (not self.effective_until_ms
                                                  or now < self.effective_until_ms)

    @property
    def has_velocity(self) -> bool:
        """Whether the product keeps any velocity window (a max of 0 is no limit)."""
        return any((self.day_amount_max_minor, self.day_count_max,
                    self.month_amount_max_minor, self.month_count_max))


def _texts(text: str, separator: str) -> list[str]:
    """The non-empty parts of `text` between separators (split of limits/lua/_lib.lua)."""
    return [part for part in text.split(separator) if part]


def _purchase(a: Fields, layout: int = keys.LAYOUT_VERSION) -> _Purchase | None:
    """reserve's arguments: every number within its bounds, partial approval "0" or "1", no
    one-month installment plan, product rules of every field and at least one limit node;
    None if any fails."""
    numbers = {name: _int_arg(getattr(a, name), low, high)
               for name, (low, high) in _PURCHASE_BOUNDS.items()}
    if layout != keys.LAYOUT_VERSION and numbers["rule_decline"] is not None \
            and numbers["rule_decline"] > R.AMOUNT_ABOVE_MAXIMUM:
        numbers["rule_decline"] = None  # layout 2 knew no rule reason above it
    parts = _texts(a.rules, contracts.RULES_SEPARATOR)
    rules_layout = contracts.PRODUCT_RULES if layout == keys.LAYOUT_VERSION else RULES_LAYOUT_2
    if len(parts) != len(rules_layout):
        return None
    rules = rules_layout.bind(parts)
    # Layout 2's rules have no elements (effective dates, hours, first purchase): "0", none.
    numbers.update((name, _int_arg(getattr(rules, name, "0"), low, high))
                   for name, (low, high) in _RULE_BOUNDS.items())
    nodes = tuple(_texts(rules.nodes, contracts.NODES_SEPARATOR))
    hours = _hour_ranges(getattr(rules, "allowed_hours", "0"))
    if None in numbers.values() or numbers["installment_months"] == 1 or not nodes \
            or a.partial_approval not in ("0", "1") or hours is None:
        return None
    return _Purchase(partial_approval=int(a.partial_approval), product_id=rules.product_id,
                     channel=rules.channel, currency=rules.currency, nodes=nodes,
                     allowed_hours=hours,
                     catalog_version=getattr(rules, "catalog_version", ""),
                     **numbers)  # type: ignore[arg-type]


def _hour_ranges(text: str) -> tuple[tuple[int, int], ...] | None:
    """hour_ranges of limits/lua/_lib.lua: "0" (any time: none) or "<start>:<end>" minutes
    joined by contracts.HOURS_SEPARATOR, start < 1440 and start < end <= start + 1440; None
    if malformed."""
    if text == "0":
        return ()
    ranges = []
    for part in _texts(text, contracts.HOURS_SEPARATOR):
        first, colon, last = part.partition(":")
        if not (colon and first.isdigit() and last.isdigit() and first.isascii()
                and last.isascii()):
            return None
        start, end = int(first), int(last)
        if start >= 1440 or not start < end <= start + 1440:
            return None
        ranges.append((start, end))
    return tuple(ranges) or None


def _within_hours(ranges: Sequence[tuple[int, int]], schedule: str, now_ms: int) -> bool:
    """within_hours of limits/lua/_lib.lua: the customer's local minute of the day at now_ms
    falls in a range [start, end) (an end above 1440 continues past midnight)."""
    now_s = now_ms // 1000
    minute = (now_s + calendar.utc_offset_s(schedule, now_s)) % 86_400 // 60
    return any(start <= minute < end or minute + 1440 < end for start, end in ranges)


@dataclass(frozen=True)
class _Levels:
    """read_levels of limits/lua/_lib.lua: per limit node (root first) of a path, its effective
    cap (the cap plus the node's temporary raise while it lasts), held and used."""

    rows: list[tuple[str, int, int, int]]

    @classmethod
    def read(cls, customer: Mapping[str, str], nodes: Sequence[str], now: int) -> _Levels:
        rows = []
        for node in nodes:
            level = keys.read_level(customer.get(keys.FIELD_LEVEL + node))
            rows.append((node, _effective_cap(level, now), level.held, level.used))
        return cls(rows)

    @property
    def nodes(self) -> list[str]:
        return [node for node, _, _, _ in self.rows]

    @property
    def frees(self) -> list[int]:
        """Each node's free credit: cap - held - used, never below 0."""
        return [max(0, cap - held - used) for _, cap, held, used in self.rows]

    @property
    def available(self) -> int:
        """The least free credit of the path."""
        return min(self.frees)

    def short(self, amount: int) -> str | None:
        """The first node (root first) where `amount` does not fit, or None."""
        return next((node for node, free in zip(self.nodes, self.frees, strict=True)
                     if amount > free), None)

    def reply(self, held_extra: int = 0, used_extra: int = 0) -> list[tuple[str, int, int, int]]:
        """The reply's groups (node, cap, held, used), with what the call added."""
        return [(node, cap, held + held_extra, used + used_extra)
                for node, cap, held, used in self.rows]


@dataclass(frozen=True)
class _Windows:
    """A product's day and month windows as they stand now: the local day and month numbers
    and the amount and count each holds ("<number>:<amount>:<count>" in the customer hash; a
    window of another number counts nothing)."""

    day: int
    month: int
    day_amount: int
    day_count: int
    month_amount: int
    month_count: int

    def count_exceeded(self, day_count_max: int, month_count_max: int) -> bool:
        """Whether one more purchase passes a count max (0: no limit)."""
        return bool((day_count_max and self.day_count + 1 > day_count_max)
                    or (month_count_max and self.month_count + 1 > month_count_max))

    def amount_exceeded(self, amount: int, day_max: int, month_max: int) -> bool:
        """Whether `amount` more passes an amount max (0: no limit)."""
        return bool((day_max and self.day_amount + amount > day_max)
                    or (month_max and self.month_amount + amount > month_max))

    def text(self, amount: int, purchases: int) -> str:
        """The stored text of both windows after counting `amount` and `purchases`."""
        return keys.velocity_text(
            (self.day, self.day_amount + amount, self.day_count + purchases),
            (self.month, self.month_amount + amount, self.month_count + purchases))


@dataclass(frozen=True)
class _Decision:
    """The outcome of an authorization's checks: a decline's reason (NONE: approved), the
    level it names and its counter-offer; or the approved amount, whether it is partial and
    the binding level of a partial approval (in offer_level)."""

    reason: R = R.NONE
    level: str = ""
    offer: int = 0
    offer_level: str = ""
    approved: int = 0
    partial: bool = False


class Model:
    """Runs the scripts' logic; `clock` returns the time Redis' TIME would (ms)."""

    def __init__(self, clock: Callable[[], int]):
        self.clock = clock
        self.state: dict[str, object] = {}
        # The call header's caller and merchant scope of the call running (ARGV in the Lua).
        self.caller, self.scope = "", ""
        # The layout of the scripts the call runs (call's `layout`).
        self.layout = keys.LAYOUT_VERSION

    # -- Redis primitives over the picture ------------------------------------------------
    def _hash(self, key: str) -> dict[str, str]:
        return self.state.setdefault(key, {})  # type: ignore[return-value]

    def _zset(self, key: str) -> dict[str, int]:
        return self.state.setdefault(key, {})  # type: ignore[return-value]

    def _hincrby(self, key: str, field: str, by: int) -> int:
        h = self._hash(key)
        h[field] = str(int(h.get(field, "0")) + by)
        return int(h[field])

    def _zrem(self, key: str, member: str) -> None:
        zset = self.state.get(key)
        if isinstance(zset, dict):
            zset.pop(member, None)
            if not zset:
                del self.state[key]

    def _xadd(self, key: str, **fields: str) -> None:
        """Appends an event: every event carries the caller of the call that wrote it."""
        self.state.setdefault(key, []).append(  # type: ignore[union-attr]
            {"caller": self.caller, **fields})

    # -- the prelude (limits/lua/_lib.lua) --------------------------------------------------
    def _update_due(self, holds_key: str, due_key: str, customer_id: str) -> None:
        """The partition's due set holds each customer with open holds at its earliest
        expiry."""
        holds = self.state.get(holds_key) or {}
        if holds:
            first = min(holds.items(), key=lambda item: (item[1], item[0]))  # type: ignore
            self._zset(due_key)[customer_id] = first[1]
        else:
            self._zrem(due_key, customer_id)

    def _zone_schedule(self, base: str, zone: str) -> str:
        """The partition's shared UTC-offset schedule of a timezone (put_customer writes it)."""
        return self._hash(keys.timezones(base)).get(zone, "0")

    def _windows(self, base: str, customer: Mapping[str, str], product_id: str,
                 now: int) -> _Windows:
        """The product's velocity windows in the customer's local calendar."""
        day, month = calendar.window_numbers(
            self._zone_schedule(base, customer[keys.FIELD_TIMEZONE]), now)
        return _Windows(day, month, *_windows_usage(
            customer.get(keys.FIELD_VELOCITY + product_id), day, month))

    def _count_in_windows(self, customer_key: str, product_id: str, windows: _Windows,
                          amount: int, purchases: int) -> None:
        self._hash(customer_key)[keys.FIELD_VELOCITY + product_id] = windows.text(
            amount, purchases)

    def _change_levels(self, customer_key: str, nodes: Sequence[str], held_by: int = 0,
                       used_by: int = 0) -> None:
        """change_levels of limits/lua/_lib.lua: held_by and used_by added to the level of
        every node listed (a level not kept yet starts with no cap)."""
        customer = self._hash(customer_key)
        for node in nodes:
            level = keys.read_level(customer.get(keys.FIELD_LEVEL + node))
            customer[keys.FIELD_LEVEL + node] = keys.level_text(
                level.cap, level.held + held_by, level.used + used_by, level.raise_minor,
                level.raise_expires_ms)

    def _ensure_layout(self, customer_key: str) -> None:
        """upgrade_customer of limits/lua/_lib.lua, for a customer that layout 1 wrote: its
        fields of one number each become a field per level and per product's windows."""
        customer: dict[str, str] | None = self.state.get(customer_key)  # type: ignore
        if not customer or keys.V1_FIELD_STATUS not in customer:
            return
        status = customer[keys.V1_FIELD_STATUS]
        levels: dict[str, list[str]] = {}
        windows: dict[str, list[str]] = {}
        slots = {keys.V1_FIELD_CAP: 0, keys.V1_FIELD_HELD: 1, keys.V1_FIELD_USED: 2,
                 keys.V1_FIELD_RAISE: 3}
        for field, value in list(customer.items()):
            kind, colon, name = field.partition(":")
            kind += colon
            if kind in slots:
                level = levels.setdefault(name, ["", "0", "0", ""])
                level[slots[kind]] = ":" + value if kind == keys.V1_FIELD_RAISE else value
            elif kind in (keys.V1_FIELD_VELOCITY_DAY, keys.V1_FIELD_VELOCITY_MONTH):
                window = windows.setdefault(name, ["0:0:0", "0:0:0"])
                window[kind == keys.V1_FIELD_VELOCITY_MONTH] = value
            elif field != keys.V1_FIELD_STATUS:
                continue
            del customer[field]
        customer.update({keys.FIELD_STATUS: status,
                         keys.FIELD_LAYOUT: str(keys.CUSTOMER_LAYOUT)})
        customer.update((keys.FIELD_LEVEL + node, f"{cap}:{held}:{used}{raised}")
                        for node, (cap, held, used, raised) in levels.items())
        customer.update((keys.FIELD_VELOCITY + product, f"{day}:{month}")
                        for product, (day, month) in windows.items())

    def _approval_hold(self, base: str, record_key: str, now: int) -> tuple[str, bool]:
        """approval_hold of limits/lua/_lib.lua: the approval's hold in this idempotency epoch
        or the one before, if it exists; else the id a new approval takes now."""
        epoch = keys.hold_epoch(now)
        for candidate in (epoch, epoch - 1):
            hold_id = keys.derived_hold_id(base, record_key, candidate)
            if keys.hold(base, hold_id) in self.state:
                return hold_id, True
        return keys.derived_hold_id(base, record_key, epoch), False

    def _path_id(self, base: str, node_list: str, version: str, ttl_ms: int) -> str | None:
        """path_id of limits/lua/_lib.lua: the short id a hold stores for its nodes and the
        catalog version and hold TTL that approved it, kept in the partition's `paths` hash
        (the id -> the list, the id and PATH_VERSION_MARK -> the version, the id and
        PATH_TTL_MARK -> the TTL); None if the id is taken by another list. Layout 2's: of the
        list alone, no version, the list if taken."""
        paths = self._hash(keys.paths(base))
        if self.layout == LAYOUT_PREVIOUS:
            path_id = keys.PATH_ID_MARK + hashlib.sha1(node_list.encode()).hexdigest()[:10]
            return path_id if paths.setdefault(path_id, node_list) == node_list else node_list
        path_id = keys.PATH_ID_MARK + hashlib.sha1(
            f"{node_list}|{version}|{ttl_ms}".encode()).hexdigest()[:10]
        if path_id not in paths:
            paths[path_id] = node_list
            paths[path_id + keys.PATH_VERSION_MARK] = version
            paths[path_id + keys.PATH_TTL_MARK] = str(ttl_ms)
            return path_id
        return path_id if paths[path_id] == node_list else None

    def _hold_version(self, base: str, hold: Mapping[str, str]) -> str:
        """hold_version of limits/lua/_lib.lua: the catalog version that approved a hold (its
        own field, else its path id's; '' for a hold of layout 2). The script skips the read
        when the hold's path id is the rules' own, which names the same version (barring a
        collision of SHA-1's first 40 bits)."""
        if _CATALOG_VERSION in hold:
            return hold[_CATALOG_VERSION]
        if not hold[_NODES].startswith(keys.PATH_ID_MARK):
            return ""
        return self._hash(keys.paths(base)).get(hold[_NODES] + keys.PATH_VERSION_MARK, "")

    def _hold_ttl(self, base: str, hold: Mapping[str, str], ttl_ms: int | None) -> int | None:
        """hold_ttl of limits/lua/_lib.lua: the hold TTL (ms) that approved a hold (its own
        field, else its path id's); `ttl_ms` (the rules' at hand, None without) for a hold that
        recorded none (layout 2's)."""
        if _HOLD_TTL_MS in hold:
            return int(hold[_HOLD_TTL_MS])
        if hold[_NODES].startswith(keys.PATH_ID_MARK):
            recorded = self._hash(keys.paths(base)).get(hold[_NODES] + keys.PATH_TTL_MARK)
            if recorded is not None:
                return int(recorded)
        return ttl_ms

    def _hold_nodes_or_none(self, base: str, stored: str) -> str | None:
        """hold_nodes of limits/lua/_lib.lua: None where the paths hash lacks the id."""
        if not stored.startswith(keys.PATH_ID_MARK):
            return stored
        return self._hash(keys.paths(base)).get(stored)

    def _hold_nodes(self, base: str, stored: str) -> str:
        """A hold's nodes, comma-joined, from its nodes field (a path id or the list)."""
        if not stored.startswith(keys.PATH_ID_MARK):
            return stored
        return self._hash(keys.paths(base))[stored]

    def _add_balance(self, customer_key: str, path: str, amount: int) -> None:
        """The balance drawn on one path (captured, not refunded or repaid); zero goes."""
        if amount == 0:
            return
        if self._hincrby(customer_key, keys.FIELD_BALANCE + path, amount) == 0:
            del self._hash(customer_key)[keys.FIELD_BALANCE + path]

    def _close_hold(self, hold_key: str, state: str, seq: int, now: int) -> None:
        self._hash(hold_key).update({_STATE: state, _SEQ: str(seq), _CLOSED_AT: str(now)})

    def _forget_open_hold(self, base: str, customer_id: str, hold_id: str,
                          due_key: str) -> None:
        """A closed hold leaves the customer's open holds, and the due set follows."""
        holds_key = keys.customer_holds(base, customer_id)
        self._zrem(holds_key, hold_id)
        self._update_due(holds_key, due_key, customer_id)

    def _expire_hold(self, base: str, customer_id: str, hold_id: str, outbox_key: str,
                     now: int) -> int:
        """Releases one open hold whose TTL has passed: what it still holds leaves every level
        it drew on, it closes as expired, and its event is appended. 1 if released, else 0."""
        hold_key = keys.hold(base, hold_id)
        h = self._hash(hold_key)
        if h.get(_STATE) != "open":
            return 0
        path = self._hold_nodes(base, h[_NODES])
        released = int(h[_AMOUNT]) - int(h[_CAPTURED])
        self._ensure_layout(keys.customer(base, customer_id))
        self._change_levels(keys.customer(base, customer_id), path.split(","), -released)
        seq = int(h[_SEQ]) + 1
        self._close_hold(hold_key, "expired", seq, now)
        self._xadd(outbox_key, type="expired", event_id=hold_event_id(hold_id, h, seq),
                   customer_id=customer_id, hold_id=hold_id, product_id=h[_PRODUCT],
                   merchant_id=h[_MERCHANT], currency=h[_CURRENCY], nodes=path,
                   released_minor=str(released), captured_total_minor=h[_CAPTURED],
                   at_ms=str(now), caller=keys.EXPIRY_CALLER)
        return 1

    def _release_expired(self, base: str, customer_id: str, due_key: str, outbox_key: str,
                         now: int) -> int:
        """Releases the customer's holds whose TTL has passed, earliest first, at most
        EXPIRE_PER_CALL_MAX of them. Returns how many were released. A customer the due set
        holds later than now (or not at all) has none: it holds each at or before its earliest
        expiry."""
        due_at = (self.state.get(due_key) or {}).get(customer_id)  # type: ignore[union-attr]
        if due_at is None or due_at > now:
            return 0
        holds_key = keys.customer_holds(base, customer_id)
        holds: dict[str, int] = self.state.get(holds_key) or {}  # type: ignore[assignment]
        due = sorted((score, hold_id) for hold_id, score in holds.items() if score <= now)
        due = due[: constants.EXPIRE_PER_CALL_MAX]
        released = 0
        for _, hold_id in due:
            released += self._expire_hold(base, customer_id, hold_id, outbox_key, now)
            self._zrem(holds_key, hold_id)
        if due:
            self._update_due(holds_key, due_key, customer_id)
        return released

    def _release_if_due(self, base: str, customer_id: str, hold_id: str, due_key: str,
                        outbox_key: str, now: int) -> None:
        """The hold a call names is released if its TTL has passed, however many of the
        customer's holds were due before it."""
        h = self._hash(keys.hold(base, hold_id))
        if h.get(_STATE) == "open" and int(h[_EXPIRES]) <= now:
            self._expire_hold(base, customer_id, hold_id, outbox_key, now)
            self._forget_open_hold(base, customer_id, hold_id, due_key)

    def _hold_owner(self, hold_key: str, now: int) -> tuple[str | None, str | None]:
        """hold_owner of limits/lua/_lib.lua: (the hold's customer or None, None); or (None,
        HOLD_NOT_FOUND) if the hold is of a merchant outside the caller's scope, or gone and
        the caller is bound to merchants: as for a hold that never existed."""
        hold: dict[str, str] = self.state.get(hold_key) or {}  # type: ignore[assignment]
        if self.scope and not keys.in_merchant_scope(self.scope, hold.get(_MERCHANT)):
            return None, _err(E.HOLD_NOT_FOUND, "", now)
        return hold.get(_CUSTOMER), None

    def _open_hold(self, hold_key: str, customer_id: str | None, base: str, hold_id: str,
                   due_key: str, outbox_key: str,
                   now: int) -> tuple[dict[str, str] | None, str | None]:
        """open_hold of limits/lua/_lib.lua, for the hold of `customer_id` (_hold_owner's
        answer): (the hold, None) if it is open after releasing what had expired, else (None,
        the refusal)."""
        if customer_id is None:
            return None, _err(E.HOLD_NOT_FOUND, "", now)
        self._release_expired(base, customer_id, due_key, outbox_key, now)
        self._release_if_due(base, customer_id, hold_id, due_key, outbox_key, now)
        h: dict[str, str] = self.state[hold_key]  # type: ignore[assignment]
        closed = _CLOSED_REFUSALS.get(h[_STATE])
        if closed is not None:
            return None, _err(closed, h[_CLOSED_AT], now)
        return h, None

    def _replay(self, record_key: str, fingerprint: str, now: int) -> str | None:
        """The stored first answer, a refusal if the key was used with another payload, or
        None."""
        prior = self.state.get(record_key)
        if prior is None:
            return None
        stored_fingerprint, _, reply = prior.partition("\n")  # type: ignore[union-attr]
        # A reversal's tombstone answers every payload with its stored REVERSED decline.
        if stored_fingerprint not in (fingerprint, keys.TOMBSTONE):
            return _err(E.IDEMPOTENCY_MISMATCH, "", now)
        return reply

    def _remember(self, record_key: str, fingerprint: str, reply: str) -> str:
        self.state[record_key] = fingerprint + "\n" + reply
        return reply

    def _remember_decline(self, record_key: str, fingerprint: str, version: str,
                          reply: str) -> str:
        """remember_decline of limits/lua/_lib.lua: an Authorize's decline record keeps the
        catalog version on a line between the fingerprint and the reply (layout 2: no line,
        no version in the reply)."""
        if self.layout == LAYOUT_PREVIOUS:
            return self._remember(record_key, fingerprint, reply)
        self.state[record_key] = f"{fingerprint}\n{version}\n{reply}"
        return f"{reply}|{version}"

    def _decline_replay(self, record_key: str, fingerprint: str, now: int) -> str | None:
        """decline_replay of limits/lua/_lib.lua: the stored decline and its catalog version
        ('' if the record has none). Layout 2 replays all after the fingerprint's line."""
        replay = self._replay(record_key, fingerprint, now)
        if replay is None or replay.startswith("ERR|") or self.layout == LAYOUT_PREVIOUS:
            return replay
        version, newline, reply = replay.partition("\n")
        return f"{reply}|{version}" if newline else f"{replay}|"

    # -- the scripts ------------------------------------------------------------------------
    def call(self, name: str, keys_: Sequence[str], args: Sequence[str],
             layout: int = keys.LAYOUT_VERSION):
        """Runs script `name` as the client calls it. ARGV starts with the call header: the
        script runs at the model's clock plus the clock offset, a script that changes state
        refuses a call past its deadline (call_time of limits/lua/_lib.lua), and the method
        gets KEYS, the rest of ARGV (its contract's `args`) and that time. `layout`: the
        scripts of this layout, or of the previous one (LAYOUT_PREVIOUS)."""
        assert layout in (keys.LAYOUT_VERSION, LAYOUT_PREVIOUS), layout
        self.layout = layout
        script = contracts.SCRIPTS[name]
        assert script.clock, name
        offset, deadline, self.caller, self.scope, *script_args = args
        now = self.clock() + int(offset)
        if script.deadline and 0 < int(deadline) <= now:
            return _err(E.DEADLINE_PASSED, deadline, now)
        return getattr(self, name)(list(keys_), script_args, now)

    # replay.lua
    def replay(self, keys_: list[str], args: list[str], now: int) -> str:
        """Read-only: the decision the key already has for this fingerprint, as reserve's
        retry answers it, without product rules (a hold's nodes, hold TTL and catalog version
        by its path id or its own fields), or REPLAY_NONE|now. Writes nothing."""
        k, a = contracts.REPLAY.keys.bind(keys_), contracts.REPLAY.args.bind(args)
        replay = self._decline_replay(k.idempotency, a.fingerprint, now)
        if replay is not None:
            return replay
        hold_id, found = self._approval_hold(a.base, k.idempotency, now)
        if not found:
            return f"{contracts.REPLAY_NONE}|{now}"
        prior: Mapping[str, str] = self.state[keys.hold(a.base, hold_id)]  # type: ignore[assignment]
        if prior.get(_FINGERPRINT) != a.fingerprint:
            return _err(E.IDEMPOTENCY_MISMATCH, "", now)
        ttl_ms = self._hold_ttl(a.base, prior, None)
        node_list = self._hold_nodes_or_none(a.base, prior[_NODES])
        if ttl_ms is None or node_list is None:
            return f"{contracts.REPLAY_NONE}|{now}"
        customer: Mapping[str, str] = self.state.get(k.customer) or {}  # type: ignore[assignment]
        if keys.FIELD_STATUS not in customer:
            return f"{contracts.REPLAY_NONE}|{now}"
        levels = _Levels.read(customer, node_list.split(contracts.NODES_SEPARATOR), now)
        return self._versioned(_reserve_retry(prior, hold_id, ttl_ms, levels),
                               self._hold_version(a.base, prior))

    # reserve.lua
    def reserve(self, keys_: list[str], args: list[str], now: int) -> str:
        """Authorizes one purchase: every limit level and velocity window must pass, then the
        amount is held at every level (docs/lifecycle.md)."""
        k, a = contracts.RESERVE.keys.bind(keys_), contracts.RESERVE.args.bind(args)
        r = _purchase(a, self.layout)
        if r is None:
            return _err(E.BAD_ARGUMENT, "reserve", now)
        replay = self._decline_replay(k.idempotency, a.fingerprint, now)
        if replay is not None:
            return replay
        # An approval keeps no record: its hold, whose id derives from the record's key, holds
        # the fingerprint.
        hold_id, _ = self._approval_hold(a.base, k.idempotency, now)
        prior: dict[str, str] | None = self.state.get(  # type: ignore[assignment]
            keys.hold(a.base, hold_id))
        if prior is not None and prior.get(_FINGERPRINT) != a.fingerprint:
            return _err(E.IDEMPOTENCY_MISMATCH, "", now)
        if prior is None:
            # Holds whose TTL has passed are released before the levels are read (a retry
            # changes nothing, so it reads the levels as they stand).
            self._release_expired(a.base, a.customer_id, k.due, k.outbox, now)
        self._ensure_layout(k.customer)
        customer: dict[str, str] = self.state.get(k.customer) or {}  # type: ignore[assignment]
        status = customer.get(keys.FIELD_STATUS)
        if status is None:
            return self._remember_decline(k.idempotency, a.fingerprint, r.catalog_version,
                                          authorization_reply(R.CUSTOMER_UNKNOWN, "", "", 0,
                                                              now, 0, 0, False, 0, "", "", []))
        levels = _Levels.read(customer, r.nodes, now)
        if prior is not None:
            ttl_ms = r.hold_ttl_ms  # layout 2's retry: the TTL of the rules at hand
            if self.layout != LAYOUT_PREVIOUS:
                ttl_ms = self._hold_ttl(a.base, prior, ttl_ms)  # type: ignore[assignment]
            return self._versioned(_reserve_retry(prior, hold_id, ttl_ms, levels),
                                   self._hold_version(a.base, prior))
        decision, windows = self._reserve_checks(a, r, status, customer, levels, now)
        if decision.reason != R.NONE:
            return self._remember_decline(k.idempotency, a.fingerprint, r.catalog_version,
                                          authorization_reply(
                decision.reason, decision.level, "", levels.available, now, 0, 0, False,
                decision.offer, decision.offer_level, "", levels.reply()))
        return self._reserve_write(k, a, r, hold_id, levels, windows, decision, now)

    def _reserve_checks(self, a: Fields, r: _Purchase, status: str,
                        customer: Mapping[str, str], levels: _Levels,
                        now: int) -> tuple[_Decision, _Windows | None]:
        """The checks in the documented decline order (limits/reasons.py), the first that
        applies declines: status, the product's effective dates, the hot path's product-rule
        decline, the allowed hours, the first-purchase maximum, the velocity counts, then the
        amount (velocity amounts, then credit), which may approve a counter-offer.
        Also returns the velocity windows read, if the product keeps any."""
        status_decline = _STATUS_DECLINES.get(status)
        if status_decline is not None:
            return _Decision(status_decline), None
        if not r.effective_at(now):
            return _Decision(R.PRODUCT_NOT_EFFECTIVE), None
        if r.rule_decline:
            return _Decision(R(r.rule_decline)), None
        if r.allowed_hours and not _within_hours(r.allowed_hours, self._zone_schedule(
                a.base, customer[keys.FIELD_TIMEZONE]), now):
            return _Decision(R.OUTSIDE_ALLOWED_HOURS), None
        if _first_purchase(r, customer) and r.amount_minor > r.first_purchase_max_minor:
            return _Decision(R.FIRST_PURCHASE_ABOVE_MAXIMUM), None
        windows = None
        amount_reason = R.NONE  # VELOCITY_AMOUNT_EXCEEDED or INSUFFICIENT_CREDIT, if either
        if r.has_velocity:
            windows = self._windows(a.base, customer, r.product_id, now)
            if windows.count_exceeded(r.day_count_max, r.month_count_max):
                return _Decision(R.VELOCITY_COUNT_EXCEEDED), windows
            if windows.amount_exceeded(r.amount_minor, r.day_amount_max_minor,
                                       r.month_amount_max_minor):
                amount_reason = R.VELOCITY_AMOUNT_EXCEEDED
        if amount_reason == R.NONE and levels.short(r.amount_minor) is not None:
            amount_reason = R.INSUFFICIENT_CREDIT
        if amount_reason == R.NONE:
            return _Decision(approved=r.amount_minor), windows
        return _offer_or_partial(r, amount_reason, levels, windows), windows

    def _reserve_write(self, k: Fields, a: Fields, r: _Purchase, hold_id: str,
                       levels: _Levels, windows: _Windows | None, decision: _Decision,
                       now: int) -> str:
        """An approval: held at every level, the windows count it, the hold is written and
        becomes due at its expiry, and the `authorized` event is appended."""
        # After this point the reservation must succeed.
        approved = decision.approved
        first = _first_purchase(r, self._hash(k.customer))
        node_list = ",".join(r.nodes)
        expires = now + r.hold_ttl_ms
        plan = (installment_plan_text(approved, r.installment_months, r.installment_fee_bps)
                if r.installment_months else "")
        self._change_levels(k.customer, r.nodes, held_by=approved)
        if windows is not None:
            self._count_in_windows(k.customer, r.product_id, windows, approved, 1)
        if first:
            self._hash(k.customer)[keys.FIELD_FIRST_PURCHASE + r.product_id] = str(now)
        hold = self._new_hold(a, r, decision, node_list, expires, plan, first)
        self.state[keys.hold(a.base, hold_id)] = hold
        self._zset(k.customer_holds)[hold_id] = expires
        due = self._zset(k.due)
        if a.customer_id not in due or expires < due[a.customer_id]:
            due[a.customer_id] = expires
        extra = {"requested_minor": str(r.amount_minor), "partial": "1"} if decision.partial else {}
        if plan:
            extra["installment_plan"] = plan
        if self.layout != LAYOUT_PREVIOUS:
            extra = {"catalog_version": r.catalog_version, **extra}
        self._xadd(k.outbox, type="authorized", event_id=hold_event_id(hold_id, hold, 1),
                   customer_id=a.customer_id, hold_id=hold_id, product_id=r.product_id,
                   merchant_id=a.merchant_id, mcc=a.mcc, channel=r.channel,
                   currency=r.currency, nodes=node_list, amount_minor=str(approved),
                   expires_at_ms=str(expires), at_ms=str(now), **extra)
        # A partial approval names its binding level in the counter-offer level (amount 0).
        return self._versioned(authorization_reply(
            R.NONE, "", hold_id, levels.available - approved, now, expires, approved,
            decision.partial, 0, decision.offer_level, plan,
            levels.reply(held_extra=approved)), r.catalog_version)

    def _versioned(self, reply: str, version: str) -> str:
        """reserve's reply ends with the catalog version (contracts.AUTHORIZATION's tail)."""
        return reply if self.layout == LAYOUT_PREVIOUS else f"{reply}|{version}"

    def _new_hold(self, a: Fields, r: _Purchase, decision: _Decision, node_list: str,
                  expires: int, plan: str, first: bool) -> dict[str, str]:
        """An approval's hold. The optional fields are written only when they apply: an open
        hold stays small. A first purchase's hold grows up to the first-purchase maximum."""
        # The path id names the catalog version and hold TTL too (layout 2: the nodes alone);
        # a hold whose id is taken keeps its nodes, its version and its TTL itself.
        path = self._path_id(a.base, node_list, r.catalog_version, r.hold_ttl_ms)
        hold = {_STATE: "open", _CUSTOMER: a.customer_id, _PRODUCT: r.product_id,
                _AMOUNT: str(decision.approved), _CAPTURED: "0",
                _NODES: path or node_list, _EXPIRES: str(expires), _SEQ: "1",
                _MERCHANT: a.merchant_id, _CURRENCY: r.currency, _FINGERPRINT: a.fingerprint}
        if path is None:
            hold[_CATALOG_VERSION] = r.catalog_version
            hold[_HOLD_TTL_MS] = str(r.hold_ttl_ms)
        if decision.partial:
            hold[_PARTIAL_LEVEL] = decision.offer_level
        if r.capture_tolerance_bps:
            hold[_TOLERANCE_BPS] = str(r.capture_tolerance_bps)
        if r.incremental:
            # A first purchase's hold grows to the first-purchase maximum, or the
            # channel's maximum where that is lower.
            hold[_INCREMENT_MAX] = str(min(r.first_purchase_max_minor, r.amount_max_minor)
                                       if first else r.amount_max_minor)
            hold[_VELOCITY_MAX] = f"{r.day_amount_max_minor}:{r.month_amount_max_minor}"
        if plan:
            hold[_PLAN] = plan
        return hold

    # increment.lua
    def increment(self, keys_: list[str], args: list[str], now: int) -> str:
        """Raises an open incremental hold by an increment: every level it drew on and the
        product's amount windows are checked for the increment only. The expiry stays."""
        k, a = contracts.INCREMENT.keys.bind(keys_), contracts.INCREMENT.args.bind(args)
        increment = _int_arg(a.amount_minor, 1, constants.AMOUNT_MINOR_MAX)
        if increment is None:
            return _err(E.BAD_ARGUMENT, "increment", now)
        owner, hidden = self._hold_owner(k.hold, now)
        if hidden is not None:
            return hidden
        replay = self._replay(k.idempotency, a.fingerprint, now)
        if replay is not None:
            return replay
        # Refusals (nothing is remembered): the hold is unknown, closed, or not incremental.
        h, refusal = self._open_hold(k.hold, owner, a.base, a.hold_id, k.due, k.outbox, now)
        if refusal is not None:
            return refusal
        path = self._hold_nodes(a.base, h[_NODES])
        if _INCREMENT_MAX not in h:
            return _err(E.INCREMENT_NOT_ALLOWED, "", now)
        self._ensure_layout(keys.customer(a.base, h[_CUSTOMER]))
        customer = self._hash(keys.customer(a.base, h[_CUSTOMER]))
        levels = _Levels.read(customer, path.split(","), now)
        decision, windows = self._increment_checks(a.base, h, customer, levels, increment, now)
        if decision.reason != R.NONE:
            # Declines are remembered for idempotency.
            amount = int(h[_AMOUNT])
            return self._remember(k.idempotency, a.fingerprint, authorization_reply(
                decision.reason, decision.level, a.hold_id, levels.available, now,
                int(h[_EXPIRES]), amount, False, decision.offer, decision.offer_level,
                h.get(_PLAN, ""), levels.reply(), held=amount - int(h[_CAPTURED])))
        return self._increment_write(k, a, h, path, levels, windows, increment, now)

    def _increment_checks(self, base: str, h: dict[str, str], customer: Mapping[str, str],
                          levels: _Levels, increment: int,
                          now: int) -> tuple[_Decision, _Windows | None]:
        """The checks in the documented decline order: status, then the amount (the product's
        amount max, the velocity amounts, then credit) with a counter-offer: the largest
        increment that fits. Also returns the windows read, if the product keeps any."""
        status = customer.get(keys.FIELD_STATUS)
        if status is None:
            return _Decision(R.CUSTOMER_UNKNOWN), None
        status_decline = _STATUS_DECLINES.get(status)
        if status_decline is not None:
            return _Decision(status_decline), None
        # The windows count the increment's amount (not a purchase) when the product keeps them.
        product_id = h[_PRODUCT]
        day_max, month_max = map(int, h[_VELOCITY_MAX].split(":"))
        track = day_max + month_max > 0 or keys.FIELD_VELOCITY + product_id in customer
        windows = self._windows(base, customer, product_id, now) if track else None
        amount, amount_max = int(h[_AMOUNT]), int(h[_INCREMENT_MAX])
        if amount + increment > amount_max:
            reason = R.AMOUNT_ABOVE_MAXIMUM
        elif windows is not None and windows.amount_exceeded(increment, day_max, month_max):
            reason = R.VELOCITY_AMOUNT_EXCEEDED
        elif levels.short(increment) is not None:
            reason = R.INSUFFICIENT_CREDIT
        else:
            return _Decision(approved=amount + increment), windows
        offer, offer_level = counter_offer([
            *counter_offer_candidates(levels.nodes, levels.frees, day_max, month_max, windows),
            ("amount_max", max(0, amount_max - amount))])
        level = levels.short(increment) if reason == R.INSUFFICIENT_CREDIT else ""
        return _Decision(reason, level or "", offer, offer_level), windows

    def _increment_write(self, k: Fields, a: Fields, h: dict[str, str], path: str,
                         levels: _Levels, windows: _Windows | None, increment: int,
                         now: int) -> str:
        """An approved increment: held at every level, counted in the windows, the hold's
        amount (and plan) grow, and the `incremented` event is appended."""
        # After this point the increment must succeed.
        captured, total = int(h[_CAPTURED]), int(h[_AMOUNT]) + increment
        customer_key = keys.customer(a.base, h[_CUSTOMER])
        self._change_levels(customer_key, levels.nodes, held_by=increment)
        if windows is not None:
            self._count_in_windows(customer_key, h[_PRODUCT], windows, increment, 0)
        seq = int(h[_SEQ]) + 1
        h.setdefault(_FIRST_AMOUNT, h[_AMOUNT])  # answers a retry of the original
        h.update({_AMOUNT: str(total), _SEQ: str(seq)})
        plan, extra = h.get(_PLAN, ""), {}
        if plan:
            # The plan is recomputed for the new principal, with the same term and fee.
            months, *_, fee_bps = plan.split(":")
            plan = h[_PLAN] = installment_plan_text(total, int(months), int(fee_bps))
            extra["installment_plan"] = plan
        self._xadd(k.outbox, type="incremented", event_id=hold_event_id(a.hold_id, h, seq),
                   customer_id=h[_CUSTOMER], hold_id=a.hold_id, product_id=h[_PRODUCT],
                   merchant_id=h[_MERCHANT], currency=h[_CURRENCY], nodes=path,
                   amount_minor=str(increment), amount_total_minor=str(total),
                   at_ms=str(now), **extra)
        return self._remember(k.idempotency, a.fingerprint, authorization_reply(
            R.NONE, "", a.hold_id, levels.available - increment, now, int(h[_EXPIRES]), total,
            False, 0, "", plan, levels.reply(held_extra=increment), held=total - captured))

    # set_raise.lua
    def set_raise(self, keys_: list[str], args: list[str], now: int) -> str:
        """Raises one level's cap until a time, or removes the raise (0)."""
        k, a = contracts.SET_RAISE.keys.bind(keys_), contracts.SET_RAISE.args.bind(args)
        raise_minor = _int_arg(a.raise_minor, 0, constants.CAP_MINOR_MAX)
        expires = _int_arg(a.expires_at_ms, 0, 2**63)
        if raise_minor is None or expires is None or not a.node:
            return _err(E.BAD_ARGUMENT, "set_raise", now)
        c: dict[str, str] | None = self.state.get(k.customer)  # type: ignore[assignment]
        if c is None:
            return _err(E.CUSTOMER_UNKNOWN, "", now)
        # Removing a raise (0) needs no expiry; a raise must end in the future, within bounds.
        if raise_minor > 0 and expires <= now:
            return _err(E.RAISE_EXPIRES_IN_PAST, str(now), now)
        if raise_minor > 0 and expires > now + RAISE_DURATION_MS_MAX:
            return _err(E.RAISE_TOO_LONG, str(now + RAISE_DURATION_MS_MAX), now)
        # The raise stored before, lapsed or not, for the audit log.
        self._ensure_layout(k.customer)
        stored = c.get(keys.FIELD_LEVEL + a.node)
        level = keys.read_level(stored)
        before_raise, before_expires = level.raise_minor, level.raise_expires_ms

        # After this point the change must succeed.
        seq = self._hincrby(k.customer, keys.FIELD_EVENT_SEQ, 1)
        if raise_minor <= 0:
            expires = 0
        if raise_minor > 0 or stored is not None:
            c[keys.FIELD_LEVEL + a.node] = keys.level_text(level.cap, level.held, level.used,
                                                           raise_minor, expires)
        self._xadd(k.outbox, type="limit_raised", event_id=f"c:{a.customer_id}:{seq}",
                   customer_id=a.customer_id, node=a.node, raise_minor=str(raise_minor),
                   expires_at_ms=str(expires), at_ms=str(now))
        return _ok(contracts.SET_RAISE.reply, cap_minor=level.cap or 0,
                   raise_minor=raise_minor, held_minor=level.held,
                   used_minor=level.used, decided_at_ms=now,
                   raise_before_minor=before_raise, raise_before_expires_at_ms=before_expires)

    # capture.lua
    def capture(self, keys_: list[str], args: list[str], now: int) -> str:
        """Captures some or all of an open hold; with the product's capture tolerance (tips)
        the captures may total more than the hold, the excess being new credit."""
        k, a = contracts.CAPTURE.keys.bind(keys_), contracts.CAPTURE.args.bind(args)
        amount = _int_arg(a.amount_minor, 1, constants.AMOUNT_MINOR_MAX)
        final = _int_arg(a.final, 0, 1)
        if amount is None or final is None:
            return _err(E.BAD_ARGUMENT, "capture", now)
        # A hold of a merchant outside the caller's scope is answered as one that does not
        # exist.
        owner, hidden = self._hold_owner(k.hold, now)
        if hidden is not None:
            return hidden
        replay = self._replay(k.idempotency, a.fingerprint, now)
        if replay is not None:
            return replay
        h, refusal = self._open_hold(k.hold, owner, a.base, a.hold_id, k.due, k.outbox, now)
        if refusal is not None:
            return refusal
        path = self._hold_nodes(a.base, h[_NODES])
        authorized, captured_before = int(h[_AMOUNT]), int(h[_CAPTURED])
        # The product's capture tolerance: captures may total a + floor(a * tb / 10000).
        capturable = (authorized + authorized * int(h.get(_TOLERANCE_BPS, 0)) // 10_000
                      - captured_before)
        if amount > capturable:
            return _err(E.CAPTURE_EXCEEDS_HELD, str(capturable), now)
        # The excess over what is still held is new credit: it adds to held + used and must
        # fit every level.
        excess = max(0, amount - (authorized - captured_before))
        self._ensure_layout(keys.customer(a.base, h[_CUSTOMER]))
        if excess:
            customer: dict[str, str] = self.state.get(  # type: ignore[assignment]
                keys.customer(a.base, h[_CUSTOMER])) or {}
            short = _Levels.read(customer, path.split(","), now).short(excess)
            if short is not None:
                return _err(E.CAPTURE_EXCEEDS_CREDIT, short, now)
        return self._capture_write(k, a, h, path, amount, excess, final, now)

    def _capture_write(self, k: Fields, a: Fields, h: dict[str, str], path: str, amount: int,
                       excess: int, final: int, now: int) -> str:
        """The captured amount moves from held to used at every level and onto the path's
        balance; a final capture releases what stays held; a hold holding nothing closes."""
        # After this point the capture must succeed.
        held = int(h[_AMOUNT]) - int(h[_CAPTURED])
        released = held - (amount - excess) if final else 0
        held_after = held - (amount - excess) - released
        captured_total = int(h[_CAPTURED]) + amount
        customer_id = h[_CUSTOMER]
        customer_key = keys.customer(a.base, customer_id)
        self._change_levels(customer_key, path.split(","), -(amount - excess + released),
                            amount)
        self._add_balance(customer_key, path, amount)
        seq = int(h[_SEQ]) + 1
        state = "open"
        h.update({_CAPTURED: str(captured_total), _SEQ: str(seq)})
        if held_after == 0:
            state = "captured"
            self._close_hold(k.hold, state, seq, now)
            self._forget_open_hold(a.base, customer_id, a.hold_id, k.due)
        self._xadd(k.outbox, type="captured", event_id=hold_event_id(a.hold_id, h, seq),
                   customer_id=customer_id, hold_id=a.hold_id, product_id=h[_PRODUCT],
                   merchant_id=h[_MERCHANT], currency=h[_CURRENCY], nodes=path,
                   amount_minor=str(amount), released_minor=str(released),
                   excess_minor=str(excess), captured_total_minor=str(captured_total),
                   final=str(final), at_ms=str(now))
        return self._remember(k.idempotency, a.fingerprint, _ok(
            contracts.CAPTURE.reply, state=state, captured_minor=amount,
            captured_total_minor=captured_total, released_minor=released, held_minor=held_after,
            over_captured_minor=excess, decided_at_ms=now))

    # void.lua
    def void(self, keys_: list[str], args: list[str], now: int) -> str:
        """Cancels an open hold: what it still holds is released at every level it drew on;
        what was captured stays used."""
        k, a = contracts.VOID.keys.bind(keys_), contracts.VOID.args.bind(args)
        owner, hidden = self._hold_owner(k.hold, now)
        if hidden is not None:
            return hidden
        replay = self._replay(k.idempotency, a.fingerprint, now)
        if replay is not None:
            return replay
        h, refusal = self._open_hold(k.hold, owner, a.base, a.hold_id, k.due, k.outbox, now)
        if refusal is not None:
            return refusal
        path = self._hold_nodes(a.base, h[_NODES])

        # After this point the void must succeed.
        released = int(h[_AMOUNT]) - int(h[_CAPTURED])
        customer_id = h[_CUSTOMER]
        self._ensure_layout(keys.customer(a.base, customer_id))
        self._change_levels(keys.customer(a.base, customer_id), path.split(","), -released)
        seq = int(h[_SEQ]) + 1
        self._close_hold(k.hold, "voided", seq, now)
        self._forget_open_hold(a.base, customer_id, a.hold_id, k.due)
        self._xadd(k.outbox, type="voided", event_id=hold_event_id(a.hold_id, h, seq),
                   customer_id=customer_id, hold_id=a.hold_id, product_id=h[_PRODUCT],
                   merchant_id=h[_MERCHANT], currency=h[_CURRENCY], nodes=path,
                   released_minor=str(released), captured_total_minor=h[_CAPTURED],
                   at_ms=str(now))
        return self._remember(k.idempotency, a.fingerprint, _ok(
            contracts.VOID.reply, state="voided", released_minor=released,
            captured_total_minor=h[_CAPTURED], decided_at_ms=now))

    # refund.lua
    def refund(self, keys_: list[str], args: list[str], now: int) -> str:
        """Gives back some or all of what a hold captured, less what was refunded: what the
        path still owes is restored, what the customer had repaid is owed back."""
        k, a = contracts.REFUND.keys.bind(keys_), contracts.REFUND.args.bind(args)
        amount = _int_arg(a.amount_minor, 1, constants.AMOUNT_MINOR_MAX)
        if amount is None:
            return _err(E.BAD_ARGUMENT, "refund", now)
        _, hidden = self._hold_owner(k.hold, now)
        if hidden is not None:
            return hidden
        replay = self._replay(k.idempotency, a.fingerprint, now)
        if replay is not None:
            return replay
        h: dict[str, str] | None = self.state.get(k.hold)  # type: ignore[assignment]
        if h is None:
            return _err(E.HOLD_NOT_FOUND, "", now)
        path = self._hold_nodes(a.base, h[_NODES])
        refunded = int(h.get(_REFUNDED, 0))
        refundable = int(h[_CAPTURED]) - refunded
        if amount > refundable:
            return _err(E.REFUND_EXCEEDS_CAPTURED, str(refundable), now)
        customer_key = keys.customer(a.base, h[_CUSTOMER])
        customer: dict[str, str] = self.state.get(customer_key) or {}  # type: ignore[assignment]
        restored = min(amount, int(customer.get(keys.FIELD_BALANCE + path, 0)))
        overpaid = amount - restored

        # After this point the refund must succeed.
        if restored:
            self._ensure_layout(customer_key)
            self._change_levels(customer_key, path.split(","), used_by=-restored)
            self._add_balance(customer_key, path, -restored)
        if overpaid:
            self._hincrby(customer_key, keys.FIELD_CREDIT_BALANCE, overpaid)
        seq = int(h[_SEQ]) + 1
        h.update({_REFUNDED: str(refunded + amount), _SEQ: str(seq)})
        self._xadd(k.outbox, type="refunded", event_id=hold_event_id(a.hold_id, h, seq),
                   customer_id=h[_CUSTOMER], hold_id=a.hold_id, product_id=h[_PRODUCT],
                   merchant_id=h[_MERCHANT], currency=h[_CURRENCY], nodes=path,
                   amount_minor=str(amount), restored_minor=str(restored),
                   overpaid_minor=str(overpaid), refunded_total_minor=str(refunded + amount),
                   at_ms=str(now))
        return self._remember(k.idempotency, a.fingerprint, _ok(
            contracts.REFUND.reply, refunded_minor=amount,
            refunded_total_minor=refunded + amount, refundable_minor=refundable - amount,
            restored_minor=restored, decided_at_ms=now))

    # reverse.lua
    def reverse(self, keys_: list[str], args: list[str], now: int) -> str:
        """Reverses an authorization by the original request's idempotency key: an open hold
        it made is released; an original never seen is tombstoned, so it is declined REVERSED
        when it arrives. The first answer is the answer to every repeat."""
        k, a = contracts.REVERSE.keys.bind(keys_), contracts.REVERSE.args.bind(args)
        # What an original never seen answers; to a caller bound to merchants, also what an
        # original of another merchant answers, with nothing written: a tombstone or a record
        # here would answer that merchant's own calls.
        unseen = _ok(contracts.REVERSE.reply, outcome="tombstoned", hold_id="",
                     released_minor=0, decided_at_ms=now)
        replay = self._replay(k.reversal, _REVERSAL, now)
        if replay is not None:
            return replay if self._may_see(a.base, replay) else unseen
        original: str | None = self.state.get(k.original_idempotency)  # type: ignore[assignment]
        outcome, hold_id, h = self._reverse_outcome(k, a, original, now)
        if outcome is None:
            return unseen

        # After this point the reversal must succeed.
        if outcome == "tombstoned" and original is None:
            self._remember(k.original_idempotency, keys.TOMBSTONE, authorization_reply(
                R.REVERSED, "", "", 0, now, 0, 0, False, 0, "", "", []))
        # A release is an event of the hold's; anything else is named by the reversal and its
        # time.
        event = {"event_id": f"z:{a.customer_id}|{a.original_idempotency_key}:{now}",
                 "product_id": "", "merchant_id": "", "currency": "", "nodes": "",
                 "released_minor": "0"}
        if outcome == "released":
            assert h is not None
            event.update(self._reverse_release(k, a, hold_id, h, now))
        self._xadd(k.outbox, type="reversed", event_id=event["event_id"],
                   customer_id=a.customer_id, hold_id=hold_id, product_id=event["product_id"],
                   merchant_id=event["merchant_id"], currency=event["currency"],
                   nodes=event["nodes"], outcome=outcome,
                   released_minor=event["released_minor"], at_ms=str(now))
        return self._remember(k.reversal, _REVERSAL, _ok(
            contracts.REVERSE.reply, outcome=outcome, hold_id=hold_id,
            released_minor=event["released_minor"], decided_at_ms=now))

    def _may_see(self, base: str, reply: str) -> bool:
        """Whether the caller may see a reversal's stored answer: one that names a hold only
        if the hold is within the caller's merchant scope."""
        fields = reply.split("|")
        if not self.scope or fields[0] != "OK" or not fields[2]:
            return True
        hold: dict[str, str] = self.state.get(keys.hold(base, fields[2])) or {}  # type: ignore
        return keys.in_merchant_scope(self.scope, hold.get(_MERCHANT))

    def _reverse_outcome(self, k: Fields, a: Fields, original: str | None,
                         now: int) -> tuple[str | None, str, dict[str, str] | None]:
        """(outcome, hold id, the open hold to release): original_declined if the original's
        record is a decline's (only declines keep one); released (or already_closed) if it
        was approved, or None if its hold is of a merchant outside the caller's scope; else
        tombstoned (also when an earlier reversal's tombstone is there)."""
        approved_id, approval_exists = self._approval_hold(a.base, k.original_idempotency, now)
        if original is not None and not original.startswith(keys.TOMBSTONE + "\n"):
            return "original_declined", "", None
        if original is None and approval_exists:
            hold_key = keys.hold(a.base, approved_id)
            owner, hidden = self._hold_owner(hold_key, now)
            if hidden is not None:
                return None, "", None
            # Releases what had expired first; a closed hold is refused.
            h, refusal = self._open_hold(hold_key, owner, a.base, approved_id, k.due, k.outbox,
                                         now)
            return ("already_closed" if refusal else "released"), approved_id, h
        return "tombstoned", "", None

    def _reverse_release(self, k: Fields, a: Fields, hold_id: str, h: dict[str, str],
                         now: int) -> dict[str, str]:
        """What the reversed hold still holds leaves every level and it closes as reversed.
        Returns the event's fields about the hold."""
        seq = int(h[_SEQ]) + 1
        event = {"event_id": hold_event_id(hold_id, h, seq), "product_id": h[_PRODUCT],
                 "merchant_id": h[_MERCHANT], "currency": h[_CURRENCY],
                 "nodes": self._hold_nodes(a.base, h[_NODES])}
        released = int(h[_AMOUNT]) - int(h[_CAPTURED])
        self._ensure_layout(k.customer)
        self._change_levels(k.customer, event["nodes"].split(","), -released)
        self._close_hold(keys.hold(a.base, hold_id), "reversed", seq, now)
        self._zrem(k.customer_holds, hold_id)
        self._update_due(k.customer_holds, k.due, a.customer_id)
        return {**event, "released_minor": str(released)}

    # force_capture.lua
    def force_capture(self, keys_: list[str], args: list[str], now: int) -> str:
        """Posts a late clearing settled without a live hold, even over a cap (the reply names
        those levels): used grows and a new hold is written already captured. An original is
        posted at most once."""
        contract = contracts.FORCE_CAPTURE
        if len(args) <= len(contract.args):  # no limit node
            return _err(E.BAD_ARGUMENT, "force_capture", now)
        k, a = contract.keys.bind(keys_), contract.args.bind(args)
        amount = _int_arg(a.amount_minor, 1, constants.AMOUNT_MINOR_MAX)
        if amount is None:
            return _err(E.BAD_ARGUMENT, "force_capture", now)
        replay = self._replay(k.idempotency, a.fingerprint, now)
        if replay is not None:
            return replay
        # What had expired is released first (the customer's due holds, and the original if it
        # is the customer's): the original then counts as expired, and held is what it is.
        self._release_expired(a.base, a.customer_id, k.due, k.outbox, now)
        original: dict[str, str] = (  # type: ignore[assignment]
            (self.state.get(k.original_hold) or {}) if a.original_hold_id else {})
        if not keys.in_merchant_scope(self.scope, original.get(_MERCHANT)):
            # An original of a merchant outside the caller's scope is treated as one that is
            # gone: neither released, checked nor marked.
            original = {}
        owner = original.get(_CUSTOMER)
        if owner == a.customer_id:
            self._release_if_due(a.base, a.customer_id, a.original_hold_id, k.due, k.outbox,
                                 now)
        self._ensure_layout(k.customer)
        customer: dict[str, str] = self.state.get(k.customer) or {}  # type: ignore[assignment]
        refusal = _force_capture_refusal(customer, original, owner, a.customer_id, now)
        if refusal is not None:
            return refusal
        levels = _Levels.read(customer, a.rest, now)
        return self._force_capture_write(k, a, amount, levels, original, owner, now)

    def _force_capture_write(self, k: Fields, a: Fields, amount: int, levels: _Levels,
                             original: dict[str, str], owner: str | None, now: int) -> str:
        """Used and the path's balance grow by the amount; the new hold is written closed as
        captured; the original is marked as posted."""
        over = ",".join(node for node, cap, held, used in levels.rows
                        if held + used + amount > cap)
        # After this point the force capture must succeed.
        node_list = ",".join(a.rest)
        self._change_levels(k.customer, a.rest, used_by=amount)
        self._add_balance(k.customer, node_list, amount)
        hold = {_CUSTOMER: a.customer_id, _PRODUCT: a.product_id, _AMOUNT: str(amount),
                _CAPTURED: str(amount), _NODES: node_list, _MERCHANT: a.merchant_id,
                _CURRENCY: a.currency, _CREATED_AT: str(now), _FORCE_CAPTURE: "1"}
        if a.original_hold_id:
            hold[_ORIGINAL_HOLD] = a.original_hold_id
        self.state[k.hold] = hold
        self._close_hold(k.hold, "captured", 1, now)
        if owner is not None:
            original[_FORCE_CAPTURED_AS] = a.hold_id  # a later force capture naming it is refused
        self._xadd(k.outbox, type="force_captured", event_id=f"{a.hold_id}:1",
                   customer_id=a.customer_id, hold_id=a.hold_id, product_id=a.product_id,
                   merchant_id=a.merchant_id, mcc=a.mcc, channel=a.channel,
                   currency=a.currency, nodes=node_list, amount_minor=str(amount),
                   over_limit=over, original_hold_id=a.original_hold_id, at_ms=str(now))
        return self._remember(k.idempotency, a.fingerprint, _ok(
            contracts.FORCE_CAPTURE.reply, levels.reply(used_extra=amount), hold_id=a.hold_id,
            over_limit_levels=over, decided_at_ms=now))

    # repay.lua
    def repay(self, keys_: list[str], args: list[str], now: int) -> str:
        """A repayment pays the customer's path balances greedily in the gateway's order, then
        the other paths by name; what exceeds every balance is owed back to the customer."""
        k, a = contracts.REPAY.keys.bind(keys_), contracts.REPAY.args.bind(args)
        amount = _int_arg(a.amount_minor, 1, constants.AMOUNT_MINOR_MAX)
        if amount is None or len(a.rest) > constants.REPAY_PATHS_MAX:
            return _err(E.BAD_ARGUMENT, "repay", now)
        replay = self._replay(k.idempotency, a.fingerprint, now)
        if replay is not None:
            return replay
        self._ensure_layout(k.customer)
        customer: dict[str, str] = self.state.get(k.customer) or {}  # type: ignore[assignment]
        if not customer:
            return _err(E.CUSTOMER_UNKNOWN, "", now)
        balances = {field[len(keys.FIELD_BALANCE):]: int(value)
                    for field, value in customer.items() if field.startswith(keys.FIELD_BALANCE)}
        allocations, left = _repay_allocations(amount, balances, a.rest)

        # After this point the repayment must succeed.
        for path, paid in allocations:
            self._change_levels(k.customer, path.split(","), used_by=-paid)
            self._add_balance(k.customer, path, -paid)
            self._repay_event(k, a.customer_id, "repaid", path, paid, now)
        if left:
            self._hincrby(k.customer, keys.FIELD_CREDIT_BALANCE, left)
            self._repay_event(k, a.customer_id, "overpaid", "", left, now)
        repaid = amount - left
        return self._remember(k.idempotency, a.fingerprint, _ok(
            contracts.REPAY.reply, allocations, repaid_minor=repaid, overpaid_minor=left,
            outstanding_minor=sum(balances.values()) - repaid, decided_at_ms=now))

    def _repay_event(self, k: Fields, customer_id: str, kind: str, nodes: str, value: int,
                     now: int) -> None:
        seq = self._hincrby(k.customer, keys.FIELD_EVENT_SEQ, 1)
        self._xadd(k.outbox, type=kind, event_id=f"c:{customer_id}:{seq}",
                   customer_id=customer_id, nodes=nodes, amount_minor=str(value), at_ms=str(now))

    # expire.lua
    def expire(self, keys_: list[str], args: list[str], now: int) -> str:
        """Releases the customer's holds whose TTL has passed (the sweeper's call)."""
        k, a = contracts.EXPIRE.keys.bind(keys_), contracts.EXPIRE.args.bind(args)
        released = self._release_expired(a.base, a.customer_id, k.due, k.outbox, now)
        if released == 0:
            # Nothing was due: the due entry was early (the hold closed meanwhile).
            self._update_due(k.customer_holds, k.due, a.customer_id)
        return "|".join(_wire(contracts.EXPIRE.reply, released=released, now_ms=now))

    # credit.lua
    def credit(self, keys_: list[str], args: list[str], now: int) -> list[str]:
        """The customer hash after releasing expired holds, then the schedule of the
        customer's zone; only the time for an unknown customer."""
        k, a = contracts.CREDIT.keys.bind(keys_), contracts.CREDIT.args.bind(args)
        if k.customer not in self.state:
            return _wire(contracts.CREDIT.reply, now_ms=now)
        self._release_expired(a.base, a.customer_id, k.due, k.outbox, now)
        self._ensure_layout(k.customer)
        c: dict[str, str] = self.state[k.customer]  # type: ignore[assignment]
        schedule = self._zone_schedule(a.base, c[keys.FIELD_TIMEZONE])
        return _wire(contracts.CREDIT.reply, [*c.items(), (keys.FIELD_TZ_SCHEDULE, schedule)],
                     now_ms=now)

    # due.lua
    def due(self, keys_: list[str], args: list[str], now: int) -> list[str] | str:
        """The partition's customers whose earliest open hold has expired, earliest first, at
        most count_max of them. Reads only."""
        k, a = contracts.DUE.keys.bind(keys_), contracts.DUE.args.bind(args)
        count_max = _int_arg(a.count_max, 1, _DUE_COUNT_MAX)
        if count_max is None:
            return _err(E.BAD_ARGUMENT, "due", now)
        due: dict[str, int] = self.state.get(k.due) or {}  # type: ignore[assignment]
        customers = sorted((score, customer_id) for customer_id, score in due.items()
                           if score <= now)[:count_max]
        return _wire(contracts.DUE.reply, [(customer_id,) for _, customer_id in customers],
                     now_ms=now)

    # put_customer.lua
    def put_customer(self, keys_: list[str], args: list[str], now: int) -> str:
        """Creates or replaces a customer's status, timezone and caps; usage stays, and caps
        the new set does not name are removed."""
        contract = contracts.PUT_CUSTOMER
        k, a = contract.keys.bind(keys_), contract.args.bind(args)
        if a.status not in ("active", "frozen", "closed", "overdue"):
            return _err(E.BAD_ARGUMENT, "status", now)
        new_caps: dict[str, int] = {}
        caps_text = []
        for node, value in a.rest:
            cap = _int_arg(value, 0, constants.CAP_MINOR_MAX)
            if cap is None:
                return _err(E.BAD_ARGUMENT, "caps_minor", now)
            new_caps[node] = cap
            caps_text.append(f"{node}={cap}")

        # The customer before the change, for the audit log.
        self._ensure_layout(k.customer)
        before: dict[str, str] = self.state.get(k.customer) or {}  # type: ignore[assignment]
        status_before = before.get(keys.FIELD_STATUS, "")
        levels = {field[len(keys.FIELD_LEVEL):]: keys.read_level(value)
                  for field, value in before.items() if field.startswith(keys.FIELD_LEVEL)}
        caps_before = ",".join(sorted(f"{node}={level.cap}" for node, level in levels.items()
                                      if level.cap is not None))

        # After this point the change must succeed. A level keeps its usage and raise under
        # its new cap; a level left without a cap goes once nothing else is in it.
        c = self._hash(k.customer)
        for node, level in levels.items():
            cap = new_caps.get(node)
            if cap is None and not (level.held or level.used or level.raise_minor):
                del c[keys.FIELD_LEVEL + node]
            else:
                c[keys.FIELD_LEVEL + node] = keys.level_text(
                    cap, level.held, level.used, level.raise_minor, level.raise_expires_ms)
        for node, cap in new_caps.items():
            if node not in levels:
                c[keys.FIELD_LEVEL + node] = keys.level_text(cap, 0, 0)
        seq = self._hincrby(k.customer, keys.FIELD_EVENT_SEQ, 1)
        c.update({keys.FIELD_STATUS: a.status, keys.FIELD_TIMEZONE: a.timezone,
                  keys.FIELD_LAYOUT: str(keys.CUSTOMER_LAYOUT)})
        self._hash(k.timezones)[a.timezone] = a.schedule
        self._xadd(k.outbox, type="customer_put", event_id=f"c:{a.customer_id}:{seq}",
                   customer_id=a.customer_id, status=a.status, timezone=a.timezone,
                   caps=",".join(caps_text), at_ms=str(now))
        return _ok(contract.reply, decided_at_ms=now, status_before=status_before,
                   caps_before=caps_before)


def _reserve_retry(prior: Mapping[str, str], hold_id: str, ttl_ms: int, levels: _Levels) -> str:
    """A retry of an approval answers the first decision (the amount before any increment,
    partial approval and its binding level, plan) with the levels and availability of now.
    The decision's time is the expiry less the hold TTL: the hold stores no creation time."""
    approved = int(prior.get(_FIRST_AMOUNT, prior[_AMOUNT]))
    plan = ""
    if _PLAN in prior:
        months, *_, fee_bps = prior[_PLAN].split(":")
        plan = installment_plan_text(approved, int(months), int(fee_bps))
    expires = int(prior[_EXPIRES])
    return authorization_reply(R.NONE, "", hold_id, levels.available, expires - ttl_ms, expires,
                               approved, _PARTIAL_LEVEL in prior, 0,
                               prior.get(_PARTIAL_LEVEL, ""), plan, levels.reply())


def _first_purchase(r: _Purchase, customer: Mapping[str, str]) -> bool:
    """Whether a purchase is the customer's first of a product with a first-purchase maximum:
    no marker (keys.FIELD_FIRST_PURCHASE) of an earlier approval."""
    return bool(r.first_purchase_max_minor) and \
        keys.FIELD_FIRST_PURCHASE + r.product_id not in customer


def _offer_or_partial(r: _Purchase, reason: R, levels: _Levels,
                      windows: _Windows | None) -> _Decision:
    """A purchase declined for its amount carries a counter-offer (below the product's minimum
    nothing is offered, the level is still named); with partial approval asked and allowed,
    the counter-offer is approved instead."""
    offer, offer_level = counter_offer(counter_offer_candidates(
        levels.nodes, levels.frees, r.day_amount_max_minor, r.month_amount_max_minor, windows))
    if offer < max(1, r.amount_min_minor):
        offer = 0
    if not r.partial_approval or offer == 0:
        level = levels.short(r.amount_minor) if reason == R.INSUFFICIENT_CREDIT else ""
        return _Decision(reason, level or "", offer, offer_level)
    return _Decision(approved=offer, partial=True, offer_level=offer_level)


def _force_capture_refusal(customer: Mapping[str, str], original: Mapping[str, str],
                           owner: str | None, customer_id: str, now: int) -> str | None:
    """Refusals, in order. Any status may be force captured: the purchase happened. A missing
    original is no obstacle; a voided, reversed or expired one may be force captured once; a
    captured one was posted already."""
    if keys.FIELD_STATUS not in customer:
        return _err(E.CUSTOMER_UNKNOWN, "", now)
    if owner is None:
        return None
    if owner != customer_id:
        return _err(E.HOLD_OF_OTHER_CUSTOMER, "", now)
    if original[_STATE] == "open":
        return _err(E.HOLD_STILL_OPEN, original[_EXPIRES], now)
    if original[_STATE] == "captured":
        return _err(E.HOLD_CAPTURED, original[_CLOSED_AT], now)
    if _FORCE_CAPTURED_AS in original:
        return _err(E.ALREADY_FORCE_CAPTURED, original[_FORCE_CAPTURED_AS], now)
    return None


def _repay_allocations(amount: int, balances: Mapping[str, int],
                       order: Sequence[str]) -> tuple[list[tuple[str, int]], int]:
    """(path, paid) allocations and what is left: the gateway's order, then the customer's
    other paths by name, each paid up to its balance; at most REPAY_PATHS_MAX allocations."""
    walk = list(dict.fromkeys(order))
    listed = set(walk)
    walk += sorted(path for path in balances if path not in listed)
    left, allocations = amount, []
    for path in walk:
        if left == 0 or len(allocations) == constants.REPAY_PATHS_MAX:
            break
        if balances.get(path, 0) > 0:
            paid = min(left, balances[path])
            allocations.append((path, paid))
            left -= paid
    return allocations, left


def hold_event_id(hold_id: str, hold: Mapping[str, str], seq: int) -> str:
    """hold_event_id of limits/lua/_lib.lua: the expiry names the hold's generation."""
    expires = hold.get(_EXPIRES)
    return f"{hold_id}:{expires}:{seq}" if expires is not None else f"{hold_id}:{seq}"


def installment_plan_text(principal: int, months: int, fee_bps: int) -> str:
    return installments.plan(principal, months, fee_bps).text()


def counter_offer_candidates(nodes: list[str], frees: list[int], day_max: int, month_max: int,
                             windows: _Windows | None) -> list[tuple[str, int]]:
    """counter_offer of limits/lua/_lib.lua: every node's free credit (root first), then the
    room left in the day's and the month's amount windows (a max of 0: not limited)."""
    day_amount, month_amount = (windows.day_amount, windows.month_amount) if windows else (0, 0)
    candidates = list(zip(nodes, frees, strict=True))
    if day_max:
        candidates.append(("velocity.day", max(0, day_max - day_amount)))
    if month_max:
        candidates.append(("velocity.month", max(0, month_max - month_amount)))
    return candidates


def counter_offer(candidates: list[tuple[str, int]]) -> tuple[int, str]:
    """(offer, level): the least candidate, named by the first that holds it."""
    offer = min(value for _, value in candidates)
    return offer, next(name for name, value in candidates if value == offer)


def _windows_usage(stored: str | None, day: int, month: int) -> tuple[int, int, int, int]:
    """(day amount, day count, month amount, month count) of a velocity field (limits/keys.py
    FIELD_VELOCITY): a window other than the current one counts nothing."""
    if not stored:
        return 0, 0, 0, 0
    number_d, amount_d, count_d, number_m, amount_m, count_m = map(int, stored.split(":"))
    day_usage = (amount_d, count_d) if number_d == day else (0, 0)
    month_usage = (amount_m, count_m) if number_m == month else (0, 0)
    return (*day_usage, *month_usage)


def _effective_cap(level: keys.LevelText, now: int) -> int:
    """level_cap of limits/lua/_lib.lua: the cap (0 if none) plus a raise that still lasts."""
    raise_text = f"{level.raise_minor}:{level.raise_expires_ms}" if level.raise_minor else None
    return effective_cap(level.cap or 0, raise_text, now)


class ModelRunner:
    """Runs the model behind the interface of limits.transport.ScriptRunner: `call` answers a
    future that is already resolved."""

    def __init__(self, model: Model):
        self.model = model

    def call(self, name: str, keys_: Sequence[str], args: Sequence[str]) -> Awaitable:
        future = asyncio.get_running_loop().create_future()
        future.set_result(self.model.call(name, keys_, args))
        return future
