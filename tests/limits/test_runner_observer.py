"""What the script runner tells its observer (the gateway's metrics): once per batch written
(its calls), once per batch answered (its round trip), once per failure (its kind and how many
calls it failed); never once per reply. Both ways to Redis: the runner's own connection and
redis-py's pipelines."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis_asyncio
from redis.exceptions import (
    BusyLoadingError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from creditgate.limits.client import LimitsClient
from creditgate.limits.transport import Observer, ScriptRunner, error_kind
from tests.conftest import _free_port
from tests.support import PARTITIONS


class Recorder(Observer):
    def __init__(self):
        self.batches: list[list[str]] = []
        self.round_trips: list[float] = []
        self.failures: list[tuple[str, int]] = []

    def sent(self, calls) -> None:
        self.batches.append([call.script.name for call in calls])

    def answered(self, round_trip_s: float) -> None:
        self.round_trips.append(round_trip_s)

    def failed(self, kind: str, calls: int) -> None:
        self.failures.append((kind, calls))


@pytest.mark.parametrize("raw", [True, False], ids=["own-connection", "redis-py"])
async def test_one_note_per_batch_and_per_failure(redis, redis_server, raw):
    recorder = Recorder()
    client = redis_asyncio.Redis.from_url(redis_server.url)
    runner = ScriptRunner(client, raw=raw, observer=recorder)
    limits = LimitsClient(runner, PARTITIONS)
    try:
        await runner.load()
        await asyncio.gather(*(limits.due(partition, 10) for partition in range(5)))
        await limits.credit("nobody")
        assert recorder.batches == [["due"] * 5, ["credit"]]
        assert len(recorder.round_trips) == 2
        assert all(0 < round_trip_s < 5 for round_trip_s in recorder.round_trips)
        # Redis lost its functions: noted for each call that found none, each sent again.
        await client.function_flush()
        await asyncio.gather(*(limits.due(partition, 10) for partition in range(3)))
        assert sum(calls for kind, calls in recorder.failures if kind == "noscript") == 3
        assert {kind for kind, _ in recorder.failures} == {"noscript"}
        assert recorder.batches[-2:] == [["due"] * 3] * 2
        assert len(recorder.round_trips) == 4
    finally:
        await runner.close()
        await client.aclose()


async def test_a_refused_connection_is_one_failure_of_every_call_it_carried():
    recorder = Recorder()
    client = redis_asyncio.Redis(host="127.0.0.1", port=_free_port())  # nothing listens
    runner = ScriptRunner(client, raw=True, observer=recorder)
    limits = LimitsClient(runner, PARTITIONS)
    outcomes = await asyncio.gather(*(limits.due(partition, 10) for partition in range(4)),
                                    return_exceptions=True)
    assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes)
    assert recorder.failures == [("connection", 4)]
    assert recorder.batches == [] and recorder.round_trips == []
    await runner.close()
    await client.aclose()


@pytest.mark.parametrize("error, kind", [
    (NoScriptError("NOSCRIPT No matching script."), "noscript"),
    (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "out_of_memory"),
    (ResponseError("OOM command not allowed"), "out_of_memory"),
    (BusyLoadingError("Redis is loading the dataset in memory"), "loading"),
    (ReadOnlyError("You can't write against a read only replica."), "readonly"),
    (RedisTimeoutError("Timeout reading from socket"), "timeout"),
    (RedisConnectionError("Connection refused"), "connection"),
    (ConnectionResetError(), "connection"),
    (ResponseError("ERR user_script:12: attempt to compare nil"), "reply"),
    (ValueError("what"), "other"),
])
def test_error_kinds_are_a_bounded_set(error, kind):
    assert error_kind(error) == kind
