"""shadow_reserve, reserve's read-only twin (limits/lua_source.py SHADOW_SCRIPTS), on real
Redis: over random sequences of purchases (new and retried keys, partial approvals, declines
of every amount reason and of the customer's status, time moving past holds' expiry), the
shadow called just before each live reserve leaves Redis byte for byte as it was, and either
decides exactly as the live call then does (reason, level, amount, partial approval,
counter-offer, what remains available) or answers SKIP: `replay` for a retried key only,
`expired` only where the live call first releases a hold."""

from __future__ import annotations

import asyncio

import redis.asyncio as redis_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditgate import hotpath
from creditgate.limits.lua_source import SHADOW_SKIP
from creditgate.limits.replies import decode_authorization
from tests.support import PARTITIONS, RULES, authorize_request, redis_client

CUSTOMERS = ("s-alice", "s-bob")
CAPS = {"total": 2_000_000, "consumer": 1_500_000, "consumer.scan_pay": 1_200_000,
        "consumer.scan_pay.pos": 1_000_000, "consumer.scan_pay.qr": 400_000}
AMOUNTS = (50, 100, 40_000, 300_000, 900_000, 1_300_000, 6_000_000)
WEEK_MS = 7 * 86_400_000  # scan_pay's hold TTL

steps = st.lists(st.fixed_dictionaries({
    "customer": st.sampled_from(CUSTOMERS),
    "amount": st.sampled_from(AMOUNTS),
    "partial": st.booleans(),
    "channel": st.sampled_from(("pos", "qr_scan")),
    "retry": st.one_of(st.none(), st.integers(0, 20)),  # an earlier step's key
    "later_ms": st.sampled_from((0, 0, 0, 60_000, WEEK_MS + 1)),
    "status": st.sampled_from(("active",) * 6 + ("frozen", "overdue")),
}), min_size=1, max_size=14)


async def dumps(redis) -> dict:
    return {key: (await redis.dump(key), await redis.execute_command("PEXPIRETIME", key))
            async for key in redis.scan_iter(count=1000)}


def text(reply) -> str:
    return reply.decode() if isinstance(reply, bytes) else reply


def decided(reply: str) -> tuple:
    a = decode_authorization(reply)
    return (a.reason, a.level, a.approved_amount_minor, a.partial, a.counter_offer_minor,
            a.counter_offer_level, a.available_minor)


async def scenario(url: str, sequence: list[dict]) -> None:
    redis = redis_asyncio.from_url(url)
    try:
        await redis.flushall()
        client = redis_client(redis)
        for customer in CUSTOMERS:
            await client.put_customer(customer, "active", "Asia/Shanghai", CAPS)
        used: list[tuple[str, dict]] = []  # each step's key and request
        for step in sequence:
            client.clock_offset_ms += step["later_ms"]
            customer = step["customer"]
            if step["status"] != "active":
                await client.put_customer(customer, step["status"], "Asia/Shanghai", CAPS)
            retried = step["retry"] is not None and step["retry"] < len(used)
            key, request = used[step["retry"]] if retried else (f"k-{len(used)}", step)
            used.append((key, request))
            plan = hotpath.plan_authorize(authorize_request(
                key, request["customer"], request["amount"], channel=request["channel"],
                allow_partial=request["partial"]), RULES, PARTITIONS)
            before = await dumps(redis)
            shadow = text(await client.shadow_reserve(*plan))
            assert await dumps(redis) == before
            live = text(await client.reserve(*plan))
            if shadow == SHADOW_SKIP + "replay":
                assert retried
            elif shadow == SHADOW_SKIP + "expired":
                assert client.clock_offset_ms > WEEK_MS
            else:
                assert decided(shadow) == decided(live), (shadow, live)
            if step["status"] != "active":
                await client.put_customer(customer, "active", "Asia/Shanghai", CAPS)
        await client.runner.close()
    finally:
        await redis.aclose()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=steps)
def test_the_shadow_writes_nothing_and_decides_as_the_live_call(redis_server, sequence):
    asyncio.run(scenario(redis_server.url, sequence))


async def test_the_shadow_of_element_products_writes_nothing(redis):
    """The elements' reads (the customer's timezone schedule, the first-purchase marker, the
    effective dates) write nothing either: shadow_reserve, which Redis runs read-only, decides
    each element product's purchases as the live reserve then does, before and after the
    first approval writes its marker, in and out of the allowed hours."""
    from tests.support import ELEMENTS_RULES

    client = redis_client(redis)
    await client.put_customer("e-1", "active", "America/New_York",
                              {"total": 10**9, "consumer": 10**9, "consumer.online": 10**9})
    reasons = set()
    for n, (product, amount, later_ms) in enumerate([
            ("launch", 25_000, 0), ("launch", 1_000, 0), ("launch", 25_000, 0),
            ("expired", 1_000, 0), ("upcoming", 1_000, 0), ("plain", 1_000, 0),
            ("launch", 1_000, 6 * 3_600_000), ("launch", 1_000, 6 * 3_600_000),
            ("launch", 1_000, 6 * 3_600_000)]):
        client.clock_offset_ms += later_ms
        plan = hotpath.plan_authorize(authorize_request(
            f"e-{n}", "e-1", amount, product_id=product, channel="ecommerce",
            merchant_id="m-1"), ELEMENTS_RULES, PARTITIONS)
        before = await dumps(redis)
        shadow = text(await client.shadow_reserve(*plan))
        assert await dumps(redis) == before
        live = text(await client.reserve(*plan))
        if shadow == SHADOW_SKIP + "expired":
            continue
        assert decided(shadow) == decided(live), (product, shadow, live)
        reasons.add(decode_authorization(live).reason)
    # Each element had its say: the first-purchase maximum, the dates, the hours, approvals.
    from creditgate.limits.reasons import DeclineReason as R
    assert {R.FIRST_PURCHASE_ABOVE_MAXIMUM, R.PRODUCT_NOT_EFFECTIVE, R.NONE} <= reasons, reasons
