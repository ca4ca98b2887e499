"""A rolling upgrade's two releases over one Redis: the previous layout's library (creditgate_v2,
frozen in tests/limits/layout2/ as commit 0d67e77 loaded it) and this layout's sit side by side,
and their scripts take turns on the same customers, holds and idempotency keys. Every reply and
the whole Redis state after every step equal the model's, the model running each call as the
layout it was sent to (Model.call's `layout`). Also: what each layout answers for what the other
wrote (retries of approvals and of declines, with the catalog version of each).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize

from creditgate import hotpath
from creditgate.limits import calendar, contracts, keys
from creditgate.limits.contracts import call_header
from creditgate.limits.model import LAYOUT_PREVIOUS, RULES_LAYOUT_2, Model
from creditgate.limits.replies import decode_authorization
from creditgate.limits.transport import ScriptRunner
from tests.limits.test_model_equivalence import (
    ScriptsVersusModel,
    normalise,
    redis_state,
    reply_now,
)
from tests.support import PARTITIONS, PRODUCTS, authorize_request

LAYOUT2 = Path(__file__).parent / "layout2" / "creditgate_v2.lua"
LIBRARY_2 = "creditgate_v2"
LAYOUTS = (LAYOUT_PREVIOUS, keys.LAYOUT_VERSION)
# The catalog versions a node of this layout may serve from one call to the next (a reload).
VERSIONS = ("2026-12-06.1", "2026-12-07+b")
CAPS = {"total": 2_000_000, "consumer": 1_500_000, "consumer.scan_pay": 900_000,
        "consumer.scan_pay.pos": 700_000}


def layout2_rules(rules: str) -> str:
    """reserve's product rules as layout 2 takes them: this layout's without the fields it
    added (the catalog version), by name."""
    fields = contracts.PRODUCT_RULES.bind(rules.split(contracts.RULES_SEPARATOR))
    return contracts.RULES_SEPARATOR.join(getattr(fields, name) for name in RULES_LAYOUT_2.names)


def with_version(rules: str, version: str) -> str:
    """This layout's product rules with another catalog version."""
    fields = contracts.PRODUCT_RULES.bind(rules.split(contracts.RULES_SEPARATOR))
    return contracts.RULES_SEPARATOR.join(
        version if name == "catalog_version" else getattr(fields, name)
        for name in contracts.PRODUCT_RULES.names)


def args_for(layout: int, name: str, args: list[str], version: str) -> list[str]:
    """A call's ARGV (header included) for the scripts of `layout`: reserve's rules are the
    only argument that differs."""
    if name != "reserve":
        return args
    at = len(contracts.CALL_HEADER) + contracts.RESERVE.args.rules
    rules = args[at]
    rules = layout2_rules(rules) if layout == LAYOUT_PREVIOUS else with_version(rules, version)
    return [*args[:at], rules, *args[at + 1:]]


async def load_layout_2(redis) -> None:
    assert await redis.function_load(LAYOUT2.read_text(), replace=True) in (
        LIBRARY_2, LIBRARY_2.encode())


async def unload_layout_2(redis) -> None:
    # The shared test Redis keeps one library per layout: the other tests expect this one's.
    if LIBRARY_2.encode() in await library_names(redis):
        await redis.function_delete(LIBRARY_2)


async def library_names(redis) -> list[bytes]:
    return sorted(entry[entry.index(b"library_name") + 1] for entry in await redis.function_list())


