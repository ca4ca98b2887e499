"""replay.lua, read-only, on real Redis: the decision an Authorize's key already has for this
fingerprint, without product rules, is reserve's own answer to the retry (an approval's, a
decline's, a hold whose path id was taken), ERR for another payload, NONE for none; it is
registered no-writes and changes no byte. The model's replay is compared in
tests/limits/test_model_equivalence.py and test_mixed_layouts.py."""

from __future__ import annotations

import hashlib

import pytest

from creditgate import hotpath
from creditgate.limits import contracts, keys
from creditgate.limits.model import Model
from creditgate.limits.reasons import ScriptError
from creditgate.limits.replies import Refused, decode_authorization
from tests.conftest import snapshot
from tests.support import PARTITIONS, PRODUCTS, authorize_request, redis_client

CAPS = {"total": 10**8, "consumer": 10**8, "consumer.scan_pay": 10**8,
        "consumer.scan_pay.pos": 10**8}
NODES = "total,consumer,consumer.scan_pay,consumer.scan_pay.pos"
TTL_MS = PRODUCTS["scan_pay"].hold_ttl_s * 1000


async def _replay(client, request) -> str:
    reply = await client.replay(*hotpath.plan_replay(request, PARTITIONS))
    return reply.decode() if isinstance(reply, bytes) else reply


async def _reserve(client, request, version: str) -> str:
    reply = await client.reserve(*hotpath.plan_authorize(
        request, hotpath.compile_products(PRODUCTS, version), PARTITIONS))
    return reply.decode() if isinstance(reply, bytes) else reply


async def test_replay_answers_as_reserve_answers_the_retry_and_writes_nothing(redis):
    client = redis_client(redis)
    await client.put_customer("replay-1", "active", "Asia/Shanghai", CAPS)
    approval = authorize_request("k-1", "replay-1", 1_000, installment_months=3)
    decline = authorize_request("k-2", "replay-1", 10**9)
    first = await _reserve(client, approval, "v-1")
    await _reserve(client, decline, "v-1")
    # A hold whose path id another list took keeps its version and TTL itself.
    base = keys.base(keys.partition_of("replay-1", PARTITIONS))
    taken = keys.PATH_ID_MARK + hashlib.sha1(f"{NODES}|v-2|{TTL_MS}".encode()).hexdigest()[:10]
    await redis.hset(keys.paths(base), taken, "total,other")
    kept = authorize_request("k-3", "replay-1", 2_000)
    await _reserve(client, kept, "v-2")

    before = await snapshot(redis)
    for request in (approval, decline, kept):
        replayed = await _replay(client, request)
        assert replayed.startswith("OK|")
        assert decode_authorization(replayed).catalog_version in ("v-1", "v-2")
        assert replayed == await _reserve(client, request, "v-later")  # reserve's own retry
    assert decode_authorization(await _replay(client, approval)).hold_id \
        == decode_authorization(first).hold_id
    # Another payload under the key: refused as reserve refuses it.
    other = authorize_request("k-1", "replay-1", 1_001, installment_months=3)
    with pytest.raises(Refused) as refused:
        decode_authorization(await _replay(client, other))
    assert refused.value.code == ScriptError.IDEMPOTENCY_MISMATCH
    # No decision: NONE, with Redis' time.
    none = await _replay(client, authorize_request("k-new", "replay-1", 1_000))
    assert none.split("|")[0] == contracts.REPLAY_NONE and int(none.split("|")[1]) > 0
    assert await snapshot(redis) == before


async def test_replay_is_registered_read_only(redis):
    client = redis_client(redis)
    await _replay(client, authorize_request("k-1", "replay-2", 1_000))  # loads the library
    flags = {}
    for library in await redis.function_list(library=keys.LIBRARY):
        functions = library[library.index(b"functions") + 1]
        for function in functions:
            fields = dict(zip(function[::2], function[1::2], strict=True))
            flags[fields[b"name"].decode()] = [flag.decode() for flag in fields[b"flags"]]
    assert flags[f"replay_v{keys.LAYOUT_VERSION}"] == ["no-writes"]
    assert flags[f"reserve_v{keys.LAYOUT_VERSION}"] == []


def test_the_model_replays_a_key_without_a_decision_as_none():
    model = Model(lambda: 1_000)
    keys_, args = hotpath.plan_replay(authorize_request("k-1", "replay-3", 1_000), PARTITIONS)
    assert model.call("replay", keys_, [*contracts.call_header(), *args]) == "NONE|1000"
    assert model.state == {}
