"""Merchant binding in the scripts, on the pure-Python model and on the real Redis: a caller
whose merchant scope does not cover a hold's merchant gets, from every script acting on an
existing hold, exactly the answer of a hold that does not exist, and Redis is left byte for
byte as it was (every key's DUMP, the outbox lengths). In-scope callers, the scope "" (any
merchant) and prefix entries act as before; every event names its caller."""

from __future__ import annotations

import contextlib
import copy

import pytest
import pytest_asyncio

from creditgate import hotpath
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.sweeper import SWEEPER, sweep_once
from creditgate.hotpath.plans import (
    plan_force_capture,
    plan_increment,
    plan_refund,
    plan_repay,
    plan_reverse,
    repayment_order,
)
from creditgate.limits import keys
from creditgate.limits.client import CALLER
from creditgate.limits.lua_source import script_source
from creditgate.limits.reasons import ScriptError as E
from creditgate.limits.replies import Refused
from tests.conftest import CUSTOMER_CAPS
from tests.support import (
    PARTITIONS,
    PRODUCTS,
    RULES,
    authorize_request,
    model_client,
    redis_client,
    token,
)

CUSTOMER = "cust-scope"
BASE = keys.base(keys.partition_of(CUSTOMER, PARTITIONS))
OUTBOX = keys.outbox(BASE)
MERCHANT = "m-1"
# A hold id of the customer's partition that names no hold.
NO_HOLD = keys.hold_id(keys.partition_of(CUSTOMER, PARTITIONS), "Z" * 16)
# Scopes that do not cover MERCHANT: another id, an id it is a prefix of, a prefix it does
# not start with, no merchant at all.
OUT_OF_SCOPE = ["=m-2", "=m-10 ^m-2", "^shop-", keys.MERCHANT_SCOPE_NONE]
IN_SCOPE = ["", "=m-1", "^m-", "=m-2 =m-1", "=zz ^m"]
TTL_MS = PRODUCTS["scan_pay"].hold_ttl_s * 1000


@contextlib.contextmanager
def calling_as(name: str, scope: str = ""):
    """The calls inside are the caller `name`'s, bound to `scope` (what the gateway sets)."""
    reset = CALLER.set((name, scope))
    try:
        yield
    finally:
        CALLER.reset(reset)


class Driver:
    def __init__(self, client, redis=None):
        self.client, self.redis = client, redis

    async def state(self):
        """Every key's DUMP and whether it expires, and every outbox's length; the model's
        whole picture."""
        if self.redis is None:
            return copy.deepcopy(self.client.runner.model.state)
        dumped = {}
        async for key in self.redis.scan_iter(count=1000):
            dumped[key] = (await self.redis.dump(key), await self.redis.pttl(key) > 0)
        lengths = {key: await self.redis.xlen(key) for key in dumped
                   if (await self.redis.type(key)) == b"stream"}
        return dumped, lengths

    async def events(self) -> list[dict[str, str]]:
        if self.redis is None:
            return list(self.client.runner.model.state.get(OUTBOX, []))
        return [{k.decode(): v.decode() for k, v in fields.items()}
                for _, fields in await self.redis.xrange(OUTBOX)]

    async def authorize(self, key: str, amount: int, product_id="scan_pay", channel="pos",
                        mcc="5411", merchant_id=MERCHANT):
        result = await self.client.authorize(*hotpath.plan_authorize(authorize_request(
            key, CUSTOMER, amount, product_id=product_id, channel=channel, mcc=mcc,
            merchant_id=merchant_id), RULES, PARTITIONS))
        assert result.approved, result
        return result

    async def capture(self, hold_id: str, amount: int = 1_000, key="c1", final=False):
        return await self.client.capture(*hotpath.plan_capture(pb.CaptureRequest(
            idempotency_key=key, hold_id=hold_id, amount_minor=amount, final=final), PARTITIONS))

    async def void(self, hold_id: str, key="v1"):
        return await self.client.void(*hotpath.plan_void(pb.VoidRequest(
            idempotency_key=key, hold_id=hold_id), PARTITIONS))

    async def refund(self, hold_id: str, amount: int = 1_000, key="r1"):
        return await self.client.refund(*plan_refund(pb.RefundRequest(
            idempotency_key=key, hold_id=hold_id, amount_minor=amount), PARTITIONS))

    async def increment(self, hold_id: str, amount: int = 1_000, key="i1"):
        return await self.client.increment(*plan_increment(pb.IncrementAuthorizationRequest(
            idempotency_key=key, hold_id=hold_id, amount_minor=amount), PARTITIONS))

    async def reverse(self, original_key: str):
        return await self.client.reverse(*plan_reverse(pb.ReverseRequest(
            customer_id=CUSTOMER, original_idempotency_key=original_key), PARTITIONS))

    async def force_capture(self, amount: int, original: str = "", key="f1",
                            merchant_id="m-2"):
        return await self.client.force_capture(*plan_force_capture(pb.ForceCaptureRequest(
            idempotency_key=key, customer_id=CUSTOMER, product_id="scan_pay",
            channel=pb.CHANNEL_POS, merchant_id=merchant_id, mcc="5411", amount_minor=amount,
            currency="CNY", original_hold_id=original), PRODUCTS, PARTITIONS, token()))