class TwoLayoutsVersusModel(ScriptsVersusModel):
    """ScriptsVersusModel with each call sent to layout 2's library or this one's at random,
    and this layout's reserve deciding on one catalog version or another (a reload between
    calls): hypothesis draws the choices."""

    def __init__(self):
        super().__init__()
        self.rng = None
        self.run(load_layout_2(self.redis))
        self.run(ScriptRunner(self.redis).load())

    def teardown(self):
        self.run(unload_layout_2(self.redis))
        super().teardown()

    @initialize(rng=st.randoms(use_true_random=False))
    def put_customers(self, rng):
        self.rng = rng
        ScriptsVersusModel.put_customers(self)

    def both(self, name: str, keys_, args):
        layout = self.rng.choice(LAYOUTS)
        if name == "replay":  # this layout's alone (the gateway of layout 2 never asks it)
            layout = keys.LAYOUT_VERSION
        version = self.rng.choice(VERSIONS)
        args = args_for(layout, name, [*call_header(self.offset_ms, 0, self.caller, self.scope),
                                       *args], version)

        async def call():
            if layout == LAYOUT_PREVIOUS:
                return await self.redis.fcall(f"{name}_v{layout}", len(keys_), *keys_, *args)
            return await self.runner.call(name, keys_, args)

        real = normalise(self.run(call()))
        self.model_now = reply_now(real, name) - self.offset_ms
        modelled = self.model.call(name, keys_, args, layout=layout)
        if name == "credit":  # a hash's field order is Redis' own: compare as mappings
            assert real[0] == modelled[0]
            assert dict(zip(real[1::2], real[2::2], strict=True)) == dict(
                zip(modelled[1::2], modelled[2::2], strict=True))
        else:
            assert real == modelled, (layout, name, real, modelled)
        return real


def test_both_layouts_equal_the_model_in_alternation(redis_server):
    TwoLayoutsVersusModel.redis_url = redis_server.url
    runner = TwoLayoutsVersusModel.TestCase()
    runner.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                               suppress_health_check=list(HealthCheck))
    runner.runTest()


# -- what each layout answers for what the other wrote ---------------------------------------
CUSTOMER = "mixed-1"
BASE = keys.base(keys.partition_of(CUSTOMER, PARTITIONS))


class Both:
    """One Redis with both libraries, and the model beside it."""

    def __init__(self, redis):
        self.redis = redis
        self.runner = ScriptRunner(redis)
        self.now = 0
        self.model = Model(lambda: self.now)

    async def call(self, layout: int, name: str, keys_, args, version: str = VERSIONS[0]):
        args = args_for(layout, name, [*call_header(), *args], version)
        if layout == LAYOUT_PREVIOUS:
            real = await self.redis.fcall(f"{name}_v2", len(keys_), *keys_, *args)
        else:
            real = await self.runner.call(name, keys_, args)
        real = normalise(real)
        self.now = reply_now(real, name)
        assert real == self.model.call(name, keys_, args, layout=layout), (layout, name)
        return real

    async def put(self, layout: int, caps=None) -> None:
        rest = [text for node, cap in sorted((caps or CAPS).items()) for text in (node, str(cap))]
        await self.call(layout, "put_customer", [keys.customer(BASE, CUSTOMER), keys.outbox(BASE),
                                                 keys.timezones(BASE)],
                        [CUSTOMER, "active", "UTC", calendar.offset_schedule("UTC", 1_795_600_000),
                         *rest])

    async def authorize(self, layout: int, key: str, amount: int, version: str = VERSIONS[0]):
        keys_, args = hotpath.plan_authorize(authorize_request(key, CUSTOMER, amount),
                                             hotpath.compile_products(PRODUCTS), PARTITIONS)
        return await self.call(layout, "reserve", keys_, args, version)


@pytest.fixture
async def both(redis):
    await load_layout_2(redis)
    try:
        yield Both(redis)
    finally:
        await unload_layout_2(redis)


async def test_each_release_loads_its_library_beside_the_other(redis):
    await load_layout_2(redis)
    try:
        await ScriptRunner(redis).load()  # FUNCTION LOAD REPLACE of this layout's library
        assert await library_names(redis) == [LIBRARY_2.encode(), keys.LIBRARY.encode()]
        await load_layout_2(redis)  # and the previous release's, loading again, keeps this one
        assert await library_names(redis) == [LIBRARY_2.encode(), keys.LIBRARY.encode()]
    finally:
        await unload_layout_2(redis)
    assert await library_names(redis) == [keys.LIBRARY.encode()]


