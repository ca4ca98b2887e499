"""The reserve side of the lifecycle (docs/lifecycle.md): partial approval, counter-offers,
installment plans at authorization, temporary raises, and IncrementAuthorization. Every table
runs against the pure-Python model and the Lua scripts on the real Redis.

The Redis clock is moved to the model's start (2026-11-25) so calendar windows fall alike.
"""

from __future__ import annotations

import time

import pytest

from creditgate.limits import keys
from creditgate.limits.constants import RAISE_DURATION_S_MAX
from creditgate.limits.model import ModelRunner
from creditgate.limits.reasons import DeclineReason, ScriptError
from creditgate.limits.replies import Refused
from tests.support import (
    PARTITIONS,
    START_MS,
    ScriptDriver,
    authorize_request,
    model_client,
    redis_client,
    without_generation,
)

R = DeclineReason
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
POS = "consumer.scan_pay.pos"
ONLINE = "consumer.online"
BIG = 10**10
ROOMY = {"total": BIG, "consumer": BIG, "consumer.scan_pay": BIG, POS: BIG,
         "consumer.scan_pay.qr": BIG, ONLINE: BIG, "cash": BIG}
PRODUCT = {"scan_pay": ("pos", "5411"), "ecommerce": ("ecommerce", "5999"),
           "cash": ("cash", "6011")}
CUSTOMER = "cust-1"


@pytest.fixture(params=["model", "redis"])
def driver(request):
    if request.param == "model":
        return ScriptDriver(model_client())
    client = redis_client(request.getfixturevalue("redis"))
    client.clock_offset_ms = START_MS - int(time.time() * 1000)
    return ScriptDriver(client)


def _request(key: str, product_id: str, amount: int, **kwargs):
    channel, mcc = PRODUCT[product_id]
    return authorize_request(key, CUSTOMER, amount, product_id=product_id, channel=channel,
                             mcc=mcc, **kwargs)


async def _run(driver: ScriptDriver, steps) -> list:
    """Setup steps: ("auth", product, amount) must approve in full; ("advance", ms);
    ("raise", node, raise, expires in ms from now); ("status", status, caps)."""
    approved = []
    for index, step in enumerate(steps):
        if step[0] == "auth":
            result = await driver.authorization(_request(f"prior-{index}", step[1], step[2]))
            assert result.approved and result.approved_amount_minor == step[2], result
            approved.append(result)
        elif step[0] == "advance":
            driver.advance(step[1])
        elif step[0] == "raise":
            now = await driver.now_ms(CUSTOMER)
            await driver.set_raise(CUSTOMER, step[1], step[2], now + step[3])
        elif step[0] == "status":
            await driver.put(CUSTOMER, step[2], status=step[1])
    return approved


async def _stored(driver: ScriptDriver, key: str):
    """A key's value as the scripts left it (a hash as a dict, a stream as its entries)."""
    if isinstance(driver.client.runner, ModelRunner):
        return driver.client.runner.model.state.get(key)
    redis = driver.client.runner.redis
    kind = (await redis.type(key)).decode()
    if kind == "hash":
        return {k.decode(): v.decode() for k, v in (await redis.hgetall(key)).items()}
    if kind == "string":
        return (await redis.get(key)).decode()
    if kind == "stream":
        return [{k.decode(): v.decode() for k, v in fields.items()}
                for _, fields in await redis.xrange(key)]
    return None


def _base() -> str:
    return keys.base(keys.partition_of(CUSTOMER, PARTITIONS))


async def _hold(driver: ScriptDriver, hold_id: str) -> dict:
    return await _stored(driver, keys.hold(_base(), hold_id))


async def _events(driver: ScriptDriver, kind: str) -> list[dict]:
    return [e for e in await _stored(driver, keys.outbox(_base())) or [] if e["type"] == kind]


# -- Authorize: partial approval, counter-offers, installments, raises -------------------------

