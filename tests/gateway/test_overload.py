"""Past capacity, with a real Redis stalled by SIGSTOP: a call whose deadline passed before its
script ran leaves nothing (no hold, no event) and its retry with the same key answers the
truth; beyond the admission limit calls are refused at once with a retry hint, while releases
of credit are still admitted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from creditgate.gateway import errors
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import keys
from creditgate.limits.constants import ADMISSION_LIMIT_MIN
from tests.conftest import CUSTOMER_CAPS, PARTITIONS
from tests.support import authorize_request

CUSTOMER = "overload-1"


@contextlib.asynccontextmanager
async def stalled(redis):
    """Redis stopped (SIGSTOP) for the body, then resumed: commands sent meanwhile wait in
    the socket and run after, late."""
    pid = (await redis.info("server"))["process_id"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def put_customer(admin) -> None:
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id=CUSTOMER, status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))


async def outbox_types(redis) -> list[bytes]:
    stream = keys.outbox(keys.customer_base(CUSTOMER, PARTITIONS))
    return [fields[b"type"] for _, fields in await redis.xrange(stream)]


async def test_calls_late_for_a_stalled_redis_leave_nothing(gateway, auth, admin, redis):
    await put_customer(admin)
    events_before = await outbox_types(redis)
    requests = [authorize_request(f"late-{i}", CUSTOMER, 1_000) for i in range(20)]
    async with stalled(redis):
        calls = [auth.Authorize(request, timeout=0.3) for request in requests]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        await asyncio.sleep(0.2)  # every caller has given up; Redis still has the scripts
    assert {error.code() for error in outcomes} == {grpc.StatusCode.DEADLINE_EXCEEDED}
    # Redis resumed and ran the late scripts: each refused itself before writing anything.
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=CUSTOMER), timeout=5)
    assert all(level.held_minor == 0 for level in credit.levels)
    assert await outbox_types(redis) == events_before
    # The retries, in time, are new decisions; a second retry repeats the first answer.
    first = [await auth.Authorize(request, timeout=5) for request in requests]
    again = [await auth.Authorize(request, timeout=5) for request in requests]
    assert all(answer.approved for answer in first)
    assert [a.hold_id for a in first] == [a.hold_id for a in again]
    assert (await outbox_types(redis)).count(b"authorized") == len(requests)


def quota_details(error: grpc.aio.AioRpcError) -> tuple[str, int]:
    status = rpc_status.from_call(error)
    failure, retry = error_details_pb2.QuotaFailure(), error_details_pb2.RetryInfo()
    for detail in status.details:
        if detail.Is(failure.DESCRIPTOR):
            detail.Unpack(failure)
        elif detail.Is(retry.DESCRIPTOR):
            detail.Unpack(retry)
    return failure.violations[0].subject, retry.retry_delay.ToMilliseconds()


async def test_beyond_the_limit_calls_are_refused_at_once_and_releases_still_enter(
        gateway, auth, admin, redis):
    await put_customer(admin)
    hold = await auth.Authorize(authorize_request("hold-1", CUSTOMER, 1_000), timeout=5)
    limiter = gateway.context.admission
    limiter.limit = ADMISSION_LIMIT_MIN
    limiter._end_window = lambda now: None  # the limit stays put for the test
    stuck = []
    async with stalled(redis):
        stuck = [asyncio.ensure_future(auth.Authorize(
            authorize_request(f"stuck-{i}", CUSTOMER, 10), timeout=5))
            for i in range(ADMISSION_LIMIT_MIN)]
        while limiter.in_flight < ADMISSION_LIMIT_MIN:
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await auth.Authorize(authorize_request("one-more", CUSTOMER, 10), timeout=5)
        refused_in_s = loop.time() - started
        void = asyncio.ensure_future(auth.Void(pb.VoidRequest(
            idempotency_key="void-1", hold_id=hold.hold_id), timeout=5))
        while limiter.in_flight < ADMISSION_LIMIT_MIN + 1:
            await asyncio.sleep(0.01)  # the release was admitted beyond the limit
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused_in_s < 1.0  # at once, while every admitted call waits for Redis
    subject, retry_ms = quota_details(caught.value)
    assert subject == "gateway-process" and retry_ms > 0
    assert (await void).state == pb.HOLD_STATE_VOIDED
    answers = [await call for call in stuck]
    assert all(answer.decided_at_ms > 0 for answer in answers)  # admitted, then answered
    assert limiter.in_flight == 0


async def test_a_refusal_by_admission_is_counted_and_costs_no_parse(gateway, channel):
    # Garbage bytes refused by admission are RESOURCE_EXHAUSTED, not INVALID_ARGUMENT: the
    # body was never parsed.
    gateway.context.admission.limit = ADMISSION_LIMIT_MIN
    gateway.context.admission.in_flight = ADMISSION_LIMIT_MIN
    refused_before = gateway.context.admission.refused
    exhausted_before = errors.counts["RESOURCE_EXHAUSTED"]
    raw = channel.unary_unary("/creditgate.v1.Authorization/Authorize")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(b"\xff\xff\xff", timeout=5)
    finally:
        gateway.context.admission.in_flight = 0
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert gateway.context.admission.refused == refused_before + 1
    assert errors.counts["RESOURCE_EXHAUSTED"] == exhausted_before + 1
