"""Redis key and field naming: the only place a key is spelled.

Every key of one customer starts with the base `cg:{p:NNN}:` of the customer's partition, so a
script touching them runs unchanged on Redis Cluster (one slot). The Lua scripts receive these
names as constants written into them at load time (limits/lua_source.py), never as their own
literals.

    cg:{p:NNN}:c:<customer_id>              hash: status, timezone schedule, per-node caps and
                                            usage, velocity windows per product
    cg:{p:NNN}:x:<customer_id>              zset: the customer's open hold ids by expiry (ms)
    cg:{p:NNN}:h:<hold_id>                  hash: one hold
    cg:{p:NNN}:ia:<customer_id>|<key>       string: an Authorize idempotency record
    cg:{p:NNN}:ic:<hold_id>|<key>           string: a Capture idempotency record
    cg:{p:NNN}:iv:<hold_id>|<key>           string: a Void idempotency record
    cg:{p:NNN}:ir:<hold_id>|<key>           string: a Refund idempotency record
    cg:{p:NNN}:ii:<hold_id>|<key>           string: an IncrementAuthorization record
    cg:{p:NNN}:iz:<customer_id>|<key>       string: a Reverse record (key: the original's)
    cg:{p:NNN}:if:<customer_id>|<key>       string: a ForceCapture idempotency record
    cg:{p:NNN}:ip:<customer_id>|<key>       string: a Repay idempotency record
    cg:{p:NNN}:due                          zset: customers of the partition by earliest expiry
    cg:{p:NNN}:tz                           hash: IANA zone -> its UTC-offset schedule, shared by
                                            the partition's customers in that zone
    cg:{p:NNN}:paths                        hash: path id "#<10 hex>" -> limit nodes, comma-joined
                                            (a hold stores the short id, not the list), and
                                            "#<10 hex>@" -> the catalog version that approved
                                            the holds of that id

An approved authorization's hold id is derived from its idempotency record's key
(`derived_hold_id`): a retry finds the hold it made, so the hold itself keeps the request's
fingerprint and an approval writes no record of its own (an open hold costs one key).
    cg:{p:NNN}:outbox                       stream: every state change's event, for the ledger
    cg:{p:NNN}:outbox:dead                  stream: outbox events the ledger could not book
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from creditgate.limits.constants import HOLD_TOKEN_LENGTH, IDEMPOTENCY_TTL_S, PARTITIONS_MAX

PREFIX = "cg"
# The version of the scripts' contract with Redis: their KEYS, ARGV and replies and the data
# they keep. The scripts are one Redis Functions library named by it (LIBRARY), each function
# `<script>_v<version>`, so the libraries of two adjacent versions sit side by side in one
# Redis during a rolling upgrade (docs/design.md "Upgrades"). Layout 3 adds the catalog version
# to a hold, its `authorized` event and reserve's reply; layout 2's scripts read its data.
LAYOUT_VERSION = 3
LIBRARY = f"creditgate_v{LAYOUT_VERSION}"

# Key kinds, after the partition base.
KIND_CUSTOMER = "c:"
KIND_CUSTOMER_HOLDS = "x:"
KIND_HOLD = "h:"
KIND_IDEMPOTENCY_AUTHORIZE = "ia:"
KIND_IDEMPOTENCY_CAPTURE = "ic:"
KIND_IDEMPOTENCY_VOID = "iv:"
KIND_IDEMPOTENCY_REFUND = "ir:"
KIND_IDEMPOTENCY_INCREMENT = "ii:"
KIND_REVERSAL = "iz:"
KIND_IDEMPOTENCY_FORCE_CAPTURE = "if:"
KIND_IDEMPOTENCY_REPAY = "ip:"
KEY_DUE = "due"
KEY_TIMEZONES = "tz"
KEY_PATHS = "paths"
PATH_ID_MARK = "#"  # a hold's `n` starting with it is a path id, otherwise the node list
# paths[<path id> + PATH_VERSION_MARK]: the catalog version of the holds with that path id (an
# id of layout 3 derives from the node list and the version; layout 2's have none).
PATH_VERSION_MARK = "@"
# paths[<path id> + PATH_TTL_MARK]: the hold TTL (ms) of the rules that approved the holds with
# that path id (an id of layout 3 derives from the node list, the version and the TTL), so a
# retry's decision time is the expiry less the TTL that approved it.
PATH_TTL_MARK = ":"
KEY_OUTBOX = "outbox"
KEY_DEAD_LETTER = "outbox:dead"  # events the ledger could not book, with the reason
# Separates the scope from the idempotency key; ids may not contain it.
SCOPE_SEPARATOR = "|"
# A caller's merchant scope as the scripts receive it (merchant_scope): "" for any merchant,
# else entries separated by one space, each an exact id after "=" or a prefix after "^".
MERCHANT_EXACT = "="
MERCHANT_PREFIX = "^"
MERCHANT_SCOPE_SEPARATOR = " "
# The scope of a caller that lists no merchant: one exact entry naming the empty id, which no
# hold has (deny by default: "" would be every merchant).
MERCHANT_SCOPE_NONE = MERCHANT_EXACT

# Fields of the customer hash (layout LAYOUT_VERSION; docs/design.md "Redis layout").
FIELD_STATUS = "s"
FIELD_LAYOUT = "lv"  # CUSTOMER_LAYOUT: the customer hash's layout (tools and upgrades read it)
# The layout of the customer hash: 1 a field per number, 2 a field per level and per product's
# windows (since script layout 2). The scripts of layouts 2 and 3 both write and read 2.
CUSTOMER_LAYOUT = 2
FIELD_TIMEZONE = "tz"
# Not stored with the customer (a zone with daylight-saving changes has a ~1.5 KB schedule):
# the partition's `tz` hash keeps one copy per zone; credit.lua's reply adds it under this name.
FIELD_TZ_SCHEDULE = "tzs"
FIELD_EVENT_SEQ = "sq"
# + node: "<cap>:<held>:<used>", then ":<raise>:<raise expires at ms>" while a temporary raise
# is set. An empty cap is no cap (a level that keeps usage after its cap was removed).
FIELD_LEVEL = "l:"
# + product: "<day number>:<amount>:<count>:<month number>:<amount>:<count>".
FIELD_VELOCITY = "v:"
FIELD_BALANCE = "b:"  # + path (nodes root first, comma-joined): captured, not refunded/repaid
FIELD_CREDIT_BALANCE = "cr"  # overpaid by repayments and late refunds: owed to the customer
# + product: the time (ms) of the customer's first approval of a product that sets a
# first-purchase maximum (only such products write it): later purchases are not first.
FIELD_FIRST_PURCHASE = "fp:"
LEVEL_SEPARATOR = ":"

# The customer fields of layout 1, which the scripts upgrade on first touch: a field per
# number (cap, held, used), the raise and each velocity window apart.
V1_FIELD_STATUS = "st"
V1_FIELD_CAP = "cap:"  # + node
V1_FIELD_HELD = "h:"  # + node
V1_FIELD_USED = "u:"  # + node
V1_FIELD_VELOCITY_DAY = "vd:"  # + product: "<day number>:<amount>:<count>"
V1_FIELD_VELOCITY_MONTH = "vm:"  # + product: "<month number>:<amount>:<count>"
V1_FIELD_RAISE = "tr:"  # + node: "<raise minor>:<expires at ms>"


class LevelText(NamedTuple):
    """A level field of the customer hash (FIELD_LEVEL), read: cap None if none."""

    cap: int | None
    held: int
    used: int
    raise_minor: int
    raise_expires_ms: int


def level_text(cap: int | None, held: int, used: int, raise_minor: int = 0,
               raise_expires_ms: int = 0) -> str:
    """The text of a level field; the raise only while one is set (raise_minor > 0)."""
    text = f"{'' if cap is None else cap}:{held}:{used}"
    return f"{text}:{raise_minor}:{raise_expires_ms}" if raise_minor else text


def read_level(text: str | None) -> LevelText:
    """A level field's numbers; an absent field is a level with nothing in it."""
    if text is None:
        return LevelText(None, 0, 0, 0, 0)
    cap, held, used, *raised = text.split(LEVEL_SEPARATOR)
    raise_minor, expires = (int(raised[0]), int(raised[1])) if raised else (0, 0)
    return LevelText(int(cap) if cap else None, int(held), int(used), raise_minor, expires)


