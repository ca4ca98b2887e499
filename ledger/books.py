"""The chart of accounts and how each outbox event is booked (docs/lifecycle.md, "Ledger
booking").

Accounts (a name per account; `<id>` is a customer's or merchant's id):

    customer:<id>:receivable          asset     captured purchases the customer owes, not yet repaid
    customer:<id>:credit_balance      liability overpaid by repayments and late refunds: owed
                                                to the customer
    customer:<id>:open_holds          memo      credit held by open authorizations (off balance)
    memo:open_holds_contra            memo      the other side of every open-hold memo line
    merchant:<id>:settlement_payable  liability captured purchases owed to the merchant
    bank:repayments_clearing          asset     repayments received from the billing system

    authorized, incremented
                Dr customer:open_holds          / Cr memo:open_holds_contra      amount
    captured    Dr customer:receivable          / Cr merchant:settlement_payable amount
                Dr memo:open_holds_contra       / Cr customer:open_holds
                                                  amount - excess + released (what left `held`)
    force_captured
                Dr customer:receivable          / Cr merchant:settlement_payable amount
    voided, expired, reversed
                Dr memo:open_holds_contra       / Cr customer:open_holds         released
    refunded    Dr merchant:settlement_payable (amount) / Cr customer:receivable (restored),
                                                  Cr customer:credit_balance (overpaid)
    repaid      Dr bank:repayments_clearing     / Cr customer:receivable         amount
    overpaid    Dr bank:repayments_clearing     / Cr customer:credit_balance     amount
    customer_put  no lines: it updates ledger_customers (timezone for billing cycles)
    limit_raised  no lines

Every entry balances (debits = credits), and carries its event id and hold id. Each event row
also keeps the change of `held` and of `used` at every node of its `nodes` (a hold's path, or
a repayment's), which reconcile compares with Redis; a path's `used` changes are its balance,
and the caller that made the change (the event's `caller`; '' for events that name none). An
`authorized` event's row keeps the catalog version that decided the hold (its
`catalog_version`; '' if the event has none: the previous release's scripts, other events).
An event that cannot be booked raises PoisonEvent with the reason; the worker dead-letters it.
"""

from __future__ import annotations

import msgspec

from creditgate.limits.constants import AMOUNT_MINOR_MAX, ID_LENGTH_MAX

CONTRA = "memo:open_holds_contra"
BANK = "bank:repayments_clearing"
EVENT_TYPES = ("customer_put", "limit_raised", "authorized", "incremented", "captured",
               "force_captured", "voided", "expired", "reversed", "refunded", "repaid",
               "overpaid")
# Events of a customer, not of a hold: no hold, product or merchant.
_CUSTOMER_EVENTS = ("customer_put", "limit_raised", "repaid", "overpaid")


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


def credit_balance(customer_id: str) -> str:
    return f"customer:{customer_id}:credit_balance"


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
    # Who made the change; events written before callers existed name none.
    caller = _text(fields, "caller", required=False)
    catalog_version = _text(fields, "catalog_version", required=False)
    if kind in ("customer_put", "limit_raised"):
        event = (event_id, stream_entry, kind, customer_id, "", "", "", "", "", 0, 0, 0, at_ms,
                 posted_at_ms, caller, catalog_version)
        customer = None
        if kind == "customer_put":
            customer = (event_id, customer_id, _text(fields, "status"),
                        _text(fields, "timezone"), at_ms)
        return Booking(event, (), customer)

    of_hold = kind not in _CUSTOMER_EVENTS
    hold_id = _text(fields, "hold_id", required=of_hold)
    merchant_id = _text(fields, "merchant_id", required=of_hold)
    nodes = _text(fields, "nodes", required=kind != "overpaid")
    amount, held, used, entries = _entries(kind, fields, customer_id, merchant_id)
    # Only a reversal that released nothing and a credit-balance payment have no path.
    if not nodes and not (kind == "overpaid" or (kind == "reversed" and amount == 0)):
        raise PoisonEvent("field 'nodes' is empty")
    lines = []
    for account, debit, credit in entries:
        if debit or credit:  # a zero line books nothing
            lines.append((event_id, len(lines) + 1, account, debit, credit))
    assert sum(line[3] for line in lines) == sum(line[4] for line in lines)
    event = (event_id, stream_entry, kind, customer_id, hold_id,
             _text(fields, "product_id", required=of_hold), merchant_id,
             _text(fields, "currency", required=of_hold), nodes, amount, held, used, at_ms,
             posted_at_ms, caller, catalog_version)
    return Booking(event, tuple(lines), None)


def _entries(kind: str, fields: dict, customer_id: str,
             merchant_id: str) -> tuple[int, int, int, list[tuple[str, int, int]]]:
    """(amount, held change, used change, [(account, debit, credit)]) of a money event."""
    if kind in ("voided", "expired", "reversed"):
        released = _amount(fields, "released_minor")
        return released, -released, 0, [(CONTRA, released, 0),
                                         (open_holds(customer_id), 0, released)]
    amount = _amount(fields, "amount_minor")
    if kind in ("authorized", "incremented"):
        return amount, amount, 0, [(open_holds(customer_id), amount, 0), (CONTRA, 0, amount)]
    if kind == "captured":
        released = _amount(fields, "released_minor")
        excess = _optional_amount(fields, "excess_minor", 0)  # events before over-capture
        if excess > amount:
            raise PoisonEvent(f"field 'excess_minor' exceeds the amount: {excess} > {amount}")
        left_held = amount - excess + released
        return amount, -left_held, amount, [
            (receivable(customer_id), amount, 0), (settlement_payable(merchant_id), 0, amount),
            (CONTRA, left_held, 0), (open_holds(customer_id), 0, left_held)]
    if kind == "force_captured":
        return amount, 0, amount, [(receivable(customer_id), amount, 0),
                                   (settlement_payable(merchant_id), 0, amount)]
    if kind == "refunded":
        restored = _optional_amount(fields, "restored_minor", amount)  # events before repay
        if restored > amount:
            raise PoisonEvent(f"field 'restored_minor' exceeds the amount: {restored} > "
                              f"{amount}")
        overpaid = _optional_amount(fields, "overpaid_minor", amount - restored)
        if overpaid != amount - restored:
            raise PoisonEvent("fields 'restored_minor' and 'overpaid_minor' do not add up to "
                              "the amount")
        return amount, 0, -restored, [(settlement_payable(merchant_id), amount, 0),
                                      (receivable(customer_id), 0, restored),
                                      (credit_balance(customer_id), 0, overpaid)]
    if kind == "repaid":
        return amount, 0, -amount, [(BANK, amount, 0), (receivable(customer_id), 0, amount)]
    assert kind == "overpaid", kind
    return amount, 0, 0, [(BANK, amount, 0), (credit_balance(customer_id), 0, amount)]


def _optional_amount(fields: dict, name: str, default: int) -> int:
    if fields.get(name.encode(), fields.get(name)) is None:
        return default
    return _amount(fields, name)


def _time(fields: dict) -> int:
    text = _text(fields, "at_ms")
    if not text.isascii() or not text.isdigit() or len(text) > 15:
        raise PoisonEvent(f"field 'at_ms' is not a time in ms: {text[:32]!r}")
    return int(text)
