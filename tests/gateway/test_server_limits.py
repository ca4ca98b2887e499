"""The served gateway's safe defaults: no start on a Redis that may evict keys, readiness that
follows the eviction policy, a burst of calls on one connection answered or refused cleanly,
and idle or never-finished connections closed."""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import grpc
import pytest
import redis.asyncio as redis_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc

from creditgate.gateway import server
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from tests.conftest import CUSTOMER_CAPS, SUITE_CALLERS, served_gateway
from tests.gateway.test_server import _start_server, free_port

SERVICES = ("", "creditgate.v1.Authorization", "creditgate.v1.Admin")
BURST_CALLS = 2_000
ACL_USER = "gateway-without-config"


@pytest.fixture
async def evicting(redis):
    """The private Redis set to an evicting policy for one test, and back to noeviction."""
    await redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        yield redis
    finally:
        await redis.config_set("maxmemory-policy", "noeviction")


async def test_start_is_refused_on_an_evicting_redis(evicting, redis_server):
    gateway = server.Gateway(server.Config(port=0, redis_url=redis_server.url, partitions=16,
                                           sweep=False, insecure=True,
                                           callers_path=str(SUITE_CALLERS)))
    with pytest.raises(server.StartupRefused) as refused:
        await gateway.start()
    message = str(refused.value)
    assert "maxmemory-policy is 'allkeys-lru'" in message
    assert "needs 'noeviction'" in message
    assert "loses holds and customers" in message


@pytest.mark.parametrize("processes", ["1", "2"])
async def test_serve_exits_with_the_reason_on_an_evicting_redis(evicting, redis_server,
                                                                processes):
    process = await _start_server(redis_server, free_port(), "--processes", processes)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=15)
    assert process.returncode == server.EXIT_REFUSED
    assert "start-up refused: Redis maxmemory-policy is 'allkeys-lru'" in stderr.decode()
    assert "Traceback" not in stderr.decode()


@pytest.fixture
async def without_config(redis, redis_server):
    """A Redis URL for a user that may run everything but CONFIG (as on managed Redis)."""
    await redis.execute_command("ACL", "SETUSER", ACL_USER, "on", ">secret", "~*", "&*",
                                "+@all", "-config")
    try:
        yield redis_server.url.replace("redis://", f"redis://{ACL_USER}:secret@")
    finally:
        await redis.execute_command("ACL", "DELUSER", ACL_USER)


async def test_policy_is_read_from_info_where_config_is_denied(redis, without_config):
    client = redis_asyncio.Redis.from_url(without_config)
    try:
        with pytest.raises(redis_asyncio.ResponseError):
            await client.config_get("maxmemory-policy")
        assert await server.eviction_policy(client) == "noeviction"
        await redis.config_set("maxmemory-policy", "volatile-ttl")
        try:
            assert await server.eviction_policy(client) == "volatile-ttl"
            with pytest.raises(server.StartupRefused, match="'volatile-ttl'"):
                await server.refuse_evicting_redis(client)
        finally:
            await redis.config_set("maxmemory-policy", "noeviction")
    finally:
        await client.aclose()


async def _statuses(stub) -> set:
    replies = [await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
               for name in SERVICES]
    return {reply.status for reply in replies}


async def _wait_for_status(stub, status, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while await _statuses(stub) != {status}:
        assert time.monotonic() < deadline, f"health did not become {status}"
        await asyncio.sleep(0.02)


async def test_readiness_follows_the_eviction_policy(redis, redis_server, monkeypatch, caplog):
    monkeypatch.setattr(server, "EVICTION_CHECK_INTERVAL_S", 0.05)
    caplog.set_level(logging.INFO, logger="creditgate.gateway")
    async with served_gateway(redis_server) as gateway, \
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert await _statuses(health) == {health_pb2.HealthCheckResponse.SERVING}
        await redis.config_set("maxmemory-policy", "allkeys-lru")
        try:
            await _wait_for_status(health, health_pb2.HealthCheckResponse.NOT_SERVING)
            await asyncio.sleep(0.3)  # several more checks
        finally:
            await redis.config_set("maxmemory-policy", "noeviction")
        await _wait_for_status(health, health_pb2.HealthCheckResponse.SERVING)
        await asyncio.sleep(0.3)
    changes = [record.getMessage() for record in caplog.records
               if "NOT_SERVING" in record.getMessage() or "SERVING again" in record.getMessage()]
    assert len(changes) == 2, changes  # one line per change, none per check
    assert "'allkeys-lru'" in changes[0] and "loses holds" in changes[0]
    assert changes[1].startswith("SERVING again")


async def test_a_burst_on_one_connection_is_answered_or_refused(redis, redis_server):
    async with served_gateway(redis_server) as gateway, \
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        await pb_grpc.AdminStub(channel).PutCustomer(pb.PutCustomerRequest(
            customer_id="burst", status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
        auth = pb_grpc.AuthorizationStub(channel)

        async def credit() -> grpc.StatusCode:
            try:
                await auth.GetCredit(pb.GetCreditRequest(customer_id="burst"), timeout=30)
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        codes = collections.Counter(await asyncio.wait_for(
            asyncio.gather(*(credit() for _ in range(BURST_CALLS))), timeout=60))
    assert codes[grpc.StatusCode.CANCELLED] == 0, codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert codes.total() == BURST_CALLS


async def _wait_for_state(channel, state, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while channel.get_state() != state:
        assert time.monotonic() < deadline, f"channel stayed {channel.get_state()}"
        await asyncio.sleep(0.02)


async def test_an_idle_connection_is_closed(redis, redis_server, monkeypatch):
    monkeypatch.setattr(server, "GRPC_CONNECTION_IDLE_MS", 300)
    async with served_gateway(redis_server) as gateway, \
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                        timeout=2)
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        # The server's GOAWAY puts the client's channel back to IDLE.
        await _wait_for_state(channel, grpc.ChannelConnectivity.IDLE, timeout_s=5.0)


async def test_a_stream_that_never_finishes_sending_is_dropped(redis, redis_server,
                                                               monkeypatch):
    monkeypatch.setattr(server, "GRPC_CONNECTION_AGE_MS", 300)
    monkeypatch.setattr(server, "GRPC_CONNECTION_AGE_GRACE_MS", 300)
    never = asyncio.Event()

    async def requests_never_sent():
        await never.wait()
        yield  # pragma: no cover

    async with served_gateway(redis_server) as gateway, \
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(requests_never_sent())
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(call.read(), timeout=10)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 5.0
        call.cancel()