# (id, caps, setup steps, product, amount, request kwargs,
#  expected (reason, decline level, approved amount, partial, offer, offer level, plan text))
AUTHORIZE_ROWS = [
    # Partial approval: the most that fits, with the binding level named.
    ("partial-at-channel-node", {**ROOMY, POS: 30_000}, [], "scan_pay", 50_000,
     dict(allow_partial=True), (R.NONE, "", 30_000, True, 0, POS, "")),
    ("no-partial-unless-asked", {**ROOMY, POS: 30_000}, [], "scan_pay", 50_000,
     dict(), (R.INSUFFICIENT_CREDIT, POS, 0, False, 30_000, POS, "")),
    ("no-partial-if-product-forbids", {**ROOMY, ONLINE: 30_000}, [], "ecommerce", 50_000,
     dict(allow_partial=True), (R.INSUFFICIENT_CREDIT, ONLINE, 0, False, 30_000, ONLINE, "")),
    ("partial-never-below-minimum", {**ROOMY, POS: 99}, [], "scan_pay", 50_000,
     dict(allow_partial=True), (R.INSUFFICIENT_CREDIT, POS, 0, False, 0, POS, "")),
    ("partial-at-velocity-day", ROOMY,
     [("auth", "scan_pay", 5_000_000), ("auth", "scan_pay", 4_000_000)], "scan_pay", 2_000_000,
     dict(allow_partial=True), (R.NONE, "", 1_000_000, True, 0, "velocity.day", "")),
    ("partial-with-installments", {**ROOMY, POS: 30_001}, [], "scan_pay", 50_000,
     dict(allow_partial=True, installment_months=3),
     (R.NONE, "", 30_001, True, 0, POS, "3:10001:10000:180:60")),
    ("partial-counts-a-live-raise", {**ROOMY, "total": 40_000},
     [("raise", "total", 10_000, HOUR_MS)], "scan_pay", 100_000,
     dict(allow_partial=True), (R.NONE, "", 50_000, True, 0, "total", "")),
    # Counter-offers: the least candidate, named by the first (root first) that holds it.
    ("offer-tie-names-the-root", {**ROOMY, "total": 40_000, "consumer": 40_000}, [],
     "scan_pay", 50_000, dict(), (R.INSUFFICIENT_CREDIT, "total", 0, False, 40_000, "total", "")),
    ("offer-is-the-least-level", {**ROOMY, "consumer": 45_000, "consumer.scan_pay": 41_000}, [],
     "scan_pay", 50_000, dict(),
     (R.INSUFFICIENT_CREDIT, "consumer", 0, False, 41_000, "consumer.scan_pay", "")),
    ("offer-at-velocity-day", ROOMY,
     [("auth", "scan_pay", 5_000_000), ("auth", "scan_pay", 4_000_000)], "scan_pay", 2_000_000,
     dict(), (R.VELOCITY_AMOUNT_EXCEEDED, "", 0, False, 1_000_000, "velocity.day", "")),
    ("offer-at-velocity-month", ROOMY,
     [("auth", "cash", 2_000_000), ("advance", DAY_MS), ("auth", "cash", 2_000_000),
      ("advance", DAY_MS)], "cash", 1_500_000, dict(),
     (R.VELOCITY_AMOUNT_EXCEEDED, "", 0, False, 1_000_000, "velocity.month", "")),
    ("offer-tie-node-before-velocity", {**ROOMY, "cash": 2_000_000},
     [("auth", "cash", 1_000_000)], "cash", 1_500_000, dict(),
     (R.VELOCITY_AMOUNT_EXCEEDED, "", 0, False, 1_000_000, "cash", "")),
    ("offer-below-minimum-is-0", ROOMY, [("auth", "cash", 1_995_000)], "cash", 10_000,
     dict(allow_partial=True), (R.VELOCITY_AMOUNT_EXCEEDED, "", 0, False, 0, "velocity.day", "")),
    ("offer-below-minimum-at-node", {**ROOMY, "cash": 5_000}, [], "cash", 10_000, dict(),
     (R.INSUFFICIENT_CREDIT, "cash", 0, False, 0, "cash", "")),
    ("no-offer-on-velocity-count", {**ROOMY, "cash": 30_000},
     [("auth", "cash", 10_000)] * 3, "cash", 2_000_000, dict(allow_partial=True),
     (R.VELOCITY_COUNT_EXCEEDED, "", 0, False, 0, "", "")),
    ("no-offer-when-frozen", {**ROOMY, POS: 10},
     [("status", "frozen", {**ROOMY, POS: 10})], "scan_pay", 50_000, dict(allow_partial=True),
     (R.CUSTOMER_FROZEN, "", 0, False, 0, "", "")),
    ("no-offer-on-a-product-rule", {**ROOMY, POS: 10}, [], "scan_pay", 5_000_001,
     dict(allow_partial=True), (R.AMOUNT_ABOVE_MAXIMUM, "", 0, False, 0, "", "")),
    # Instalments: equal installments rounded down, the remainder in the first, a flat monthly
    # fee on the principal rounded half up.
    ("plan-3-months", ROOMY, [], "scan_pay", 100_000, dict(installment_months=3),
     (R.NONE, "", 100_000, False, 0, "", "3:33334:33333:600:60")),
    ("plan-fee-rounds-half-up", ROOMY, [], "scan_pay", 100_750, dict(installment_months=6),
     (R.NONE, "", 100_750, False, 0, "", "6:16795:16791:605:60")),
    ("plan-24-months", ROOMY, [], "ecommerce", 1_000_001, dict(installment_months=24),
     (R.NONE, "", 1_000_001, False, 0, "", "24:41683:41666:5000:50")),
    ("plan-without-remainder", ROOMY, [], "scan_pay", 120_000, dict(installment_months=12),
     (R.NONE, "", 120_000, False, 0, "", "12:10000:10000:720:60")),
    ("no-plan-on-a-decline", {**ROOMY, ONLINE: 50_000}, [], "ecommerce", 60_000,
     dict(installment_months=3), (R.INSUFFICIENT_CREDIT, ONLINE, 0, False, 50_000, ONLINE, "")),
    # Temporary raises: counted while they last, by every check.
    ("live-raise-counts", {**ROOMY, POS: 30_000}, [("raise", POS, 20_000, HOUR_MS)],
     "scan_pay", 45_000, dict(), (R.NONE, "", 45_000, False, 0, "", "")),
    ("lapsed-raise-counts-nothing", {**ROOMY, POS: 30_000},
     [("raise", POS, 20_000, HOUR_MS), ("advance", HOUR_MS)], "scan_pay", 45_000, dict(),
     (R.INSUFFICIENT_CREDIT, POS, 0, False, 30_000, POS, "")),
    ("removed-raise-counts-nothing", {**ROOMY, POS: 30_000},
     [("raise", POS, 20_000, HOUR_MS), ("raise", POS, 0, -1)], "scan_pay", 45_000, dict(),
     (R.INSUFFICIENT_CREDIT, POS, 0, False, 30_000, POS, "")),
    ("raise-on-another-node-helps-nothing", {**ROOMY, POS: 30_000},
     [("raise", "consumer.scan_pay.qr", 20_000, HOUR_MS)], "scan_pay", 45_000, dict(),
     (R.INSUFFICIENT_CREDIT, POS, 0, False, 30_000, POS, "")),
]