def levels_of(fields: Mapping[str, str]) -> dict[str, LevelText]:
    """Every level of a customer hash by node, from either layout (a customer keeps layout 1
    until a script touches it): reconciliation reads customers as they are stored."""
    if V1_FIELD_STATUS not in fields:
        return {field[len(FIELD_LEVEL):]: read_level(value) for field, value in fields.items()
                if field.startswith(FIELD_LEVEL)}
    numbers: dict[str, dict[str, str]] = {}
    for field, value in fields.items():
        for prefix in (V1_FIELD_CAP, V1_FIELD_HELD, V1_FIELD_USED, V1_FIELD_RAISE):
            if field.startswith(prefix):
                numbers.setdefault(field[len(prefix):], {})[prefix] = value
    levels = {}
    for node, found in numbers.items():
        raised = found.get(V1_FIELD_RAISE, "0:0").split(LEVEL_SEPARATOR)
        cap = found.get(V1_FIELD_CAP)
        levels[node] = LevelText(None if cap is None else int(cap),
                                 int(found.get(V1_FIELD_HELD, 0)),
                                 int(found.get(V1_FIELD_USED, 0)), int(raised[0]),
                                 int(raised[1]))
    return levels


def velocity_text(day: tuple[int, int, int], month: tuple[int, int, int]) -> str:
    """A velocity field: (number, amount, count) of the day window, then the month's."""
    return LEVEL_SEPARATOR.join(str(value) for value in (*day, *month))


