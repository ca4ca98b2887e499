"""A no-op creditgate: Authorization.Authorize answers a fixed approval and does nothing else.

    .venv/bin/python bench/noop_server.py [--port 50061] [--processes N] [--redis-url URL]

The ceiling the gateway is measured against (bench/maxrate.py): the same proto (gateway/pb),
grpc.aio on uvloop, the same server options as gateway/server.py (SO_REUSEPORT, the same
concurrency and message bounds), and with --processes N the same N processes sharing the port
as `creditgate serve --processes N`. The request is deserialized (gRPC does that before the
handler) and the fixed response, the size of a real approval of a four-level product,
serialized; nothing else: no validation, no Redis. The health service answers SERVING so the
bench can wait for it as it does for the gateway. Every other method is UNIMPLEMENTED.

With --redis-url, Authorize also makes one Redis round trip before it answers: a function that
only returns (FCALL of `floor`, a library of its own, one key in a partition's slot) through
the gateway's own script runner (limits/transport.py: calls of a loop tick pipelined on one
connection, hiredis). That is the floor of any gateway that asks Redis once per call with this
server core: gRPC, one asyncio future, one script call, and no creditgate Python of its own
(bench/maxrate.py's "floor" leg).

SIGTERM or SIGINT stops it; a child whose parent dies stops too.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402

from creditgate.gateway.pb import creditgate_pb2 as pb  # noqa: E402
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc  # noqa: E402
from creditgate.limits import constants  # noqa: E402
from creditgate.limits.lua_source import LoadedScript  # noqa: E402
from creditgate.limits.transport import ScriptRunner  # noqa: E402

# gateway/server.py's options. The send bound is the response bound where constants has one.
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 1),
    ("grpc.max_receive_message_length", constants.GRPC_MESSAGE_BYTES_MAX),
    ("grpc.max_send_message_length",
     getattr(constants, "GRPC_RESPONSE_BYTES_MAX", constants.GRPC_MESSAGE_BYTES_MAX)),
]
STOP_GRACE_S = 1.0

# What the gateway answers when it approves 1,500.00 CNY of scan-to-pay at a POS: the same
# fields, so serializing it costs what serializing a real approval costs.
_LINE_MINOR = 1_000_000_000_000
APPROVAL = pb.AuthorizeResponse(
    approved=True, response_code="00", hold_id="p042-ABCDEFGHJKLMNPQR",
    available_minor=_LINE_MINOR - 150_000,
    levels=[pb.LevelHeadroom(node=node, cap_minor=_LINE_MINOR, held_minor=150_000,
                             used_minor=0, available_minor=_LINE_MINOR - 150_000)
            for node in ("total", "consumer", "consumer.scan_pay", "consumer.scan_pay.pos")],
    hold_expires_at_ms=1_796_204_800_000, decided_at_ms=1_795_600_000_000,
    approved_amount_minor=150_000)


FLOOR_LIBRARY = ("#!lua name=creditgate_floor\n"
                 "redis.register_function('floor', function(keys, args) return 1 end)\n")
FLOOR_SCRIPT = LoadedScript("floor", "floor", FLOOR_LIBRARY)
FLOOR_KEYS = ("cg:{p:000}:floor",)


class NoopAuthorization(pb_grpc.AuthorizationServicer):
    async def Authorize(self, request: pb.AuthorizeRequest, context) -> pb.AuthorizeResponse:
        return APPROVAL


class FloorAuthorization(pb_grpc.AuthorizationServicer):
    """The no-op answer after one round trip to Redis through the gateway's script runner."""

    def __init__(self, runner: ScriptRunner):
        self.call = runner.call

    async def Authorize(self, request: pb.AuthorizeRequest, context) -> pb.AuthorizeResponse:
        await self.call(FLOOR_SCRIPT.name, FLOOR_KEYS, ())
        return APPROVAL


async def floor_runner(redis_url: str) -> ScriptRunner:
    runner = ScriptRunner(aioredis.Redis.from_url(redis_url))
    runner.scripts = {FLOOR_SCRIPT.name: FLOOR_SCRIPT}
    await runner.redis.function_load(FLOOR_LIBRARY, replace=True)
    return runner


async def serve(port: int, parent_pid: int | None, redis_url: str = "") -> int:
    server = grpc.aio.server(maximum_concurrent_rpcs=constants.GRPC_CONCURRENT_RPCS_MAX,
                             options=SERVER_OPTIONS)
    servicer = FloorAuthorization(await floor_runner(redis_url)) if redis_url \
        else NoopAuthorization()
    pb_grpc.add_AuthorizationServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if not server.add_insecure_port(f"127.0.0.1:{port}"):
        raise OSError(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    async def orphan_watch() -> None:
        while parent_pid is not None and os.getppid() == parent_pid:
            await asyncio.sleep(1.0)
        if parent_pid is not None:
            stopping.set()

    watch = asyncio.create_task(orphan_watch())
    await stopping.wait()
    watch.cancel()
    await server.stop(STOP_GRACE_S)
    return 0


def run(port: int, processes: int, parent_pid: int | None = None, redis_url: str = "") -> int:
    import uvloop

    if processes <= 1:
        return uvloop.run(serve(port, parent_pid, redis_url))
    if port == 0:
        raise SystemExit("--processes needs a fixed --port")
    spawn = multiprocessing.get_context("spawn")
    children = [spawn.Process(target=_child, args=(port, redis_url)) for _ in range(processes)]
    for child in children:
        child.start()

    def forward(signum, _frame):
        for child in children:
            if child.is_alive():
                child.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    return max((child.exitcode or 0) for child in children)


def _child(port: int, redis_url: str) -> None:
    sys.exit(run(port, 1, parent_pid=os.getppid(), redis_url=redis_url))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=50061)
    parser.add_argument("--processes", type=int, default=1,
                        help="processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--redis-url", default="", help="one Redis round trip per Authorize "
                        "through the gateway's script runner (the floor leg)")
    args = parser.parse_args(argv)
    return run(args.port, args.processes, redis_url=args.redis_url)


if __name__ == "__main__":
    sys.exit(main())
