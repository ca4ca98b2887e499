"""Redis out of memory (maxmemory reached, noeviction): Authorize answers RESOURCE_EXHAUSTED,
changes nothing, and serves again once memory is back."""

from __future__ import annotations

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from tests.conftest import CUSTOMER_CAPS, snapshot

REQUEST = pb.AuthorizeRequest(idempotency_key="oom-1", customer_id="c-oom",
                              product_id="scan_pay", channel=pb.CHANNEL_POS, merchant_id="m",
                              mcc="5411", amount_minor=1_000, currency="CNY")


async def test_out_of_memory_is_resource_exhausted(admin, auth, redis):
    await admin.PutCustomer(pb.PutCustomerRequest(customer_id="c-oom",
                                                  status=pb.CUSTOMER_STATUS_ACTIVE,
                                                  caps_minor=CUSTOMER_CAPS))
    before = await snapshot(redis)
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", "1")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await auth.Authorize(REQUEST)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert caught.value.details() == "limit store is out of memory"
    finally:
        await redis.config_set("maxmemory", "0")
    assert await snapshot(redis) == before
    assert (await auth.Authorize(REQUEST)).approved
