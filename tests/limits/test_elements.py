"""The product elements reserve.lua decides, on the model and on the real scripts: effective
dates (against the scripts' clock, to the ms), allowed hours of the customer's local day
(ranges crossing midnight, zones with daylight saving) and the first-purchase maximum (the
customer's `fp:<product>` marker). The scripts on Redis run here with Redis' TIME frozen at a
known second (FrozenRunner), so the call header's clock offset sets their `now` to the exact
millisecond, as the model's clock does."""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditgate import hotpath
from creditgate.limits import calendar, catalog, keys
from creditgate.limits.client import LimitsClient
from creditgate.limits.lua_source import script_source
from creditgate.limits.model import Model, ModelRunner, _within_hours
from creditgate.limits.reasons import DeclineReason as R
from tests.support import PARTITIONS, Clock, ScriptDriver, authorize_request, redis_client

FROZEN_S = 1_796_000_000  # 2026-11-30T00:53:20Z: Redis' TIME as the frozen scripts see it
CAPS = {"total": 10**9, "consumer": 10**9, "consumer.online": 10**9}
CATALOG = """
[templates.base]
nodes = ["total", "consumer", "consumer.online"]
channels = ["ecommerce"]
amount_min_minor = 100
amount_max_minor = 100_000
hold_ttl_s = 3_600
incremental = true

[products.dated]
extends = "base"
name = "Dated"
effective_from = 2026-12-12T00:00:00+08:00
effective_until = 2026-12-12T00:00:10+08:00

[products.dated_sub_ms]
extends = "base"
name = "From 0.5 ms past the second"
effective_from = 2026-12-12T00:00:00.0005+08:00

[products.night]
extends = "base"
name = "Night"
allowed_hours = ["22:00-02:00"]

[products.first]
extends = "base"
name = "First purchase bounded"
first_purchase_max_minor = 20_000

[products.plain]
extends = "base"
name = "Plain"
"""
PRODUCTS = catalog.parse(CATALOG)
RULES = hotpath.compile_products(PRODUCTS)


class FrozenRunner:
    """Runs each script as an EVAL of its source with Redis' TIME replaced by FROZEN_S: the
    call header's offset then sets the scripts' time exactly."""

    def __init__(self, redis):
        self.redis = redis
        self.sources: dict[str, str] = {}

    def source(self, name: str) -> str:
        if name not in self.sources:
            source = script_source(name)
            frozen = source.replace("redis.call('TIME')", f"{{'{FROZEN_S}', '0'}}")
            assert frozen != source, "redis_now_ms no longer reads TIME this way"
            self.sources[name] = frozen
        return self.sources[name]

    async def call(self, name, keys_, args):
        return await self.redis.eval(self.source(name), len(keys_), *keys_, *args)


@pytest.fixture(params=["model", "redis"])
def frozen(request):
    """A driver of the given catalog's products whose clock reads exactly FROZEN_S * 1000 +
    its offset; `at(ms)` sets the offset for an instant."""
    if request.param == "model":
        client = LimitsClient(ModelRunner(Model(Clock(FROZEN_S * 1000))), PARTITIONS)
    else:
        client = LimitsClient(FrozenRunner(request.getfixturevalue("redis")), PARTITIONS)
    driver = ScriptDriver(client, RULES)
    driver.at = lambda ms: setattr(client, "clock_offset_ms", ms - FROZEN_S * 1000)
    return driver