async def test_an_approval_retried_on_the_other_layout_finds_its_hold(both):
    await both.put(LAYOUT_PREVIOUS)
    old = (await both.authorize(LAYOUT_PREVIOUS, "k-old", 1_000)).split("|")
    new = (await both.authorize(keys.LAYOUT_VERSION, "k-new", 2_000, VERSIONS[0])).split("|")
    # A retry on this layout answers the version its hold recorded, not the one in force;
    # a hold of layout 2 recorded none.
    again = decode_authorization(await both.authorize(keys.LAYOUT_VERSION, "k-new", 2_000,
                                                      VERSIONS[1]))
    assert (again.hold_id, again.catalog_version) == (new[3], VERSIONS[0])
    again = decode_authorization(await both.authorize(keys.LAYOUT_VERSION, "k-old", 1_000,
                                                      VERSIONS[1]))
    assert (again.hold_id, again.catalog_version) == (old[3], "")
    # Layout 2 finds this layout's hold too, and answers as it always did.
    retried = await both.authorize(LAYOUT_PREVIOUS, "k-new", 2_000)
    assert retried.split("|")[:12] == new[:12] and len(retried.split("|")) == len(new) - 1
    # This layout's hold names its version by its path id; layout 2's path id names none.
    paths = await both.redis.hgetall(keys.paths(BASE))
    for hold_id, version in ((new[3], VERSIONS[0]), (old[3], None)):
        nodes = await both.redis.hget(keys.hold(BASE, hold_id), keys.HOLD_FIELDS["NODES"])
        assert paths.get(nodes + keys.PATH_VERSION_MARK.encode()) == (
            version.encode() if version else None)


async def test_a_decline_retried_on_the_other_layout_answers_the_same(both):
    await both.put(keys.LAYOUT_VERSION, caps={**CAPS, "total": 500})
    first = await both.authorize(keys.LAYOUT_VERSION, "k-1", 1_000, VERSIONS[0])
    declined = decode_authorization(first)
    assert not declined.approved and declined.catalog_version == VERSIONS[0]
    # On this layout, the stored decision with the version that decided it.
    assert await both.authorize(keys.LAYOUT_VERSION, "k-1", 1_000, VERSIONS[1]) == first
    # On layout 2: its first '|'-field carries the version on a line before "OK", which layout
    # 2's gateway skips as it skips "OK" (limits/replies.py _fields at 0d67e77: parts[1:]);
    # the fields after it are the first decision's, as layout 2 writes a reply.
    replayed = await both.authorize(LAYOUT_PREVIOUS, "k-1", 1_000)
    assert replayed.split("|")[0] == f"{VERSIONS[0]}\nOK"
    assert replayed.split("|")[1:] == first.split("|")[1:-1]
    # A decline layout 2 remembered: this layout answers it with no version.
    old = await both.authorize(LAYOUT_PREVIOUS, "k-2", 1_000)
    again = await both.authorize(keys.LAYOUT_VERSION, "k-2", 1_000, VERSIONS[1])
    assert again == old + "|" and decode_authorization(again).catalog_version == ""


async def test_the_authorized_event_names_the_catalog_version(both):
    await both.put(keys.LAYOUT_VERSION)
    await both.authorize(keys.LAYOUT_VERSION, "k-1", 1_000, VERSIONS[1])
    await both.authorize(LAYOUT_PREVIOUS, "k-2", 1_000)
    events = [{k.decode(): v.decode() for k, v in fields.items()}
              for _, fields in await both.redis.xrange(keys.outbox(BASE))]
    authorized = [event for event in events if event["type"] == "authorized"]
    assert [event.get("catalog_version") for event in authorized] == [VERSIONS[1], None]
    assert await redis_state(both.redis) == {key: value for key, value in both.model.state.items()
                                             if value != {}}
