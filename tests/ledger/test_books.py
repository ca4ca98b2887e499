"""The chart of accounts: each outbox event's exact journal lines; every booking balances and
agrees with the held/used deltas reconcile relies on; unbookable events say why."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditgate.ledger import books
from creditgate.limits.constants import AMOUNT_MINOR_MAX

AT = 1_800_000_000_000
POSTED = AT + 5
ENTRY = "cg:{p:003}:outbox 1800000000000-0"
NODES = "total,consumer,consumer.scan_pay,consumer.scan_pay.pos"
HOLDS = "customer:c1:open_holds"
RECEIVABLE = "customer:c1:receivable"
PAYABLE = "merchant:m9:settlement_payable"
CONTRA = "memo:open_holds_contra"


def fields(kind: str, **extra) -> dict[bytes, bytes]:
    base = {"type": kind, "event_id": "003-H:1", "customer_id": "c1", "hold_id": "003-H",
            "product_id": "scan_pay", "merchant_id": "m9", "currency": "CNY", "nodes": NODES,
            "at_ms": str(AT), "caller": "T-9"}
    base.update(extra)
    return {k.encode(): v.encode() for k, v in base.items() if v is not None}


def event_row(kind: str, event_id: str, amount: int, held: int, used: int,
              catalog_version: str = "") -> tuple:
    return (event_id, ENTRY, kind, "c1", "003-H", "scan_pay", "m9", "CNY", NODES, amount, held,
            used, AT, POSTED, "T-9", catalog_version)


CASES = {
    "authorized": (
        fields("authorized", amount_minor="150000", catalog_version="2026-12-06.1"),
        event_row("authorized", "003-H:1", 150_000, 150_000, 0, "2026-12-06.1"),
        [(HOLDS, 150_000, 0), (CONTRA, 0, 150_000)]),
    "captured partial": (
        fields("captured", event_id="003-H:2", amount_minor="40000", released_minor="0"),
        event_row("captured", "003-H:2", 40_000, -40_000, 40_000),
        [(RECEIVABLE, 40_000, 0), (PAYABLE, 0, 40_000), (CONTRA, 40_000, 0),
         (HOLDS, 0, 40_000)]),
    "captured final with release": (
        fields("captured", event_id="003-H:3", amount_minor="100000", released_minor="10000"),
        event_row("captured", "003-H:3", 100_000, -110_000, 100_000),
        [(RECEIVABLE, 100_000, 0), (PAYABLE, 0, 100_000), (CONTRA, 110_000, 0),
         (HOLDS, 0, 110_000)]),
    "voided": (
        fields("voided", event_id="003-H:2", released_minor="70000"),
        event_row("voided", "003-H:2", 70_000, -70_000, 0),
        [(CONTRA, 70_000, 0), (HOLDS, 0, 70_000)]),
    "voided nothing left": (
        fields("voided", event_id="003-H:4", released_minor="0"),
        event_row("voided", "003-H:4", 0, 0, 0),
        []),
    "expired": (
        fields("expired", event_id="003-H:2", released_minor="123"),
        event_row("expired", "003-H:2", 123, -123, 0),
        [(CONTRA, 123, 0), (HOLDS, 0, 123)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_event_books_exact_lines(name):
    raw, expected_event, expected_lines = CASES[name]
    booking = books.book(ENTRY, raw, POSTED)
    assert booking.event == expected_event
    event_id = expected_event[0]
    assert list(booking.lines) == [(event_id, number, account, debit, credit)
                                   for number, (account, debit, credit)
                                   in enumerate(expected_lines, start=1)]
    assert booking.customer is None
    assert sum(line[3] for line in booking.lines) == sum(line[4] for line in booking.lines)


def test_customer_put_books_no_lines_and_updates_the_customer():
    raw = {b"type": b"customer_put", b"event_id": b"c:c1:4", b"customer_id": b"c1",
           b"status": b"active", b"timezone": b"America/New_York", b"caps": b"total=5",
           b"at_ms": str(AT).encode()}
    booking = books.book(ENTRY, raw, POSTED)
    assert booking.lines == ()
    # An event written before callers existed names none; only an authorization has a
    # catalog version.
    assert booking.event == ("c:c1:4", ENTRY, "customer_put", "c1", "", "", "", "", "", 0, 0,
                             0, AT, POSTED, "", "")
    assert booking.customer == ("c:c1:4", "c1", "active", "America/New_York", AT)


def test_str_keys_are_read_like_bytes_keys():
    raw = {k.decode(): v.decode() for k, v in fields("authorized", amount_minor="5").items()}
    assert books.book(ENTRY, raw, POSTED) == books.book(
        ENTRY, fields("authorized", amount_minor="5"), POSTED)


amounts = st.integers(min_value=0, max_value=AMOUNT_MINOR_MAX)


@given(kind=st.sampled_from(["authorized", "captured", "voided", "expired"]),
       amount=amounts, released=amounts)
def test_every_booking_balances_and_matches_its_deltas(kind, amount, released):
    raw = fields(kind, amount_minor=str(amount), released_minor=str(released))
    booking = books.book(ENTRY, raw, POSTED)
    debits = sum(line[3] for line in booking.lines)
    credits = sum(line[4] for line in booking.lines)
    assert debits == credits
    assert all(line[3] >= 0 and line[4] >= 0 and (line[3] == 0) != (line[4] == 0)
               for line in booking.lines)
    assert [line[1] for line in booking.lines] == list(range(1, len(booking.lines) + 1))

    def balance(account: str) -> int:
        return sum(line[3] - line[4] for line in booking.lines if line[2] == account)

    held, used = booking.event[10], booking.event[11]
    # The memo account moves with `held`, the receivable with `used`: the journal and the
    # deltas reconcile compares are one story.
    assert balance(HOLDS) == held
    assert balance(RECEIVABLE) == used
    assert balance(PAYABLE) == -used
    assert balance(CONTRA) == -held
    expected = {"authorized": (amount, 0), "captured": (-(amount + released), amount),
                "voided": (-released, 0), "expired": (-released, 0)}[kind]
    assert (held, used) == expected


POISON = {
    "missing type": (fields("authorized", amount_minor="1", type=None), "'type'"),
    "missing event_id": (fields("authorized", amount_minor="1", event_id=None), "'event_id'"),
    "missing customer_id": (fields("authorized", amount_minor="1", customer_id=None),
                            "'customer_id'"),
    "missing hold_id": (fields("voided", released_minor="1", hold_id=None), "'hold_id'"),
    "missing at_ms": (fields("authorized", amount_minor="1", at_ms=None), "'at_ms'"),
    "missing nodes": (fields("authorized", amount_minor="1", nodes=None), "'nodes'"),
    "empty nodes": (fields("authorized", amount_minor="1", nodes=""), "'nodes'"),
    "missing amount": (fields("authorized"), "'amount_minor'"),
    "missing released": (fields("captured", amount_minor="1"), "'released_minor'"),
    "non-digit amount": (fields("authorized", amount_minor="abc"), "'abc'"),
    "negative amount": (fields("authorized", amount_minor="-5"), "'-5'"),
    "fractional amount": (fields("captured", amount_minor="1.5", released_minor="0"),
                          "'1.5'"),
    "empty amount": (fields("authorized", amount_minor=""), "'amount_minor'"),
    "non-ascii digits": (fields("authorized", amount_minor="\u0661\u0662"), "'amount_minor'"),
    "amount above bound": (fields("authorized", amount_minor=str(AMOUNT_MINOR_MAX + 1)),
                           "'amount_minor'"),
    "negative release": (fields("expired", released_minor="-1"), "'released_minor'"),
    "unknown type": (fields("refundedd", amount_minor="1"), "unknown event type 'refundedd'"),
    "bad at_ms": (fields("authorized", amount_minor="1", at_ms="soon"), "'at_ms'"),
    "huge field": (fields("authorized", amount_minor="1", customer_id="c" * 5000),
                   "'customer_id'"),
}


@pytest.mark.parametrize("name", list(POISON))
def test_poison_event_raises_with_reason(name):
    raw, needle = POISON[name]
    with pytest.raises(books.PoisonEvent) as caught:
        books.book(ENTRY, raw, POSTED)
    assert needle in str(caught.value)


def test_a_refund_moves_the_receivable_back_to_the_merchant():
    from creditgate.ledger.books import book, receivable, settlement_payable

    booked = book("s 1", {"type": "refunded", "event_id": "007-AAAAAAAAAAAAAAAA:3",
                          "customer_id": "c9", "hold_id": "007-AAAAAAAAAAAAAAAA",
                          "product_id": "scan_pay", "merchant_id": "m9", "currency": "CNY",
                          "nodes": "total,consumer", "amount_minor": "2500",
                          "refunded_total_minor": "2500", "at_ms": "1795600000000"}, 1)
    assert booked.lines == (
        ("007-AAAAAAAAAAAAAAAA:3", 1, settlement_payable("m9"), 2500, 0),
        ("007-AAAAAAAAAAAAAAAA:3", 2, receivable("c9"), 0, 2500))
    assert booked.event[9:12] == (2500, 0, -2500)  # amount, held change, used change