# Fields of a hold hash (`cg:{p:NNN}:h:<hold id>`), by what they hold. Every hold has the
# first eleven; the rest only when they apply, so an open hold stays small.
HOLD_FIELDS: dict[str, str] = {
    "STATE": "st",  # open, captured, voided, expired, reversed
    "CUSTOMER": "c",
    "PRODUCT": "p",
    "AMOUNT": "a",  # what the hold holds in all (after increments)
    "CAPTURED": "cp",  # captured so far
    "NODES": "n",  # the path id ("#..." in the partition's paths hash) or the node list
    "EXPIRES": "x",  # ms
    "SEQ": "sq",  # the hold's event sequence: the next event id's suffix
    "MERCHANT": "m",
    "CURRENCY": "cur",
    "FINGERPRINT": "fp",  # of the Authorize that made it: a retry with another payload fails
    "TOLERANCE_BPS": "tb",  # the product's capture tolerance, if > 0
    "INCREMENT_MAX": "ix",  # the product's amount max, if incremental
    "VELOCITY_MAX": "vx",  # "<day amount max>:<month amount max>", if incremental
    "PLAN": "im",  # the installment plan text
    "PARTIAL_LEVEL": "pa",  # the binding level of a partial approval
    "FIRST_AMOUNT": "a0",  # the first approved amount, set by the first increment
    "CLOSED_AT": "cl",  # ms, once closed
    "REFUNDED": "rf",  # refunded so far
    "FORCE_CAPTURED_AS": "fx",  # on an original hold: the ForceCapture hold that posted it
    "ORIGINAL_HOLD": "oh",  # on a ForceCapture hold: the hold it posts, if any
    "FORCE_CAPTURE": "fc",  # "1" on a hold made by ForceCapture
    "CREATED_AT": "t",  # ms, on a hold made by ForceCapture
    # The catalog version that approved it, if its path id cannot say (limits/lua/_lib.lua
    # path_id: the id was taken); else the path id's in the paths hash.
    "CATALOG_VERSION": "cv",
    # Beside it, the hold TTL (ms) of the rules that approved it: a retry's decision time is
    # the expiry less this TTL, whatever catalog is in force by then.
    "HOLD_TTL_MS": "tt",
}
assert len(set(HOLD_FIELDS.values())) == len(HOLD_FIELDS)

# The stored fingerprint of a reversal's tombstone: an idempotency record whose reply (a
# REVERSED decline) answers any request with that key, whatever its payload.
TOMBSTONE = "reversed"
# The caller an `expired` event names: a hold's TTL released it, whichever call (the sweeper's
# pass, or a call that touched the customer) happened to find it due.
EXPIRY_CALLER = "sweeper"