@pytest.fixture(params=["model", "redis"])
def driver(request):
    if request.param == "model":
        return Driver(model_client())
    redis = request.getfixturevalue("redis")
    return Driver(redis_client(redis), redis)


@pytest_asyncio.fixture
async def d(driver):
    with calling_as("setup"):
        await driver.client.put_customer(CUSTOMER, "active", "Asia/Shanghai", CUSTOMER_CAPS)
    return driver


# Each script acting on an existing hold: (what the merchant's terminal made first, the call
# on that hold). The setup runs in scope "" as caller "setup".
async def _open_hold(d: Driver):
    return (await d.authorize("a1", 5_000)).hold_id


async def _captured_hold(d: Driver):
    hold_id = await _open_hold(d)
    await d.capture(hold_id, 5_000, key="c0", final=True)
    return hold_id


async def _incremental_hold(d: Driver):
    return (await d.authorize("a1", 5_000, product_id="ecommerce", channel="ecommerce",
                              mcc="5999")).hold_id


HOLD_CALLS = {
    "capture": (_open_hold, lambda d, hold_id: d.capture(hold_id)),
    "void": (_open_hold, lambda d, hold_id: d.void(hold_id)),
    "refund": (_captured_hold, lambda d, hold_id: d.refund(hold_id)),
    "increment": (_incremental_hold, lambda d, hold_id: d.increment(hold_id)),
}


@pytest.mark.parametrize("scope", OUT_OF_SCOPE)
@pytest.mark.parametrize("name", sorted(HOLD_CALLS))
async def test_another_merchants_hold_is_not_found_and_nothing_changes(d, name, scope):
    make, call = HOLD_CALLS[name]
    with calling_as("setup"):
        hold_id = await make(d)
    before = await d.state()
    with calling_as("T-other", scope), pytest.raises(Refused) as theirs:
        await call(d, hold_id)
    assert await d.state() == before
    # Exactly the answer of a hold that does not exist, to any caller.
    for any_scope in (scope, ""):
        with calling_as("T-other", any_scope), pytest.raises(Refused) as missing:
            await call(d, NO_HOLD)
        assert (theirs.value.code, theirs.value.detail) == \
            (missing.value.code, missing.value.detail) == (E.HOLD_NOT_FOUND, "")
    assert await d.state() == before


@pytest.mark.parametrize("scope", IN_SCOPE)
@pytest.mark.parametrize("name", sorted(HOLD_CALLS))
async def test_a_hold_within_the_scope_is_acted_on(d, name, scope):
    make, call = HOLD_CALLS[name]
    with calling_as("setup"):
        hold_id = await make(d)
    with calling_as("T-own", scope):
        await call(d, hold_id)
    last = (await d.events())[-1]
    assert (last["hold_id"], last["caller"]) == (hold_id, "T-own")


async def test_an_expired_hold_of_another_merchant_is_not_released_by_its_refusal(d):
    with calling_as("setup"):
        hold_id = await _open_hold(d)
    d.client.clock_offset_ms += TTL_MS + 1_000  # due, and nobody has released it yet
    before = await d.state()
    with calling_as("T-other", "=m-2"), pytest.raises(Refused) as refused:
        await d.void(hold_id)
    assert refused.value.code == E.HOLD_NOT_FOUND
    assert await d.state() == before
    with calling_as("T-own", "=m-1"), pytest.raises(Refused) as refused:
        await d.void(hold_id)
    assert refused.value.code == E.HOLD_EXPIRED
    # Released by its TTL: the event names the expiry, not the call that found it due.
    assert [(e["type"], e["caller"]) for e in await d.events()][-1] == ("expired", SWEEPER)


