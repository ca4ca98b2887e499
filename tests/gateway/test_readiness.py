"""A Redis outage of about 3 s under load, on a redis-server of the test's own (stopped, then
started again on the same port): readiness goes NOT_SERVING and back to SERVING by itself,
liveness stays SERVING, the Redis error counter rises with the failed calls, and the gateway
writes a handful of log lines for thousands of failures."""

from __future__ import annotations

import asyncio
import collections
import logging
import shutil
import subprocess
import time
import types

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from creditgate.gateway import server
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from tests.conftest import CUSTOMER_CAPS, _free_port, _stop, _wait_for_ping, served_gateway
from tests.gateway.test_metrics import scraped
from tests.gateway.test_server import free_port
from tests.support import authorize_request

OUTAGE_S = 3.0
WORKERS = 32
SERVING, NOT_SERVING = (health_pb2.HealthCheckResponse.SERVING,
                        health_pb2.HealthCheckResponse.NOT_SERVING)


class PrivateRedis:
    """A redis-server of this test alone (no persistence), stopped and started on one port."""

    def __init__(self, folder):
        self.folder, self.port = folder, _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.folder / "redis.log"
        self.process = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.folder), "--save", "", "--appendonly", "no",
             "--logfile", str(log)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT)
        _wait_for_ping(self.process, self.port, log)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, self.port)
            self.process = None


@pytest.fixture
def private_redis(tmp_path):
    redis_ = PrivateRedis(tmp_path)
    redis_.start()
    try:
        yield redis_
    finally:
        redis_.stop()


async def load(auth, stop: asyncio.Event, codes: collections.Counter) -> None:
    """Authorize in a loop until `stop`, counting each answer's status."""
    serial = 0
    while not stop.is_set():
        serial += 1
        try:
            await auth.Authorize(authorize_request(f"{id(codes)}-{serial}", "out-1", 100),
                                 timeout=2)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            codes[error.code().name] += 1


async def watch_health(health, stop: asyncio.Event, seen: list) -> None:
    """Readiness and liveness every 50 ms, as (readiness, liveness) on change."""
    while not stop.is_set():
        ready = (await health.Check(health_pb2.HealthCheckRequest(), timeout=1)).status
        alive = (await health.Check(health_pb2.HealthCheckRequest(service=server.LIVENESS),
                                    timeout=1)).status
        if not seen or seen[-1] != (ready, alive):
            seen.append((ready, alive))
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_redis_outage_under_load(private_redis, caplog):
    caplog.set_level(logging.INFO, logger="creditgate")
    where = types.SimpleNamespace(url=private_redis.url)
    async with served_gateway(where, metrics_port=free_port()) as gateway, \
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        await pb_grpc.AdminStub(channel).PutCustomer(pb.PutCustomerRequest(
            customer_id="out-1", status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
        auth = pb_grpc.AuthorizationStub(channel)
        stop, codes, seen = asyncio.Event(), collections.Counter(), []
        tasks = [asyncio.create_task(load(auth, stop, codes)) for _ in range(WORKERS)]
        tasks.append(asyncio.create_task(watch_health(health_pb2_grpc.HealthStub(channel),
                                                      stop, seen)))
        await asyncio.sleep(0.5)  # under load before the outage
        before = dict(codes)
        lines_before = len(caplog.records)
        private_redis.stop()
        stopped_at = time.monotonic()
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
        await asyncio.to_thread(private_redis.start)
        await asyncio.sleep(1.5)  # readiness comes back by itself
        # The failure log is the process's: its first line in this test also sums up what
        # earlier tests' bad input left in their windows; those lines are not the outage's.
        lines = [record for record in caplog.records[lines_before:]
                 if record.name.startswith("creditgate")
                 and "INVALID_ARGUMENT" not in record.getMessage()]
        stop.set()
        await asyncio.gather(*tasks)
        gateway.metrics.flush(gateway.context.admission)
        got = await scraped(gateway.metrics_port)

    failed = codes["UNAVAILABLE"]
    print(f"outage: {failed} calls failed UNAVAILABLE, {codes['OK'] - before.get('OK', 0)} "
          f"answered during and after it; health {seen}; {len(lines)} log lines:\n"
          + "\n".join(record.getMessage() for record in lines))
    assert before.get("OK", 0) > 0 and "UNAVAILABLE" not in before
    assert failed >= 1000, codes  # thousands of failed calls...
    assert len(lines) <= 8  # ...and a handful of lines
    # Readiness: NOT_SERVING during the outage, SERVING again by itself; liveness throughout.
    assert [ready for ready, _ in seen] == [SERVING, NOT_SERVING, SERVING], seen
    assert {alive for _, alive in seen} == {SERVING}
    assert sum("unreachable" in record.getMessage() for record in lines) == 1
    assert sum(record.getMessage().startswith("SERVING again") for record in lines) == 1
    # Every failed call is counted: by its status, and as a Redis error of its script call.
    server_label = gateway.redis_server
    assert got.value("creditgate_calls_total", method="Authorize", code="UNAVAILABLE") == failed
    assert got.value("creditgate_redis_errors_total", redis=server_label,
                     kind="connection") >= failed
    assert got.value("creditgate_redis_up", redis=server_label) == 1
    # Redis came back empty and without its functions: reloaded on the first miss.
    assert got.value("creditgate_redis_errors_total", kind="noscript") >= 1
    assert codes["OK"] > before["OK"]  # answered again after the outage
