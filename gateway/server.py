"""Build, run and drain the gateway: grpc.aio on uvloop, health and reflection, the sweeper.

SIGTERM drains: health answers NOT_SERVING at once, the server stops accepting calls, calls in
flight finish (up to DRAIN_GRACE_S), then the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import urllib.parse

import grpc
import msgspec
import redis.asyncio as aioredis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from creditgate.gateway import service, sweeper
from creditgate.gateway.context import Context
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from creditgate.limits import catalog
from creditgate.limits.client import LimitsClient
from creditgate.limits.constants import (
    DRAIN_GRACE_S,
    GRPC_CONCURRENT_RPCS_MAX,
    GRPC_MESSAGE_BYTES_MAX,
    GRPC_RESPONSE_BYTES_MAX,
    PARTITIONS_MAX,
    REDIS_CONNECTIONS_MAX,
    REDIS_WAIT_S,
)
from creditgate.limits.transport import ScriptRunner

log = logging.getLogger("creditgate.gateway")

REDIS_PIPELINE_ENV = "CREDITGATE_REDIS_PIPELINE"

SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["Authorization"].full_name,
    pb.DESCRIPTOR.services_by_name["Admin"].full_name,
)


class Config(msgspec.Struct, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 50051
    redis_url: str = "redis://127.0.0.1:6379/0"
    catalog_path: str = str(catalog.DEFAULT_CATALOG)
    partitions: int = 256
    processes: int = 1
    sweep: bool = True
    clock_offset_ms: int = 0  # tests only


class Gateway:
    """A started gateway: its gRPC server, Redis client, health servicer and sweeper."""

    def __init__(self, config: Config):
        if not 1 <= config.partitions <= PARTITIONS_MAX:
            raise ValueError(f"partitions must be within 1..{PARTITIONS_MAX}")
        self.config = config
        # A bad catalog stops start-up before anything listens.
        self.products = catalog.load(config.catalog_path)
        # A bounded pool that waits for a free connection rather than failing the batch.
        pool = aioredis.BlockingConnectionPool.from_url(
            config.redis_url, max_connections=REDIS_CONNECTIONS_MAX, timeout=REDIS_WAIT_S,
            socket_timeout=REDIS_WAIT_S, socket_connect_timeout=REDIS_WAIT_S)
        self.redis = aioredis.Redis(connection_pool=pool)
        # The runner's own pipelined connection unless CREDITGATE_REDIS_PIPELINE=redis-py asks
        # for redis-py's pipelines (the way before it; bench/batch_rate.py --redis-py compares).
        self.runner = ScriptRunner(
            self.redis, raw=False if os.environ.get(REDIS_PIPELINE_ENV) == "redis-py" else None)
        self.limits = LimitsClient(self.runner, config.partitions, config.clock_offset_ms)
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(maximum_concurrent_rpcs=GRPC_CONCURRENT_RPCS_MAX, options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", GRPC_MESSAGE_BYTES_MAX),
            ("grpc.max_send_message_length", GRPC_RESPONSE_BYTES_MAX),
        ])
        self.port = 0
        self._sweeper: asyncio.Task | None = None

    async def start(self) -> int:
        await self.runner.load()
        context = Context(self.limits, self.products)
        pb_grpc.add_AuthorizationServicer_to_server(service.AuthorizationService(context),
                                                    self.server)
        pb_grpc.add_AdminServicer_to_server(service.AdminService(context), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(f"{self.config.host}:{self.config.port}")
        if not self.port:
            raise OSError(f"cannot listen on {self.config.host}:{self.config.port}")
        await self.server.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.config.sweep:
            self._sweeper = asyncio.create_task(sweeper.sweep_forever(self.limits))
        return self.port

    async def stop(self, grace_s: float = DRAIN_GRACE_S) -> None:
        """Drain: NOT_SERVING first, then finish the calls in flight, then close."""
        await self.health.enter_graceful_shutdown()
        if self._sweeper:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.server.stop(grace_s)
        await self.runner.close()
        await self.redis.aclose()


async def _stop_when_orphaned(parent_pid: int, stopping: asyncio.Event) -> None:
    """A server process of `--processes N` drains if its parent dies without telling it."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)
    log.warning("parent process %d is gone; draining", parent_pid)
    stopping.set()


async def serve(config: Config, parent_pid: int | None = None) -> int:
    gateway = Gateway(config)
    port = await gateway.start()
    log.info("creditgate listening on %s:%d (redis %s, %d partitions, catalog %s)",
             config.host, port, _redacted(config.redis_url), config.partitions,
             config.catalog_path)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    if parent_pid is not None:
        orphan_watch = asyncio.create_task(_stop_when_orphaned(parent_pid, stopping))
    await stopping.wait()
    if parent_pid is not None:
        orphan_watch.cancel()
    log.info("draining")
    await gateway.stop()
    log.info("stopped")
    return 0


def _redacted(url: str) -> str:
    """The Redis URL without credentials or query, for logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{'***@' if parts.username or parts.password else ''}{host}{port}" \
        f"{parts.path}"


def run(config: Config, parent_pid: int | None = None) -> int:
    """Run in this process, or in `processes` processes sharing the port (SO_REUSEPORT)."""
    import uvloop

    if config.processes <= 1:
        return uvloop.run(serve(config, parent_pid))
    if config.port == 0:
        raise ValueError("--processes needs a fixed --port")
    catalog.load(config.catalog_path)  # a bad catalog stops start-up here, once
    spawn = multiprocessing.get_context("spawn")
    children = [spawn.Process(target=_child, args=(msgspec.to_builtins(config),), daemon=False)
                for _ in range(config.processes)]
    for child in children:
        child.start()

    def forward(signum, _frame):
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: each child drains

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    return max((child.exitcode or 0) for child in children)


def _child(config: dict) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
    sys.exit(run(Config(**{**config, "processes": 1}), parent_pid=os.getppid()))