@pytest.mark.parametrize(("caps", "steps", "product_id", "amount", "kwargs", "expected"),
                         [row[1:] for row in AUTHORIZE_ROWS],
                         ids=[row[0] for row in AUTHORIZE_ROWS])
async def test_authorize_row(driver, caps, steps, product_id, amount, kwargs, expected):
    await driver.put(CUSTOMER, caps)
    await _run(driver, steps)
    result = await driver.authorization(_request("the-request", product_id, amount, **kwargs))
    plan = result.plan.text() if result.plan else ""
    assert (result.reason, result.level, result.approved_amount_minor, result.partial,
            result.counter_offer_minor, result.counter_offer_level, plan) == expected
    assert bool(result.hold_id) == result.approved
    if not result.approved:
        return
    # What is held, at every level, is the approved amount; available is what is left.
    hold = await _hold(driver, result.hold_id)
    assert int(hold["a"]) == result.approved_amount_minor
    assert hold.get("im", "") == plan
    assert result.available_minor == min(level.available_minor for level in result.levels)
    assert all(level.held_minor + level.used_minor <= level.cap_minor
               for level in result.levels)
    event = (await _events(driver, "authorized"))[-1]
    assert event["hold_id"] == result.hold_id
    assert event["amount_minor"] == str(result.approved_amount_minor)
    assert event.get("installment_plan", "") == plan
    if result.partial:
        assert (event["requested_minor"], event["partial"]) == (str(amount), "1")
    else:
        assert "requested_minor" not in event and "partial" not in event


