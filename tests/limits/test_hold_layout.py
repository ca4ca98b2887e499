"""The Redis layout that keeps an open hold within issue 5's memory bound (bench/memory.py
measures it): an approval writes one key, its hold, whose id derives from the idempotency
record's key and which keeps the fingerprint; the hold names its nodes by a short path id;
customers of one partition and zone share one timezone schedule. Run on real Redis."""

from __future__ import annotations

import hashlib
import time

import msgspec
import pytest

from creditgate import hotpath
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import contracts, keys
from creditgate.limits.constants import CLOSED_HOLD_RETENTION_S, IDEMPOTENCY_TTL_S
from creditgate.limits.reasons import DeclineReason, ScriptError
from creditgate.limits.replies import Refused
from tests.support import PARTITIONS, PRODUCTS, RULES, authorize_request, redis_client

CAPS = {"total": 10**8, "consumer": 10**8, "consumer.scan_pay": 10**8,
        "consumer.scan_pay.pos": 10**8}
NODES = "total,consumer,consumer.scan_pay,consumer.scan_pay.pos"
TTL_MS = PRODUCTS["scan_pay"].hold_ttl_s * 1000  # the hold TTL of authorize_request's product


async def _authorize(client, request):
    """(keys, fingerprint, decoded reply) of one reserve call."""
    keys_, args = hotpath.plan_authorize(request, RULES, PARTITIONS)
    return keys_, args[2], await client.authorize(keys_, args)  # ARGV[4]: the fingerprint


async def test_an_approval_writes_its_hold_and_no_record(redis):
    client = redis_client(redis)
    await client.put_customer("layout-1", "active", "Asia/Shanghai", CAPS)
    keys_, fingerprint, first = await _authorize(client,
                                                 authorize_request("k-1", "layout-1", 1_000))
    base = keys.base(keys.partition_of("layout-1", PARTITIONS))
    record = keys_[4]
    epoch = keys.hold_epoch(first.decided_at_ms)
    expected_id = f"{keys.partition_of('layout-1', PARTITIONS):03d}-" + hashlib.sha1(
        f"{record}|{epoch}".encode()).hexdigest()[:16]
    assert first.approved
    assert first.hold_id == expected_id == keys.derived_hold_id(base, record, epoch)
    assert await redis.exists(record) == 0  # the hold is the record
    hold = {k.decode(): v.decode() for k, v in
            (await redis.hgetall(keys.hold(base, first.hold_id))).items()}
    assert hold["fp"] == fingerprint
    # The nodes by a path id that the partition's paths hash resolves; the id derives from the
    # nodes, the catalog version and the hold TTL, which the paths hash keeps beside it (the
    # hold pays nothing for its version and TTL).
    assert hold["n"] == keys.PATH_ID_MARK + hashlib.sha1(
        f"{NODES}|{first.catalog_version}|{TTL_MS}".encode()).hexdigest()[:10]
    assert (await redis.hget(keys.paths(base), hold["n"])).decode() == NODES
    assert (await redis.hget(keys.paths(base), hold["n"] + keys.PATH_VERSION_MARK)).decode() \
        == first.catalog_version == contracts.CATALOG_VERSION_NONE
    assert int(await redis.hget(keys.paths(base), hold["n"] + keys.PATH_TTL_MARK)) == TTL_MS
    assert first.hold_expires_at_ms - first.decided_at_ms == TTL_MS

    # A retry (the id derives from the key) is the same hold, nothing new.
    _, _, again = await _authorize(client, authorize_request("k-1", "layout-1", 1_000))
    assert (again.hold_id, again.approved_amount_minor, again.decided_at_ms,
            again.hold_expires_at_ms) == (first.hold_id, 1_000, first.decided_at_ms,
                                          first.hold_expires_at_ms)
    assert [level.held_minor for level in again.levels] == [1_000] * 4  # not 2,000
    # The same key with another payload is refused; nothing changes.
    with pytest.raises(Refused) as refused:
        await _authorize(client, authorize_request("k-1", "layout-1", 1_001))
    assert refused.value.code == ScriptError.IDEMPOTENCY_MISMATCH


async def test_a_hold_whose_path_id_is_taken_keeps_its_nodes_and_version(redis):
    client = redis_client(redis)
    await client.put_customer("layout-3", "active", "Asia/Shanghai", CAPS)
    base = keys.base(keys.partition_of("layout-3", PARTITIONS))
    versioned = hotpath.compile_products(PRODUCTS, "v-taken")
    taken = keys.PATH_ID_MARK + hashlib.sha1(
        f"{NODES}|v-taken|{TTL_MS}".encode()).hexdigest()[:10]
    await redis.hset(keys.paths(base), taken, "total,other")
    request = authorize_request("k-1", "layout-3", 1_000)
    first = await client.authorize(*hotpath.plan_authorize(request, versioned, PARTITIONS))
    hold = {k.decode(): v.decode() for k, v in
            (await redis.hgetall(keys.hold(base, first.hold_id))).items()}
    assert (hold["n"], hold["cv"], hold["tt"], first.catalog_version) == (
        NODES, "v-taken", str(TTL_MS), "v-taken")
    # A retry on another version of the catalog answers the hold's.
    again = await client.authorize(*hotpath.plan_authorize(
        request, hotpath.compile_products(PRODUCTS, "v-next"), PARTITIONS))
    assert (again.hold_id, again.catalog_version) == (first.hold_id, "v-taken")
    # ... and its decision time by the TTL the hold kept, not the one in force.
    shorter = {**PRODUCTS, "scan_pay": msgspec.structs.replace(PRODUCTS["scan_pay"],
                                                               hold_ttl_s=3_600)}
    again = await client.authorize(*hotpath.plan_authorize(
        request, hotpath.compile_products(shorter, "v-next"), PARTITIONS))
    assert (again.hold_id, again.decided_at_ms) == (first.hold_id, first.decided_at_ms)


