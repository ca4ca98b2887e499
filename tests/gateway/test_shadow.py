"""A candidate catalog in shadow (gateway/shadow.py, limits/lua_source.py shadow_reserve).

The candidate is the live catalog with one product's maximum lowered: the shadow reports a
difference on exactly the calls of that product above the new maximum (metrics, the log
line's counts and examples), and Redis after the run holds exactly what the same run gives
without a shadow. A share of 0 never calls the shadow, a share between samples about that
share; a shadow that fails is skipped and logged, never the live call's failure; SIGHUP
reloads the candidate, and a candidate that does not validate is refused then and stops
start-up with the catalog's own error; the shadow function writes nothing, whatever the state
it reads."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import subprocess
import sys

import grpc
import pytest

from creditgate import hotpath
from creditgate.gateway import server
from creditgate.gateway import shadow as shadow_module
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from creditgate.limits import catalog, contracts, keys
from creditgate.limits.constants import IDEMPOTENCY_TTL_S
from creditgate.limits.lua_source import SHADOW_SKIP, scripts
from creditgate.limits.reasons import DeclineReason
from creditgate.limits.replies import decode_authorization
from tests.conftest import CUSTOMER_CAPS, served_gateway, snapshot
from tests.gateway.test_server import ROOT, free_port
from tests.support import PARTITIONS, RULES, authorize_request, redis_client

LIVE = """\
[catalog]
version = "v1"

[templates.base]
channels = ["pos"]
amount_min_minor = 100
hold_ttl_s = 3600

[products.shop]
extends = "base"
name = "Shop"
nodes = ["total", "shop"]
amount_max_minor = 1000

[products.gift]
extends = "base"
name = "Gift card"
nodes = ["total", "gift"]
amount_max_minor = 1000
"""
NEW_MAX = 500
CANDIDATE = LIVE.replace('"v1"', '"v1-candidate"').replace(
    'nodes = ["total", "shop"]\namount_max_minor = 1000',
    f'nodes = ["total", "shop"]\namount_max_minor = {NEW_MAX}')
assert CANDIDATE.count(f"= {NEW_MAX}") == 1
CAPS = {"total": 10**9, "shop": 10**9, "gift": 10**9}
CUSTOMERS = [f"c-shadow-{n}" for n in range(3)]
AMOUNTS = {"shop": (300, 700, 500, 501, 1000, 1200, 250), "gift": (300, 700, 1200)}
MS = re.compile(rb"\d{13}")


def stream() -> list[tuple[str, pb.AuthorizeRequest]]:
    """(request id, request): every customer buys every amount of every product."""
    calls = []
    for customer in CUSTOMERS:
        for product, amounts in AMOUNTS.items():
            for amount in amounts:
                key = f"k-{len(calls)}"
                calls.append((f"rq-{len(calls)}", authorize_request(key, customer, amount,
                                                                   product_id=product)))
    return calls


def differing(calls) -> set[str]:
    """The calls the candidate decides differently: shop's within the old maximum and above
    the new one (the live catalog approves them, the candidate declines)."""
    return {request_id for request_id, request in calls
            if request.product_id == "shop" and NEW_MAX < request.amount_minor <= 1000}


async def epoch_offset_ms(redis) -> int:
    """A clock offset that puts both runs a minute into one idempotency epoch: the hold ids,
    derived from it, are the same in both."""
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    epoch_ms = IDEMPOTENCY_TTL_S * 1000
    return (now_ms // epoch_ms + 1) * epoch_ms + 60_000 - now_ms


async def run(redis_server, redis, tmp_path, offset_ms: int, with_shadow: bool):
    """The stream against a flushed Redis, one call at a time, then a batch of retries of the
    first calls and new purchases; returns (the gateway's shadow, Redis' state)."""
    await redis.flushall()
    live_path, candidate_path = tmp_path / "live.toml", tmp_path / "candidate.toml"
    live_path.write_text(LIVE)
    candidate_path.write_text(CANDIDATE)
    config = {"catalog_path": str(live_path), "clock_offset_ms": offset_ms,
              "metrics_port": free_port()}
    if with_shadow:
        config["shadow_catalog_path"] = str(candidate_path)
    calls = stream()
    async with served_gateway(redis_server, **config) as gateway, \
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        admin, auth = pb_grpc.AdminStub(channel), pb_grpc.AuthorizationStub(channel)
        if gateway.context.shadow is not None:  # one log line for the whole run
            gateway.context.shadow.interval_s = 3600.0
        for customer in CUSTOMERS:
            await admin.PutCustomer(pb.PutCustomerRequest(
                customer_id=customer, status=pb.CUSTOMER_STATUS_ACTIVE, timezone="UTC",
                caps_minor=CAPS))
        for request_id, request in calls:
            await auth.Authorize(request, metadata=(("x-request-id", request_id),))
        # A batch: three retries (the shadow skips them), and new purchases of both products.
        retries = [request for _, request in calls[:3]]
        fresh = [authorize_request(f"batch-{n}", CUSTOMERS[0], amount, product_id=product)
                 for n, (product, amount) in enumerate([("shop", 900), ("gift", 900),
                                                        ("shop", 400)])]
        await auth.AuthorizeBatch(pb.AuthorizeBatchRequest(requests=retries + fresh),
                                  metadata=(("x-request-id", "rq-batch"),))
        gateway.metrics.flush()
        registry = gateway.metrics.registry
        shadow = gateway.context.shadow
        state = await comparable(redis)
        if shadow is not None:
            shadow.flush()
    return shadow, registry, state


async def comparable(redis) -> dict:
    """Redis' state: every key, its value and whether it has a TTL, with the Redis clock's
    readings (13-digit ms: decision times, expiries, event ids) written as <ms>; a sorted
    set's members in name order, as their scores are such readings."""
    state = {}
    for key, value in (await snapshot(redis)).items():
        if await redis.type(key) == b"zset":  # members by name: their scores are times
            value = sorted(value)
        text = MS.sub(b"<ms>", repr(value).encode())
        state[key] = (text, await redis.pttl(key) > 0)
    return state