async def test_partial_approval_counts_the_approved_amount_in_the_windows(driver):
    await driver.put(CUSTOMER, ROOMY)
    await _run(driver, [("auth", "scan_pay", 5_000_000), ("auth", "scan_pay", 4_000_000)])
    result = await driver.authorization(_request("k", "scan_pay", 2_000_000, allow_partial=True))
    assert (result.partial, result.approved_amount_minor) == (True, 1_000_000)
    state = await driver.credit(CUSTOMER)
    assert (state.day["scan_pay"].amount_minor, state.day["scan_pay"].count) == (10_000_000, 3)
    assert state.held[POS] == 10_000_000


async def test_a_live_raise_shows_in_the_reply_as_cap_plus_raise(driver):
    await driver.put(CUSTOMER, {**ROOMY, POS: 30_000})
    await _run(driver, [("raise", POS, 20_000, HOUR_MS)])
    result = await driver.authorization(_request("k", "scan_pay", 45_000))
    pos = next(level for level in result.levels if level.node == POS)
    assert (pos.cap_minor, pos.held_minor, pos.available_minor) == (50_000, 45_000, 5_000)
    assert result.available_minor == 5_000


@pytest.mark.parametrize(("product_id", "amount", "months", "expected"), [
    ("scan_pay", 10_000, 0, {"tb": "2000"}),
    ("scan_pay", 10_000, 6, {"tb": "2000", "im": "6:1670:1666:60:60"}),
    ("ecommerce", 10_000, 0, {"ix": "10000000", "vx": "20000000:0"}),
    ("ecommerce", 10_000, 3, {"ix": "10000000", "vx": "20000000:0", "im": "3:3334:3333:50:50"}),
    ("cash", 10_000, 0, {}),
])
async def test_hold_keeps_only_the_fields_that_apply(driver, product_id, amount, months,
                                                     expected):
    await driver.put(CUSTOMER, ROOMY)
    result = await driver.authorization(_request("k", product_id, amount,
                                                 installment_months=months))
    hold = await _hold(driver, result.hold_id)
    optional = {field: hold[field] for field in ("tb", "ix", "vx", "im") if field in hold}
    assert optional == expected
    # fp: the request's fingerprint (the hold is the approval's idempotency record); the
    # catalog version that approved it is its path id's (tests/limits/test_hold_layout.py).
    assert set(hold) - set(optional) == {"st", "c", "p", "a", "cp", "n", "x", "sq", "m", "cur",
                                         "fp"}
    assert hold["n"].startswith("#")  # a path id, resolved by the partition's paths hash


async def test_a_decline_with_its_offer_is_remembered(driver):
    await driver.put(CUSTOMER, {**ROOMY, POS: 30_000})
    request = _request("k", "scan_pay", 50_000)
    first = await driver.authorization(request)
    assert (first.reason, first.counter_offer_minor) == (R.INSUFFICIENT_CREDIT, 30_000)
    await driver.put(CUSTOMER, ROOMY)  # the customer could now spend it: the answer stands
    assert await driver.authorization(request) == first
    partial = _request("p", "scan_pay", 50_000, allow_partial=True)
    await driver.put(CUSTOMER, {**ROOMY, POS: 30_000})
    approved = await driver.authorization(partial)
    assert approved.partial and await driver.authorization(partial) == approved
    # Asking for partial approval is part of the payload: the same key without it differs.
    with pytest.raises(Refused) as refused:
        await driver.authorization(_request("p", "scan_pay", 50_000))
    assert refused.value.code == ScriptError.IDEMPOTENCY_MISMATCH


# -- IncrementAuthorization ---------------------------------------------------------------