# Everything the Lua prelude receives as a constant.
LUA_CONSTANTS: dict[str, str] = {
    "K_CUSTOMER": KIND_CUSTOMER,
    "K_CUSTOMER_HOLDS": KIND_CUSTOMER_HOLDS,
    "K_HOLD": KIND_HOLD,
    "K_TIMEZONES": KEY_TIMEZONES,
    "K_PATHS": KEY_PATHS,
    "PATH_ID_MARK": PATH_ID_MARK,
    "PATH_VERSION_MARK": PATH_VERSION_MARK,
    "PATH_TTL_MARK": PATH_TTL_MARK,
    "F_STATUS": FIELD_STATUS,
    "F_LAYOUT": FIELD_LAYOUT,
    "F_TIMEZONE": FIELD_TIMEZONE,
    "F_TZ_SCHEDULE": FIELD_TZ_SCHEDULE,
    "F_EVENT_SEQ": FIELD_EVENT_SEQ,
    "F_LEVEL": FIELD_LEVEL,
    "F_VELOCITY": FIELD_VELOCITY,
    "F_BALANCE": FIELD_BALANCE,
    "F_CREDIT_BALANCE": FIELD_CREDIT_BALANCE,
    "F_FIRST_PURCHASE": FIELD_FIRST_PURCHASE,
    "V1_STATUS": V1_FIELD_STATUS,
    "V1_CAP": V1_FIELD_CAP,
    "V1_HELD": V1_FIELD_HELD,
    "V1_USED": V1_FIELD_USED,
    "V1_VELOCITY_DAY": V1_FIELD_VELOCITY_DAY,
    "V1_VELOCITY_MONTH": V1_FIELD_VELOCITY_MONTH,
    "V1_RAISE": V1_FIELD_RAISE,
    "TOMBSTONE": TOMBSTONE,
    "EXPIRY_CALLER": EXPIRY_CALLER,
    "MERCHANT_EXACT": MERCHANT_EXACT,
    "MERCHANT_PREFIX": MERCHANT_PREFIX,
    "MERCHANT_SCOPE_SEPARATOR": MERCHANT_SCOPE_SEPARATOR,
    **{f"H_{name}": field for name, field in HOLD_FIELDS.items()},
}


def partition_of(customer_id: str, partitions: int) -> int:
    """The customer's partition: CRC-32 of the id, stable across processes and releases."""
    return zlib.crc32(customer_id.encode()) % partitions


def customer_base(customer_id: str, partitions: int) -> str:
    """The base of the customer's partition: every key of the customer starts with it."""
    return base(partition_of(customer_id, partitions))


def base(partition: int) -> str:
    """`cg:{p:NNN}:` — the start of every key of the partition."""
    assert 0 <= partition < PARTITIONS_MAX
    return f"{PREFIX}:{{p:{partition:03d}}}:"


def customer(partition_base: str, customer_id: str) -> str:
    return partition_base + KIND_CUSTOMER + customer_id


def customer_holds(partition_base: str, customer_id: str) -> str:
    return partition_base + KIND_CUSTOMER_HOLDS + customer_id


def hold(partition_base: str, hold_id: str) -> str:
    return partition_base + KIND_HOLD + hold_id


def due(partition_base: str) -> str:
    return partition_base + KEY_DUE


def timezones(partition_base: str) -> str:
    return partition_base + KEY_TIMEZONES


def paths(partition_base: str) -> str:
    return partition_base + KEY_PATHS


def hold_epoch(now_ms: int) -> int:
    """The idempotency window a time falls in: IDEMPOTENCY_TTL_S-long epochs since 1970."""
    return now_ms // (IDEMPOTENCY_TTL_S * 1000)


def derived_hold_id(partition_base: str, record_key: str, epoch: int) -> str:
    """The hold id of an approved authorization: the partition, then the first
    HOLD_TOKEN_LENGTH hex digits of SHA-1 of "<idempotency record's key>|<epoch>" (reserve.lua
    computes it with redis.sha1hex). A retry looks in its epoch and the one before, so it
    finds its hold for at least IDEMPOTENCY_TTL_S; a key used again after its old hold is gone
    falls in a later epoch and gets a new id, so an old hold id never names a new purchase.
    Hex is lower case: never equal to a random base32 token."""
    partition = int(partition_base[len(PREFIX) + 4:len(PREFIX) + 7])
    assert base(partition) == partition_base
    token = hashlib.sha1(f"{record_key}|{epoch}".encode()).hexdigest()[:HOLD_TOKEN_LENGTH]
    return hold_id(partition, token)


