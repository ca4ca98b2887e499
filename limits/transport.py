"""The transport of script calls: `ScriptRunner` coalesces the calls made in one event-loop
tick into one pipeline: one Redis round trip per batch, one FCALL (one atomic script) per
request, so each request keeps its own outcome and one failing call never fails its
neighbours. The calls reach Redis in the order they were made. What a script is and what its
source says live in limits/lua_source.py and limits/contracts.py.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import Sequence
from typing import NamedTuple

import hiredis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    DataError,
    InvalidResponse,
    MovedError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from creditgate.limits import constants, keys
from creditgate.limits.lua_source import LoadedScript, library, scripts


class _Call:
    """One queued script call and the future its caller awaits."""

    __slots__ = ("script", "keys", "args", "future", "retried")

    def __init__(self, script: LoadedScript | None, keys_: Sequence, args: Sequence,
                 future: asyncio.Future):
        self.script, self.keys, self.args, self.future = script, keys_, args, future
        # Sent again after the library was missing: a second miss is its answer.
        self.retried = False


def _settle(call: _Call, result) -> None:
    future = call.future
    if future.done():  # the caller gave up (deadline, cancellation)
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


class Observer:
    """What a ScriptRunner tells about its traffic, for metrics (gateway/metrics.py counts it).
    This one notes nothing. Each method is called once per batch, or once per failure (a
    connection's, for all the calls it carried; an error reply's, for its call): a reply that
    is an answer costs nothing here."""

    def sent(self, calls: Sequence[_Call]) -> None:
        """A batch was written: its calls, each naming its script (`call.script.name`)."""

    def answered(self, round_trip_s: float) -> None:
        """A batch's last reply arrived, `round_trip_s` after the batch was written."""

    def failed(self, kind: str, calls: int) -> None:
        """`calls` script calls met a Redis error of `kind` (error_kind)."""


def missing_script(error: BaseException) -> bool:
    """Whether Redis answered that it lacks the called function (a restart without
    persistence, a new master, FUNCTION FLUSH): the call ran nothing."""
    return isinstance(error, NoScriptError) or (
        isinstance(error, ResponseError) and str(error).startswith("Function not found"))


_CLUSTER_KINDS = (("moved", MovedError), ("ask", AskError), ("tryagain", TryAgainError),
                  ("clusterdown", ClusterDownError))


def error_kind(error: BaseException) -> str:
    """A Redis failure's kind, from a bounded set: connection, timeout, loading, readonly,
    out_of_memory, noscript (Redis lost its functions; they are loaded and sent again), moved,
    ask, tryagain, clusterdown (Redis Cluster's redirects and refusals), reply
    (any other error reply, such as a script's runtime error), other."""
    if missing_script(error):
        return "noscript"
    # Redis Cluster's answers that ran nothing (limits/cluster.py follows them).
    for kind, names in _CLUSTER_KINDS:
        if isinstance(error, names):
            return kind
    # redis-py raises OutOfMemoryError for Redis' OOM (and strips "OOM" from the message).
    if isinstance(error, OutOfMemoryError) or (
            isinstance(error, ResponseError) and str(error).startswith("OOM")):
        return "out_of_memory"
    if isinstance(error, BusyLoadingError):  # a ConnectionError in redis-py
        return "loading"
    if isinstance(error, ReadOnlyError):
        return "readonly"
    if isinstance(error, RedisTimeoutError):
        return "timeout"
    if isinstance(error, (RedisConnectionError, OSError)):
        return "connection"
    if isinstance(error, ResponseError):
        return "reply"
    return "other"


def _pack(call: _Call) -> bytes:
    script = call.script
    return hiredis.pack_command((script.command, script.function, len(call.keys), *call.keys,
                                 *call.args))


def encode_calls(batch: list[_Call]) -> tuple[bytes, list[_Call]]:
    """The RESP bytes of one FCALL per call (packed by hiredis, in C: the same bytes as
    redis-py's encoder), and the calls they carry: all of them, less any whose arguments
    redis-py would refuse too, each answered at once with its own error."""
    try:
        return b"".join([_pack(call) for call in batch]), batch
    except (TypeError, UnicodeEncodeError):
        pass
    packed, sent = [], []
    for call in batch:
        try:
            packed.append(_pack(call))
        except TypeError as error:  # not text, bytes, int or float: as redis-py's DataError
            _settle(call, DataError(f"invalid script argument: {error}"))
            continue
        except UnicodeEncodeError as error:
            _settle(call, error)
            continue
        sent.append(call)
    return b"".join(packed), sent


