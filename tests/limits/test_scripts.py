"""The script runner: the library loaded once and its functions called by FCALL, reloaded when
Redis lost it, and the calls of one
loop tick coalesced into one round trip without one call's failure reaching its neighbours."""

from __future__ import annotations

import asyncio
import re

import pytest
from redis.exceptions import ResponseError

from creditgate.limits import contracts, keys
from creditgate.limits.lua_source import (
    SCRIPT_NAMES,
    library,
    lua_constant_values,
    script_source,
    scripts,
)
from creditgate.limits.transport import ScriptRunner
from tests.support import PARTITIONS, ScriptDriver, authorize_request, redis_client


def test_every_script_carries_the_constants_as_values():
    values = lua_constant_values()
    assert values["K_CUSTOMER"] == f"'{keys.KIND_CUSTOMER}'"
    names = re.compile(r"\b(" + "|".join(values) + r")\b")
    for name, source in [*((name, script_source(name)) for name in SCRIPT_NAMES),
                         (SCRIPT_NAMES[-1], library())]:
        assert source.index("_lib.lua") < source.index(f"-- {name}.lua")
        code = "\n".join(line.split("--")[0] for line in source.splitlines())
        assert not names.search(code), (name, names.search(code))


def test_the_library_is_named_by_the_layout_version_and_registers_every_script():
    source = library()
    assert source.startswith(f"#!lua name={keys.LIBRARY}\n")
    for name in SCRIPT_NAMES:
        function = scripts()[name].function
        assert function == f"{name}_v{keys.LAYOUT_VERSION}"
        if name in contracts.READ_ONLY:  # flagged: Redis refuses any write it attempts
            assert f"register_function{{function_name='{function}',\n  flags={{'no-writes'}}" \
                in source
            assert scripts()[name].command == "FCALL_RO"
        else:
            assert f"register_function('{function}', " in source
    # The prelude is built once, when the library loads: one copy of each helper.
    assert source.count("local function fmt(") == 1


def test_a_script_keeps_only_the_helpers_it_calls():
    """reserve.lua calls release_expired, which calls expire_hold, which calls close_hold;
    it never calls add_balance or open_hold, so its EVAL prelude does not build them."""
    reserve = script_source("reserve")
    for helper in ("release_expired", "expire_hold", "close_hold", "hold_nodes", "fmt"):
        assert f"local function {helper}(" in reserve, helper
    for helper in ("add_balance", "open_hold", "release_if_due"):
        assert f"local function {helper}(" not in reserve, helper
    assert "local function add_balance(" in script_source("repay")
    # A helper is defined before the first helper that calls it (Lua's `local function`).
    assert reserve.index("local function close_hold(") < reserve.index(
        "local function expire_hold(")


async def _library_names(redis) -> list:
    return [entry[entry.index(b"library_name") + 1] for entry in await redis.function_list()]


async def test_scripts_are_loaded_once_and_reloaded_after_function_flush(redis):
    runner = ScriptRunner(redis)
    await runner.load()
    assert await _library_names(redis) == [keys.LIBRARY.encode()]
    await redis.function_flush()
    driver = ScriptDriver(redis_client(redis))
    driver.client.runner = runner
    await driver.put("c1", {"total": 1_000, "consumer": 1_000, "consumer.scan_pay": 1_000,
                            "consumer.scan_pay.pos": 1_000})
    reason, _, hold_id = await driver.authorize(authorize_request("k", "c1", 500))
    assert reason == 0 and hold_id
    assert await _library_names(redis) == [keys.LIBRARY.encode()]


async def test_one_round_trip_per_tick_and_isolated_failures(redis):
    client = redis_client(redis)
    runner = client.runner
    await runner.load()
    driver = ScriptDriver(client)
    caps = {"total": 10**7, "consumer": 10**7, "consumer.scan_pay": 10**7,
            "consumer.scan_pay.pos": 10**7}
    customers = [f"c{i}" for i in range(40)]
    for customer in customers:
        await driver.put(customer, caps)
    # A customer whose record was overwritten with another type: its script call fails.
    broken = customers[7]
    broken_key = keys.customer(keys.base(keys.partition_of(broken, PARTITIONS)), broken)
    await redis.delete(broken_key)
    await redis.set(broken_key, "not a hash")
    batches_before = runner.batches_sent
    results = await asyncio.gather(
        *(driver.authorize(authorize_request(f"k-{c}", c, 1_000)) for c in customers),
        return_exceptions=True)
    assert runner.batches_sent - batches_before == 1  # one pipeline for the whole tick
    for customer, result in zip(customers, results, strict=True):
        if customer == broken:
            assert isinstance(result, ResponseError) and "WRONGTYPE" in str(result)
        else:
            assert result[0] == 0 and result[2], (customer, result)


async def test_batches_are_bounded(redis):
    client = redis_client(redis)
    client.runner.batch_size_max = 8
    await client.runner.load()
    driver = ScriptDriver(client)
    batches_before = client.runner.batches_sent
    results = await asyncio.gather(*(driver.authorize(authorize_request(f"k{i}", f"u{i}", 100))
                                     for i in range(20)))
    assert [r[0] for r in results] == [1] * 20  # unknown customers, each answered
    assert client.runner.batches_sent - batches_before == 3  # 8 + 8 + 4


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_script_headers_list_keys_and_argv(name):
    source = script_source(name).split(f"-- {name}.lua")[1]
    assert "KEYS[1]" in source.split("\nlocal ")[0] and "ARGV[1]" in source.split("\nlocal ")[0]


async def test_a_failing_retry_after_noscript_fails_only_itself(redis):
    """After FUNCTION FLUSH, a batch's calls find no function and are sent again; a call that then
    fails (here: a script error on a key of the wrong type) does not take its neighbours'
    answers away."""
    client = redis_client(redis)
    runner = client.runner
    driver = ScriptDriver(client)
    caps = {"total": 10**6, "consumer": 10**6, "consumer.scan_pay": 10**6,
            "consumer.scan_pay.pos": 10**6}
    await driver.put("good", caps)
    await driver.put("bad", caps)
    bad_key = keys.customer(keys.base(keys.partition_of("bad", PARTITIONS)), "bad")
    await redis.delete(bad_key)
    await redis.set(bad_key, "not a hash")
    await redis.function_flush()
    results = await asyncio.gather(
        driver.authorize(authorize_request("k1", "good", 1_000)),
        driver.authorize(authorize_request("k2", "bad", 1_000)),
        return_exceptions=True)
    assert results[0][0] == 0 and results[0][2]  # approved, with its hold
    assert isinstance(results[1], ResponseError)
    assert runner.batches_sent >= 2