# The base scene: 19,000,000 approved on ecommerce today (day max 20,000,000), then the hold
# of 100,000 to increment; consumer.online has 500,000 left.
PRIORS = [("auth", "ecommerce", 10_000_000), ("auth", "ecommerce", 9_000_000),
          ("auth", "ecommerce", 100_000)]
TIGHT = {**ROOMY, ONLINE: 19_600_000}

# (id, caps, steps after the hold, increment,
#  expected (reason, decline level, amount total, offer, offer level))
INCREMENT_ROWS = [
    # Declines in the documented order; each row's increment breaks every later rule too.
    ("frozen", TIGHT, [("status", "frozen", TIGHT)], 9_950_000,
     (R.CUSTOMER_FROZEN, "", 100_000, 0, "")),
    ("closed", TIGHT, [("status", "closed", TIGHT)], 9_950_000,
     (R.CUSTOMER_CLOSED, "", 100_000, 0, "")),
    ("overdue", TIGHT, [("status", "overdue", TIGHT)], 9_950_000,
     (R.CUSTOMER_OVERDUE, "", 100_000, 0, "")),
    ("above-maximum", TIGHT, [], 9_950_000,
     (R.AMOUNT_ABOVE_MAXIMUM, "", 100_000, 500_000, ONLINE)),
    ("velocity-amount", TIGHT, [], 950_000,
     (R.VELOCITY_AMOUNT_EXCEEDED, "", 100_000, 500_000, ONLINE)),
    ("insufficient-credit", TIGHT, [], 600_000,
     (R.INSUFFICIENT_CREDIT, ONLINE, 100_000, 500_000, ONLINE)),
    # The offer's binding level.
    ("offer-at-velocity-day", {**ROOMY, ONLINE: 21_100_000}, [], 950_000,
     (R.VELOCITY_AMOUNT_EXCEEDED, "", 100_000, 900_000, "velocity.day")),
    # Approvals: the increment only is checked, a live raise counts, a lapsed one does not.
    ("approved", TIGHT, [], 500_000, (R.NONE, "", 600_000, 0, "")),
    ("approved-with-a-raise", TIGHT, [("raise", ONLINE, 100_000, HOUR_MS)], 600_000,
     (R.NONE, "", 700_000, 0, "")),
    ("lapsed-raise", TIGHT, [("raise", ONLINE, 100_000, HOUR_MS), ("advance", HOUR_MS)],
     600_000, (R.INSUFFICIENT_CREDIT, ONLINE, 100_000, 500_000, ONLINE)),
]


@pytest.mark.parametrize(("caps", "steps", "increment", "expected"),
                         [row[1:] for row in INCREMENT_ROWS],
                         ids=[row[0] for row in INCREMENT_ROWS])
async def test_increment_row(driver, caps, steps, increment, expected):
    await driver.put(CUSTOMER, caps)
    hold_id = (await _run(driver, PRIORS))[-1].hold_id
    await _run(driver, steps)
    before = await driver.credit(CUSTOMER)
    result = await driver.increment("i1", hold_id, increment)
    a = result.authorization
    assert (a.reason, a.level, a.approved_amount_minor, a.counter_offer_minor,
            a.counter_offer_level) == expected
    assert a.hold_id == hold_id and result.held_minor == a.approved_amount_minor
    after = await driver.credit(CUSTOMER)
    hold = await _hold(driver, hold_id)
    assert int(hold["a"]) == a.approved_amount_minor
    grown = increment if a.approved else 0
    for node in ("total", "consumer", ONLINE):
        assert after.held[node] == before.held[node] + grown
    window = before.day.get("ecommerce")
    assert after.day["ecommerce"].amount_minor == window.amount_minor + grown
    assert after.day["ecommerce"].count == window.count  # an increment is not a purchase
    increments = await _events(driver, "incremented")
    assert [(e["hold_id"], e["amount_minor"], e["amount_total_minor"],
             without_generation(e["event_id"]))
            for e in increments] == ([(hold_id, str(increment), str(a.approved_amount_minor),
                                       f"{hold_id}:2")] if a.approved else [])