class _Address(NamedTuple):
    """Where the runner's own connection goes, from the redis-py client's pool settings."""

    host: str
    port: int
    path: str  # a Unix socket, instead of host and port
    username: str | None
    password: str | None
    db: int
    encoding: str | None  # replies decoded to text, as with decode_responses=True

    @classmethod
    def of(cls, redis: aioredis.Redis) -> _Address | None:
        """None unless plain TCP or a Unix socket (TLS and the like stay with redis-py)."""
        pool = getattr(redis, "connection_pool", None)
        if pool is None or pool.connection_class not in (
                aioredis.Connection, aioredis.UnixDomainSocketConnection):
            return None
        kwargs = pool.connection_kwargs
        if kwargs.get("credential_provider") is not None:
            return None
        return cls(kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)),
                   kwargs.get("path", "") or "", kwargs.get("username"),
                   kwargs.get("password"), int(kwargs.get("db", 0) or 0),
                   kwargs.get("encoding", "utf-8") if kwargs.get("decode_responses") else None)

    def __str__(self) -> str:
        return self.path or f"{self.host}:{self.port}"


class _Connection(asyncio.Protocol):
    """The runner's own Redis connection: RESP written by encode_calls, replies parsed by
    hiredis, answered in order (Redis answers a connection's commands in the order sent)."""

    def __init__(self, runner: ScriptRunner):
        self.runner = runner
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(protocolError=InvalidResponse,
                                     replyError=BaseParser.parse_error,
                                     encoding=runner._address.encoding)
        self.waiting: collections.deque[_Call] = collections.deque()
        self.error: Exception | None = None  # why it was aborted
        self.progress_at = 0.0  # loop time of the last reply, or of a write after none waited
        # The batches on the connection, as (their last call, when written), for their round
        # trips; `batch_end` is the oldest one's last call.
        self.batches: collections.deque[tuple[_Call, float]] = collections.deque()
        self.batch_end: _Call | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, batch: list[_Call], data: bytes, now: float, timed: bool = True) -> None:
        """Write one batch of calls (`timed`: a batch of scripts, whose round trip counts)."""
        if not self.waiting:
            self.progress_at = now
        self.waiting.extend(batch)
        if timed:
            self.batches.append((batch[-1], now))
            if self.batch_end is None:
                self.batch_end = batch[-1]
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        runner = self.runner
        now = runner._loop.time()
        try:
            reply = self.reader.gets()
            while reply is not False:
                call = waiting.popleft()
                if isinstance(reply, Exception):
                    runner._replied_error(call, reply)
                else:
                    _settle(call, reply)
                if call is self.batch_end:
                    self._batch_answered(now)
                reply = self.reader.gets()
        except (InvalidResponse, IndexError) as error:  # not Redis' protocol: give up on it
            self.abort(RedisConnectionError(f"bad reply from Redis at {runner._address}: "
                                            f"{error!r}"))
            return
        self.progress_at = now
        runner._pump()

    def _batch_answered(self, now: float) -> None:
        _, written_at = self.batches.popleft()
        self.batch_end = self.batches[0][0] if self.batches else None
        self.runner.observer.answered(now - written_at)

    def abort(self, error: Exception) -> None:
        self.error = error
        if self.runner._connection is self:  # nothing more is written to it
            self.runner._connection = None
        self.transport.abort()  # connection_lost follows: it fails the calls that wait

    def connection_lost(self, exc: Exception | None) -> None:
        error = self.error or RedisConnectionError(
            f"connection to Redis at {self.runner._address} lost"
            + (f": {exc}" if exc else ""))
        calls = list(self.waiting)
        self.waiting.clear()
        self.batches.clear()
        self.batch_end = None
        self.runner._fail(calls, error)
        self.runner._lost(self)