def ms_of(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


async def authorize_at(driver, ms: int, key: str, product_id: str, amount: int = 1_000,
                       customer_id: str = "cust-1"):
    driver.at(ms)
    result = await driver.authorization(authorize_request(
        key, customer_id, amount, product_id=product_id, channel="ecommerce"))
    assert result.decided_at_ms == ms
    return result


async def test_effective_dates_switch_at_the_exact_ms(frozen):
    await frozen.put("cust-1", CAPS)
    start = ms_of(dt.datetime(2026, 12, 11, 16, tzinfo=dt.UTC))
    # From inclusive, until exclusive.
    for n, (ms, reason) in enumerate([(start - 1, R.PRODUCT_NOT_EFFECTIVE), (start, R.NONE),
                                      (start + 9_999, R.NONE),
                                      (start + 10_000, R.PRODUCT_NOT_EFFECTIVE),
                                      (start + 86_400_000, R.PRODUCT_NOT_EFFECTIVE)]):
        result = await authorize_at(frozen, ms, f"k{n}", "dated")
        assert result.reason == reason, (ms - start, result)
        assert bool(result.hold_id) == (reason == R.NONE)
    # An instant 0.5 ms past the second: the first ms not before it is second + 1.
    assert (await authorize_at(frozen, start, "s0", "dated_sub_ms")).reason \
        == R.PRODUCT_NOT_EFFECTIVE
    assert (await authorize_at(frozen, start + 1, "s1", "dated_sub_ms")).reason == R.NONE


async def test_a_product_not_in_effect_is_declined_after_the_customers_status(frozen):
    start = ms_of(dt.datetime(2026, 12, 11, 16, tzinfo=dt.UTC))
    unknown = await authorize_at(frozen, start - 1, "u", "dated", customer_id="nobody")
    assert unknown.reason == R.CUSTOMER_UNKNOWN
    await frozen.put("cust-1", CAPS, status="frozen")
    assert (await authorize_at(frozen, start - 1, "f", "dated")).reason == R.CUSTOMER_FROZEN


def local_ms(zone: str, *fields: int) -> int:
    return ms_of(dt.datetime(*fields, tzinfo=zoneinfo.ZoneInfo(zone)))


NEW_YORK = "America/New_York"
# 22:00-02:00 of New York's day, in winter (UTC-5) and in summer (UTC-4): the end exclusive.
HOURS_CASES = [
    (local_ms(NEW_YORK, 2026, 12, 12, 21, 59, 59, 999_000), R.OUTSIDE_ALLOWED_HOURS),
    (local_ms(NEW_YORK, 2026, 12, 12, 22, 0), R.NONE),
    (local_ms(NEW_YORK, 2026, 12, 12, 23, 59, 59, 999_000), R.NONE),
    (local_ms(NEW_YORK, 2026, 12, 13, 0, 0), R.NONE),
    (local_ms(NEW_YORK, 2026, 12, 13, 1, 59, 59, 999_000), R.NONE),
    (local_ms(NEW_YORK, 2026, 12, 13, 2, 0), R.OUTSIDE_ALLOWED_HOURS),
    (local_ms(NEW_YORK, 2026, 12, 13, 12, 0), R.OUTSIDE_ALLOWED_HOURS),
    (local_ms(NEW_YORK, 2027, 6, 12, 21, 59), R.OUTSIDE_ALLOWED_HOURS),
    (local_ms(NEW_YORK, 2027, 6, 12, 22, 0), R.NONE),
    (local_ms(NEW_YORK, 2027, 6, 13, 1, 59), R.NONE),
    (local_ms(NEW_YORK, 2027, 6, 13, 2, 0), R.OUTSIDE_ALLOWED_HOURS),
]


async def test_allowed_hours_cross_midnight_in_the_customers_timezone(frozen):
    await frozen.put("cust-1", CAPS, timezone=NEW_YORK)
    for n, (ms, reason) in enumerate(HOURS_CASES):
        result = await authorize_at(frozen, ms, f"k{n}", "night")
        local = dt.datetime.fromtimestamp(ms / 1000, zoneinfo.ZoneInfo(NEW_YORK))
        assert result.reason == reason, local
    # The same instants for a customer in Shanghai (UTC+8): 22:00 in New York is 11:00 or
    # 10:00 there, outside.
    await frozen.put("cust-2", CAPS)
    result = await authorize_at(frozen, HOURS_CASES[1][0], "sh", "night", customer_id="cust-2")
    assert result.reason == R.OUTSIDE_ALLOWED_HOURS


async def customer_hash(driver, customer_id: str) -> dict[str, str]:
    """The customer hash as the model holds it, or as Redis does."""
    runner = driver.client.runner
    key = keys.customer(keys.customer_base(customer_id, PARTITIONS), customer_id)
    if isinstance(runner, ModelRunner):
        return dict(runner.model.state[key])
    return {k.decode(): v.decode() for k, v in (await runner.redis.hgetall(key)).items()}


async def test_first_purchase_is_bounded_once(frozen):
    await frozen.put("cust-1", CAPS)
    now = FROZEN_S * 1000
    marker = keys.FIELD_FIRST_PURCHASE + "first"
    # A product without the element writes no marker; its purchases do not make the bounded
    # product's next one a second.
    assert (await authorize_at(frozen, now, "p1", "plain", 25_000)).reason == R.NONE
    # Above the first-purchase maximum: declined, and still first.
    declined = await authorize_at(frozen, now + 1, "f1", "first", 20_001)
    assert (declined.reason, declined.counter_offer_minor) == \
        (R.FIRST_PURCHASE_ABOVE_MAXIMUM, 0)
    assert not any(field.startswith(keys.FIELD_FIRST_PURCHASE)
                   for field in await customer_hash(frozen, "cust-1"))
    first = await authorize_at(frozen, now + 2, "f2", "first", 20_000)
    assert first.reason == R.NONE
    fields = await customer_hash(frozen, "cust-1")
    assert fields[marker] == str(now + 2)
    assert keys.FIELD_FIRST_PURCHASE + "plain" not in fields
    # The first approval's hold grows up to the first-purchase maximum only.
    grown = await frozen.increment("i1", first.hold_id, 1)
    assert grown.authorization.reason == R.AMOUNT_ABOVE_MAXIMUM
    # A second purchase is not bounded; voiding the first does not make the next one first.
    second = await authorize_at(frozen, now + 3, "f3", "first", 25_000)
    assert second.reason == R.NONE
    assert (await frozen.increment("i2", second.hold_id, 50_000)).authorization.reason \
        == R.NONE
    await frozen.void("v1", first.hold_id)
    assert (await authorize_at(frozen, now + 4, "f4", "first", 90_000)).reason == R.NONE
    assert (await customer_hash(frozen, "cust-1"))[marker] == str(now + 2)


# -- the hours on their own: the Lua helper, the model's, and the IANA database ------------

ZONES = ["Asia/Shanghai", NEW_YORK, "Europe/London", "Australia/Sydney", "Asia/Kolkata",
         "Pacific/Chatham", "America/St_Johns"]
FROM_S = 1_795_600_000
SCHEDULES = {zone: calendar.offset_schedule(zone, FROM_S) for zone in ZONES}
PROBE = script_source("probe", body=(
    "local ranges = {}\n"
    "for part in string.gmatch(ARGV[2], '[^;]+') do\n"
    "  local a, b = string.match(part, '^(%d+):(%d+)$')\n"
    "  ranges[#ranges + 1], ranges[#ranges + 2] = tonumber(a), tonumber(b)\n"
    "end\n"
    "local out = {}\n"
    "for i = 3, #ARGV do\n"
    "  out[#out + 1] = within_hours(ranges, ARGV[1], tonumber(ARGV[i])) and 1 or 0\n"
    "end\n"
    "return out\n"))
ranges = st.lists(st.integers(0, 1439).flatmap(
    lambda start: st.tuples(st.just(start), st.integers(start + 1, start + 1440))),
    min_size=1, max_size=4)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # read-only EVALs
@given(zone=st.sampled_from(ZONES), hours=ranges,
       instants=st.lists(st.integers(FROM_S * 1000, (FROM_S + 5 * 365 * 86_400) * 1000),
                         min_size=1, max_size=20))
def test_within_hours_agrees_with_the_model_and_the_iana_database(redis_sync, zone, hours,
                                                                  instants):
    text = ";".join(f"{start}:{end}" for start, end in hours)
    got = redis_sync.eval(PROBE, 0, SCHEDULES[zone], text, *instants)
    for ms, inside in zip(instants, got, strict=True):
        local = dt.datetime.fromtimestamp(ms // 1000, zoneinfo.ZoneInfo(zone))
        minute = local.hour * 60 + local.minute
        expected = any(start <= minute < end or start <= minute + 1440 < end
                       for start, end in hours)
        assert bool(inside) == expected == _within_hours(hours, SCHEDULES[zone], ms), \
            (local, hours)


async def test_first_purchase_through_the_running_scripts(redis):
    """The same, on the library the gateway loads (Redis' own clock)."""
    driver = ScriptDriver(redis_client(redis), RULES)
    await driver.put("cust-9", CAPS)
    request = authorize_request("a", "cust-9", 20_001, product_id="first", channel="ecommerce")
    assert (await driver.authorize(request))[0] == R.FIRST_PURCHASE_ABOVE_MAXIMUM
    request = authorize_request("b", "cust-9", 20_000, product_id="first", channel="ecommerce")
    assert (await driver.authorize(request))[0] == R.NONE
    request = authorize_request("c", "cust-9", 20_001, product_id="first", channel="ecommerce")
    assert (await driver.authorize(request))[0] == R.NONE
    base = keys.customer_base("cust-9", PARTITIONS)
    fields = await redis.hgetall(keys.customer(base, "cust-9"))
    assert [f for f in fields if f.startswith(keys.FIELD_FIRST_PURCHASE.encode())] \
        == [(keys.FIELD_FIRST_PURCHASE + "first").encode()]


# -- the scripts against the model, on sequences of element purchases ----------------------

SEQUENCE_CUSTOMERS = {"ann": "Asia/Shanghai", "ben": NEW_YORK, "cat": "Australia/Sydney"}
ELEMENT_CHOICES = [("launch", "ecommerce"), ("launch", "pos"), ("brief", "ecommerce"),
                   ("windowed", "ecommerce"), ("expired", "pos"), ("plain", "ecommerce")]


def sequence_rules(now_s: int):
    """tests/catalog-elements.toml's products, one open an hour a day, and one in effect from
    an hour after `now_s` for a day."""
    from tests.support import ELEMENTS_CATALOG_TEXT

    def stamp(s: int) -> str:
        return dt.datetime.fromtimestamp(s, dt.UTC).isoformat()

    return hotpath.compile_products(catalog.parse(ELEMENTS_CATALOG_TEXT + f"""
[products.brief]
extends = "launch_elements"
name = "Brief"
allowed_hours = ["09:00-10:00"]

[products.windowed]
extends = "launch_elements"
name = "Windowed"
effective_from = {stamp(now_s + 3_600)}
effective_until = {stamp(now_s + 86_400)}
"""))


steps = st.lists(st.tuples(
    st.sampled_from(sorted(SEQUENCE_CUSTOMERS)), st.sampled_from(ELEMENT_CHOICES),
    st.sampled_from([20_001, 20_000, 500, 30_001]) | st.integers(100, 40_000),
    st.sampled_from(["m-1", "shop-1", "shop-91", "m-2"]), st.sampled_from(["5411", "7995"]),
    st.booleans(),
    st.sampled_from([0, 0, 60_000, 3_600_000, 4 * 3_600_000, 86_400_000])), min_size=1,
    max_size=25)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # flushed per example
@given(sequence=steps)
def test_the_scripts_equal_the_model_on_element_purchases(redis_server, sequence):
    """Every reply and the whole Redis state equal the model's after each purchase; the model
    runs at the time each reply reports."""
    import asyncio

    from creditgate.limits import cluster as limits_cluster
    from creditgate.limits.contracts import call_header
    from tests.limits.test_model_equivalence import normalise, redis_state, reply_now

    loop = asyncio.new_event_loop()
    redis = limits_cluster.connect(redis_server.url)
    try:
        loop.run_until_complete(redis.flushall())
        runner = limits_cluster.runner_for(redis)
        model_now = [0]
        model = Model(lambda: model_now[0])
        rules = sequence_rules(int(time.time()))
        offset = 0

        def both(name, keys_, args):
            args = [*call_header(offset), *args]
            async def call():  # the runner looks up the running loop
                return await runner.call(name, keys_, args)

            real = normalise(loop.run_until_complete(call()))
            model_now[0] = reply_now(real, name) - offset
            assert real == model.call(name, keys_, args), name
            return real

        for customer_id, zone in SEQUENCE_CUSTOMERS.items():
            base = keys.base(keys.partition_of(customer_id, PARTITIONS))
            args = [customer_id, "active", zone, calendar.offset_schedule(zone, FROM_S)]
            for node, cap in sorted(CAPS.items()):
                args += [node, str(cap // 10**4)]  # 100,000: credit runs out too
            both("put_customer", [keys.customer(base, customer_id), keys.outbox(base),
                                  keys.timezones(base)], args)
        for n, (customer_id, (product_id, channel), amount, merchant, mcc, partial,
                advance) in enumerate(sequence):
            offset += advance
            request = authorize_request(f"k{n}", customer_id, amount, product_id=product_id,
                                        channel=channel, mcc=mcc, merchant_id=merchant,
                                        allow_partial=partial)
            both("reserve", *hotpath.plan_authorize(request, rules, PARTITIONS))
            real = loop.run_until_complete(redis_state(redis))
            assert real == {key: value for key, value in model.state.items() if value != {}}
    finally:
        loop.run_until_complete(redis.aclose())
        loop.close()


@pytest.mark.parametrize("hours", ["0:0", "480:470", "1440:1500", "480:1921", "8-22", "a:b",
                                   ";", "480:1320;x"])
async def test_malformed_hours_in_the_rules_are_a_bad_argument(redis, hours):
    """The script refuses rules whose hours it cannot read, as the model does (the hot path
    never builds them)."""
    from creditgate.limits import contracts

    keys_, args = hotpath.plan_authorize(authorize_request(
        "k", "cust-1", 1_000, product_id="night", channel="ecommerce"), RULES, PARTITIONS)
    fields = contracts.PRODUCT_RULES.bind(args[contracts.RESERVE.args.rules].split("|"))
    fields.allowed_hours = hours
    args[contracts.RESERVE.args.rules] = "|".join(
        getattr(fields, name) for name in contracts.PRODUCT_RULES.names)
    header = [str(x) for x in (0, 0, "", "")]
    for runner in (FrozenRunner(redis), ModelRunner(Model(Clock(FROZEN_S * 1000)))):
        reply = await runner.call("reserve", keys_, [*header, *args])
        text = reply.decode() if isinstance(reply, bytes) else reply
        assert text.startswith("ERR|8|reserve|"), (hours, text)


async def test_the_channels_bounds_reach_the_counter_offer_and_the_increment_maximum(frozen):
    """launch's pos bounds are 500..30,000 (the product's 100..100,000): a pos hold grows up to
    30,000, and a counter-offer on pos below 500 is no offer."""
    from tests.support import ELEMENTS_RULES

    frozen.rules = ELEMENTS_RULES
    frozen.at(FROZEN_S * 1000)  # 08:53 in Shanghai: launch is open
    await frozen.put("cust-1", {"total": 10**9, "consumer": 10**9, "consumer.online": 11_400})

    async def buy(key, channel, amount):
        return await frozen.authorization(authorize_request(
            key, "cust-1", amount, product_id="launch", channel=channel, merchant_id="m-1"))

    first, second = await buy("a", "pos", 1_000), await buy("b", "pos", 10_000)
    assert first.reason == second.reason == R.NONE
    # The first purchase's hold grows to the first-purchase maximum, the second's to pos' max.
    assert (await frozen.increment("i1", first.hold_id, 19_001)).authorization.reason \
        == R.AMOUNT_ABOVE_MAXIMUM
    assert (await frozen.increment("i2", second.hold_id, 20_001)).authorization.reason \
        == R.AMOUNT_ABOVE_MAXIMUM
    assert (await frozen.increment("i3", second.hold_id, 20_000)).authorization.reason \
        == R.INSUFFICIENT_CREDIT
    # 400 is left: below pos' minimum, no offer; above ecommerce's (the product's), offered.
    on_pos = await buy("c", "pos", 1_000)
    assert (on_pos.reason, on_pos.counter_offer_minor) == (R.INSUFFICIENT_CREDIT, 0)
    online = await buy("d", "ecommerce", 1_000)
    assert (online.reason, online.counter_offer_minor) == (R.INSUFFICIENT_CREDIT, 400)


async def test_a_first_purchase_hold_grows_no_further_than_its_channels_maximum(frozen):
    """A first purchase's hold grows up to the first-purchase maximum, but never past the
    channel's own maximum where that is lower: on pos (at most 5,000) a first purchase's hold
    stops at 5,000 as any other pos hold does, though the first-purchase maximum is 20,000."""
    frozen.rules = hotpath.compile_products(catalog.parse("""
[products.narrow]
name = "A narrow pos"
nodes = ["total", "consumer", "consumer.online"]
channels = ["ecommerce", "pos"]
amount_min_minor = 100
amount_max_minor = 100_000
channel_bounds.pos = { amount_max_minor = 5_000 }
first_purchase_max_minor = 20_000
hold_ttl_s = 3_600
incremental = true
"""))
    await frozen.put("cust-1", CAPS)
    first = await frozen.authorization(authorize_request(
        "a", "cust-1", 1_000, product_id="narrow", channel="pos"))
    assert first.reason == R.NONE
    assert (await frozen.increment("i1", first.hold_id, 4_001)).authorization.reason \
        == R.AMOUNT_ABOVE_MAXIMUM
    assert (await frozen.increment("i2", first.hold_id, 4_000)).authorization.reason \
        == R.NONE
    # On ecommerce (the product's 100,000) the first-purchase maximum is the lower.
    await frozen.put("cust-2", CAPS)
    online = await frozen.authorization(authorize_request(
        "b", "cust-2", 1_000, product_id="narrow", channel="ecommerce"))
    assert online.reason == R.NONE
    assert (await frozen.increment("i3", online.hold_id, 19_001)).authorization.reason \
        == R.AMOUNT_ABOVE_MAXIMUM


@pytest.mark.parametrize("zone", [NEW_YORK, "Europe/London", "Australia/Sydney"])
def test_within_hours_at_daylight_saving_transitions(redis_sync, zone):
    """Random instants over years seldom fall near a transition: here every 15 minutes (and
    a second either side of each change) over the hours around a zone's first four, for
    ranges that start, end or cross midnight within the hour that is skipped or repeated."""
    schedule = SCHEDULES[zone]
    numbers = [int(number) for number in schedule.split(",")]
    transitions = numbers[1::2][:4]
    assert len(transitions) == 4, schedule
    hours = [(60, 150), (150, 180), (1380, 1440 + 150)]
    instants = sorted({(t + delta) * 1000 for t in transitions
                       for delta in [*range(-3 * 3600, 3 * 3600 + 1, 900), -1, 1]})
    for hour_set in ([(60, 150)], [(150, 180)], [(1380, 1440 + 150)], hours):
        text = ";".join(f"{start}:{end}" for start, end in hour_set)
        got = redis_sync.eval(PROBE, 0, schedule, text, *instants)
        for ms, inside in zip(instants, got, strict=True):
            local = dt.datetime.fromtimestamp(ms // 1000, zoneinfo.ZoneInfo(zone))
            minute = local.hour * 60 + local.minute
            expected = any(start <= minute < end or start <= minute + 1440 < end
                           for start, end in hour_set)
            assert bool(inside) == expected == _within_hours(hour_set, schedule, ms), \
                (local, hour_set)