async def test_increment_offer_bound_by_the_product_maximum(driver):
    await driver.put(CUSTOMER, ROOMY)
    hold = await driver.authorization(_request("k", "ecommerce", 9_950_000))
    declined = (await driver.increment("i1", hold.hold_id, 100_000)).authorization
    assert (declined.reason, declined.counter_offer_minor, declined.counter_offer_level) == (
        R.AMOUNT_ABOVE_MAXIMUM, 50_000, "amount_max")


async def test_increment_offer_is_the_largest_increment_that_fits(driver):
    await driver.put(CUSTOMER, TIGHT)
    hold_id = (await _run(driver, PRIORS))[-1].hold_id
    declined = (await driver.increment("i1", hold_id, 600_000)).authorization
    approved = (await driver.increment("i2", hold_id, declined.counter_offer_minor)).authorization
    assert approved.approved
    after = (await driver.increment("i3", hold_id, 1)).authorization
    assert (after.reason, after.counter_offer_minor) == (R.INSUFFICIENT_CREDIT, 0)


async def test_increment_recomputes_the_plan_and_keeps_the_expiry(driver):
    await driver.put(CUSTOMER, ROOMY)
    hold = await driver.authorization(_request("k", "ecommerce", 100_000, installment_months=3))
    assert hold.plan.text() == "3:33334:33333:500:50"
    result = await driver.increment("i1", hold.hold_id, 1_001)
    a = result.authorization
    assert a.plan.text() == "3:33667:33667:505:50"
    assert a.plan.principal_minor == 101_001
    assert a.hold_expires_at_ms == hold.hold_expires_at_ms
    assert (await _hold(driver, hold.hold_id))["im"] == "3:33667:33667:505:50"
    assert (await _events(driver, "incremented"))[-1]["installment_plan"] == a.plan.text()


async def test_increment_is_idempotent_and_its_decline_remembered(driver):
    await driver.put(CUSTOMER, TIGHT)
    hold_id = (await _run(driver, PRIORS))[-1].hold_id
    declined = await driver.increment("i1", hold_id, 600_000)
    await driver.put(CUSTOMER, ROOMY)
    assert await driver.increment("i1", hold_id, 600_000) == declined
    approved = await driver.increment("i2", hold_id, 600_000)
    assert approved.authorization.approved
    assert await driver.increment("i2", hold_id, 600_000) == approved
    assert len(await _events(driver, "incremented")) == 1
    with pytest.raises(Refused) as refused:
        await driver.increment("i2", hold_id, 600_001)
    assert refused.value.code == ScriptError.IDEMPOTENCY_MISMATCH


async def test_increment_after_a_partial_capture_holds_the_rest(driver):
    await driver.put(CUSTOMER, ROOMY)
    hold = await driver.authorization(_request("k", "ecommerce", 100_000))
    await driver.capture("c1", hold.hold_id, 30_000, False)
    result = await driver.increment("i1", hold.hold_id, 5_000)
    assert (result.authorization.approved_amount_minor, result.held_minor) == (105_000, 75_000)


def _usage(state) -> tuple:
    return state.caps, state.held, state.used, state.day, state.month, state.raises


async def _keep(driver, hold_id):
    pass


async def _void(driver, hold_id):
    await driver.void("v1", hold_id)


async def _capture(driver, hold_id):
    await driver.capture("c1", hold_id, 100_000, True)


async def _expire(driver, hold_id):
    driver.advance(15 * DAY_MS)  # the ecommerce hold lasts 14 days


@pytest.mark.parametrize(("product_id", "close", "code"), [
    ("ecommerce", None, ScriptError.HOLD_NOT_FOUND),
    ("ecommerce", _void, ScriptError.HOLD_VOIDED),
    ("ecommerce", _capture, ScriptError.HOLD_CAPTURED),
    ("ecommerce", _expire, ScriptError.HOLD_EXPIRED),
    ("scan_pay", _keep, ScriptError.INCREMENT_NOT_ALLOWED),
])
async def test_increment_refusals_change_nothing(driver, product_id, close, code):
    await driver.put(CUSTOMER, ROOMY)
    hold = await driver.authorization(_request("k", product_id, 100_000))
    hold_id = hold.hold_id
    if close is None:
        hold_id = hold_id[:4] + "Z" * 16  # of the right partition, never issued
    else:
        await close(driver, hold_id)
    before = _usage(await driver.credit(CUSTOMER))
    events = await _stored(driver, keys.outbox(_base()))
    with pytest.raises(Refused) as refused:
        await driver.increment("i1", hold_id, 1_000)
    assert refused.value.code == code
    assert _usage(await driver.credit(CUSTOMER)) == before
    assert await _stored(driver, keys.outbox(_base())) == events
    record = keys.idempotency_increment(_base(), hold_id, "i1")
    assert await _stored(driver, record) is None  # a refusal is not remembered


