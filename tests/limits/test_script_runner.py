"""The script runner's own Redis connection (commands packed and replies parsed by hiredis)
against its redis-py fallback: the same bytes on the wire, the same answers, the order of calls
kept across round trips, bounded calls in flight, and each kind of connection failure failing
the calls it carried (and only those) before the next call reconnects. A TCP relay between the
runner and the real redis-server holds or cuts the traffic."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
import redis.asyncio as redis_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import AuthenticationError, DataError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from creditgate.gateway.errors import status_of
from creditgate.limits import keys
from creditgate.limits.client import LimitsClient
from creditgate.limits.contracts import call_header
from creditgate.limits.lua_source import scripts
from creditgate.limits.replies import Refused
from creditgate.limits.transport import ScriptRunner, _Call, encode_calls
from tests.conftest import _free_port
from tests.support import PARTITIONS, ScriptDriver, authorize_request

CAPS = {"total": 10**7, "consumer": 10**7, "consumer.scan_pay": 10**7,
        "consumer.scan_pay.pos": 10**7}


class Relay:
    """A TCP relay to Redis that can hold the runner's commands back or cut the connection."""

    def __init__(self, redis_port: int):
        self.redis_port = redis_port
        self.port = 0
        self.accepted = 0
        self.release = asyncio.Event()
        self.release.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_) -> None:
        self.cut()
        self._server.close()
        await self._server.wait_closed()

    def hold(self) -> None:
        self.release.clear()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader, writer) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
        self._writers += [writer, up_writer]

        async def pipe(source, sink, held: bool) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await source.read(65536):
                    if held:
                        await self.release.wait()
                    if sink.is_closing():  # cut while held: the data never arrives
                        break
                    sink.write(data)
            sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


def client_for(port: int, **kwargs) -> LimitsClient:
    redis = redis_asyncio.Redis(port=port, socket_timeout=5, **kwargs)
    return LimitsClient(ScriptRunner(redis), PARTITIONS)


async def put(client: LimitsClient, *customers: str) -> None:
    await asyncio.gather(*(client.put_customer(c, "active", "Asia/Shanghai", CAPS)
                           for c in customers))


async def authorize(client: LimitsClient, key: str, customer: str, amount: int):
    return await ScriptDriver(client).authorize(authorize_request(key, customer, amount))


def test_the_runner_uses_its_own_connection_on_plain_tcp_and_redis_py_otherwise(redis):
    assert ScriptRunner(redis).raw
    assert not ScriptRunner(redis, raw=False).raw
    unix = redis_asyncio.Redis(unix_socket_path="/tmp/none.sock")
    assert ScriptRunner(unix).raw
    tls = redis_asyncio.Redis(ssl=True)
    assert not ScriptRunner(tls).raw
    with pytest.raises(ValueError, match="raw=True"):
        ScriptRunner(tls, raw=True)


# Arguments of every kind redis-py accepts: text (any language), bytes, integers, floats.
arguments = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
                      st.binary(max_size=20), st.integers(-(2**63), 2**63 - 1),
                      st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=300)
@given(calls=st.lists(st.tuples(st.sampled_from(sorted(scripts())),
                                st.lists(arguments, max_size=6),
                                st.lists(arguments, max_size=12)), min_size=1, max_size=5))
def test_the_runner_writes_the_bytes_redis_py_would(calls):
    batch = [_Call(scripts()[name], keys_, args, None) for name, keys_, args in calls]
    data, sent = encode_calls(batch)
    assert sent == batch
    packed = Connection().pack_commands(
        [(call.script.command, call.script.function, len(call.keys), *call.keys, *call.args)
         for call in batch])
    assert {call.script.command for call in batch} <= {"FCALL", "FCALL_RO"}
    assert data == b"".join(packed)


async def test_a_bad_argument_fails_only_its_own_call(redis):
    client = LimitsClient(ScriptRunner(redis), PARTITIONS)
    await put(client, "c1")
    runner = client.runner
    good = runner.call("credit", ["x", "y", "z"], [*call_header(), "b", "c1"])
    bad = runner.call("credit", ["x", "y", "z"], [*call_header(), object(), "c1"])
    surrogate = runner.call("credit", ["x", "y", "z"], [*call_header(), "\ud800", "c1"])
    results = await asyncio.gather(good, bad, surrogate, return_exceptions=True)
    assert isinstance(results[0], list)
    assert isinstance(results[1], DataError)
    assert isinstance(results[2], UnicodeEncodeError)


@pytest.mark.parametrize("raw", [True, False], ids=["own-connection", "redis-py"])
async def test_both_ways_keep_order_across_round_trips_and_isolate_failures(redis, raw):
    client = LimitsClient(ScriptRunner(redis, batch_size_max=3, raw=raw), PARTITIONS)
    await put(client, "c1", "c2")
    broken = keys.customer(keys.base(keys.partition_of("c2", PARTITIONS)), "c2")
    await redis.delete(broken)
    await redis.set(broken, "not a hash")
    sent_before = client.runner.batches_sent
    # One tick: the same key with another payload in a later round trip is refused, the same
    # payload again replays; the broken customer's call fails alone.
    results = await asyncio.gather(
        authorize(client, "k1", "c1", 100), authorize(client, "k2", "c1", 200),
        authorize(client, "k3", "c2", 300), authorize(client, "k1", "c1", 999),
        authorize(client, "k1", "c1", 100), authorize(client, "k4", "c1", 400),
        return_exceptions=True)
    assert client.runner.batches_sent - sent_before == 2
    assert results[0][0] == 0 and results[1][0] == 0 and results[5][0] == 0
    assert isinstance(results[2], ResponseError) and "WRONGTYPE" in str(results[2])
    assert isinstance(results[3], Refused)
    assert results[4] == results[0]
    state = await client.credit("c1")
    assert state.held["consumer.scan_pay.pos"] == 100 + 200 + 400


