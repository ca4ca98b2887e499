"""SIGTERM's drain notice (`serve --drain-notice-s`): health answers NOT_SERVING at once while
calls are still answered for the notice, then the port stops. gRPC answers CANCELLED to a call
that reaches a server once it stops, so without the notice a client under load met CANCELLED
(not retry-safe by its status) at every restart; a client that watches health (gRPC's
client-side health checking) leaves during the notice and meets only UNAVAILABLE."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from tests.conftest import CUSTOMER_CAPS
from tests.gateway.test_server import _start_server, _wait_serving, free_port
from tests.support import authorize_request

NOTICE_S = 1.5
# A channel that watches the gateway's health and sends nothing while it is NOT_SERVING
# (calls fail at once with UNAVAILABLE): gRPC's client-side health checking, which needs the
# round_robin policy.
HEALTH_CHECKED = [("grpc.service_config", json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}))]


async def _stop(process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), timeout=NOTICE_S + 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_calls_are_answered_during_the_notice_while_health_is_not_serving(
        redis, redis_server):
    port = free_port()
    process = await _start_server(redis_server, port, "--drain-notice-s", str(NOTICE_S))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            await _wait_serving(health, process)
            await pb_grpc.AdminStub(channel).PutCustomer(pb.PutCustomerRequest(
                customer_id="c-notice", status=pb.CUSTOMER_STATUS_ACTIVE,
                caps_minor=CUSTOMER_CAPS))
            auth = pb_grpc.AuthorizationStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert (await asyncio.wait_for(watch.read(), 5)).status == \
                health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
            await asyncio.sleep(0.3)
            reply = await auth.Authorize(authorize_request("k-notice", "c-notice", 1_000),
                                         timeout=5)
            assert reply.approved
            assert time.monotonic() - signalled < NOTICE_S  # the check ran within the notice
        assert await _stop(process) == 0
        assert time.monotonic() - signalled >= NOTICE_S
        log = (await process.stderr.read()).decode()
        assert f"calls answered for {NOTICE_S:.1f} s more" in log, log[-2000:]
    finally:
        await _stop(process)


async def test_a_client_watching_health_meets_only_unavailable_across_a_restart(
        redis, redis_server):
    port = free_port()
    process = await _start_server(redis_server, port, "--drain-notice-s", "0.5")
    codes: collections.Counter[str] = collections.Counter()
    running = True
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                             options=HEALTH_CHECKED) as channel:
            await _wait_serving(health_pb2_grpc.HealthStub(channel), process)
            await pb_grpc.AdminStub(channel).PutCustomer(pb.PutCustomerRequest(
                customer_id="c-watching", status=pb.CUSTOMER_STATUS_ACTIVE,
                caps_minor=CUSTOMER_CAPS))
            auth = pb_grpc.AuthorizationStub(channel)

            async def load(index: int) -> None:
                n = 0
                while running:
                    n += 1
                    try:
                        await auth.Authorize(authorize_request(f"k-{index}-{n}", "c-watching",
                                                               100), timeout=5)
                        codes["OK"] += 1
                    except grpc.aio.AioRpcError as error:
                        codes[error.code().name] += 1
                        await asyncio.sleep(0.005)

            tasks = [asyncio.create_task(load(index)) for index in range(6)]
            await asyncio.sleep(0.5)
            answered_before = codes["OK"]
            assert await _stop(process) == 0
            await asyncio.sleep(0.2)
            running = False
            await asyncio.gather(*tasks)
        assert answered_before > 0 and codes["UNAVAILABLE"] > 0, codes
        assert set(codes) == {"OK", "UNAVAILABLE"}, codes
    finally:
        running = False
        await _stop(process)


async def test_a_drain_notice_out_of_bounds_stops_start_up(redis_server):
    process = await _start_server(redis_server, free_port(), "--drain-notice-s", "-1")
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=15)
    assert process.returncode == 3
    assert "--drain-notice-s must be within 0..60, not -1" in stderr.decode()


def test_a_bad_drain_notice_in_the_environment_is_a_usage_error_of_serve_only(
        monkeypatch, capsys, tmp_path):
    """$CREDITGATE_DRAIN_NOTICE_S is read as --drain-notice-s is: a value that is no number
    is serve's usage error naming the option, and other commands do not read it."""
    import pytest

    from creditgate.gateway import cli

    monkeypatch.setenv("CREDITGATE_DRAIN_NOTICE_S", "soon")
    assert cli.main(["catalog", "check", "limits/products.toml"]) == 0
    with pytest.raises(SystemExit) as stopped:
        cli.main(["serve", "--callers", str(tmp_path / "none.toml")])
    assert stopped.value.code == 2
    assert "--drain-notice-s: invalid float value: 'soon'" in capsys.readouterr().err