def sample(registry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_a_lower_maximum_differs_on_exactly_those_calls_and_leaves_redis_as_live_alone(
        redis, redis_server, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(shadow_module, "EXAMPLES_PER_LINE_MAX", 1000)
    offset_ms = await epoch_offset_ms(redis)
    calls = stream()
    expected = differing(calls)
    assert 0 < len(expected) < len(calls)
    with caplog.at_level(logging.INFO, logger="creditgate.shadow"):
        shadow, registry, with_shadow = await run(redis_server, redis, tmp_path, offset_ms,
                                                  with_shadow=True)
    lines = [record for record in caplog.records if record.name == "creditgate.shadow"
             and record.levelno == logging.WARNING]
    _, _, without_shadow = await run(redis_server, redis, tmp_path, offset_ms,
                                     with_shadow=False)

    # The state: byte for byte what the live catalog alone gives, but for the clock's readings.
    assert with_shadow == without_shadow
    assert len(with_shadow) > 2 * len(CUSTOMERS)  # customers, holds, outboxes, records

    # The metrics: the stream's calls and the batch's new purchases compared, the retries
    # skipped; the differences are shop's above the new maximum, of kind outcome.
    batch_differs = 1  # shop 900
    differs = len(expected) + batch_differs
    compared = len(calls) + 3
    assert sample(registry, "creditgate_shadow_calls_total", result="differs") == differs
    assert sample(registry, "creditgate_shadow_calls_total", result="same") == compared - differs
    assert sample(registry, "creditgate_shadow_calls_total", result="skipped") == 3
    assert sample(registry, "creditgate_shadow_differences_total", product="shop",
                  kind="outcome") == differs
    for product, kind in [("gift", "outcome"), ("shop", "reason"), ("shop", "amount")]:
        assert sample(registry, "creditgate_shadow_differences_total", product=product,
                      kind=kind) == 0
    assert sample(registry, "creditgate_script_calls_total", redis=shadow_server(registry),
                  script="shadow_reserve") == len(calls) + 6
    assert sample(registry, "creditgate_shadow_catalog_info", version="v1-candidate") == 1

    # The log: one line (the interval did not end during the run) with the counts per product
    # and kind, and the differing calls' request ids, no customer id.
    assert len(lines) == 1, [record.getMessage() for record in lines]
    line = lines[0]
    assert line.differences == {"shop": {"outcome": differs}}
    assert line.compared == compared and line.differs == differs
    assert line.skipped == {"replay": 3}
    assert line.shadow_version == "v1-candidate" and line.live_version == "v1"
    assert {example["request_id"] for example in line.examples} == expected | {"rq-batch"}
    assert {(example["live"], example["candidate"]) for example in line.examples} == {
        ("approved", "amount_above_maximum")}
    assert all(example["hold_id"] for example in line.examples)
    assert f"shop outcome approved->amount_above_maximum: {differs}" in line.getMessage()
    assert not any(customer in line.getMessage() or customer in repr(line.__dict__)
                   for customer in CUSTOMERS)
    assert shadow.differences == {} and shadow.compared == 0  # a new interval began


def shadow_server(registry) -> str:
    """The `redis` label of the gateway's script calls."""
    for metric in registry.collect():
        for found in metric.samples:
            if found.name == "creditgate_script_calls_total":
                return found.labels["redis"]
    raise AssertionError("no script calls counted")


async def test_a_share_of_0_never_calls_the_shadow_and_a_share_samples_about_it(
        redis, redis_server, tmp_path):
    live_path, candidate_path = tmp_path / "live.toml", tmp_path / "candidate.toml"
    live_path.write_text(LIVE)
    candidate_path.write_text(CANDIDATE)
    for share, calls_made in [(0.0, 40), (0.25, 400)]:
        await redis.flushall()
        async with served_gateway(redis_server, catalog_path=str(live_path),
                                  shadow_catalog_path=str(candidate_path), shadow_share=share,
                                  metrics_port=free_port()) as gateway, \
                grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            gateway.context.shadow.random = random.Random(16).random
            await pb_grpc.AdminStub(channel).PutCustomer(pb.PutCustomerRequest(
                customer_id="c-share", status=pb.CUSTOMER_STATUS_ACTIVE, timezone="UTC",
                caps_minor=CAPS))
            auth = pb_grpc.AuthorizationStub(channel)
            await asyncio.gather(*(auth.Authorize(authorize_request(
                f"share-{n}", "c-share", 300 + n % 2 * 400, product_id="shop"))
                for n in range(calls_made)))
            gateway.metrics.flush()
            registry = gateway.metrics.registry
            sampled = sum(sample(registry, "creditgate_shadow_calls_total", result=result)
                          for result in ("same", "differs", "skipped"))
            shadow_calls = sample(registry, "creditgate_script_calls_total",
                                  redis=shadow_server(registry), script="shadow_reserve")
            assert sampled == shadow_calls
            if share == 0.0:
                assert sampled == 0
            else:  # 100 expected; the binomial's deviation is about 9
                assert 0.25 * calls_made * 0.7 <= sampled <= 0.25 * calls_made * 1.3, sampled
                assert sample(registry, "creditgate_shadow_calls_total",
                              result="differs") > 0


async def test_a_shadow_that_fails_never_fails_the_live_call_and_is_logged(
        redis, redis_server, tmp_path, caplog):
    live_path, candidate_path = tmp_path / "live.toml", tmp_path / "candidate.toml"
    live_path.write_text(LIVE)
    candidate_path.write_text(CANDIDATE)
    async with served_gateway(redis_server, catalog_path=str(live_path),
                              shadow_catalog_path=str(candidate_path),
                              metrics_port=free_port()) as gateway, \
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        await pb_grpc.AdminStub(channel).PutCustomer(pb.PutCustomerRequest(
            customer_id="c-shadow-down", status=pb.CUSTOMER_STATUS_ACTIVE, timezone="UTC",
            caps_minor=CAPS))
        limits = gateway.context.limits
        queued = []

        def failing(keys_, args):  # the shadow's call fails in Redis' place, once queued
            future = asyncio.get_running_loop().create_future()
            future.set_exception(ConnectionError("shadow lost"))
            queued.append(future)
            return future

        limits.shadow_reserve = failing
        auth = pb_grpc.AuthorizationStub(channel)
        with caplog.at_level(logging.INFO, logger="creditgate.shadow"):
            answers = [await auth.Authorize(authorize_request(
                f"down-{n}", "c-shadow-down", 700, product_id="shop")) for n in range(4)]
            gateway.context.shadow.flush()
        assert [answer.approved for answer in answers] == [True] * 4 and len(queued) == 4
        gateway.metrics.flush()
        registry = gateway.metrics.registry
        assert sample(registry, "creditgate_shadow_calls_total", result="skipped") == 4
        lines = [record for record in caplog.records if record.name == "creditgate.shadow"]
        assert len(lines) == 1 and lines[0].skipped == {"failed": 4}
        assert "(4 skipped, 4 of them failed): no difference" in lines[0].getMessage()


async def test_sighup_reloads_the_candidate_and_refuses_one_that_does_not_validate(
        redis, redis_server, tmp_path, caplog):
    live_path, candidate_path = tmp_path / "live.toml", tmp_path / "candidate.toml"
    live_path.write_text(LIVE)
    candidate_path.write_text(CANDIDATE)
    async with served_gateway(redis_server, catalog_path=str(live_path),
                              shadow_catalog_path=str(candidate_path),
                              metrics_port=free_port()) as gateway:
        registry = gateway.metrics.registry
        candidate_path.write_text(CANDIDATE.replace('"v1-candidate"', '"v2-candidate"'))
        gateway.reload_catalog()
        assert gateway.context.shadow.candidate.version == "v2-candidate"
        assert gateway.context.catalog.version == "v1"
        assert sample(registry, "creditgate_shadow_catalog_info", version="v2-candidate") == 1
        assert sample(registry, "creditgate_shadow_catalog_info", version="v1-candidate") == 0
        kept = gateway.context.shadow
        candidate_path.write_text(CANDIDATE.replace('"v1-candidate"', '"v3-candidate"')
                                  .replace(f"amount_max_minor = {NEW_MAX}",
                                           "amount_max_minor = -5"))
        with caplog.at_level(logging.INFO, logger="creditgate.shadow"):
            gateway.reload_catalog()
        assert gateway.context.shadow is kept
        refused = [record.getMessage() for record in caplog.records
                   if record.name == "creditgate.shadow" and record.levelno == logging.ERROR]
        assert refused == [f"shadow catalog reload refused, version v2-candidate stays: "
                           f"{candidate_path}: product 'shop': field 'amount_min_minor': "
                           "need 0 < amount_min_minor <= amount_max_minor"]


def test_a_candidate_that_does_not_validate_stops_start_up_with_its_error(tmp_path):
    bad = tmp_path / "candidate.toml"
    bad.write_text(CANDIDATE.replace(f"amount_max_minor = {NEW_MAX}", "amount_max_minor = -5"))
    with pytest.raises(catalog.CatalogError) as raised:
        catalog.load_catalog(bad)
    error = str(raised.value)
    assert error == (f"{bad}: product 'shop': field 'amount_min_minor': "
                     "need 0 < amount_min_minor <= amount_max_minor")
    live = tmp_path / "live.toml"
    live.write_text(LIVE)
    with pytest.raises(catalog.CatalogError) as at_start:
        server.Gateway(server.Config(port=0, catalog_path=str(live),
                                     shadow_catalog_path=str(bad), insecure=True,
                                     callers_path=str(ROOT / "tests" / "callers-suite.toml")))
    assert str(at_start.value) == error
    done = subprocess.run(
        [sys.executable, "-m", "creditgate.gateway.cli", "serve", "--catalog", str(live),
         "--shadow-catalog", str(bad), "--port", str(free_port()), "--insecure",
         "--callers", str(ROOT / "tests" / "callers-suite.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip() == f"creditgate: bad catalog: {error}"
    done = subprocess.run(
        [sys.executable, "-m", "creditgate.gateway.cli", "serve", "--catalog", str(live),
         "--shadow-catalog", str(live), "--shadow-share", "1.5", "--port", str(free_port()),
         "--insecure", "--callers", str(ROOT / "tests" / "callers-suite.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--shadow-share must be within 0..1, not 1.5" in done.stderr


def pairs(reply) -> dict:
    """A RESP2 map (a flat list of names and values) as a dict."""
    return reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))


async def dumps(redis) -> dict:
    """Every key's DUMP and expiry time: Redis' state byte for byte."""
    return {key: (await redis.dump(key), await redis.execute_command("PEXPIRETIME", key))
            async for key in redis.scan_iter(count=1000)}


async def test_the_shadow_function_is_read_only_and_writes_nothing(redis):
    client = redis_client(redis)
    await client.put_customer("c-ro", "active", "Asia/Shanghai", CUSTOMER_CAPS)
    functions = await redis.function_list(library=keys.LIBRARY)
    library = pairs(functions[0])
    flags = {pairs(entry)[b"name"]: set(pairs(entry)[b"flags"])
             for entry in library[b"functions"]}
    assert flags[scripts()["shadow_reserve"].function.encode()] == {b"no-writes"}
    assert flags[scripts()["reserve"].function.encode()] == set()

    def planned(key: str, amount: int):
        return hotpath.plan_authorize(authorize_request(key, "c-ro", amount), RULES, PARTITIONS)

    async def shadow_of(key: str, amount: int) -> str:
        """The shadow's reply; Redis byte for byte as before it."""
        before = await dumps(redis)
        reply = await client.shadow_reserve(*planned(key, amount))
        assert await dumps(redis) == before
        return reply.decode() if isinstance(reply, bytes) else reply

    # A new purchase: the approval it would make, with no hold, no level, no event written.
    would = decode_authorization(await shadow_of("k-1", 1_000))
    assert would.reason == DeclineReason.NONE and would.approved_amount_minor == 1_000
    assert would.hold_id == "" and would.levels == ()
    # A decline: no idempotency record is kept.
    over = decode_authorization(await shadow_of("k-2", 10**8))
    assert over.reason != DeclineReason.NONE
    # The live call then decides as the shadow said; the shadow of its retry is skipped.
    live = await client.authorize(*planned("k-1", 1_000))
    assert live.reason == DeclineReason.NONE and live.approved_amount_minor == 1_000
    assert await shadow_of("k-1", 1_000) == SHADOW_SKIP + "replay"
    await client.authorize(*planned("k-2", 10**8))
    assert await shadow_of("k-2", 10**8) == SHADOW_SKIP + "replay"
    # A customer with a hold due for release: the live call releases it first; the shadow
    # cannot without writing, and skips.
    client.clock_offset_ms = live.hold_expires_at_ms - live.decided_at_ms + 1_000
    assert await shadow_of("k-3", 1_000) == SHADOW_SKIP + "expired"
    # Called with plain FCALL, the function is still refused any write (its flag).
    keys_, args = planned("k-4", 1_000)
    before = await dumps(redis)
    header = contracts.call_header(0, 0, "", "")
    await redis.fcall(scripts()["shadow_reserve"].function, len(keys_), *keys_, *header, *args)
    assert await dumps(redis) == before