async def test_another_merchant_cannot_read_a_stored_answer_by_its_key(d):
    with calling_as("setup"):
        hold_id = await _open_hold(d)
        first = await d.capture(hold_id, key="c1")
    before = await d.state()
    with calling_as("T-other", "=m-2"), pytest.raises(Refused) as refused:
        await d.capture(hold_id, key="c1")  # the merchant's own key: no replay for others
    assert refused.value.code == E.HOLD_NOT_FOUND
    assert await d.state() == before
    with calling_as("T-own", "=m-1"):
        assert await d.capture(hold_id, key="c1") == first


async def test_a_scoped_caller_gets_not_found_for_a_missing_hold_even_with_a_record(d):
    # A scoped caller learns nothing from a hold that is gone: not even a stored answer.
    with calling_as("T-own", "=m-1"), pytest.raises(Refused) as refused:
        await d.void(NO_HOLD)
    assert refused.value.code == E.HOLD_NOT_FOUND


@pytest.mark.parametrize("scope", OUT_OF_SCOPE)
async def test_reversing_another_merchants_original_answers_as_if_it_was_never_seen(d, scope):
    with calling_as("setup"):
        hold = await d.authorize("a1", 5_000)
    before = await d.state()
    with calling_as("T-other", scope):
        theirs = await d.reverse("a1")
    assert await d.state() == before  # no tombstone, no record, no event
    with calling_as("T-other", ""):
        unknown = await d.reverse("never-used")  # which does write its tombstone
    assert (theirs.outcome, theirs.hold_id, theirs.released_minor) == \
        (unknown.outcome, unknown.hold_id, unknown.released_minor) == ("tombstoned", "", 0)
    with calling_as("T-own", "=m-1"):
        own = await d.reverse("a1")
    assert (own.outcome, own.hold_id, own.released_minor) == ("released", hold.hold_id, 5_000)


async def test_a_stored_reversal_naming_a_hold_is_not_shown_to_another_merchant(d):
    with calling_as("T-own", "=m-1"):
        await d.authorize("a1", 5_000)
        own = await d.reverse("a1")
    assert own.outcome == "released"
    before = await d.state()
    with calling_as("T-other", "^shop-"):
        theirs = await d.reverse("a1")
    assert (theirs.outcome, theirs.hold_id, theirs.released_minor) == ("tombstoned", "", 0)
    assert await d.state() == before
    with calling_as("T-own", "^m-"):
        assert await d.reverse("a1") == own


async def test_force_capture_treats_another_merchants_original_as_gone(d):
    with calling_as("setup"):
        original = (await d.authorize("a1", 5_000)).hold_id  # open: its own merchant is refused
    with calling_as("A-own", "=m-1"), pytest.raises(Refused) as refused:
        await d.force_capture(5_000, original, merchant_id=MERCHANT)
    assert refused.value.code == E.HOLD_STILL_OPEN
    original_key = keys.hold(BASE, original)
    before = await d.state()
    with calling_as("A-other", "=m-2"):
        posted = await d.force_capture(5_000, original)
    after = await d.state()
    # The original is neither released, checked nor marked: as for an original that is gone.
    if d.redis is None:
        assert after[original_key] == before[original_key]
    else:
        assert after[0][original_key.encode()] == before[0][original_key.encode()]
    with calling_as("A-other", "=m-2"):
        gone = await d.force_capture(5_000, NO_HOLD, key="f2")
    assert (posted.over_limit_levels, len(posted.levels)) == \
        (gone.over_limit_levels, len(gone.levels))
    events = [e for e in await d.events() if e["type"] == "force_captured"]
    assert [(e["original_hold_id"], e["caller"]) for e in events] == \
        [(original, "A-other"), (NO_HOLD, "A-other")]