async def test_a_decline_keeps_its_record(redis):
    client = redis_client(redis)
    await client.put_customer("layout-2", "active", "Asia/Shanghai", CAPS)
    keys_, _, declined = await _authorize(client, authorize_request("k-1", "layout-2", 1_000,
                                                                 mcc="7995"))
    assert declined.reason == DeclineReason.MCC_NOT_ALLOWED
    assert await redis.exists(keys_[4]) == 1
    base = keys.base(keys.partition_of("layout-2", PARTITIONS))
    epoch = keys.hold_epoch(declined.decided_at_ms)
    assert await redis.exists(keys.hold(base, keys.derived_hold_id(base, keys_[4], epoch))) == 0


async def test_customers_of_a_partition_and_zone_share_one_schedule(redis):
    client = redis_client(redis)
    first = "layout-ny-0"
    partition = keys.partition_of(first, PARTITIONS)
    second = next(f"layout-ny-{i}" for i in range(1, 200)
                  if keys.partition_of(f"layout-ny-{i}", PARTITIONS) == partition)
    for customer_id in (first, second):
        await client.put_customer(customer_id, "active", "America/New_York", CAPS)
    base = keys.base(partition)
    schedules = await redis.hgetall(keys.timezones(base))
    assert list(schedules) == [b"America/New_York"]
    assert len(schedules[b"America/New_York"]) > 500  # a DST zone: many transitions
    for customer_id in (first, second):
        stored = await redis.hgetall(keys.customer(base, customer_id))
        assert keys.FIELD_TZ_SCHEDULE.encode() not in stored
        assert stored[keys.FIELD_TIMEZONE.encode()] == b"America/New_York"
    # GetCredit still sees the schedule: the day resets at New York's midnight.
    state = await client.credit(first)
    assert state is not None and state.timezone == "America/New_York"
    assert (state.day_resets_at_ms // 1000 - 5 * 3600) % 86400 in (0, 3600)  # EST or EDT


EPOCH_MS = IDEMPOTENCY_TTL_S * 1000


async def test_a_retry_across_an_epoch_boundary_finds_its_hold(redis):
    client = redis_client(redis)
    await client.put_customer("layout-3", "active", "UTC", CAPS)
    now_ms = int(time.time() * 1000)
    client.clock_offset_ms = (now_ms // EPOCH_MS + 1) * EPOCH_MS - now_ms - 2_000  # 2 s before
    _, _, first = await _authorize(client, authorize_request("k-1", "layout-3", 1_000))
    client.clock_offset_ms += 60_000  # the next epoch
    _, _, again = await _authorize(client, authorize_request("k-1", "layout-3", 1_000))
    # (The retry ran in the next epoch: the first was 2 s before its end, the retry 58 s after.)
    assert keys.hold_epoch(first.decided_at_ms + 60_000) == keys.hold_epoch(first.decided_at_ms) + 1
    assert (again.hold_id, again.decided_at_ms) == (first.hold_id, first.decided_at_ms)
    assert [level.held_minor for level in again.levels] == [1_000] * 4


async def test_a_key_used_again_after_its_hold_is_gone_makes_a_new_hold(redis):
    """The old hold's id must not name the new purchase: a Void of the old id is NOT_FOUND."""
    client = redis_client(redis)
    await client.put_customer("layout-4", "active", "UTC", CAPS)
    _, _, old = await _authorize(client, authorize_request("k-1", "layout-4", 700))
    base = keys.base(keys.partition_of("layout-4", PARTITIONS))
    void_keys, void_args = hotpath.plan_void(pb.VoidRequest(idempotency_key="v-1",
                                                            hold_id=old.hold_id), PARTITIONS)
    await client.void(void_keys, void_args)
    # 35 days later the closed hold (and the void's record) have expired: drop them as Redis
    # would, then use the key again.
    client.clock_offset_ms += CLOSED_HOLD_RETENTION_S * 1000 + 1_000
    await redis.delete(keys.hold(base, old.hold_id), void_keys[1])
    _, _, new = await _authorize(client, authorize_request("k-1", "layout-4", 300))
    assert new.approved and new.hold_id != old.hold_id
    with pytest.raises(Refused) as refused:
        await client.void(*hotpath.plan_void(pb.VoidRequest(idempotency_key="v-2",
                                                            hold_id=old.hold_id), PARTITIONS))
    assert refused.value.code == ScriptError.HOLD_NOT_FOUND
    assert [level.held_minor for level in new.levels] == [300] * 4
