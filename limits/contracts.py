"""The contract of every Redis script, declared once: its KEYS, its ARGV and its reply, as
named fields in wire order.

Everything that builds a script's call (the hot path's twins, hotpath/plans.py), runs it (the
Lua file, limits/model.py) or reads its reply (limits/replies.py) uses these names, never a
position of its own:
- Python takes positions from the layouts: `RESERVE.args.amount_minor` is the index of the
  amount in the args a planner builds, `AUTHORIZATION.reason` the index of the reason in a
  reply's fields.
- Lua names them too: limits/lua_source.py writes `KEY_CUSTOMER`, `ARG_AMOUNT_MINOR` and
  `ARG_NODES` (where a repeated tail starts) as the numbers of this script's declaration when
  it assembles the script, so the Lua code reads `ARGV[ARG_AMOUNT_MINOR]` at no cost per call.
- Each Lua file's header lists the same names (`-- KEYS[1] customer`, `-- ARGV[2] base`,
  `-- Reply: OK|...`), and tests/limits/test_contracts.py holds every header to this module.

Every script the client runs starts its ARGV with the call header (CALL_HEADER, added by
limits/client.py): ARGV[1] the clock offset in ms (0 outside tests, where it moves Redis'
time), ARGV[2] the caller's deadline in ms by the scripts' clock (0: none), ARGV[3] the
caller's name (every outbox event the call writes carries it) and ARGV[4] the caller's
merchant scope (limits.keys.merchant_scope; "" for any merchant): a script acting on an
existing hold answers HOLD_NOT_FOUND, and writes nothing, for a hold of a merchant outside
it. A script that changes state refuses, before anything else, a call whose deadline has
passed (DEADLINE_PASSED): a late call leaves nothing. A declaration's `args` follow the
header; they are what a planner builds. Replies are text: `OK|<fields>` or
`ERR|code|detail|at_ms`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Layout:
    """Named positions of one wire list, in wire order. `names[i]` is at index i; `rest` is a
    group of names repeated from index len(names) on (the limit nodes of a reservation, the
    levels of a reply); `tail` names the fields after the repeated group, counted from the end.
    Each name is also an attribute whose value is its index."""

    def __init__(self, *names: str, rest: tuple[str, ...] = (), tail: tuple[str, ...] = ()):
        assert len(set(names + rest + tail)) == len(names) + len(rest) + len(tail), names
        self.names = names
        self.rest = rest
        self.tail = tail
        for index, name in enumerate(names):
            setattr(self, name, index)

    def __len__(self) -> int:
        return len(self.names)

    def __getattr__(self, name: str) -> int:  # only for names that are not declared
        raise AttributeError(f"no field {name!r} in this layout")

    def pack(self, rest: Sequence[Any] = (), **fields: Any) -> list[Any]:
        """The wire list from its values by name: every declared name (and tail name) exactly
        once, the repeated part (`rest`, flat) between them if the layout has one. How
        planners build a call, and the model a reply, without knowing positions."""
        declared = {*self.names, *self.tail}
        if fields.keys() != declared:
            missing, extra = declared - fields.keys(), fields.keys() - declared
            raise TypeError(f"pack: missing {sorted(missing)}, unknown {sorted(extra)}")
        if rest and not self.rest:
            raise TypeError("pack: this layout has no repeated tail")
        return [*(fields[name] for name in self.names), *rest,
                *(fields[name] for name in self.tail)]

    def bind(self, values: Sequence[Any]) -> Fields:
        """The values by name (not for hot code): the repeated group's values in `.rest` (a
        list of tuples, or of values for a group of one name), the tail's by name. Values that
        do not fit the layout raise ValueError."""
        return Fields(self, values)


class Fields:
    """One wire list read by name: `fields.amount_minor`, `fields.rest`, `fields.tail`."""

    def __init__(self, layout: Layout, values: Sequence[Any]):
        fixed = len(layout.names)
        end = len(values) - len(layout.tail)
        width = len(layout.rest) or 1
        if end < fixed or (not layout.rest and end != fixed) or (end - fixed) % width:
            raise ValueError(f"{len(values)} values do not fit the layout {layout.names}"
                             f"{'{' + ','.join(layout.rest) + '}' if layout.rest else ''}")
        for name, value in zip(layout.names, values[:fixed], strict=True):
            setattr(self, name, value)
        repeated = list(values[fixed:end])
        self.rest = [tuple(repeated[i:i + width]) for i in range(0, len(repeated), width)]
        if len(layout.rest) == 1:
            self.rest = [group[0] for group in self.rest]
        for name, value in zip(layout.tail, values[end:], strict=True):
            setattr(self, name, value)


CALL_HEADER = ("clock_offset_ms", "deadline_ms", "caller", "merchant_scope")


def call_header(clock_offset_ms: int = 0, deadline_ms: int = 0, caller: str = "",
                merchant_scope: str = "") -> list[str]:
    """The first ARGV of every script the client runs (CALL_HEADER). `caller` is the name
    every event of the call carries; `merchant_scope` (limits.keys.merchant_scope, "" for any
    merchant) bounds the holds the call may act on."""
    return [str(clock_offset_ms), str(deadline_ms), caller, merchant_scope]


class Script:
    """One script's contract: its name (its file is limits/lua/<name>.lua), KEYS, ARGV after
    the call header (`clock=False`: no header, ARGV[1] is args[0]) and reply. `deadline`: the
    script changes state, so it refuses a call whose deadline has passed."""

    def __init__(self, name: str, keys: Layout, args: Layout, reply: Layout,
                 clock: bool = True, reply_kind: str = "ok", deadline: bool = True):
        assert reply_kind in ("ok", "text", "list", "integer"), reply_kind
        self.name, self.keys, self.args, self.reply, self.clock = name, keys, args, reply, clock
        self.reply_kind = reply_kind
        self.deadline = deadline and clock

    @property
    def header(self) -> tuple[str, ...]:
        return CALL_HEADER if self.clock else ()

    def reply_text(self) -> str:
        """The reply as the Lua header's `-- Reply:` line spells it: `OK|a|b{|x|y}|t` for an
        "ok" reply (fields joined by '|', a repeated group in braces, then the tail), the
        same without `OK|` for "text", `{a, x, ...}` for a list, the name for an integer."""
        reply = self.reply
        if self.reply_kind == "list":
            return "{" + ", ".join((*reply.names, *reply.rest)) + ", ...}"
        if self.reply_kind == "integer":
            return reply.names[0]
        text = "|".join(reply.names)
        if reply.rest:
            text += "{|" + "|".join(reply.rest) + "}"
        if reply.tail:
            text += "|" + "|".join(reply.tail)
        return "OK|" + text if self.reply_kind == "ok" else text

    @property
    def first_arg(self) -> int:
        """The Lua index of args[0]: after the call header, unless clock=False."""
        return len(self.header) + 1

    def lua_constants(self) -> dict[str, str]:
        """KEY_<NAME> and ARG_<NAME> as Lua indices (ARG_<FIRST OF REST> where a repeated
        tail starts; the call header's ARG_CLOCK_OFFSET_MS to ARG_MERCHANT_SCOPE first), for
        limits/lua_source.py to write into this script."""
        values = {f"ARG_{name.upper()}": str(index + 1)
                  for index, name in enumerate(self.header)}
        values.update((f"KEY_{name.upper()}", str(index + 1))
                      for index, name in enumerate(self.keys.names))
        values.update((f"ARG_{name.upper()}", str(index + self.first_arg))
                      for index, name in enumerate(self.args.names))
        if self.args.rest:
            values[f"ARG_{self.args.rest[0].upper()}"] = str(len(self.args) + self.first_arg)
        return values


# A script's error reply: "ERR|code|detail|at_ms" (limits.reasons.ScriptError).
ERROR = Layout("code", "detail", "at_ms")

# The answer to an authorization (reserve, and increment before its own last field).
LEVEL = ("node", "cap_minor", "held_minor", "used_minor")
AUTHORIZATION_FIELDS = (
    "reason", "level", "hold_id", "available_minor", "decided_at_ms", "hold_expires_at_ms",
    "approved_amount_minor", "partial", "counter_offer_minor", "counter_offer_level", "plan")
# reserve's reply ends with the catalog version that decided it: an approval's retry answers
# its hold's, a remembered decline's retry the one stored beside it ('' for what layout 2
# decided). Increment's reply has none (its own tail is what the hold still holds).
AUTHORIZATION = Layout(*AUTHORIZATION_FIELDS, rest=LEVEL, tail=("catalog_version",))

# A product's rules for one channel, as reserve takes them in one argument (its `rules`): the
# fields joined by RULES_SEPARATOR, the nodes (root first) joined by NODES_SEPARATOR. They are
# the same for every call of a product on a channel: the hot path builds each text once per
# catalog, and the script parses and checks a text once and keeps what it read (product_rules,
# limits/lua/_lib.lua), so a call pays neither for 19 arguments nor for their conversions.
# effective_from_ms and effective_until_ms: the product answers when from <= now < until (0: an
# open end); allowed_hours: "<start>:<end>" minutes of the customer's day, end exclusive and
# above 1440 for a range that crosses midnight, joined by ';' ("0": any time);
# first_purchase_max_minor: the most a customer's first approval of the product may be (0: no
# limit). The amount bounds are the channel's (catalog channel_bounds) where it has its own.
# `catalog_version` is the version of the catalog the text was built from (CATALOG_VERSION_NONE
# for rules compiled from products alone: tests, benches): an approval's hold and event keep it.
PRODUCT_RULES = Layout(
    "product_id", "channel", "currency", "hold_ttl_ms",
    "day_amount_max_minor", "day_count_max", "month_amount_max_minor", "month_count_max",
    "amount_min_minor", "amount_max_minor", "capture_tolerance_bps", "incremental",
    "installment_fee_bps", "effective_from_ms", "effective_until_ms", "allowed_hours",
    "first_purchase_max_minor", "catalog_version", "nodes")
RULES_SEPARATOR = "|"
NODES_SEPARATOR = ","
HOURS_SEPARATOR = ";"
CATALOG_VERSION_NONE = "-"  # never a catalog's (limits/catalog.VERSION starts alphanumeric)

RESERVE = Script(
    "reserve",
    keys=Layout("customer", "customer_holds", "due", "outbox", "idempotency"),
    args=Layout(
        "base", "customer_id", "fingerprint", "amount_minor", "rule_decline",
        "partial_approval", "installment_months", "merchant_id", "mcc", "rules"),
    reply=AUTHORIZATION)

INCREMENT = Script(
    "increment",
    keys=Layout("hold", "idempotency", "due", "outbox"),
    args=Layout("base", "hold_id", "fingerprint", "amount_minor"),
    reply=Layout(*AUTHORIZATION_FIELDS, rest=LEVEL, tail=("hold_held_minor",)))

CAPTURE = Script(
    "capture",
    keys=Layout("hold", "idempotency", "due", "outbox"),
    args=Layout("base", "hold_id", "fingerprint", "amount_minor", "final"),
    reply=Layout("state", "captured_minor", "captured_total_minor", "released_minor",
                 "held_minor", "over_captured_minor", "decided_at_ms"))

VOID = Script(
    "void",
    keys=Layout("hold", "idempotency", "due", "outbox"),
    args=Layout("base", "hold_id", "fingerprint"),
    reply=Layout("state", "released_minor", "captured_total_minor", "decided_at_ms"))

REFUND = Script(
    "refund",
    keys=Layout("hold", "idempotency", "outbox"),
    args=Layout("base", "hold_id", "fingerprint", "amount_minor"),
    reply=Layout("refunded_minor", "refunded_total_minor", "refundable_minor",
                 "restored_minor", "decided_at_ms"))

REVERSE = Script(
    "reverse",
    keys=Layout("customer", "customer_holds", "due", "outbox", "original_idempotency",
                "reversal"),
    args=Layout("base", "customer_id", "original_idempotency_key"),
    reply=Layout("outcome", "hold_id", "released_minor", "decided_at_ms"))

FORCE_CAPTURE = Script(
    "force_capture",
    keys=Layout("customer", "idempotency", "outbox", "hold", "original_hold",
                "customer_holds", "due"),
    args=Layout("base", "customer_id", "hold_id", "fingerprint", "product_id", "amount_minor",
                "merchant_id", "mcc", "channel", "currency", "original_hold_id",
                rest=("nodes",)),
    reply=Layout("hold_id", "over_limit_levels", "decided_at_ms", rest=LEVEL))

REPAY = Script(
    "repay",
    keys=Layout("customer", "idempotency", "outbox"),
    args=Layout("base", "customer_id", "fingerprint", "amount_minor", rest=("paths",)),
    reply=Layout("repaid_minor", "overpaid_minor", "outstanding_minor", "decided_at_ms",
                 rest=("path", "amount_minor")))

SET_RAISE = Script(
    "set_raise",
    keys=Layout("customer", "outbox"),
    args=Layout("customer_id", "node", "raise_minor", "expires_at_ms"),
    reply=Layout("cap_minor", "raise_minor", "held_minor", "used_minor", "decided_at_ms",
                 "raise_before_minor", "raise_before_expires_at_ms"))

PUT_CUSTOMER = Script(
    "put_customer",
    keys=Layout("customer", "outbox", "timezones"),
    args=Layout("customer_id", "status", "timezone", "schedule", rest=("node", "cap_minor")),
    reply=Layout("decided_at_ms", "status_before", "caps_before"))

# Housekeeping and reads, which take no deadline. Their replies are not "OK|...": expire
# answers "released|now", credit a list of the Redis time and the customer hash's fields and
# values ({now} for an unknown customer).
EXPIRE = Script(
    "expire",
    keys=Layout("customer_holds", "due", "outbox"),
    args=Layout("base", "customer_id"),
    reply=Layout("released", "now_ms"),
    reply_kind="text",
    deadline=False)

CREDIT = Script(
    "credit",
    keys=Layout("customer", "due", "outbox"),
    args=Layout("base", "customer_id"),
    reply=Layout("now_ms", rest=("field", "value")),
    reply_kind="list",
    deadline=False)

# The customers of a partition whose earliest hold expiry has passed (the sweeper's question).
DUE = Script(
    "due",
    keys=Layout("due",),
    args=Layout("count_max"),
    reply=Layout("now_ms", rest=("customer_id",)),
    reply_kind="list",
    deadline=False)

# The ledger worker's: no clock offset; its reply is 1 (moved) or 0.
DEAD_LETTER = Script(
    "dead_letter",
    keys=Layout("outbox", "dead_letter"),
    args=Layout("group", "entry_id", rest=("field", "value")),
    reply=Layout("moved"),
    clock=False,
    reply_kind="integer")

# Read-only: the decision an Authorize's key already has for this request's fingerprint,
# without product rules (limits/lua/replay.lua; the gateway asks it when the catalog in force
# refuses a request a catalog before it may have decided). Its reply is reserve's reply to the
# retry, or "REPLAY_NONE|<now ms>" where the key has none.
REPLAY = Script(
    "replay",
    keys=Layout("customer", "idempotency"),
    args=Layout("base", "fingerprint"),
    reply=AUTHORIZATION,
    deadline=False)
REPLAY_NONE = "NONE"

SCRIPTS: dict[str, Script] = {script.name: script for script in (
    RESERVE, INCREMENT, CAPTURE, VOID, REFUND, REVERSE, FORCE_CAPTURE, REPAY, SET_RAISE,
    PUT_CUSTOMER, EXPIRE, CREDIT, DUE, DEAD_LETTER, REPLAY)}
# The scripts that only read: registered flagged no-writes and called with FCALL_RO
# (limits/lua_source.py), so Redis refuses any write they attempt.
READ_ONLY = frozenset({"replay"})
