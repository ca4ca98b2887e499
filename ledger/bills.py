"""`creditgate bills close --cycle YYYY-MM`: consolidated monthly statements.

For each customer, one statement per cycle (a calendar month in the customer's timezone) that
merges every purchase captured in the cycle (force captures included) and every refund into one
obligation with its line items, so that many small purchases are reported as one bill rather
than many loans. The repayments received in the cycle are listed too (one line per path paid,
and one for an overpayment); they do not change the cycle's obligation (`total_minor`, the
purchases less the refunds): a repayment usually pays an earlier cycle's bill.
Closing a cycle again recomputes it from the ledger and replaces it: the same ledger gives the
same bills.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import msgspec

from creditgate.limits.constants import TZ_DEFAULT

CYCLE = re.compile(r"(\d{4})-(0[1-9]|1[0-2])\Z")
# Event types that are bill lines, and the line's kind.
LINE_KINDS = {"captured": "purchase", "force_captured": "purchase", "refunded": "refund",
              "repaid": "repayment", "overpaid": "repayment"}


class Bill(msgspec.Struct, frozen=True):
    customer_id: str
    cycle: str
    currency: str
    purchases_minor: int
    refunds_minor: int
    total_minor: int  # purchases - refunds
    lines: tuple[tuple, ...]  # (event_id, kind, hold_id, merchant_id, amount_minor, at_ms)
    closed_at_ms: int
    repayments_minor: int = 0  # received in the cycle (from the lines; not a column of bills)


def cycle_bounds_ms(cycle: str, timezone: str) -> tuple[int, int]:
    """[start, end) of the cycle in Unix ms, in the given timezone."""
    match = CYCLE.match(cycle)
    if not match:
        raise ValueError(f"cycle {cycle!r}: expected YYYY-MM")
    year, month = int(match.group(1)), int(match.group(2))
    try:
        tz = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = zoneinfo.ZoneInfo(TZ_DEFAULT)  # a zone this host's tzdata lacks
    start = dt.datetime(year, month, 1, tzinfo=tz)
    end = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


async def _timezones_at(store, moment_ms: int) -> dict[str, str]:
    """Each customer's timezone in force at `moment_ms` (the cycle's start): the latest
    customer_put at or before it, else the customer's first. A later change of timezone
    therefore never moves a cycle's bounds."""
    history: dict[str, list[tuple[tuple[int, int], str]]] = {}
    for customer_id, since_ms, event_id, timezone in await store.fetch(
            "SELECT customer_id, since_ms, event_id, timezone FROM ledger_customer_timezones"):
        seq = event_id.rsplit(":", 1)[-1]
        order = (int(since_ms), int(seq) if seq.isdigit() else 0)
        history.setdefault(customer_id, []).append((order, timezone))
    chosen = {}
    for customer_id, changes in history.items():
        before = [change for change in changes if change[0][0] <= moment_ms]
        chosen[customer_id] = (max(before) if before else min(changes))[1]
    return chosen


async def close(store, cycle: str) -> list[Bill]:
    """Compute and store every customer's bill for the cycle; returns them."""
    cycle_bounds_ms(cycle, TZ_DEFAULT)  # validates the cycle
    timezones = await _timezones_at(store, cycle_bounds_ms(cycle, "UTC")[0])
    # Every zone is within a day of UTC: read a margin, then keep each customer's own window.
    start_utc, end_utc = cycle_bounds_ms(cycle, "UTC")
    day_ms = 86_400_000
    rows = await store.fetch(
        "SELECT customer_id, event_id, type, hold_id, merchant_id, currency, amount_minor, "
        "at_ms FROM ledger_events WHERE type IN ('captured', 'force_captured', 'refunded', "
        "'repaid', 'overpaid') "
        "AND at_ms >= $1 AND at_ms < $2 ORDER BY customer_id, at_ms, event_id",
        start_utc - day_ms, end_utc + day_ms)
    by_customer: dict[str, list[tuple]] = {}
    for row in rows:
        by_customer.setdefault(row[0], []).append(row)
    bills = []
    for customer_id, events in sorted(by_customer.items()):
        start, end = cycle_bounds_ms(cycle, timezones.get(customer_id) or TZ_DEFAULT)
        lines = []
        sums = {"purchase": 0, "refund": 0, "repayment": 0}
        for _, event_id, kind, hold_id, merchant_id, _currency, amount, at_ms in events:
            if not start <= at_ms < end:
                continue
            label = LINE_KINDS[kind]
            sums[label] += int(amount)
            lines.append((event_id, label, hold_id, merchant_id, int(amount), int(at_ms)))
        if lines:
            # A repayment carries no currency: the bill's is its purchases' and refunds'.
            currency = next((event[5] for event in events if event[5]), "")
            bills.append(Bill(customer_id, cycle, currency, sums["purchase"], sums["refund"],
                              sums["purchase"] - sums["refund"], tuple(lines), end,
                              sums["repayment"]))
    await store.replace(
        [("DELETE FROM bill_lines WHERE cycle = $1", (cycle,)),
         ("DELETE FROM bills WHERE cycle = $1", (cycle,))],
        [("INSERT INTO bills (customer_id, cycle, currency, purchases_minor, refunds_minor, "
          "total_minor, line_count, closed_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
          [(b.customer_id, cycle, b.currency, b.purchases_minor, b.refunds_minor,
            b.total_minor, len(b.lines), b.closed_at_ms) for b in bills]),
         ("INSERT INTO bill_lines (customer_id, cycle, line_no, event_id, kind, hold_id, "
          "merchant_id, amount_minor, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
          [(b.customer_id, cycle, number, *line) for b in bills
           for number, line in enumerate(b.lines, start=1)])])
    return bills