async def test_every_event_names_its_caller_and_the_sweeper_its_own(d):
    with calling_as("T-1", "=m-1"):
        hold = await d.authorize("a1", 5_000)
        await d.capture(hold.hold_id, 5_000, final=True)
        await d.refund(hold.hold_id, 1_000)
        grow = await d.authorize("a2", 2_000, product_id="ecommerce", channel="ecommerce",
                                 mcc="5999")
        await d.increment(grow.hold_id)
        await d.void(grow.hold_id)
        await d.reverse("a3")
        await d.authorize("a4", 3_000)
        await d.force_capture(1_000, merchant_id=MERCHANT)
    with calling_as("B-1"):
        await d.client.repay(*plan_repay(pb.RepayRequest(
            idempotency_key="p1", customer_id=CUSTOMER, amount_minor=500),
            repayment_order(PRODUCTS), PARTITIONS))
        await d.client.set_raise(CUSTOMER, "total", 10_000,
                                 (await d.client.credit(CUSTOMER)).as_of_ms + 60_000)
    d.client.clock_offset_ms += TTL_MS + 1_000
    assert await sweep_once(d.client) == 1  # a4
    await d.client.put_customer(CUSTOMER, "frozen", "Asia/Shanghai", CUSTOMER_CAPS)  # no caller
    callers = [(event["type"], event["caller"]) for event in await d.events()]
    assert callers == [
        ("customer_put", "setup"), ("authorized", "T-1"), ("captured", "T-1"),
        ("refunded", "T-1"), ("authorized", "T-1"), ("incremented", "T-1"), ("voided", "T-1"),
        ("reversed", "T-1"), ("authorized", "T-1"), ("force_captured", "T-1"),
        ("repaid", "B-1"), ("limit_raised", "B-1"), ("expired", SWEEPER), ("customer_put", "")]


async def test_admin_replies_carry_what_was_there_before(d):
    with calling_as("BO-1"):
        first = await d.client.set_raise(CUSTOMER, "total", 10_000,
                                         (await d.client.credit(CUSTOMER)).as_of_ms + 60_000)
        second = await d.client.set_raise(CUSTOMER, "total", 0, 0)
        put = await d.client.put_customer(CUSTOMER, "frozen", "UTC", {"total": 5})
        again = await d.client.put_customer(CUSTOMER, "active", "UTC", {"total": 6, "cash": 1})
        new = await d.client.put_customer("cust-new", "active", "UTC", {"total": 1})
    assert (first.raise_before_minor, first.raise_before_expires_at_ms) == (0, 0)
    assert (second.raise_before_minor, second.raise_before_expires_at_ms) == \
        (10_000, first.level.raise_expires_at_ms)
    assert (put.status_before, put.caps_before) == ("active", CUSTOMER_CAPS)
    assert (again.status_before, again.caps_before) == ("frozen", {"total": 5})
    assert (new.status_before, new.caps_before) == ("", {})


def test_merchant_scope_encodes_the_callers_file_list():
    assert keys.merchant_scope(["M-1", "ACQ-*", "M-1"]) == "=M-1 ^ACQ-"
    assert keys.merchant_scope(["*"]) == keys.merchant_scope(["M-1", "*"]) == ""
    assert keys.merchant_scope([]) == keys.MERCHANT_SCOPE_NONE
    for bad in ("", "a b", "ACQ *", "*\t"):
        with pytest.raises(ValueError, match="merchant scope entry"):
            keys.merchant_scope(["M-1", bad])


SCOPE_CASES = [
    ("", "m-1", True), ("", None, True), ("=m-1", "m-1", True), ("=m-1", "m-10", False),
    ("=m-10", "m-1", False), ("^m-", "m-1", True), ("^m-1", "m-1", True),
    ("^m-10", "m-1", False), ("=a ^b- =m-1", "m-1", True), ("=a ^b-", "b-7", True),
    ("=a ^b-", "c-7", False), ("=m-1", None, False), (keys.MERCHANT_SCOPE_NONE, "m-1", False),
    (keys.MERCHANT_SCOPE_NONE, "", False), ("=x=y", "x=y", True), ("^x", "=x", False),
]


def test_lua_in_scope_answers_as_python(redis_sync):
    probe = script_source("probe", body=(
        "local out = {}\n"
        "for i = 1, #ARGV, 3 do\n"
        "  local merchant = ARGV[i + 2] == '1' and ARGV[i + 1] or false\n"
        "  out[#out + 1] = in_scope(ARGV[i], merchant) and 1 or 0\n"
        "end\n"
        "return out\n"))
    args = [text for scope, merchant, _ in SCOPE_CASES
            for text in (scope, merchant or "", "1" if merchant is not None else "0")]
    answers = redis_sync.eval(probe, 0, *args)
    assert [bool(answer) for answer in answers] == \
        [keys.in_merchant_scope(scope, merchant) for scope, merchant, _ in SCOPE_CASES] == \
        [expected for _, _, expected in SCOPE_CASES]