# -- SetTemporaryRaise -----------------------------------------------------------------------

async def test_raise_refusals(driver):
    with pytest.raises(Refused) as refused:
        await driver.set_raise(CUSTOMER, POS, 1_000, START_MS + HOUR_MS)
    assert refused.value.code == ScriptError.CUSTOMER_UNKNOWN
    await driver.put(CUSTOMER, ROOMY)
    now = await driver.now_ms(CUSTOMER)
    events = await _stored(driver, keys.outbox(_base()))
    with pytest.raises(Refused) as refused:
        await driver.set_raise(CUSTOMER, POS, 1_000, now - 1)
    assert refused.value.code == ScriptError.RAISE_EXPIRES_IN_PAST
    assert int(refused.value.detail) == refused.value.at_ms >= now
    year_ms = RAISE_DURATION_S_MAX * 1000
    with pytest.raises(Refused) as refused:
        await driver.set_raise(CUSTOMER, POS, 1_000, now + year_ms + 10_000)
    assert refused.value.code == ScriptError.RAISE_TOO_LONG
    assert int(refused.value.detail) == refused.value.at_ms + year_ms
    assert await _stored(driver, keys.outbox(_base())) == events
    assert (await driver.credit(CUSTOMER)).raises == {}


async def test_raise_reply_event_and_removal(driver):
    await driver.put(CUSTOMER, {**ROOMY, POS: 30_000})
    await driver.authorization(_request("k", "scan_pay", 10_000))
    now = await driver.now_ms(CUSTOMER)
    result = await driver.set_raise(CUSTOMER, POS, 20_000, now + HOUR_MS)
    level = result.level
    assert (level.cap_minor, level.raise_minor, level.raise_expires_at_ms, level.held_minor,
            level.used_minor, level.available_minor) == (30_000, 20_000, now + HOUR_MS, 10_000,
                                                          0, 40_000)
    state = await driver.credit(CUSTOMER)
    assert state.raises == {POS: (20_000, now + HOUR_MS)}
    assert state.level(POS).available_minor == 40_000
    removed = await driver.set_raise(CUSTOMER, POS, 0, 0)
    assert (removed.level.raise_minor, removed.level.available_minor) == (0, 20_000)
    assert (await driver.credit(CUSTOMER)).raises == {}
    events = await _events(driver, "limit_raised")
    assert [(e["node"], e["raise_minor"], e["expires_at_ms"]) for e in events] == [
        (POS, "20000", str(now + HOUR_MS)), (POS, "0", "0")]
    assert len({e["event_id"] for e in events}) == 2
    assert all(e["event_id"].startswith(f"c:{CUSTOMER}:") for e in events)


async def test_a_lapsed_raise_leaves_the_level_above_its_cap_and_credit_says_so(driver):
    await driver.put(CUSTOMER, {**ROOMY, POS: 30_000})
    await _run(driver, [("raise", POS, 20_000, HOUR_MS)])
    await driver.authorization(_request("k", "scan_pay", 45_000))
    live = (await driver.credit(CUSTOMER)).level(POS)
    assert (live.available_minor, live.raise_minor) == (5_000, 20_000)
    driver.advance(HOUR_MS)
    lapsed = await driver.credit(CUSTOMER)
    assert lapsed.raises == {}
    assert (lapsed.level(POS).available_minor, lapsed.level(POS).raise_minor) == (0, 0)
    assert lapsed.held[POS] == 45_000 > lapsed.caps[POS]
