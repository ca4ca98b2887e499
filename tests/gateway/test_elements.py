"""The catalog's product elements through the gateway: a product published with effective
dates switches on and off as the scripts' clock (moved by the test's clock offset) passes
them, every answer agreeing with the time it records; the new reasons carry their ISO 8583
response codes and no counter-offer."""

from __future__ import annotations

import datetime as dt
import time

import grpc
import pytest_asyncio

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from tests.conftest import served_gateway
from tests.support import authorize_request

DAY_MS = 86_400_000


def catalog_text(from_ms: int, until_ms: int) -> str:
    def stamp(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()

    return f"""
[products.launch]
name = "Launch at midnight"
nodes = ["total", "consumer"]
channels = ["ecommerce", "pos"]
amount_min_minor = 100
amount_max_minor = 100_000
channel_bounds.pos = {{ amount_max_minor = 30_000 }}
hold_ttl_s = 3_600
merchants_deny = ["shop-9*"]
first_purchase_max_minor = 20_000
effective_from = {stamp(from_ms)}
effective_until = {stamp(until_ms)}
"""


@pytest_asyncio.fixture
async def launch(redis, redis_server, tmp_path):
    """A gateway whose catalog's product takes effect a day from now, for a day (whole
    seconds); yields (auth stub, admin stub, gateway, from ms, until ms)."""
    from_ms = (int(time.time()) + 86_400) * 1000
    until_ms = from_ms + DAY_MS
    path = tmp_path / "catalog.toml"
    path.write_text(catalog_text(from_ms, until_ms))
    async with served_gateway(redis_server, catalog_path=str(path)) as served, \
            grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        admin = pb_grpc.AdminStub(channel)
        await admin.PutCustomer(pb.PutCustomerRequest(
            customer_id="cust-1", status=pb.CUSTOMER_STATUS_ACTIVE, timezone="Asia/Shanghai",
            caps_minor={"total": 10**9, "consumer": 10**9}))
        yield pb_grpc.AuthorizationStub(channel), served, from_ms, until_ms


async def test_a_product_switches_on_and_off_at_its_effective_dates(launch):
    auth, served, from_ms, until_ms = launch
    now = (await auth.GetCredit(pb.GetCreditRequest(customer_id="cust-1"))).as_of_ms
    answers = []
    # Before, just before and after the start, just before and after the end (2 s either
    # side: the scripts' clock runs on between the offset's change and the call).
    for n, target in enumerate([now, from_ms - 2_000, from_ms + 2_000, until_ms - 2_000,
                                until_ms + 2_000]):
        served.limits.clock_offset_ms = target - now
        reply = await auth.Authorize(authorize_request(
            f"k{n}", "cust-1", 1_000, product_id="launch", channel="ecommerce"))
        in_effect = from_ms <= reply.decided_at_ms < until_ms
        assert reply.approved == in_effect, (reply.decided_at_ms - from_ms, reply)
        if not in_effect:
            assert reply.decline_reason == pb.DECLINE_REASON_PRODUCT_NOT_EFFECTIVE
            assert reply.response_code == "57"
        answers.append(reply.approved)
    assert answers == [False, False, True, True, False]


async def test_the_new_reasons_answer_with_their_codes(launch):
    auth, served, from_ms, _ = launch
    now = (await auth.GetCredit(pb.GetCreditRequest(customer_id="cust-1"))).as_of_ms
    served.limits.clock_offset_ms = from_ms + 60_000 - now
    cases = [
        (dict(channel="ecommerce", merchant_id="shop-91", amount_minor=1_000),
         pb.DECLINE_REASON_MERCHANT_NOT_ALLOWED, "57"),
        (dict(channel="pos", merchant_id="shop-1", amount_minor=30_001),  # pos' own maximum
         pb.DECLINE_REASON_AMOUNT_ABOVE_MAXIMUM, "61"),
        (dict(channel="ecommerce", merchant_id="shop-1", amount_minor=20_001),
         pb.DECLINE_REASON_FIRST_PURCHASE_ABOVE_MAXIMUM, "61"),
        (dict(channel="pos", merchant_id="shop-1", amount_minor=20_000), 0, "00"),
        (dict(channel="ecommerce", merchant_id="shop-1", amount_minor=90_000), 0, "00"),
    ]
    for n, (fields, reason, code) in enumerate(cases):
        reply = await auth.Authorize(authorize_request(
            f"c{n}", "cust-1", product_id="launch", allow_partial=True, **fields))
        assert (reply.decline_reason, reply.response_code) == (reason, code), fields
        assert reply.counter_offer_minor == 0
