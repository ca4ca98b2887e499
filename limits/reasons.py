"""Decline reasons, their documented order and ISO 8583 response codes; script error kinds.

A decline is a value, not an exception. The reserve script (limits/lua/reserve.lua) and its
model (limits/model.py) check the causes in exactly the order of DECLINE_ORDER and answer with
the first that applies. The numbers equal those of creditgate.v1.DeclineReason.
"""

from __future__ import annotations

import enum


class DeclineReason(enum.IntEnum):
    NONE = 0
    CUSTOMER_UNKNOWN = 1
    CUSTOMER_FROZEN = 2
    CUSTOMER_CLOSED = 3
    CHANNEL_NOT_ALLOWED = 4
    MCC_NOT_ALLOWED = 5
    AMOUNT_BELOW_MINIMUM = 6
    AMOUNT_ABOVE_MAXIMUM = 7
    VELOCITY_COUNT_EXCEEDED = 8
    VELOCITY_AMOUNT_EXCEEDED = 9
    INSUFFICIENT_CREDIT = 10
    CUSTOMER_OVERDUE = 11
    REVERSED = 12  # a reversal of this request (by its idempotency key) came first
    MERCHANT_NOT_ALLOWED = 13
    PRODUCT_NOT_EFFECTIVE = 14
    OUTSIDE_ALLOWED_HOURS = 15
    FIRST_PURCHASE_ABOVE_MAXIMUM = 16


# The documented order: the first cause that applies is the answer.
DECLINE_ORDER: tuple[DeclineReason, ...] = (
    DeclineReason.REVERSED,  # the tombstone is the idempotency record: found before anything
    DeclineReason.CUSTOMER_UNKNOWN,
    DeclineReason.CUSTOMER_FROZEN,
    DeclineReason.CUSTOMER_CLOSED,
    DeclineReason.CUSTOMER_OVERDUE,
    DeclineReason.PRODUCT_NOT_EFFECTIVE,
    DeclineReason.CHANNEL_NOT_ALLOWED,
    DeclineReason.MCC_NOT_ALLOWED,
    DeclineReason.MERCHANT_NOT_ALLOWED,
    DeclineReason.AMOUNT_BELOW_MINIMUM,
    DeclineReason.AMOUNT_ABOVE_MAXIMUM,
    DeclineReason.OUTSIDE_ALLOWED_HOURS,
    DeclineReason.FIRST_PURCHASE_ABOVE_MAXIMUM,
    DeclineReason.VELOCITY_COUNT_EXCEEDED,
    DeclineReason.VELOCITY_AMOUNT_EXCEEDED,
    DeclineReason.INSUFFICIENT_CREDIT,
)

RESPONSE_CODE: dict[DeclineReason, str] = {
    DeclineReason.NONE: "00",
    DeclineReason.CUSTOMER_UNKNOWN: "14",  # invalid card (account) number
    DeclineReason.CUSTOMER_FROZEN: "62",  # restricted card
    DeclineReason.CUSTOMER_CLOSED: "62",
    DeclineReason.CUSTOMER_OVERDUE: "62",
    DeclineReason.CHANNEL_NOT_ALLOWED: "57",  # transaction not permitted to cardholder
    DeclineReason.MCC_NOT_ALLOWED: "57",
    DeclineReason.AMOUNT_BELOW_MINIMUM: "13",  # invalid amount
    DeclineReason.AMOUNT_ABOVE_MAXIMUM: "61",  # exceeds withdrawal amount limit
    DeclineReason.VELOCITY_COUNT_EXCEEDED: "65",  # exceeds withdrawal frequency limit
    DeclineReason.VELOCITY_AMOUNT_EXCEEDED: "61",
    DeclineReason.INSUFFICIENT_CREDIT: "51",  # not sufficient funds
    DeclineReason.REVERSED: "12",  # invalid transaction: it was reversed before it arrived
    DeclineReason.MERCHANT_NOT_ALLOWED: "57",
    DeclineReason.PRODUCT_NOT_EFFECTIVE: "57",
    DeclineReason.OUTSIDE_ALLOWED_HOURS: "57",
    DeclineReason.FIRST_PURCHASE_ABOVE_MAXIMUM: "61",
}
PARTIAL_APPROVAL_CODE = "10"  # ISO 8583: approved for a partial amount

# Declines about the amount: they carry a counter-offer (the largest amount approvable now).
COUNTER_OFFER_REASONS = frozenset(
    {DeclineReason.INSUFFICIENT_CREDIT, DeclineReason.VELOCITY_AMOUNT_EXCEEDED}
)

# Reasons the hot path decides from the product's rules alone; the script only places them in
# the documented order (after the customer's existence and status).
PRODUCT_RULE_REASONS = frozenset(
    {
        DeclineReason.CHANNEL_NOT_ALLOWED,
        DeclineReason.MCC_NOT_ALLOWED,
        DeclineReason.MERCHANT_NOT_ALLOWED,
        DeclineReason.AMOUNT_BELOW_MINIMUM,
        DeclineReason.AMOUNT_ABOVE_MAXIMUM,
    }
)
# The largest of them: the bound of reserve's rule_decline argument.
PRODUCT_RULE_REASON_MAX = max(PRODUCT_RULE_REASONS)


class ScriptError(enum.IntEnum):
    """Why a script refused a call without changing anything it was asked to change."""

    IDEMPOTENCY_MISMATCH = 1  # the key was used before with a different payload
    HOLD_NOT_FOUND = 2
    HOLD_EXPIRED = 3
    HOLD_VOIDED = 4
    HOLD_CAPTURED = 5
    CAPTURE_EXCEEDS_HELD = 6
    CUSTOMER_UNKNOWN = 7
    BAD_ARGUMENT = 8  # a caller bug: the gateway validates before calling
    REFUND_EXCEEDS_CAPTURED = 9
    HOLD_REVERSED = 10  # the hold was closed by Reverse
    CAPTURE_EXCEEDS_CREDIT = 11  # an over-capture's excess does not fit a level (detail: node)
    INCREMENT_NOT_ALLOWED = 12  # the hold's product has no incremental authorization
    RAISE_EXPIRES_IN_PAST = 13  # detail: Redis time now (ms)
    HOLD_STILL_OPEN = 14  # ForceCapture names an original hold that is still open
    HOLD_OF_OTHER_CUSTOMER = 15  # ForceCapture's original hold belongs to someone else
    RAISE_TOO_LONG = 16  # a temporary raise may last at most RAISE_DURATION_S_MAX
    ALREADY_FORCE_CAPTURED = 17  # ForceCapture's original was force captured (detail: that hold)
    DEADLINE_PASSED = 18  # the caller's deadline passed before the script ran (detail: it, ms)


assert set(RESPONSE_CODE) == set(DeclineReason)
assert set(DECLINE_ORDER) == set(DeclineReason) - {DeclineReason.NONE}
assert all(len(code) == 2 for code in RESPONSE_CODE.values())
