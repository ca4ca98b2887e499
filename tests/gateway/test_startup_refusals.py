"""`creditgate serve` refuses to start, with one line saying why and no traceback, where it
could not serve correctly: a port another server already listens on (SO_REUSEPORT would let
it join silently and take a share of the calls), or a Redis it cannot use."""

from __future__ import annotations

import asyncio
import socket
import types

import pytest

from creditgate.gateway import server
from tests.gateway.test_server import _start_server, free_port


async def refused(process) -> str:
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    text = stderr.decode()
    assert process.returncode == server.EXIT_REFUSED, text
    assert "Traceback" not in text
    return text


@pytest.mark.parametrize("processes", ["1", "2"])
async def test_a_port_another_server_listens_on_is_refused(redis, redis_server, processes):
    port = free_port()
    with socket.socket() as other:  # any other server, with SO_REUSEPORT as gRPC sets it
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        process = await _start_server(redis_server, port, "--host", "127.0.0.1",
                                      "--processes", processes)
        text = await refused(process)
    assert f"start-up refused: 127.0.0.1:{port} is already in use by another server" in text


async def test_an_unreachable_redis_is_refused_with_its_reason():
    unreachable = types.SimpleNamespace(url=f"redis://127.0.0.1:{free_port()}/0")
    text = await refused(await _start_server(unreachable, free_port()))
    assert "start-up refused: cannot use Redis at redis://127.0.0.1:" in text
    assert "ConnectionError" in text
