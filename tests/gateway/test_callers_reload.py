"""The callers file is reloaded while the gateway serves: a revoked caller is refused on its
open connection within a check interval, a file that does not validate leaves the previous one
in force (one log line), and a caller added later is served."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest_asyncio

from creditgate.gateway import callers
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from creditgate.limits.constants import CALLERS_CHECK_INTERVAL_S
from tests.conftest import served_gateway
from tests.support import api_key

KEYS = {name: api_key(name, f"reload-key-of-{name.lower()}") for name in ("OBS-A", "OBS-B")}


def entries(*names: str) -> str:
    return "".join(f'[callers.{name}]\nrole = "observer"\n'
                   f'api_key_sha256 = "{callers.api_key_hash(KEYS[name])}"\n\n'
                   for name in names)


@pytest_asyncio.fixture
async def reloading(redis, redis_server, tmp_path):
    path = tmp_path / "callers.toml"
    path.write_text(entries("OBS-A", "OBS-B"))
    async with served_gateway(redis_server, callers_path=str(path)) as served:
        yield served, path


async def status(stub, name: str) -> grpc.StatusCode:
    try:
        await stub.GetCustomer(pb.GetCustomerRequest(customer_id="nobody"),
                               metadata=(("x-api-key", KEYS[name]),), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def until(stub, name: str, want: grpc.StatusCode) -> None:
    for _ in range(int(5 / CALLERS_CHECK_INTERVAL_S) * 10):
        if await status(stub, name) == want:
            return
        await asyncio.sleep(CALLERS_CHECK_INTERVAL_S / 10)
    raise AssertionError(f"{name} never answered {want.name}")


async def test_a_caller_is_revoked_and_added_without_a_restart(reloading, caplog):
    caplog.set_level(logging.INFO, logger="creditgate.gateway")
    served, path = reloading
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        admin = pb_grpc.AdminStub(channel)
        # An unknown customer: NOT_FOUND is a call that got through.
        assert await status(admin, "OBS-A") == grpc.StatusCode.NOT_FOUND
        path.write_text(entries("OBS-B"))  # A revoked
        await until(admin, "OBS-A", grpc.StatusCode.UNAUTHENTICATED)
        assert await status(admin, "OBS-B") == grpc.StatusCode.NOT_FOUND
        path.write_text(entries("OBS-A", "OBS-B") + "[callers.BAD]\nrole = 'admin'\n")
        await asyncio.sleep(3 * CALLERS_CHECK_INTERVAL_S)
        # Refused: the previous file (without A) stays in force.
        assert await status(admin, "OBS-A") == grpc.StatusCode.UNAUTHENTICATED
        assert await status(admin, "OBS-B") == grpc.StatusCode.NOT_FOUND
        path.write_text(entries("OBS-A", "OBS-B"))
        await until(admin, "OBS-A", grpc.StatusCode.NOT_FOUND)
    lines = [record.getMessage() for record in caplog.records
             if "callers file" in record.getMessage()]
    assert lines[0] == "callers file reloaded: 1 callers"
    assert lines[1].startswith("callers file NOT reloaded, the previous one stays in force: "
                               f"{path}: caller 'BAD': field 'role'")
    assert lines[2:] == ["callers file reloaded: 2 callers"]
