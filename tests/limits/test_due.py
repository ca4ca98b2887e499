"""The sweeper's question, due.lua: which customers of a partition have an open hold whose
TTL has passed by Redis' clock, at most count_max of them, earliest first; the model and the
script on a real Redis agree."""

from __future__ import annotations

import pytest

from creditgate.limits import keys
from creditgate.limits.constants import SWEEP_CUSTOMERS_PER_PARTITION_MAX
from creditgate.limits.reasons import ScriptError
from creditgate.limits.replies import Refused, decode_due
from tests.support import (
    PARTITIONS,
    authorize_request,
)

CAPS = {"total": 10**9, "consumer": 10**9, "consumer.scan_pay": 10**9,
        "consumer.scan_pay.pos": 10**9}
TTL_MS = 604_800 * 1000  # the scan_pay product's hold TTL


def same_partition_customers(count: int) -> list[str]:
    partition = keys.partition_of("due-0", PARTITIONS)
    found = [f"due-{i}" for i in range(10_000)
             if keys.partition_of(f"due-{i}", PARTITIONS) == partition]
    return found[:count]


async def test_due_lists_expired_customers_earliest_first_and_bounded(driver):
    customers = same_partition_customers(3)
    partition = keys.partition_of(customers[0], PARTITIONS)
    for step, customer in enumerate(customers):
        await driver.put(customer, CAPS)
        await driver.authorize(authorize_request(f"k-{step}", customer, 1_000))
        driver.advance(1_000)  # each next hold expires a second later
    client = driver.client
    assert await client.due(partition, 10) == []
    driver.advance(TTL_MS - 3_000)  # the first hold's expiry instant
    assert await client.due(partition, 10) == customers[:1]
    driver.advance(1_000)
    assert await client.due(partition, 10) == customers[:2]
    assert await client.due(partition, 1) == customers[:1]
    driver.advance(1_000)
    assert await client.due(partition, 10) == customers
    assert await client.expire(customers[0]) == 1  # released: no longer due
    assert await client.due(partition, 10) == customers[1:]


@pytest.mark.parametrize("count_max", [0, SWEEP_CUSTOMERS_PER_PARTITION_MAX + 1])
async def test_due_refuses_a_count_out_of_bounds(driver, count_max):
    with pytest.raises(Refused) as caught:
        await driver.client.due(0, count_max)
    assert caught.value.code == ScriptError.BAD_ARGUMENT


def test_an_error_reply_is_never_read_as_customers():
    with pytest.raises(Refused):
        decode_due("ERR|8|due|123")
    with pytest.raises(Refused):
        decode_due(b"ERR|8|due|123")
