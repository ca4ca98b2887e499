"""The ledger books every lifecycle event (docs/lifecycle.md, "Ledger booking"): exact lines
per event; on SQLite and PostgreSQL a mixed run of every operation posts once, balances, and
reconciles with Redis level by level, path by path and for the credit balance; bills list the
repayments."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.sweeper import sweep_once
from creditgate.ledger import bills, books, reconcile
from creditgate.limits import catalog, keys
from creditgate.limits.constants import AMOUNT_MINOR_MAX
from tests.conftest import CUSTOMER_CAPS, PARTITIONS
from tests.ledger.support import account_balances, assert_posted_exactly_once, outbox_length

AT = 1_800_000_000_000
POSTED = AT + 5
ENTRY = "cg:{p:003}:outbox 1800000000000-0"
POS = "total,consumer,consumer.scan_pay,consumer.scan_pay.pos"
HOLDS = "customer:c1:open_holds"
RECEIVABLE = "customer:c1:receivable"
CREDIT = "customer:c1:credit_balance"
PAYABLE = "merchant:m9:settlement_payable"
CONTRA = "memo:open_holds_contra"
BANK = "bank:repayments_clearing"


def fields(kind: str, **extra) -> dict[bytes, bytes]:
    base = {"type": kind, "event_id": "003-H:2", "customer_id": "c1", "hold_id": "003-H",
            "product_id": "scan_pay", "merchant_id": "m9", "currency": "CNY", "nodes": POS,
            "at_ms": str(AT), "caller": "T-9"}
    if kind in ("repaid", "overpaid", "limit_raised"):  # a customer's event, not a hold's
        base = {"type": kind, "event_id": "c:c1:7", "customer_id": "c1", "nodes": POS,
                "at_ms": str(AT), "caller": "B-9"}
    base.update(extra)
    return {k.encode(): v.encode() for k, v in base.items() if v is not None}


def row(kind: str, amount: int, held: int, used: int, event_id="003-H:2", hold="003-H",
        product="scan_pay", merchant="m9", currency="CNY", nodes=POS) -> tuple:
    return (event_id, ENTRY, kind, "c1", hold, product, merchant, currency, nodes, amount, held,
            used, AT, POSTED, "B-9" if event_id.startswith("c:") else "T-9", "")


def customer_row(kind: str, amount: int, used: int, nodes=POS) -> tuple:
    return row(kind, amount, 0, used, "c:c1:7", "", "", "", "", nodes)


CASES = {
    "incremented": (
        fields("incremented", amount_minor="5000", amount_total_minor="15000"),
        row("incremented", 5_000, 5_000, 0), [(HOLDS, 5_000, 0), (CONTRA, 0, 5_000)]),
    "captured with an excess": (
        fields("captured", amount_minor="11500", released_minor="0", excess_minor="1500"),
        row("captured", 11_500, -10_000, 11_500),
        [(RECEIVABLE, 11_500, 0), (PAYABLE, 0, 11_500), (CONTRA, 10_000, 0),
         (HOLDS, 0, 10_000)]),
    "force_captured": (
        fields("force_captured", event_id="003-H:1", amount_minor="8000", over_limit="total",
               original_hold_id=""),
        row("force_captured", 8_000, 0, 8_000, event_id="003-H:1"),
        [(RECEIVABLE, 8_000, 0), (PAYABLE, 0, 8_000)]),
    "reversed released": (
        fields("reversed", event_id="z:c1|k1", outcome="released", released_minor="7000"),
        row("reversed", 7_000, -7_000, 0, event_id="z:c1|k1"),
        [(CONTRA, 7_000, 0), (HOLDS, 0, 7_000)]),
    "reversed tombstoned": (
        fields("reversed", event_id="z:c1|k1", outcome="tombstoned", released_minor="0",
               hold_id="", product_id="", merchant_id="", currency="", nodes=""),
        row("reversed", 0, 0, 0, "z:c1|k1", "", "", "", "", ""), []),
    "refunded all restored": (
        fields("refunded", amount_minor="3000", restored_minor="3000", overpaid_minor="0"),
        row("refunded", 3_000, 0, -3_000), [(PAYABLE, 3_000, 0), (RECEIVABLE, 0, 3_000)]),
    "refunded partly overpaid": (
        fields("refunded", amount_minor="5000", restored_minor="2000", overpaid_minor="3000"),
        row("refunded", 5_000, 0, -2_000),
        [(PAYABLE, 5_000, 0), (RECEIVABLE, 0, 2_000), (CREDIT, 0, 3_000)]),
    "refunded all overpaid": (
        fields("refunded", amount_minor="4000", restored_minor="0", overpaid_minor="4000"),
        row("refunded", 4_000, 0, 0), [(PAYABLE, 4_000, 0), (CREDIT, 0, 4_000)]),
    "refunded before repayments existed": (
        fields("refunded", amount_minor="2500"),
        row("refunded", 2_500, 0, -2_500), [(PAYABLE, 2_500, 0), (RECEIVABLE, 0, 2_500)]),
    "repaid": (
        fields("repaid", amount_minor="9000"),
        customer_row("repaid", 9_000, -9_000), [(BANK, 9_000, 0), (RECEIVABLE, 0, 9_000)]),
    "overpaid": (
        fields("overpaid", amount_minor="1200", nodes=""),
        customer_row("overpaid", 1_200, 0, nodes=""), [(BANK, 1_200, 0), (CREDIT, 0, 1_200)]),
    "limit_raised": (
        fields("limit_raised", node="total", raise_minor="50000", expires_at_ms=str(AT + 1),
               nodes=None),
        customer_row("limit_raised", 0, 0, nodes=""), []),
}


@pytest.mark.parametrize("name", list(CASES))
def test_event_books_exact_lines(name):
    raw, expected_event, expected_lines = CASES[name]
    booking = books.book(ENTRY, raw, POSTED)
    assert booking.event == expected_event
    assert list(booking.lines) == [(expected_event[0], number, account, debit, credit)
                                   for number, (account, debit, credit)
                                   in enumerate(expected_lines, start=1)]
    assert booking.customer is None


POISON = {
    "excess above the amount": (
        fields("captured", amount_minor="100", released_minor="0", excess_minor="101"),
        "'excess_minor' exceeds"),
    "restored above the amount": (
        fields("refunded", amount_minor="100", restored_minor="101"), "'restored_minor' exceeds"),
    "restored and overpaid do not add up": (
        fields("refunded", amount_minor="100", restored_minor="60", overpaid_minor="50"),
        "do not add up"),
    "repaid without a path": (fields("repaid", amount_minor="5", nodes=""), "'nodes'"),
    "a reversal that released without a path": (
        fields("reversed", released_minor="5", nodes=""), "'nodes'"),
    "force capture without a merchant": (
        fields("force_captured", amount_minor="5", merchant_id=None), "'merchant_id'"),
    "negative repayment": (fields("repaid", amount_minor="-5"), "'-5'"),
}


@pytest.mark.parametrize("name", list(POISON))
def test_poison_lifecycle_event_raises_with_reason(name):
    raw, needle = POISON[name]
    with pytest.raises(books.PoisonEvent) as caught:
        books.book(ENTRY, raw, POSTED)
    assert needle in str(caught.value)


amounts = st.integers(min_value=0, max_value=AMOUNT_MINOR_MAX)


@given(kind=st.sampled_from(["incremented", "captured", "force_captured", "reversed",
                             "refunded", "repaid", "overpaid"]),
       amount=amounts, second=amounts, third=amounts)
def test_every_lifecycle_booking_balances_and_matches_its_deltas(kind, amount, second, third):
    excess, restored = min(second, amount), min(third, amount)
    raw = fields(kind, amount_minor=str(amount), released_minor=str(second),
                 excess_minor=str(excess), restored_minor=str(restored),
                 overpaid_minor=str(amount - restored))
    booking = books.book(ENTRY, raw, POSTED)
    assert sum(line[3] for line in booking.lines) == sum(line[4] for line in booking.lines)
    assert all((line[3] == 0) != (line[4] == 0) for line in booking.lines)

    def balance(account: str) -> int:
        return sum(line[3] - line[4] for line in booking.lines if line[2] == account)

    held, used = booking.event[10], booking.event[11]
    # The memo account moves with `held`, the receivable with `used` (a path's balance), the
    # credit balance with what was overpaid: the journal and reconcile's deltas agree.
    assert balance(HOLDS) == held
    assert balance(RECEIVABLE) == used
    overpaid = {"refunded": amount - restored, "overpaid": amount}.get(kind, 0)
    assert balance(CREDIT) == -overpaid


# -- a mixed run through the gateway, on both backends -----------------------------------------

CUSTOMERS = ("c-l1", "c-l2")
TTL_MS = catalog.load()["scan_pay"].hold_ttl_s * 1000


def authorize(key, customer_id, amount, product_id="scan_pay", channel=pb.CHANNEL_POS,
              mcc="5411", merchant_id="m-1"):
    return pb.AuthorizeRequest(idempotency_key=key, customer_id=customer_id,
                               product_id=product_id, channel=channel, merchant_id=merchant_id,
                               mcc=mcc, amount_minor=amount, currency="CNY")


async def mixed_run(gateway, admin, auth) -> dict:
    """Every operation and outcome once or more; returns what the checks need."""
    for customer_id in CUSTOMERS:
        await admin.PutCustomer(pb.PutCustomerRequest(
            customer_id=customer_id, status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
    # An over-capture (a tip) on c-l1.
    h1 = await auth.Authorize(authorize("a1", "c-l1", 10_000))
    tip = await auth.Capture(pb.CaptureRequest(idempotency_key="c", hold_id=h1.hold_id,
                                               amount_minor=11_000))
    assert tip.over_captured_minor == 1_000
    # An incremented e-commerce hold, partly captured, then reversed (the rest released).
    h2 = await auth.Authorize(authorize("a2", "c-l1", 20_000, "ecommerce",
                                        pb.CHANNEL_ECOMMERCE, "5999", "m-2"))
    grown = await auth.IncrementAuthorization(pb.IncrementAuthorizationRequest(
        idempotency_key="i", hold_id=h2.hold_id, amount_minor=5_000))
    assert grown.approved and grown.amount_total_minor == 25_000
    await auth.Capture(pb.CaptureRequest(idempotency_key="c", hold_id=h2.hold_id,
                                         amount_minor=15_000))
    released = await auth.Reverse(pb.ReverseRequest(customer_id="c-l1",
                                                    original_idempotency_key="a2"))
    assert (released.outcome, released.released_minor) == (pb.REVERSE_OUTCOME_RELEASED, 10_000)
    # A reversal before its original; a reversal of a declined original.
    tomb = await auth.Reverse(pb.ReverseRequest(customer_id="c-l1",
                                                original_idempotency_key="late"))
    assert tomb.outcome == pb.REVERSE_OUTCOME_TOMBSTONED
    assert (await auth.Authorize(authorize("late", "c-l1", 1_000))).decline_reason == 12
    declined = await auth.Authorize(authorize("bad", "c-l2", 10_000, "cash", pb.CHANNEL_CASH))
    assert not declined.approved
    assert (await auth.Reverse(pb.ReverseRequest(
        customer_id="c-l2", original_idempotency_key="bad"))).outcome == \
        pb.REVERSE_OUTCOME_ORIGINAL_DECLINED
    # A force capture over the pos cap on c-l2, then part of it refunded.
    forced = await auth.ForceCapture(pb.ForceCaptureRequest(
        idempotency_key="f", customer_id="c-l2", product_id="scan_pay", channel=pb.CHANNEL_POS,
        merchant_id="m-3", mcc="5411", amount_minor=600_000, currency="CNY"))
    assert forced.over_limit
    await auth.Refund(pb.RefundRequest(idempotency_key="r", hold_id=forced.hold_id,
                                       amount_minor=50_000))
    # c-l1: a refund restoring credit; a repayment clearing everything and overpaying; then a
    # refund of what was repaid (to the credit balance).
    await auth.Refund(pb.RefundRequest(idempotency_key="r1", hold_id=h1.hold_id,
                                       amount_minor=3_000))
    paid = await admin.Repay(pb.RepayRequest(idempotency_key="p1", customer_id="c-l1",
                                             amount_minor=30_000))
    assert (paid.repaid_minor, paid.overpaid_minor) == (23_000, 7_000)
    late_refund = await auth.Refund(pb.RefundRequest(idempotency_key="r2", hold_id=h1.hold_id,
                                                     amount_minor=5_000))
    # c-l2 repays part of its balance; a temporary raise; a voided hold.
    await admin.Repay(pb.RepayRequest(idempotency_key="p1", customer_id="c-l2",
                                      amount_minor=100_000))
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id="c-l2"))
    await admin.SetTemporaryRaise(pb.SetTemporaryRaiseRequest(
        customer_id="c-l2", node="total", raise_minor=50_000,
        expires_at_ms=credit.as_of_ms + 3_600_000))
    h3 = await auth.Authorize(authorize("a3", "c-l2", 2_000, channel=pb.CHANNEL_QR_SCAN,
                                        mcc="5812"))
    await auth.Void(pb.VoidRequest(idempotency_key="v", hold_id=h3.hold_id))
    # Open holds at the end: one left open, one expired by the sweeper.
    await auth.Authorize(authorize("a4", "c-l1", 4_000))
    await auth.Authorize(authorize("a5", "c-l2", 6_000, channel=pb.CHANNEL_QR_SCAN, mcc="5812"))
    gateway.limits.clock_offset_ms += TTL_MS - 1_000
    await auth.Authorize(authorize("a6", "c-l2", 1_500))
    gateway.limits.clock_offset_ms += 2_000
    assert await sweep_once(gateway.limits) == 2  # a4 and a5
    return {"cycle_at_ms": late_refund.decided_at_ms, "forced": forced.hold_id}


async def test_a_mixed_run_posts_once_balances_and_reconciles(redis, gateway, admin, auth,
                                                              store, make_worker):
    facts = await mixed_run(gateway, admin, auth)
    worker = make_worker("w1")
    await worker.start()
    await worker.drain()
    assert worker.posted == await outbox_length(redis)
    await assert_posted_exactly_once(redis, store)
    kinds = {kind for (kind,) in await store.fetch("SELECT DISTINCT type FROM ledger_events")}
    assert kinds == set(books.EVENT_TYPES)  # every kind of event took part

    report = await reconcile.reconcile(redis, store, PARTITIONS)
    assert report.ok, [str(drift) for drift in report.drifts]
    assert (report.customers, report.paths) == (2, 1)  # only c-l2 still owes (on pos)

    # The accounts tell the same story as Redis, customer by customer.
    balances = await account_balances(store)
    for customer_id in CUSTOMERS:
        credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=customer_id))
        total = {level.node: level for level in credit.levels}["total"]
        assert balances.get(f"customer:{customer_id}:receivable", 0) == \
            credit.outstanding_minor == total.used_minor
        assert balances.get(f"customer:{customer_id}:credit_balance", 0) == \
            -credit.credit_balance_minor
        assert balances.get(f"customer:{customer_id}:open_holds", 0) == total.held_minor
    assert balances["customer:c-l1:credit_balance"] == -12_000  # 7,000 repaid + 5,000 refund
    assert balances[books.BANK] == 130_000
    assert sum(balances.values()) == 0

    # Bills list the purchases (the force capture too), the refunds and the repayments.
    cycle = time.strftime("%Y-%m", time.gmtime(facts["cycle_at_ms"] / 1000 + 8 * 3600))
    closed = {bill.customer_id: bill for bill in await bills.close(store, cycle)}
    one, two = closed["c-l1"], closed["c-l2"]
    assert (one.purchases_minor, one.refunds_minor, one.repayments_minor, one.total_minor) == (
        26_000, 8_000, 30_000, 18_000)
    assert [line[1] for line in one.lines].count("repayment") == 3  # two paths and the excess
    assert (two.purchases_minor, two.refunds_minor, two.repayments_minor) == (
        600_000, 50_000, 100_000)
    assert [(line[1], line[2]) for line in two.lines][0] == ("purchase", facts["forced"])
    assert one.currency == two.currency == "CNY"


async def test_reconcile_names_a_corrupted_path_balance_and_credit_balance(
        redis, gateway, admin, auth, store, make_worker):
    await mixed_run(gateway, admin, auth)
    worker = make_worker("w1")
    await worker.start()
    await worker.drain()
    assert (await reconcile.reconcile(redis, store, PARTITIONS)).ok
    customer_key = keys.customer(keys.base(keys.partition_of("c-l1", PARTITIONS)), "c-l1")
    online = "total,consumer,consumer.online"
    await redis.hset(customer_key, keys.FIELD_BALANCE + online, 7)
    await redis.hincrby(customer_key, keys.FIELD_CREDIT_BALANCE, -2)
    report = await reconcile.reconcile(redis, store, PARTITIONS)
    assert report.drifts == [reconcile.Drift("c-l1", online, "balance", 7, 0),
                             reconcile.Drift("c-l1", "", "credit_balance", 11_998, 12_000)]
    assert str(report.drifts[0]) == (f"drift: customer c-l1 path {online} balance: redis 7 "
                                     "ledger 0 (difference 7)")
    assert str(report.drifts[1]) == ("drift: customer c-l1 credit_balance: redis 11998 ledger "
                                     "12000 (difference -2)")
