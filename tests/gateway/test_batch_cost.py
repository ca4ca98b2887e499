"""What AuthorizeBatch costs the gateway, and what a cancelled batch leaves behind: the items'
script calls are the runner's plain futures (no asyncio task per item), and a batch cancelled
while its calls wait sends none of those not yet written to Redis."""

from __future__ import annotations

import asyncio
import types

import pytest

from creditgate.gateway import authorize, callers
from creditgate.gateway.context import Context
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits.catalog import Catalog
from tests.conftest import CUSTOMER_CAPS, SUITE_CALLERS
from tests.gateway.test_authorize_batch import authorize_request, held, put_customer
from tests.limits.test_script_runner import Relay, client_for
from tests.support import PRODUCTS

CUSTOMER = "cust-batch"


async def tasks_created_by(call) -> int:
    """How many asyncio tasks the running loop created while `call()` ran."""
    loop = asyncio.get_running_loop()
    created = 0
    before = loop.get_task_factory()

    def counting(loop_, coro, **kwargs):
        nonlocal created
        created += 1
        if before is not None:
            return before(loop_, coro, **kwargs)
        return asyncio.Task(coro, loop=loop_, **kwargs)

    loop.set_task_factory(counting)
    try:
        await call()
    finally:
        loop.set_task_factory(before)
    return created


async def test_a_batch_creates_no_task_per_item(gateway, admin, auth):
    await put_customer(admin)

    async def authorize_batch(size: int, prefix: str) -> None:
        reply = await auth.AuthorizeBatch(pb.AuthorizeBatchRequest(requests=[
            authorize_request(f"{prefix}-{i}", amount_minor=100) for i in range(size)]))
        assert all(item.response.approved for item in reply.items)

    await authorize_batch(1, "warm-up")  # the runner's connection is open from here on
    one = await tasks_created_by(lambda: authorize_batch(1, "one"))
    # 32: the shipped catalog allows 50 scan-to-pay purchases a day.
    many = await tasks_created_by(lambda: authorize_batch(32, "many"))
    # gRPC's own tasks for the call, client and server side; none more for 31 more items.
    assert many == one, (one, many)


async def test_a_cancelled_batch_sends_none_of_its_calls_still_waiting(redis_server, redis):
    async with Relay(redis_server.port) as relay:
        client = client_for(relay.port)
        await client.put_customer(CUSTOMER, "active", "Asia/Shanghai", CUSTOMER_CAPS)
        client.runner.in_flight_max = 4  # the batch's first four calls go, the rest wait
        context = Context(client, Catalog("test", PRODUCTS), callers.load(SUITE_CALLERS))
        requests = [authorize_request(f"k-{i}", amount_minor=100 + i) for i in range(12)]
        relay.hold()
        call = asyncio.ensure_future(authorize.authorize_batch(
            context, pb.AuthorizeBatchRequest(requests=requests)))
        await asyncio.sleep(0.1)  # four calls written and held in the relay, eight waiting
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        relay.release.set()
        # The four written calls ran (Redis had them); the eight waiting ones never left.
        state = await client.credit(CUSTOMER)
        assert state.held["consumer.scan_pay.pos"] == 100 + 101 + 102 + 103
        await client.runner.close()
        await client.runner.redis.aclose()


async def test_a_batch_answers_each_item_once_its_reply_is_in(gateway, admin, auth):
    """Items whose replies came in several reads, and items that failed before any call: every
    outcome in item order."""
    await put_customer(admin)
    gateway.runner.batch_size_max = 3  # several round trips, so several reads
    requests = [authorize_request(f"k-{i}", amount_minor=0 if i % 5 == 2 else 100 + i)
                for i in range(17)]
    reply = await auth.AuthorizeBatch(pb.AuthorizeBatchRequest(requests=requests))
    outcomes = [item.WhichOneof("outcome") for item in reply.items]
    assert outcomes == ["error" if i % 5 == 2 else "response" for i in range(17)]
    assert [item.response.approved_amount_minor for item in reply.items] == [
        0 if i % 5 == 2 else 100 + i for i in range(17)]
    assert (await held(auth))["consumer.scan_pay.pos"] == sum(
        100 + i for i in range(17) if i % 5 != 2)


async def test_a_cancelled_batch_leaves_no_failed_item_unretrieved(monkeypatch):
    """Cancelled while awaiting its first item, a batch whose later item had already failed
    (a call timed out in the runner's backlog) leaves that error marked retrieved: asyncio
    would otherwise log "Future exception was never retrieved" for each such item when it is
    collected, the log flood a batch's one-line-per-kind logging exists to avoid. The batch's
    cancel() of every item does it: on a done future it changes nothing but that flag
    (`_log_traceback`, asyncio's own: set by set_exception, cleared when the exception is
    retrieved or the future cancelled)."""
    loop = asyncio.get_running_loop()
    waiting = loop.create_future()
    failed = loop.create_future()
    failed.set_exception(ConnectionError("no reply from Redis in time"))
    assert failed._log_traceback
    futures = [waiting, failed]
    monkeypatch.setattr(authorize, "reserve", lambda context, live, item: futures.pop(0))
    context = types.SimpleNamespace(catalog=None)  # reserve, replaced, reads nothing else
    call = asyncio.ensure_future(authorize.authorize_batch(context, pb.AuthorizeBatchRequest(
        requests=[authorize_request("k-0"), authorize_request("k-1")])))
    await asyncio.sleep(0.01)  # the batch awaits item 0
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert waiting.cancelled() and futures == []
    assert not failed._log_traceback
