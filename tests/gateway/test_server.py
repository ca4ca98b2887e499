"""The served process: health, reflection, draining on SIGTERM, refusing a bad catalog."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from tests.conftest import CUSTOMER_CAPS, SUITE_CALLERS

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("creditgate.v1.Authorization", "creditgate.v1.Admin")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_health_serving(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", *SERVICES):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_health_unknown_service_is_not_found(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        await stub.Check(health_pb2.HealthCheckRequest(service="creditgate.v1.Nope"))
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
    else:
        raise AssertionError("an unknown service must not be reported as serving")


async def test_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        yield reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="creditgate.v1.Authorization")

    replies = [reply async for reply in stub.ServerReflectionInfo(requests())]
    names = {service.name for service in replies[0].list_services_response.service}
    assert set(SERVICES) <= names
    assert "grpc.health.v1.Health" in names
    files = replies[1].file_descriptor_response.file_descriptor_proto
    assert files  # the contract itself is served, so grpcurl needs no .proto files


async def _start_server(redis_server, port: int, *extra: str,
                        transport: tuple[str, ...] = ("--insecure",)
                        ) -> asyncio.subprocess.Process:
    """`creditgate serve` in a subprocess with the suite's callers, plaintext on loopback
    unless `transport` gives TLS options."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "creditgate.gateway.cli", "serve", "--port", str(port), "--redis-url",
        redis_server.url, "--partitions", "16", "--callers", str(SUITE_CALLERS), *transport,
        *extra, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)


async def _wait_serving(stub, process, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.returncode is None, (await process.stderr.read()).decode()
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the gateway did not become SERVING")


async def test_sigterm_drains_calls_in_flight(redis, redis_server):
    port = free_port()
    process = await _start_server(redis_server, port)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            await _wait_serving(health, process)
            await pb_grpc.AdminStub(channel).PutCustomer(pb.PutCustomerRequest(
                customer_id="drain", status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
            auth = pb_grpc.AuthorizationStub(channel)

            await redis.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
            amounts = [1_000 + 100 * i for i in range(10)]
            calls = [asyncio.ensure_future(auth.Authorize(pb.AuthorizeRequest(
                idempotency_key=f"k{i}", customer_id="drain", product_id="scan_pay",
                channel=pb.CHANNEL_POS, merchant_id="m", mcc="5411", amount_minor=amount,
                currency="CNY"), timeout=15)) for i, amount in enumerate(amounts)]
            await asyncio.sleep(0.3)  # they reach the gateway and wait on Redis
            assert not any(call.done() for call in calls)

            process.send_signal(signal.SIGTERM)
            # New calls are turned away: health is NOT_SERVING, or the call is refused.
            deadline = time.monotonic() + 2.0
            turned_away = False
            while not turned_away and time.monotonic() < deadline:
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    turned_away = reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
                except grpc.aio.AioRpcError as error:
                    turned_away = error.code() == grpc.StatusCode.UNAVAILABLE
                if not turned_away:
                    await asyncio.sleep(0.02)
            assert turned_away
            assert not any(call.done() for call in calls)  # still waiting on Redis

            await asyncio.sleep(max(0.0, 1.0 - 0.3))
            await redis.execute_command("CLIENT", "UNPAUSE")
            replies = await asyncio.gather(*calls)
            assert all(reply.approved for reply in replies)
            assert len({reply.hold_id for reply in replies}) == len(replies)
            pos = {lv.node: lv for lv in replies[-1].levels}["consumer.scan_pay.pos"]
            assert max(reply.levels[-1].held_minor for reply in replies) == sum(amounts)
            assert pos.cap_minor == CUSTOMER_CAPS["consumer.scan_pay.pos"]

        returncode = await asyncio.wait_for(process.wait(), timeout=5.0)
        assert returncode == 0, (await process.stderr.read()).decode()[-2000:]
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_bad_catalog_stops_start_up(redis_server, tmp_path):
    bad = tmp_path / "broken-products.toml"
    bad.write_text(
        '[products.scan_pay]\nname = "x"\nnodes = ["total"]\nchannels = ["pos"]\n'
        'amount_min_minor = "one"\namount_max_minor = 100\nhold_ttl_s = 60\n')
    process = await _start_server(redis_server, free_port(), "--catalog", str(bad))
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=15)
    message = stderr.decode()
    assert process.returncode not in (0, None)
    assert str(bad) in message
    assert "'scan_pay'" in message
    assert "'amount_min_minor'" in message


async def test_missing_catalog_stops_start_up(redis_server, tmp_path):
    missing = tmp_path / "nope.toml"
    process = await _start_server(redis_server, free_port(), "--catalog", str(missing))
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=15)
    assert process.returncode not in (0, None)
    assert str(missing) in stderr.decode()


async def test_processes_share_the_port_and_drain(redis_server):
    port = free_port()
    process = await _start_server(redis_server, port, "--processes", "2")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await _wait_serving(health_pb2_grpc.HealthStub(channel), process)
            await pb_grpc.AdminStub(channel).PutCustomer(pb.PutCustomerRequest(
                customer_id="multi", status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        servers = [child for child in children
                   if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
                   and b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()]
        assert len(servers) == 2
        replies = []
        for index in range(8):  # new connections are spread over the processes by the kernel
            async with grpc.aio.insecure_channel(
                    f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                replies.append(await pb_grpc.AuthorizationStub(ch).Authorize(
                    pb.AuthorizeRequest(idempotency_key=f"m{index}", customer_id="multi",
                                        product_id="scan_pay", channel=pb.CHANNEL_POS,
                                        merchant_id="m", mcc="5411", amount_minor=1_000,
                                        currency="CNY"), timeout=10))
        assert all(reply.approved for reply in replies)
        assert replies[-1].levels[0].held_minor == 8 * 1_000
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=15.0)
        assert returncode == 0, (await process.stderr.read()).decode()[-2000:]
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)  # the parent and its server processes
            await process.wait()


async def test_bad_catalog_stops_a_multi_process_start(redis_server, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[products.x]\nname = 1\n")
    process = await _start_server(redis_server, free_port(), "--processes", "2",
                                  "--catalog", str(bad))
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=15)
    assert process.returncode == 2
    assert f"{bad}: product 'x': field 'name'" in stderr.decode()