@pytest.mark.parametrize("raw", [True, False], ids=["own-connection", "redis-py"])
async def test_both_ways_reload_the_scripts_after_noscript(redis, raw):
    client = LimitsClient(ScriptRunner(redis, raw=raw), PARTITIONS)
    await client.runner.load()
    await put(client, "c1")
    await redis.function_flush()
    results = await asyncio.gather(*(authorize(client, f"k{i}", "c1", 100) for i in range(5)))
    assert [r[0] for r in results] == [0] * 5
    assert len({r[2] for r in results}) == 5


async def test_calls_on_a_cut_connection_fail_and_the_next_call_reconnects(redis_server, redis):
    async with Relay(redis_server.port) as relay:
        client = client_for(relay.port)
        await put(client, "c1")
        relay.hold()
        calls = [asyncio.ensure_future(authorize(client, f"k{i}", "c1", 100)) for i in range(3)]
        await asyncio.sleep(0.1)  # written, held in the relay
        relay.cut()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results), results
        assert status_of(results[0])[0] == grpc.StatusCode.UNAVAILABLE
        relay.release.set()
        reason, _, hold_id = await authorize(client, "k9", "c1", 100)
        assert reason == 0 and hold_id
        assert relay.accepted == 2
        # The held calls never reached Redis: only the last one is held.
        assert (await client.credit("c1")).held["consumer.scan_pay.pos"] == 100
        await client.runner.close()


async def test_no_reply_within_the_wait_fails_the_calls_with_a_timeout(redis_server, redis):
    async with Relay(redis_server.port) as relay:
        client = client_for(relay.port)
        client.runner.wait_s = 0.3
        await put(client, "c1")
        relay.hold()
        started = asyncio.get_running_loop().time()
        with pytest.raises(RedisTimeoutError):
            await authorize(client, "k1", "c1", 100)
        assert 0.3 <= asyncio.get_running_loop().time() - started < 2.0
        relay.release.set()
        reason, _, _ = await authorize(client, "k2", "c1", 100)
        assert reason == 0
        assert relay.accepted == 2
        await client.runner.close()


async def test_an_unreachable_redis_fails_the_calls_at_once():
    client = client_for(_free_port())
    results = await asyncio.gather(*(client.credit(f"c{i}") for i in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    assert status_of(results[0])[0] == grpc.StatusCode.UNAVAILABLE


async def test_a_user_password_and_database_are_used(redis_server, redis):
    await redis.execute_command("ACL", "SETUSER", "runner-test", "on", ">secret", "~*", "&*",
                                "+@all")
    try:
        client = client_for(redis_server.port, username="runner-test", password="secret", db=3)
        assert client.runner.raw
        await put(client, "c1")
        partition_base = keys.base(keys.partition_of("c1", PARTITIONS))
        assert not await redis.exists(keys.customer(partition_base, "c1"))  # not in db 0
        db3 = redis_asyncio.Redis(port=redis_server.port, db=3)
        assert await db3.exists(keys.customer(partition_base, "c1"))
        await db3.flushdb()
        await db3.aclose()
        await client.runner.close()
        wrong = client_for(redis_server.port, username="runner-test", password="wrong")
        with pytest.raises(AuthenticationError) as caught:
            await wrong.credit("c1")
        assert status_of(caught.value)[0] == grpc.StatusCode.UNAVAILABLE
    finally:
        await redis.execute_command("ACL", "DELUSER", "runner-test")


async def test_calls_in_flight_are_bounded_and_keep_their_order(redis):
    client = LimitsClient(ScriptRunner(redis), PARTITIONS)
    await put(client, "c1")
    client.runner.in_flight_max = 4
    sent_before = client.runner.batches_sent
    results = await asyncio.gather(*(authorize(client, f"k{i}", "c1", 100 + i)
                                     for i in range(18)))
    # At most 4 on the connection at once: at least five writes (4 + 4 + 4 + 4 + 2).
    assert client.runner.batches_sent - sent_before >= 5
    assert client.runner.calls_sent == 1 + 18
    assert [r[0] for r in results] == [0] * 18
    state = await client.credit("c1")
    assert state.held["consumer.scan_pay.pos"] == sum(100 + i for i in range(18))


async def test_a_call_whose_caller_gave_up_before_it_was_sent_is_not_sent(redis):
    client = LimitsClient(ScriptRunner(redis), PARTITIONS)
    runner = client.runner
    futures = [client.put_customer(c, "active", "Asia/Shanghai", CAPS)
               for c in ("c1", "c2", "c3")]
    tasks = [asyncio.ensure_future(f) for f in futures]
    await asyncio.sleep(0)  # each task queued its call
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert runner.calls_sent == 2
    assert await client.credit("c1") is not None and await client.credit("c3") is not None
    assert await client.credit("c2") is None
