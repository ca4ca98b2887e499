"""The Lua scripts: read from limits/lua/, headed by generated constants, loaded once with
SCRIPT LOAD and called by SHA (reloaded on NOSCRIPT).

`ScriptRunner` coalesces the calls made in one event-loop tick into one pipeline: one Redis
round trip per batch, one EVALSHA (one atomic script) per request, so each request keeps its
own outcome and one failing call never fails its neighbours.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.resources
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from limits import constants, keys
from limits.reasons import DeclineReason, ScriptError

SCRIPT_NAMES = ("reserve", "capture", "void", "refund", "expire", "credit", "put_customer")


def lua_constants() -> str:
    """`local NAME = value` lines for every constant the scripts share with Python."""
    lines = [f"local {name} = {_lua_string(value)}" for name, value in keys.LUA_CONSTANTS.items()]
    lines += [f"local R_{reason.name} = {int(reason)}" for reason in DeclineReason if reason]
    lines += [f"local E_{error.name} = {int(error)}" for error in ScriptError]
    bounds = {
        "AMOUNT_MINOR_MAX": constants.AMOUNT_MINOR_MAX,
        "CAP_MINOR_MAX": constants.CAP_MINOR_MAX,
        "VELOCITY_AMOUNT_MINOR_MAX": constants.VELOCITY_AMOUNT_MINOR_MAX,
        "HOLD_TTL_MS_MAX": constants.HOLD_TTL_S_MAX * 1000,
        "CLOSED_HOLD_RETENTION_MS": constants.CLOSED_HOLD_RETENTION_S * 1000,
        "IDEMPOTENCY_TTL_S": constants.IDEMPOTENCY_TTL_S,
        "EXPIRE_PER_CALL_MAX": constants.EXPIRE_PER_CALL_MAX,
    }
    lines += [f"local {name} = {value}" for name, value in bounds.items()]
    return "\n".join(lines) + "\n"


def _lua_string(value: str) -> str:
    assert all(c.isalnum() or c in ":_|." for c in value), value
    return f"'{value}'"


def _read(name: str) -> str:
    return importlib.resources.files("limits").joinpath("lua").joinpath(name).read_text()


class Script:
    __slots__ = ("name", "source", "sha")

    def __init__(self, name: str, source: str):
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


@functools.cache
def scripts() -> dict[str, Script]:
    prelude = "-- generated constants (limits/scripts.py)\n" + lua_constants() + _read("_lib.lua")
    return {name: Script(name, prelude + _read(f"{name}.lua")) for name in SCRIPT_NAMES}


class ScriptRunner:
    """Runs scripts on one Redis; concurrent calls share round trips."""

    def __init__(self, redis: aioredis.Redis, batch_size_max: int = constants.BATCH_SIZE_MAX):
        assert 0 < batch_size_max <= constants.BATCH_SIZE_MAX
        self.redis = redis
        self.batch_size_max = batch_size_max
        self.scripts = scripts()
        self._pending: list[tuple[Script, Sequence[str], Sequence[str], asyncio.Future]] = []
        self._flush_scheduled = False
        self._in_flight: set[asyncio.Task] = set()
        self.batches_sent = 0
        self.calls_sent = 0

    async def load(self) -> None:
        for script in self.scripts.values():
            sha = await self.redis.script_load(script.source)
            assert sha == script.sha, (script.name, sha)

    def call(self, name: str, keys_: Sequence[str], args: Sequence[str]) -> asyncio.Future:
        """Queue one script call; the returned future resolves to its reply."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((self.scripts[name], keys_, args, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._pending:
            batch = self._pending[: self.batch_size_max]
            del self._pending[: self.batch_size_max]
            task = asyncio.ensure_future(self._send(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _send(self, batch) -> None:
        try:
            results = await self._execute(batch)
        except Exception as error:  # the connection failed: every call of the batch failed
            results = [error] * len(batch)
        retry = [index for index, result in enumerate(results)
                 if isinstance(result, NoScriptError)]
        if retry:
            # Redis lost its script cache (restart, failover, SCRIPT FLUSH): an EVALSHA that
            # answered NOSCRIPT ran nothing, so loading and sending those again is safe. Only
            # the retried calls can fail here; their neighbours keep their answers.
            try:
                await self.load()
                retried = await self._execute([batch[index] for index in retry])
            except Exception as error:
                retried = [error] * len(retry)
            for index, result in zip(retry, retried, strict=True):
                results[index] = result
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller gave up (deadline, cancellation)
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(self, batch) -> list:
        """One round trip; a script's own error is returned in its place, not raised."""
        self.batches_sent += 1
        self.calls_sent += len(batch)
        if len(batch) == 1:
            script, keys_, args, _ = batch[0]
            try:
                return [await self.redis.evalsha(script.sha, len(keys_), *keys_, *args)]
            except ResponseError as error:  # NOSCRIPT included: NoScriptError is one
                return [error]
        pipe = self.redis.pipeline(transaction=False)
        for script, keys_, args, _ in batch:
            pipe.evalsha(script.sha, len(keys_), *keys_, *args)
        return await pipe.execute(raise_on_error=False)

    async def close(self) -> None:
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
