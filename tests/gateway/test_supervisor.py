"""`serve --processes N` replaces a server process that dies, with a growing delay, reloads
the catalog in every process on SIGHUP without stopping any, and still drains every process on
SIGTERM without replacing any."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from creditgate.gateway.server import RestartDelay
from creditgate.limits.constants import (
    RESTART_DELAY_S_MAX,
    RESTART_DELAY_S_MIN,
    RESTART_RESET_AFTER_S,
)
from tests.gateway.test_server import _start_server, _wait_serving, free_port

REPLACED_WITHIN_S = 2.0


def test_restart_delay_doubles_while_replacements_keep_dying():
    delay = RestartDelay()
    delays = [delay.after_death(lived_s=1.0) for _ in range(10)]
    assert delays[:3] == [0.0, RESTART_DELAY_S_MIN, 2 * RESTART_DELAY_S_MIN]
    assert all(later == min(RESTART_DELAY_S_MAX, 2 * earlier) or earlier == 0.0
               for earlier, later in zip(delays, delays[1:], strict=False))
    assert delays[-1] == RESTART_DELAY_S_MAX
    # A process that lived long enough starts the sequence over.
    assert delay.after_death(lived_s=RESTART_RESET_AFTER_S) == 0.0
    assert delay.after_death(lived_s=1.0) == RESTART_DELAY_S_MIN


def server_children(parent_pid: int) -> set[int]:
    """The parent's server processes (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{parent_pid}/task/{parent_pid}/children").read_text().split()
    found = set()
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            found.add(int(child))
    return found


async def _collect(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while line := await stream.readline():
        lines.append(line.decode(errors="replace"))


async def _fresh_health_check(port: int) -> int:
    async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1.0)
        return reply.status


def _logged_by(line: str, pid: int) -> bool:
    """Whether a JSON log line (serve's default format) was written by process `pid`."""
    try:
        return json.loads(line).get("process") == pid
    except ValueError:
        return False


async def _wait_replaced(parent_pid: int, survivors: set[int], killed: int,
                         lines: list[str]) -> int:
    """The new server process's pid, once it runs beside the survivor and listens (the killed
    one may still be listed until the parent reaps it)."""
    deadline = time.monotonic() + REPLACED_WITHIN_S
    while time.monotonic() < deadline:
        new = server_children(parent_pid) - survivors - {killed}
        if new and any(_logged_by(line, min(new)) and "creditgate listening" in line
                       for line in lines):
            return min(new)
        await asyncio.sleep(0.02)
    raise AssertionError(f"no new server process listened within {REPLACED_WITHIN_S} s:\n"
                         + "".join(lines[-20:]))


async def test_a_killed_process_is_replaced_and_sigterm_still_drains(redis, redis_server):
    port = free_port()
    process = await _start_server(redis_server, port, "--processes", "2")
    lines: list[str] = []
    reader = asyncio.create_task(_collect(process.stderr, lines))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await _wait_serving(health_pb2_grpc.HealthStub(channel), process)
        deadline = time.monotonic() + 15
        while len(server_children(process.pid)) < 2 or sum(
                "creditgate listening" in line for line in lines) < 2:
            assert time.monotonic() < deadline, "".join(lines[-20:])
            await asyncio.sleep(0.05)
        first = server_children(process.pid)
        victim = min(first)

        # SIGHUP to the parent reaches both server processes, and to a server process that
        # one: each reloads the catalog (three reloads), none stops.
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while sum("catalog reloaded" in line for line in lines) < 2:
            assert time.monotonic() < deadline, "".join(lines[-20:])
            await asyncio.sleep(0.05)
        os.kill(max(first), signal.SIGHUP)
        while sum("catalog reloaded" in line for line in lines) < 3:
            assert time.monotonic() < deadline, "".join(lines[-20:])
            await asyncio.sleep(0.05)
        assert sum("SIGHUP passed to 2 server processes" in line for line in lines) == 1
        assert server_children(process.pid) == first and process.returncode is None
        assert await _fresh_health_check(port) == health_pb2.HealthCheckResponse.SERVING

        os.kill(victim, signal.SIGKILL)
        new = await _wait_replaced(process.pid, first - {victim}, victim, lines)
        # Two server processes again: the survivor and the replacement (read from /proc,
        # which may briefly list a process that is still being spawned).
        deadline = time.monotonic() + REPLACED_WITHIN_S
        while server_children(process.pid) != (first - {victim}) | {new}:
            assert time.monotonic() < deadline, (server_children(process.pid), first, new)
            await asyncio.sleep(0.05)
        for _ in range(4):  # fresh connections, spread over both processes by the kernel
            assert await _fresh_health_check(port) == health_pb2.HealthCheckResponse.SERVING
        replaced = [line for line in lines if "ended (signal SIGKILL)" in line]
        assert len(replaced) == 1 and f"server process {victim} " in replaced[0], lines

        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=15.0)
        await asyncio.wait_for(reader, timeout=5.0)
        assert returncode == 0, "".join(lines[-20:])
        assert sum("replacing it" in line for line in lines) == 1  # none after SIGTERM
        # Both processes are gone: drained ("stopped"), or ended by the SIGTERM itself while
        # still starting, which the supervisor counts as a clean stop (exit code 0 above).
        assert not any(Path(f"/proc/{pid}").exists() for pid in (first - {victim}) | {new})
        assert 1 <= sum("stopped" in line for line in lines) <= 2
    finally:
        reader.cancel()
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)  # the parent and its server processes
            await process.wait()