class ScriptRunner:
    """Runs scripts on one Redis; concurrent calls share round trips.

    The calls queued in one loop tick are sent together, at most `batch_size_max` per round
    trip, and reach Redis in the order they were queued (AuthorizeBatch relies on it: two items
    with one idempotency key act as sequential calls). The order can break only around a script
    reload after Redis lost the library, when the calls that met it are sent again.

    Two ways to Redis. By default (plain TCP or a Unix socket) the runner keeps one connection
    of its own: it writes each batch as one buffer of commands packed by hiredis, reads the
    replies with hiredis' parser, and lets batches follow each other on it without waiting
    (pipelined; Redis is single-threaded, so one connection loses nothing). That costs a
    fraction of redis-py's pipeline, whose per-command encoding, parsing and timeouts dominated
    the gateway's profile (docs/benchmarks.md). At most `in_flight_max` calls are on the
    connection at once; the rest wait, in order, at most REDIS_WAIT_S. A connection without a
    reply for REDIS_WAIT_S while calls wait is dropped and its calls fail (TimeoutError); the
    next batch reconnects.
    With TLS (or `raw=False`) the batches go through redis-py pipelines from its pool instead.
    Either way a failed connection fails every call it carried (the gateway answers UNAVAILABLE,
    and a retry with the same idempotency key is safe); a script's own error fails only its call.
    The `observer` (the gateway's metrics) hears of each batch written and answered, and of each
    failure with its kind.
    """

    def __init__(self, redis: aioredis.Redis, batch_size_max: int = constants.BATCH_SIZE_MAX,
                 raw: bool | None = None, observer: Observer | None = None):
        assert 0 < batch_size_max <= constants.BATCH_SIZE_MAX
        self.redis = redis
        self.observer = observer if observer is not None else Observer()
        self.batch_size_max = batch_size_max
        self.scripts = scripts()
        self._address = _Address.of(redis) if raw is not False else None
        if raw and self._address is None:
            raise ValueError("raw=True needs a plain TCP or Unix-socket redis-py client")
        self.in_flight_max = constants.REDIS_CONNECTIONS_MAX * constants.BATCH_SIZE_MAX
        self.wait_s = constants.REDIS_WAIT_S
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Call] = []
        self._flush_scheduled = False
        self._in_flight: set[asyncio.Task] = set()
        # The raw connection's state: calls not yet written, as (queued at, calls) in order.
        self._backlog: collections.deque[tuple[float, list[_Call]]] = collections.deque()
        self._connection: _Connection | None = None
        self._connecting = False
        self._reload: list[_Call] = []
        self._timer: asyncio.TimerHandle | None = None
        self.batches_sent = 0
        self.calls_sent = 0

    @property
    def raw(self) -> bool:
        return self._address is not None

    async def load(self) -> None:
        """Load the library of this layout version (keys.LIBRARY), replacing one of the same
        name only: a library's name changes with its contract, so every release that loads it
        sends the same calls, and the previous release's library (another name) stays loaded
        for its gateways during a rolling upgrade (docs/design.md, "Upgrades")."""
        name = await self.redis.function_load(library(), replace=True)
        assert name in (keys.LIBRARY, keys.LIBRARY.encode()), name

    def call(self, name: str, keys_: Sequence[str], args: Sequence[str]) -> asyncio.Future:
        """Queue one script call; the returned future resolves to its reply."""
        if not self._flush_scheduled:  # the tick's first call: the loop is looked up once
            loop = asyncio.get_running_loop()
            if loop is not self._loop:  # a connection belongs to the loop that opened it
                self._connection, self._connecting, self._timer = None, False, None
                self._loop = loop
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        future = self._loop.create_future()
        self._pending.append(_Call(self.scripts[name], keys_, args, future))
        return future

    def command(self, *parts) -> asyncio.Future:
        """Queue one plain command (WAIT) after every call queued so far, on the same
        connection (the raw path only): its reply comes after theirs. A command is written as
        a batch of its own, not counted as a script call."""
        assert self._address is not None, "plain commands go on the runner's own connection"
        if self._flush_scheduled:
            self._flush()  # the calls queued before it are written first
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._connection, self._connecting, self._timer = None, False, None
            self._loop = loop
        future = loop.create_future()
        self._backlog.append((loop.time(), [_Call(None, (), parts, future)]))
        self._pump()
        return future

    def _flush(self) -> None:
        if not self._flush_scheduled:  # flushed already by command()
            return
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        if self._address is not None:
            self._backlog.append((self._loop.time(), pending))
            self._pump()
            return
        batches = [pending[start:start + self.batch_size_max]
                   for start in range(0, len(pending), self.batch_size_max)]
        self._track(self._send_in_order(batches))

    def _track(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    # -- the raw connection ----------------------------------------------------------------------
    def _pump(self) -> None:
        """Write what waits, in order, in batches of at most batch_size_max, while the calls
        on the connection stay within in_flight_max."""
        if not self._backlog:
            return
        connection = self._connection
        if connection is not None and connection.transport.is_closing():
            connection = self._connection = None  # connection_lost is on its way
        if connection is None:
            if not self._connecting:
                self._connecting = True
                self._track(self._connect())
            return
        now = self._loop.time()
        room = self.in_flight_max - len(connection.waiting)
        while self._backlog and room > 0:
            queued_at, calls = self._backlog[0]
            # Calls whose callers gave up are not sent: they change nothing.
            live = [call for call in calls[:min(room, self.batch_size_max)]
                    if not call.future.done()]
            taken = min(room, self.batch_size_max, len(calls))
            if taken == len(calls):
                self._backlog.popleft()
            else:
                del calls[:taken]
            if live and live[0].script is None:  # a plain command (WAIT): a batch of its own
                connection.write(live, hiredis.pack_command(live[0].args), now, timed=False)
                room -= 1
                continue
            data, sent = encode_calls(live)
            if sent:
                connection.write(sent, data, now)
                self.observer.sent(sent)
                self.batches_sent += 1
                self.calls_sent += len(sent)
                room -= len(sent)
        self._watch()

    def _deadline(self) -> float | None:
        """When the oldest wait ends: for a reply on the connection, or (connected, so not
        waiting for the connection itself) for room on it."""
        connection = self._connection
        if connection is None:
            return None
        ends = [connection.progress_at + self.wait_s] if connection.waiting else []
        if self._backlog:
            ends.append(self._backlog[0][0] + self.wait_s)
        return min(ends, default=None)

    def _watch(self) -> None:
        if self._timer is None and (deadline := self._deadline()) is not None:
            self._timer = self._loop.call_at(deadline, self._check_timeouts)

    def _check_timeouts(self) -> None:
        self._timer = None
        now = self._loop.time()
        connection = self._connection
        if connection is not None and connection.waiting and \
                now >= connection.progress_at + self.wait_s:
            connection.abort(RedisTimeoutError(
                f"no reply from Redis at {self._address} within {self.wait_s:g} s"))
        elif connection is not None:
            while self._backlog and now >= self._backlog[0][0] + self.wait_s:
                _, calls = self._backlog.popleft()
                self._fail(calls, RedisConnectionError(
                    f"Redis at {self._address} did not take the call within {self.wait_s:g} s"))
        self._watch()

    async def _connect(self) -> None:
        try:
            connection = await asyncio.wait_for(self._open(), self.wait_s)
        except Exception as error:  # noqa: BLE001 - every waiting call gets it
            failure = error if isinstance(error, RedisError) else RedisConnectionError(
                f"cannot connect to Redis at {self._address}: {error!r}")
            backlog = list(self._backlog)
            self._backlog.clear()
            self._fail([call for _, calls in backlog for call in calls], failure)
            return
        finally:
            self._connecting = False
        self._connection = connection
        self._pump()

    async def _open(self) -> _Connection:
        address = self._address
        loop = self._loop

        def protocol() -> _Connection:
            return _Connection(self)

        if address.path:
            _, connection = await loop.create_unix_connection(protocol, address.path)
        else:
            _, connection = await loop.create_connection(protocol, address.host, address.port)
        try:
            handshake = []
            if address.password is not None:
                handshake.append(("AUTH", *filter(None, (address.username,)), address.password))
            if address.db:
                handshake.append(("SELECT", address.db))
            futures = []
            for command in handshake:
                call = _Call(None, (), (), loop.create_future())
                connection.write([call], hiredis.pack_command(command), loop.time(),
                                 timed=False)
                futures.append(call.future)
            for future in futures:
                await future
        except BaseException:
            connection.transport.abort()
            raise
        return connection

    def _lost(self, connection: _Connection) -> None:
        if self._connection is connection:
            self._connection = None
        self._pump()  # calls still waiting to be written go on a new connection

    def _fail(self, calls: Sequence[_Call], error: Exception) -> None:
        """Every call of `calls` failed with `error`: counted once, each answered with it."""
        if calls:
            self.observer.failed(error_kind(error), len(calls))
        for call in calls:
            _settle(call, error)

    def _replied_error(self, call: _Call, error: Exception) -> None:
        """Redis answered one call with an error: a missing function has the library loaded
        and the call sent again (once); any other is the call's answer."""
        if call.script is not None and missing_script(error):
            self.observer.failed("noscript", 1)
            self._reload_later(call, error)
        else:
            self._fail((call,), error)

    def _reload_later(self, call: _Call, error: ResponseError) -> None:
        if call.retried:
            _settle(call, error)
            return
        call.retried = True
        self._reload.append(call)
        if len(self._reload) == 1:
            self._track(self._reload_and_resend())

    async def _reload_and_resend(self) -> None:
        # Redis lost its functions (restart, failover, FUNCTION FLUSH): an FCALL that
        # answered "Function not found" ran nothing, so loading and sending those again is
        # safe. Only the resent calls can fail here; their neighbours keep their answers.
        await asyncio.sleep(0)  # the misses of the same read join this reload
        calls, self._reload = self._reload, []
        try:
            await self.load()
        except Exception as error:  # noqa: BLE001 - each resent call gets it
            self._fail(calls, error)
            return
        self._backlog.appendleft((self._loop.time(), calls))
        self._pump()

    # -- redis-py pipelines ------------------------------------------------------------------
    async def _send_in_order(self, batches: list[list[_Call]]) -> None:
        # One batch after the other: Redis runs a tick's calls in the order they were queued.
        for batch in batches:
            await self._send(batch)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            results = await self._execute(batch)
        except Exception as error:  # the connection failed: every call of the batch failed
            results = [error] * len(batch)
        retry = [index for index, result in enumerate(results)
                 if missing_script(result)]
        if retry:
            # As in _reload_and_resend.
            self.observer.failed("noscript", len(retry))
            try:
                await self.load()
                retried = await self._execute([batch[index] for index in retry])
            except Exception as error:
                retried = [error] * len(retry)
            for index, result in zip(retry, retried, strict=True):
                results[index] = result
        for call, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                self._fail((call,), result)
            else:
                _settle(call, result)

    async def _execute(self, batch: list[_Call]) -> list:
        """One round trip; a script's own error is returned in its place, not raised."""
        self.batches_sent += 1
        self.calls_sent += len(batch)
        self.observer.sent(batch)
        written_at = self._loop.time()
        if len(batch) == 1:
            call = batch[0]
            try:
                results = [await self.redis.execute_command(
                    call.script.command, call.script.function, len(call.keys), *call.keys,
                    *call.args)]
            except ResponseError as error:  # a missing function included
                results = [error]
        else:
            pipe = self.redis.pipeline(transaction=False)
            for call in batch:
                pipe.execute_command(call.script.command, call.script.function,
                                     len(call.keys), *call.keys, *call.args)
            results = await pipe.execute(raise_on_error=False)
        self.observer.answered(self._loop.time() - written_at)
        return results

    async def close(self) -> None:
        """Wait for the calls in flight, then close the runner's own connection."""
        while True:
            calls = [call for _, batch in self._backlog for call in batch]
            if self._connection is not None:
                calls += self._connection.waiting
            futures = [call.future for call in calls if not call.future.done()]
            if not futures and not self._in_flight:
                break
            await asyncio.gather(*self._in_flight, *futures, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._connection is not None:
            self._connection.transport.close()
            self._connection = None
