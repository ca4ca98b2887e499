"""Consolidated bills: a cycle's bill per customer is the sum of that cycle's captures, cut
at the month boundary of the customer's own timezone; closing twice gives the same bills."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from creditgate.ledger import bills
from tests.ledger.support import Traffic
from tests.support import without_generation

UTC = dt.UTC
ZONES = {"c-sh": "Asia/Shanghai", "c-ny": "America/New_York"}


def utc_ms(*parts: int) -> int:
    return int(dt.datetime(*parts, tzinfo=UTC).timestamp() * 1000)


def local_cycle(customer_id: str, at_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(at_ms / 1000, zoneinfo.ZoneInfo(ZONES[customer_id]))
    return moment.strftime("%Y-%m")


async def at(gateway, redis, target_ms: int) -> None:
    """Move the scripts' clock so that it reads `target_ms` now."""
    seconds, micros = await redis.time()
    gateway.limits.clock_offset_ms = target_ms - (seconds * 1000 + micros // 1000)


async def purchases(traffic: Traffic, gateway, redis) -> None:
    plan = [  # (UTC moment, customer, amount held, captures (amount, final))
        (utc_ms(2027, 1, 10, 4), "c-sh", 1_500, [(1_000, True)]),        # Jan 10 12:00 SH
        (utc_ms(2027, 1, 15, 14), "c-ny", 5_000, [(2_200, False), (800, True)]),
        (utc_ms(2027, 1, 31, 15, 30), "c-sh", 3_000, [(3_000, False)]),  # Jan 31 23:30 SH
        (utc_ms(2027, 1, 31, 16, 30), "c-sh", 4_100, [(4_100, True)]),   # Feb 1 00:30 SH
        (utc_ms(2027, 2, 1, 3), "c-ny", 2_700, [(2_700, True)]),         # Jan 31 22:00 NY
        (utc_ms(2027, 2, 10, 15), "c-ny", 6_000, [(3_500, True)]),
    ]
    for moment, customer, held, captures in plan:
        await at(gateway, redis, moment)
        hold = (await traffic.authorize(customer, held, merchant_id=f"m-{customer}")).hold_id
        for amount, final in captures:
            reply = await traffic.capture(hold, amount, final=final)
            assert moment <= reply.decided_at_ms < moment + 60_000
        if customer == "c-sh" and held == 1_500:
            voided = (await traffic.authorize(customer, 800)).hold_id
            await traffic.void(voided)  # a void is not a bill line


def expected_bills(traffic: Traffic, cycle: str) -> dict[str, list[tuple]]:
    lines: dict[str, list[tuple]] = {}
    sequence: dict[str, int] = {}
    for customer, hold, amount, at_ms in traffic.captures:
        sequence[hold] = sequence.get(hold, 1) + 1
        if local_cycle(customer, at_ms) == cycle:
            lines.setdefault(customer, []).append(
                (f"{hold}:{sequence[hold]}", "purchase", hold, f"m-{customer}", amount, at_ms))
    return lines


async def bill_rows(store, cycle: str) -> tuple[list[tuple], list[tuple]]:
    heads = await store.fetch("SELECT * FROM bills WHERE cycle = $1 ORDER BY customer_id", cycle)
    lines = await store.fetch("SELECT * FROM bill_lines WHERE cycle = $1 "
                              "ORDER BY customer_id, line_no", cycle)
    return heads, lines


async def test_bills_follow_each_customers_month(redis, gateway, admin, auth, store,
                                                 make_worker):
    traffic = Traffic(gateway, admin, auth)
    for customer, zone in ZONES.items():
        await traffic.put(customer, timezone=zone)
    await purchases(traffic, gateway, redis)
    worker = make_worker("w1")
    await worker.start()
    await worker.drain()
    assert worker.posted == traffic.events

    totals = {}
    for cycle in ("2027-01", "2027-02"):
        closed = await bills.close(store, cycle)
        expected = expected_bills(traffic, cycle)
        assert [bill.customer_id for bill in closed] == sorted(expected)
        for bill in closed:
            lines = expected[bill.customer_id]
            assert [(without_generation(line[0]), *line[1:]) for line in bill.lines] == lines
            assert bill.purchases_minor == bill.total_minor == sum(line[4] for line in lines)
            assert (bill.refunds_minor, bill.currency, bill.cycle) == (0, "CNY", cycle)
            start, end = bills.cycle_bounds_ms(cycle, ZONES[bill.customer_id])
            assert bill.closed_at_ms == end
            assert all(start <= line[5] < end for line in bill.lines)
        totals[cycle] = {bill.customer_id: bill.total_minor for bill in closed}
        heads, rows = await bill_rows(store, cycle)
        assert heads == [(b.customer_id, cycle, "CNY", b.purchases_minor, 0, b.total_minor,
                          len(b.lines), b.closed_at_ms) for b in closed]
        assert rows == [(b.customer_id, cycle, number, *line) for b in closed
                        for number, line in enumerate(b.lines, start=1)]

        # Closing again: the same bills, the same rows.
        assert await bills.close(store, cycle) == closed
        assert await bill_rows(store, cycle) == (heads, rows)

    # The boundary captures went to the customer's own month, not UTC's.
    assert totals == {"2027-01": {"c-sh": 4_000, "c-ny": 5_700},
                      "2027-02": {"c-sh": 4_100, "c-ny": 3_500}}
    # Both cycles are stored side by side.
    counts = await store.fetch("SELECT cycle, COUNT(*), SUM(total_minor) FROM bills "
                               "GROUP BY cycle ORDER BY cycle")
    assert counts == [("2027-01", 2, 9_700), ("2027-02", 2, 7_600)]
    assert await bills.close(store, "2026-12") == []


async def test_a_later_timezone_change_does_not_move_a_closed_cycle(store):
    """A capture an hour before midnight UTC on Jan 31 is January's in UTC but February's in
    Shanghai. The customer switches to Shanghai in February: closing January again still
    bills it in January, and February does not bill it a second time."""
    from creditgate.ledger.bills import close
    from creditgate.ledger.books import book

    jan_31_2300_utc = 1_706_742_000_000  # 2024-01-31T23:00:00Z
    feb_10 = jan_31_2300_utc + 10 * 86_400_000

    def put(seq: int, timezone: str, at_ms: int):
        return book(f"s {seq}", {"type": "customer_put", "event_id": f"c:tz:{seq}",
                                 "customer_id": "tz", "status": "active",
                                 "timezone": timezone, "at_ms": str(at_ms)}, at_ms)

    capture = book("s c", {"type": "captured", "event_id": "001-AAAAAAAAAAAAAAAA:2",
                           "customer_id": "tz", "hold_id": "001-AAAAAAAAAAAAAAAA",
                           "product_id": "scan_pay", "merchant_id": "m", "currency": "CNY",
                           "nodes": "total", "amount_minor": "100", "released_minor": "0",
                           "at_ms": str(jan_31_2300_utc)}, jan_31_2300_utc)
    first = put(1, "UTC", jan_31_2300_utc - 86_400_000 * 40)
    await store.post([first.event, capture.event], list(capture.lines),
                     [first.customer])
    january = await close(store, "2024-01")
    assert [(b.customer_id, b.total_minor) for b in january] == [("tz", 100)]
    later = put(2, "Asia/Shanghai", feb_10)
    await store.post([later.event], [], [later.customer])
    assert await close(store, "2024-01") == january
    assert await close(store, "2024-02") == []
