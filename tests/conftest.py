"""Shared fixtures: a private, real redis-server for the whole test session.

The server binds 127.0.0.1 on a free port in a temporary folder, keeps nothing on disk
(no RDB, no AOF), and is shut down when the session ends. Because it is ours alone, the
per-test fixtures may FLUSHALL it before each test.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import pytest_asyncio
import redis as redis_lib
import redis.asyncio as redis_asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

REDIS_START_TIMEOUT_S = 10.0
REDIS_STOP_TIMEOUT_S = 5.0


class RedisServer(NamedTuple):
    url: str
    port: int
    dir: Path


def _control_client(port: int, socket_timeout_s: float) -> redis_lib.Redis:
    # No retries: redis-py retries a failed command with backoff by default, which would turn
    # "not up yet" and "closed by SHUTDOWN" into seconds of waiting.
    return redis_lib.Redis(
        host="127.0.0.1", port=port, socket_timeout=socket_timeout_s, retry=Retry(NoBackoff(), 0)
    )


def _free_port() -> int:
    # The kernel picks an unused port; it is released before redis binds it, which leaves a small
    # race with other processes that is acceptable for a test machine.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log_path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_for_ping(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    client = _control_client(port, socket_timeout_s=0.5)
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {process.returncode} while starting:\n"
                    f"{_log_tail(log_path)}"
                )
            try:
                if client.ping():
                    return
            except redis_lib.ConnectionError:
                pass
            time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError(
        f"redis-server did not answer PING within {REDIS_START_TIMEOUT_S} s:\n{_log_tail(log_path)}"
    )


def _stop(process: subprocess.Popen[bytes], port: int) -> None:
    if process.poll() is None:
        client = _control_client(port, socket_timeout_s=2.0)
        try:
            client.shutdown(nosave=True)
        except redis_lib.RedisError:
            pass
        finally:
            client.close()
    try:
        process.wait(timeout=REDIS_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit(
            "redis-server is not on PATH; the tests need a real Redis. "
            "Install it (sudo apt-get install redis-server) or run `make test`.",
            returncode=1,
        )
    data_dir = tmp_path_factory.mktemp("redis")
    log_path = data_dir / "redis.log"
    port = _free_port()
    options = {
        "port": str(port),
        "bind": "127.0.0.1",
        "dir": str(data_dir),
        "save": "",
        "appendonly": "no",
        "daemonize": "no",
        "logfile": str(log_path),
    }
    process = subprocess.Popen(
        [binary, *(item for name, value in options.items() for item in (f"--{name}", value))],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_ping(process, port, log_path)
    except RuntimeError as error:
        _stop(process, port)
        pytest.exit(str(error), returncode=1)
    try:
        yield RedisServer(url=f"redis://127.0.0.1:{port}/0", port=port, dir=data_dir)
    finally:
        _stop(process, port)


@pytest_asyncio.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(redis_server.url, decode_responses=False)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def redis_sync(redis_server: RedisServer) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_server.url, decode_responses=False)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


# -- creditgate fixtures ------------------------------------------------------------------------

# A customer whose caps exercise every level of the example catalog's products.
CUSTOMER_CAPS = {
    "total": 1_000_000,
    "consumer": 800_000,
    "consumer.scan_pay": 600_000,
    "consumer.scan_pay.pos": 500_000,
    "consumer.scan_pay.qr": 400_000,
    "consumer.online": 700_000,
    "cash": 300_000,
}
PARTITIONS = 16  # few partitions: tests put several customers in one


# Every log line the suite's processes wrote, scanned at the end for secrets.
class _KeepLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.loggers: list[str] = []  # each line's logger

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # with the traceback, if any
        self.loggers.append(record.name)


# Personal data: creditgate holds no names, phone numbers, addresses or identity documents;
# a customer is a pseudonymous id, which is still a person's. The audit log names it by design
# (who changed which customer); no other line may. Ids shorter than this are not looked for,
# as they would match ordinary words.
AUDIT_LOGGER = "creditgate.audit"
CUSTOMER_ID_LENGTH_MIN = 3


@contextlib.contextmanager
def _customer_ids_created() -> Iterator[set[str]]:
    """Every customer id the suite creates through the limits client (PutCustomer, the
    ledger tests' traffic, the benchmarks' seeding in process)."""
    from creditgate.limits.client import LimitsClient

    created: set[str] = set()
    put_customer = LimitsClient.put_customer

    async def recording(self, customer_id: str, *args, **kwargs):
        created.add(customer_id)
        return await put_customer(self, customer_id, *args, **kwargs)

    LimitsClient.put_customer = recording
    try:
        yield created
    finally:
        LimitsClient.put_customer = put_customer


def _naming_customers(handler: _KeepLines, customer_ids: set[str]) -> list[str]:
    """The lines outside the audit log that name a customer id of the suite."""
    ids = sorted((i for i in customer_ids if len(i) >= CUSTOMER_ID_LENGTH_MIN), key=len,
                 reverse=True)
    if not ids:
        return []
    # An event id ("c:<customer>:2") names its customer too: only a longer word does not.
    pattern = re.compile(r"(?<![\w.-])(?:" + "|".join(map(re.escape, ids)) + r")(?![\w.-])")
    return [line for line, logger in zip(handler.lines, handler.loggers, strict=True)
            if logger != AUDIT_LOGGER and pattern.search(line)]


@pytest.fixture(autouse=True)
def fresh_failure_log(monkeypatch):
    """Each test starts with an empty failure log (gateway/errors.py `failures`, one per
    process): a window that an earlier test's failures left open would otherwise end, and log
    its sum, during a later test that counts its own log lines."""
    from creditgate.gateway import errors

    monkeypatch.setattr(errors, "failures", errors.FailureLog(errors.log))


@pytest.fixture(scope="session", autouse=True)
def no_secrets_in_logs():
    """After the whole suite: no line logged in this process holds an API key the tests
    used (tests/support.py SECRETS) or private key material, and no line but the audit log's
    names a customer. A failure here is an error of the session, naming the line."""
    from tests.support import SECRETS

    handler = _KeepLines()
    root = logging.getLogger()
    root.addHandler(handler)
    with _customer_ids_created() as customer_ids:
        yield handler
    root.removeHandler(handler)
    for line in handler.lines:
        assert "PRIVATE KEY" not in line, f"private key material logged: {line[:200]}"
        for secret in SECRETS:
            assert secret not in line, f"an API key was logged: {line[:200]}"
    naming = _naming_customers(handler, customer_ids)
    assert naming == [], f"a customer id was logged outside the audit log: {naming[0][:200]}"


# The suite's plaintext caller: everything the tests do (tests/callers-suite.toml).
SUITE_CALLERS = Path(__file__).with_name("callers-suite.toml")
SUITE_CALLER = "suite"  # its one caller: the name every event of the suite's calls carries


@contextlib.asynccontextmanager
async def served_gateway(redis_server, **config):
    """A gateway served in the running event loop on a free port, against the private Redis.

    Its sweeper is off so tests decide when holds are swept; `gateway.limits.clock_offset_ms`
    moves the scripts' clock. `config` overrides gateway.server.Config fields.
    """
    from creditgate.gateway.server import Config, Gateway

    served = Gateway(Config(**{"port": 0, "redis_url": redis_server.url,
                               "partitions": PARTITIONS, "sweep": False, "insecure": True,
                               "callers_path": str(SUITE_CALLERS), **config}))
    await served.start()
    try:
        yield served
    finally:
        await served.stop(grace_s=1.0)


@pytest_asyncio.fixture
async def gateway(redis, redis_server):
    async with served_gateway(redis_server) as served:
        yield served


@pytest_asyncio.fixture
async def channel(gateway):
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel_:
        yield channel_


@pytest.fixture
def auth(channel):
    from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc

    return pb_grpc.AuthorizationStub(channel)


@pytest.fixture
def admin(channel):
    from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc

    return pb_grpc.AdminStub(channel)


async def snapshot(client: redis_asyncio.Redis) -> dict:
    """Every key of the private Redis with its value (streams: their entries' fields)."""
    state = {}
    async for key in client.scan_iter(count=1000):
        kind = (await client.type(key)).decode()
        if kind == "hash":
            state[key] = await client.hgetall(key)
        elif kind == "zset":
            state[key] = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            state[key] = await client.get(key)
        elif kind == "stream":
            state[key] = [fields for _, fields in await client.xrange(key)]
        else:
            state[key] = kind
    return state