def outbox(partition_base: str) -> str:
    return partition_base + KEY_OUTBOX


def dead_letter(partition_base: str) -> str:
    return partition_base + KEY_DEAD_LETTER


def idempotency_authorize(partition_base: str, customer_id: str, key: str) -> str:
    return partition_base + KIND_IDEMPOTENCY_AUTHORIZE + customer_id + SCOPE_SEPARATOR + key


def idempotency_capture(partition_base: str, hold_id: str, key: str) -> str:
    return partition_base + KIND_IDEMPOTENCY_CAPTURE + hold_id + SCOPE_SEPARATOR + key


def idempotency_void(partition_base: str, hold_id: str, key: str) -> str:
    return partition_base + KIND_IDEMPOTENCY_VOID + hold_id + SCOPE_SEPARATOR + key


def idempotency_refund(partition_base: str, hold_id: str, key: str) -> str:
    return partition_base + KIND_IDEMPOTENCY_REFUND + hold_id + SCOPE_SEPARATOR + key


def idempotency_increment(partition_base: str, hold_id: str, key: str) -> str:
    return partition_base + KIND_IDEMPOTENCY_INCREMENT + hold_id + SCOPE_SEPARATOR + key


def reversal(partition_base: str, customer_id: str, original_key: str) -> str:
    return partition_base + KIND_REVERSAL + customer_id + SCOPE_SEPARATOR + original_key


def idempotency_force_capture(partition_base: str, customer_id: str, key: str) -> str:
    return partition_base + KIND_IDEMPOTENCY_FORCE_CAPTURE + customer_id + SCOPE_SEPARATOR + key


def idempotency_repay(partition_base: str, customer_id: str, key: str) -> str:
    return partition_base + KIND_IDEMPOTENCY_REPAY + customer_id + SCOPE_SEPARATOR + key


def merchant_scope(entries: Sequence[str]) -> str:
    """The merchant scope the scripts receive for a callers file's list of merchants: ids
    ("M-1"), prefixes ("ACQ-*": every id starting with "ACQ-") or "*" (every merchant, "").
    An empty list is a scope no merchant is in. A malformed entry raises ValueError."""
    if "*" in entries:
        return ""
    if not entries:
        return MERCHANT_SCOPE_NONE
    parts = []
    for entry in entries:
        is_prefix = entry.endswith("*")
        merchant = entry[:-1] if is_prefix else entry
        if not merchant or any(character.isspace() for character in merchant):
            raise ValueError(f"merchant scope entry {entry[:80]!r}: a merchant id, "
                             "'PREFIX*' or '*' expected")
        parts.append((MERCHANT_PREFIX if is_prefix else MERCHANT_EXACT) + merchant)
    return MERCHANT_SCOPE_SEPARATOR.join(dict.fromkeys(parts))


def in_merchant_scope(scope: str, merchant_id: str | None) -> bool:
    """Whether a hold of `merchant_id` (None: the hold names none) is within `scope`: what
    in_scope of limits/lua/_lib.lua answers."""
    if scope == "":
        return True
    if not merchant_id:
        return False
    for entry in scope.split(MERCHANT_SCOPE_SEPARATOR):
        if entry == MERCHANT_EXACT + merchant_id:
            return True
        if entry.startswith(MERCHANT_PREFIX) and merchant_id.startswith(entry[1:]):
            return True
    return False


def hold_id(partition: int, token: str) -> str:
    """`NNN-TOKEN`: the partition is readable from the hold id alone, so Capture and Void
    find the hold's slot without asking anyone."""
    assert len(token) == HOLD_TOKEN_LENGTH
    return f"{partition:03d}-{token}"


def partition_of_hold(hold_id_: str, partitions: int) -> int | None:
    """The partition a hold id names, or None if the id is not one of ours."""
    head, dash, token = hold_id_.partition("-")
    digits = head.isascii() and head.isdigit()  # str.isdigit alone accepts '²'
    if not dash or len(head) != 3 or not digits or len(token) != HOLD_TOKEN_LENGTH:
        return None
    partition = int(head)
    return partition if partition < partitions else None
