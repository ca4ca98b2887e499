"""The chart of accounts and how each outbox event is booked.

Accounts (a name per account; `<id>` is a customer's or merchant's id):

    customer:<id>:receivable          asset     captured purchases the customer owes, not yet repaid
    customer:<id>:open_holds          memo      credit held by open authorizations (off balance)
    memo:open_holds_contra            memo      the other side of every open-hold memo line
    merchant:<id>:settlement_payable  liability captured purchases owed to the merchant

    authorized  Dr customer:open_holds          / Cr memo:open_holds_contra      amount
    captured    Dr customer:receivable          / Cr merchant:settlement_payable captured
                Dr memo:open_holds_contra       / Cr customer:open_holds         captured + released
    voided      Dr memo:open_holds_contra       / Cr customer:open_holds         released
    expired     Dr memo:open_holds_contra       / Cr customer:open_holds         released
    refunded    Dr merchant:settlement_payable  / Cr customer:receivable         refunded
    customer_put  no lines: it updates ledger_customers (timezone for billing cycles)

Every entry balances (debits = credits), and carries its event id and hold id. An event that
cannot be booked raises PoisonEvent with the reason; the worker dead-letters it.
"""

from __future__ import annotations

import msgspec

from limits.constants import AMOUNT_MINOR_MAX, ID_LENGTH_MAX

CONTRA = "memo:open_holds_contra"
EVENT_TYPES = ("customer_put", "authorized", "captured", "voided", "expired", "refunded")


class PoisonEvent(ValueError):
    """The event cannot be booked; the message says why."""


class Booking(msgspec.Struct, frozen=True):
    event: tuple  # a ledger_events row (store.EVENT_COLUMNS order)
    lines: tuple[tuple, ...]  # journal_lines rows (event_id, line_no, account, debit, credit)
    customer: tuple | None  # (event_id, customer_id, status, timezone, at_ms) for customer_put


def receivable(customer_id: str) -> str:
    return f"customer:{customer_id}:receivable"


def open_holds(customer_id: str) -> str:
    return f"customer:{customer_id}:open_holds"


def settlement_payable(merchant_id: str) -> str:
    return f"merchant:{merchant_id}:settlement_payable"


def _text(fields: dict, name: str, required: bool = True) -> str:
    value = fields.get(name.encode(), fields.get(name))
    if value is None:
        if required:
            raise PoisonEvent(f"missing field {name!r}")
        return ""
    try:
        text = value.decode() if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise PoisonEvent(f"field {name!r} is not UTF-8") from None
    if "\x00" in text:
        raise PoisonEvent(f"field {name!r} holds a NUL character")
    if len(text) > 4 * ID_LENGTH_MAX * 8:
        raise PoisonEvent(f"field {name!r} is too long")
    return text


def _amount(fields: dict, name: str) -> int:
    text = _text(fields, name)
    if not text.isascii() or not text.isdigit() or int(text) > AMOUNT_MINOR_MAX:
        raise PoisonEvent(f"field {name!r} is not an amount in minor units: {text[:32]!r}")
    return int(text)


def book(stream_entry: str, fields: dict, posted_at_ms: int) -> Booking:
    """The ledger rows of one outbox entry (fields as read from the stream)."""
    kind = _text(fields, "type")
    event_id = _text(fields, "event_id")
    customer_id = _text(fields, "customer_id")
    at_ms = _time(fields)
    if kind not in EVENT_TYPES:
        raise PoisonEvent(f"unknown event type {kind[:32]!r}")
    if kind == "customer_put":
        event = (event_id, stream_entry, kind, customer_id, "", "", "", "", "", 0, 0, 0, at_ms,
                 posted_at_ms)
        customer = (event_id, customer_id, _text(fields, "status"), _text(fields, "timezone"),
                    at_ms)
        return Booking(event, (), customer)

    hold_id = _text(fields, "hold_id")
    merchant_id = _text(fields, "merchant_id")
    nodes = _text(fields, "nodes")
    if not nodes:
        raise PoisonEvent("field 'nodes' is empty")
    if kind == "authorized":
        amount = _amount(fields, "amount_minor")
        held, used = amount, 0
        pairs = [(open_holds(customer_id), CONTRA, amount)]
    elif kind == "captured":
        amount = _amount(fields, "amount_minor")
        released = _amount(fields, "released_minor")
        held, used = -(amount + released), amount
        pairs = [(receivable(customer_id), settlement_payable(merchant_id), amount),
                 (CONTRA, open_holds(customer_id), amount + released)]
    elif kind == "refunded":
        amount = _amount(fields, "amount_minor")
        held, used = 0, -amount
        pairs = [(settlement_payable(merchant_id), receivable(customer_id), amount)]
    else:  # voided, expired
        amount = _amount(fields, "released_minor")
        held, used = -amount, 0
        pairs = [(CONTRA, open_holds(customer_id), amount)]
    lines = []
    for debit_account, credit_account, value in pairs:
        if value:  # a zero line books nothing
            lines.append((event_id, len(lines) + 1, debit_account, value, 0))
            lines.append((event_id, len(lines) + 1, credit_account, 0, value))
    assert sum(line[3] for line in lines) == sum(line[4] for line in lines)
    event = (event_id, stream_entry, kind, customer_id, hold_id, _text(fields, "product_id"),
             merchant_id, _text(fields, "currency"), nodes, amount, held, used, at_ms,
             posted_at_ms)
    return Booking(event, tuple(lines), None)


def _time(fields: dict) -> int:
    text = _text(fields, "at_ms")
    if not text.isascii() or not text.isdigit() or len(text) > 15:
        raise PoisonEvent(f"field 'at_ms' is not a time in ms: {text[:32]!r}")
    return int(text)
