"""Logs survive an outage: repeated identical failures are logged once per interval and kind
(rpc, status, error type) with a count, not once per call. The first is logged at once, the
rest are summed when the interval ends (at the kind's next failure or the loop's flush), and
no line carries a request's values."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess

import grpc
import pytest

from creditgate.gateway import errors
from creditgate.gateway.errors import FailureLog
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from tests.conftest import (
    CUSTOMER_CAPS,
    RedisServer,
    _free_port,
    _stop,
    _wait_for_ping,
    served_gateway,
)

LOGGER = "creditgate.gateway"
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
CALLS = 500


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


def lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def test_repeats_are_summed_once_per_interval(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = Clock()
    failures = FailureLog(logging.getLogger(LOGGER), interval_s=10.0, clock=clock)
    for _ in range(1_000):
        failures.failed("Authorize", UNAVAILABLE, ConnectionError("down"))
    assert lines(caplog) == ["Authorize failed: UNAVAILABLE (ConnectionError)"]
    clock.now_s += 4.0
    failures.failed("Capture", UNAVAILABLE, ConnectionError("down"))  # another kind: at once
    failures.flush()  # no interval has ended yet
    assert len(lines(caplog)) == 2
    clock.now_s += 6.0
    failures.failed("Authorize", UNAVAILABLE, ConnectionError("down"))  # ends its interval
    assert lines(caplog)[2:] == ["Authorize failed 999 more times in 10.0 s: UNAVAILABLE "
                                 "(ConnectionError)"]
    clock.now_s += 10.0
    failures.flush()  # Authorize's one repeat is summed; Capture's quiet window is forgotten
    assert lines(caplog)[3:] == ["Authorize failed 1 more times in 10.0 s: UNAVAILABLE "
                                 "(ConnectionError)"]
    clock.now_s += 10.0
    failures.flush()  # a quiet interval ends the window without a line
    failures.failed("Authorize", UNAVAILABLE, ConnectionError("down"))
    assert lines(caplog)[4:] == ["Authorize failed: UNAVAILABLE (ConnectionError)"]


def test_each_kind_counts_apart(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    failures = FailureLog(logging.getLogger(LOGGER), clock=Clock())
    for _ in range(3):
        failures.failed("Authorize", UNAVAILABLE, ConnectionError("down"))
        failures.failed("Authorize", UNAVAILABLE, TimeoutError("slow"))
        failures.failed("Authorize", grpc.StatusCode.RESOURCE_EXHAUSTED, MemoryError())
        failures.failed("Void", UNAVAILABLE, ConnectionError("down"))
    assert len(lines(caplog)) == 4


async def test_the_loop_flushes_an_ended_interval(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    failures = FailureLog(logging.getLogger(LOGGER), interval_s=0.05)
    for _ in range(10):
        failures.failed("Authorize", UNAVAILABLE, ConnectionError("down"))
    await asyncio.sleep(0.2)  # no further failure comes: the loop's timer sums up
    assert len(lines(caplog)) == 2
    assert lines(caplog)[1].startswith("Authorize failed 9 more times in ")


@pytest.fixture
def doomed_redis(tmp_path):
    """A redis-server of this test's own, which the test stops."""
    port = _free_port()
    process = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--logfile", str(tmp_path / "log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_for_ping(process, port, tmp_path / "log")
        yield RedisServer(url=f"redis://127.0.0.1:{port}/0", port=port, dir=tmp_path), process
    finally:
        _stop(process, port)


async def test_an_outage_writes_a_few_lines_not_one_per_call(doomed_redis, caplog, monkeypatch):
    server, process = doomed_redis
    clock = Clock()
    monkeypatch.setattr(errors, "failures", FailureLog(errors.log, clock=clock))
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with served_gateway(server) as gateway, \
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        auth, admin = pb_grpc.AuthorizationStub(channel), pb_grpc.AdminStub(channel)
        await admin.PutCustomer(pb.PutCustomerRequest(
            customer_id="c-outage", status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
        _stop(process, server.port)
        caplog.clear()
        answers = await asyncio.gather(*(auth.Authorize(pb.AuthorizeRequest(
            idempotency_key=f"outage-key-{n}", customer_id="c-outage", product_id="scan_pay",
            channel=pb.CHANNEL_POS, merchant_id="shop-outage", mcc="5411",
            amount_minor=1_000, currency="CNY")) for n in range(CALLS)), return_exceptions=True)
        assert {answer.code() if isinstance(answer, grpc.aio.AioRpcError) else answer
                for answer in answers} == {UNAVAILABLE}
        clock.now_s += errors.FAILURE_LOG_INTERVAL_S
        errors.failures.flush()
    logged = lines(caplog)
    assert logged == ["Authorize failed: UNAVAILABLE (ConnectionError)",
                      f"Authorize failed {CALLS - 1} more times in "
                      f"{errors.FAILURE_LOG_INTERVAL_S:.1f} s: UNAVAILABLE (ConnectionError)"]
    assert not any(value in line for line in logged
                   for value in ("c-outage", "outage-key", "shop-outage", "1000"))
