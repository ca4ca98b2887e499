"""Redis Cluster: the URL that selects it, the client every command builds from a URL, the
slot-aware script runner, durability by WAIT, and which partitions each shard serves.

    redis+cluster://[user:password@]host1:port1,host2:port2[/0]    (rediss+cluster: TLS)

names a cluster by seed nodes (any of its nodes; the rest are discovered with CLUSTER SLOTS);
any other URL (redis://, rediss://, unix://) is one Redis. redis-py's RedisCluster owns the
topology: the slot map, refreshed on MOVED and after a connection fails.

Every key of a partition carries its hash tag `{p:NNN}` (limits/keys.py), so a partition is
one slot and a script call goes to the master of its slot. `ClusterScriptRunner` keeps one
`ScriptRunner` per master (its own pipelined connection, its own NOSCRIPT reload): the calls
of one loop tick are grouped by master, one batch per master, one round trip per shard.
A call is sent again only after an answer that says it ran nothing: MOVED (the map is
refreshed, the call goes to the new owner), ASK, TRYAGAIN and CLUSTERDOWN (after a pause,
while the call's time lasts), NOSCRIPT (the per-master runner loads the library and sends it
again). A call is never run on a slot's importing node after ASK: the keys a script reaches
without declaring them (holds, the customer's paths) may not have moved yet, and would read as
missing there. So while a slot migrates, its partition's calls wait, and fail UNAVAILABLE if
the move outlasts REDIS_WAIT_S: move a partition's keys in one MIGRATE (docs/operations.md).
A connection that fails may have carried a call that ran, so its calls fail (UNAVAILABLE to
the caller, whose retry with the same idempotency key is safe) and the map is refreshed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import urllib.parse
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from creditgate.limits import constants, keys
from creditgate.limits.lua_source import scripts
from creditgate.limits.transport import Observer, ScriptRunner, error_kind

log = logging.getLogger("creditgate.cluster")

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS
# Retries, redirects, map refreshes and log lines are bounded in limits/constants.py.
RETRY_PAUSES_S = constants.CLUSTER_RETRY_PAUSES_S
REDIRECTS_MAX = constants.CLUSTER_REDIRECTS_MAX
LOG_INTERVAL_S = constants.CLUSTER_LOG_INTERVAL_S
MAP_REFRESH_INTERVAL_S_MIN = constants.CLUSTER_MAP_REFRESH_INTERVAL_S_MIN


class ShardUnavailable(RedisConnectionError):
    """A shard could not take the call within its time (CLUSTERDOWN, TRYAGAIN, too many
    redirects): UNAVAILABLE to the caller, as an unreachable Redis is."""


class NotReplicated(RedisConnectionError):
    """`--durability wait:N`: the change was made on the master but fewer than N replicas
    acknowledged it in time; a failover could still lose it. UNAVAILABLE to the caller, whose
    retry with the same idempotency key returns the first answer once it is replicated."""


# -- the URL ---------------------------------------------------------------------------------
def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


class ClusterUrl:
    """A parsed `redis+cluster://` URL: its seed nodes, credentials and TLS."""

    def __init__(self, url: str):
        scheme, _, rest = url.partition("://")
        if scheme.lower() not in CLUSTER_SCHEMES:
            raise ValueError(f"not a cluster URL ({'/'.join(CLUSTER_SCHEMES)}://): "
                             f"{scheme}://...")
        self.ssl = CLUSTER_SCHEMES[scheme.lower()]
        netloc, _, path = rest.partition("/")
        if path.split("?")[0] not in ("", "0"):
            raise ValueError("a Redis Cluster has database 0 only: no /N but /0 in the URL")
        userinfo, _, hosts = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        self.username = urllib.parse.unquote(user) or None
        self.password = urllib.parse.unquote(password) or None
        self.seeds = [_host_port(item) for item in hosts.split(",") if item]
        if not self.seeds:
            raise ValueError("a cluster URL names at least one node: "
                             "redis+cluster://host:port[,host:port...]")

    def client(self, **kwargs) -> RedisCluster:
        return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in self.seeds],
                            username=self.username, password=self.password, ssl=self.ssl,
                            **kwargs)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"cluster node {text!r}: host:port expected")
    return host.strip("[]"), int(port)


def connect(url: str, **kwargs) -> aioredis.Redis | RedisCluster:
    """The redis-py client of a URL: a RedisCluster for a cluster URL, else one Redis."""
    if is_cluster_url(url):
        kwargs.pop("single_connection_client", None)
        return ClusterUrl(url).client(**kwargs)
    return aioredis.Redis.from_url(url, **kwargs)


def is_cluster(redis) -> bool:
    return isinstance(redis, RedisCluster)


# -- partitions and shards -------------------------------------------------------------------
@functools.cache
def partition_slot(partition: int) -> int:
    """The cluster slot of a partition: every key of it hashes there (its hash tag)."""
    return key_slot(keys.base(partition).encode())


def slot_of_keys(keys_: Sequence[str]) -> int:
    """The slot of a script call's keys (they share one hash tag)."""
    return key_slot(keys_[0].encode()) if keys_ else 0


async def shards(cluster: RedisCluster, partitions: int) -> dict[str, list[int]]:
    """master host:port -> the partitions whose slot it serves now, by redis-py's map."""
    await cluster.initialize()
    found: dict[str, list[int]] = {}
    for partition in range(partitions):
        node = cluster.nodes_manager.get_node_from_slot(partition_slot(partition))
        found.setdefault(node.name, []).append(partition)
    return found


async def shard_partitions(cluster: RedisCluster, shard: str, partitions: int) -> list[int]:
    """The partitions of the shard that `shard` (host:port of its master or of a replica)
    belongs to now: after a failover its replica, the new master, names the same shard."""
    await cluster.initialize()
    host, port = _host_port(shard)
    name = f"{host}:{port}"
    found = []
    for partition in range(partitions):
        nodes = cluster.nodes_manager.slots_cache.get(partition_slot(partition), [])
        if any(node.name == name for node in nodes):
            found.append(partition)
    if not found and not any(node.name == name for node in cluster.get_nodes()):
        raise ValueError(f"{shard} is no node of the cluster "
                         f"({', '.join(sorted(node.name for node in cluster.get_nodes()))})")
    return found


# -- durability -------------------------------------------------------------------------------
class Durability:
    """`--durability`: "none" (answer once the master ran the script) or "wait:N[:MS]" (each
    batch is followed, on the same connection, by WAIT N MS, and its calls are answered only
    once N replicas acknowledged; else they fail NotReplicated)."""

    def __init__(self, text: str = "none"):
        self.text = text
        self.replicas, self.timeout_ms = 0, 0
        if text == "none":
            return
        kind, _, rest = text.partition(":")
        replicas, _, timeout_ms = rest.partition(":")
        if kind != "wait" or not replicas.isdigit() or int(replicas) < 1 or (
                timeout_ms and not timeout_ms.isdigit()):
            raise ValueError(f"--durability {text!r}: 'none' or 'wait:N[:MS]' (N replicas "
                             "acknowledge each change within MS, default "
                             f"{constants.DURABILITY_WAIT_MS_DEFAULT})")
        self.replicas = int(replicas)
        self.timeout_ms = int(timeout_ms or constants.DURABILITY_WAIT_MS_DEFAULT)
        if not 0 < self.timeout_ms <= constants.REDIS_WAIT_S * 1000:
            raise ValueError(f"--durability {text!r}: MS must be within 1.."
                             f"{int(constants.REDIS_WAIT_S * 1000)}")

    def __bool__(self) -> bool:
        return self.replicas > 0


class DurableRunner:
    """A ScriptRunner whose calls are answered only after `replicas` replicas acknowledged
    them: the tick's calls, then WAIT on the same connection (Redis answers in order, so the
    WAIT covers every call written before it). A call sent again after NOSCRIPT runs after
    that WAIT: it waits for a WAIT of its own.

    WAIT blocks its connection until it returns. Once one comes back short (the master lost
    its replicas: a failover left it alone), calls are refused NotReplicated before they are
    sent, so they change nothing and do not queue behind WAITs that time out, until a WAIT
    without calls (a probe, sent when a call comes) finds the replicas again."""

    def __init__(self, runner: ScriptRunner, durability: Durability):
        assert durability and runner.raw, "WAIT needs the runner's own connection"
        self.runner, self.durability = runner, durability
        self.scripts, self.observer = runner.scripts, runner.observer
        self._tick: list[tuple[asyncio.Future, asyncio.Future]] = []
        self.short = False  # the last WAIT came back short: calls are refused
        self._waiting: asyncio.Future | None = None  # the WAIT on the connection
        self._next: list[tuple[asyncio.Future, asyncio.Future]] = []  # calls after it
        self._probe: asyncio.Future | None = None

    async def load(self) -> None:
        await self.runner.load()

    def call(self, name: str, keys_: Sequence[str], args: Sequence[str]) -> asyncio.Future:
        if self.short:
            return self._refused()
        inner = self.runner.call(name, keys_, args)
        outer = asyncio.get_running_loop().create_future()
        if not self._tick:
            asyncio.get_running_loop().call_soon(self._wait)  # after the runner's flush
        self._tick.append((inner, outer))
        return outer

    def _refused(self) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        future.set_exception(NotReplicated(
            f"the master has fewer than {self.durability.replicas} replicas in sync; the "
            "call was not sent (nothing changed)"))
        self.runner.observer.failed("not_replicated", 1)
        if self._probe is None or self._probe.done():
            self._probe = self.runner.command("WAIT", self.durability.replicas,
                                              self.durability.timeout_ms)
            self._probe.add_done_callback(self._probed)
        return future

    def _probed(self, probe: asyncio.Future) -> None:
        if probe.exception() is None and probe.result() >= self.durability.replicas:
            self.short = False

    def _wait(self) -> None:
        """The tick's calls are written; one WAIT after them, unless one is on the connection
        already: then the calls wait for the next, which is sent when it returns (WAITs that
        time out one after the other would add up)."""
        pairs, self._tick = self._tick, []
        if self._waiting is not None:
            self._next += pairs
            return
        self._waiting = self.runner.command("WAIT", self.durability.replicas,
                                            self.durability.timeout_ms)
        self._waiting.add_done_callback(functools.partial(self._settle, pairs))

    def _settle(self, pairs, wait: asyncio.Future) -> None:
        self._waiting = None
        self._answer_all(pairs, wait)
        if self._next:
            self._tick, self._next = self._tick + self._next, []
            self._wait()

    def _answer_all(self, pairs, wait: asyncio.Future) -> None:
        error = wait.exception()
        if error is None and wait.result() < self.durability.replicas:
            error = NotReplicated(f"{wait.result()} of {self.durability.replicas} replicas "
                                  f"acknowledged within {self.durability.timeout_ms} ms")
            self.runner.observer.failed("not_replicated", len(pairs))
            self.short = True
        for inner, outer in pairs:
            if not inner.done():  # sent again after NOSCRIPT: after this WAIT
                self._tick.append((inner, outer))
                if len(self._tick) == 1:
                    inner.add_done_callback(lambda _: self._wait())
                continue
            _answer(outer, inner, error)

    async def close(self) -> None:
        await self.runner.close()


def _answer(outer: asyncio.Future, inner: asyncio.Future, error: BaseException | None) -> None:
    own = inner.exception()  # retrieved even when nobody waits for it any more
    if outer.done():
        return
    if own is not None:
        outer.set_exception(own)
    elif error is not None:
        outer.set_exception(error)
    else:
        outer.set_result(inner.result())


# -- the slot-aware runner --------------------------------------------------------------------
class _Routed:
    """One script call on its way through the cluster: where it went, how often."""

    __slots__ = ("name", "keys", "args", "future", "slot", "queued_at", "redirects", "retries")

    def __init__(self, name, keys_, args, future, slot, queued_at):
        self.name, self.keys, self.args, self.future = name, keys_, args, future
        self.slot, self.queued_at = slot, queued_at
        self.redirects = self.retries = 0


class ClusterScriptRunner:
    """Runs scripts on Redis Cluster: one ScriptRunner (own connection, pipelined) per master,
    a tick's calls grouped by the master of their slot, redirects followed (module text).

    `observer_for(master)` gives each master's Observer (the gateway's metrics label it with
    the master's host:port); redirects and retries count there as failures of kind moved,
    ask, tryagain, clusterdown. `on_map_change(masters)` hears each refresh of the slot map
    that changed a slot's master (a failover, a resharding)."""

    def __init__(self, cluster: RedisCluster, observer_for: Callable[[str], Observer] = None,
                 durability: Durability | None = None,
                 on_map_change: Callable[[int], None] | None = None):
        self.cluster = cluster
        self.observer_for = observer_for or (lambda name: Observer())
        self.durability = durability or Durability()
        self.on_map_change = on_map_change or (lambda masters: None)
        self.observer = Observer()
        self._runners: dict[str, ScriptRunner | DurableRunner] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refresh: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._owners: dict[int, str] = {}  # slot -> master, as last seen (map changes)
        self._events: dict[str, int] = {}  # what happened since the last log line
        # Answers that ran nothing and were followed, by kind, since the runner started.
        self.redirects = {"moved": 0, "ask": 0, "tryagain": 0, "clusterdown": 0}
        self._logged_at = 0.0
        self.raw = True
        self.scripts = scripts()

    @property
    def calls_sent(self) -> int:
        return sum(_inner(runner).calls_sent for runner in self._runners.values())

    @property
    def batches_sent(self) -> int:
        return sum(_inner(runner).batches_sent for runner in self._runners.values())

    async def load(self) -> None:
        """Read the slot map, then load the scripts on every master."""
        await self.cluster.initialize()
        self._note_owners()
        for node in self.cluster.get_primaries():
            await self._runner(node).load()

    def _runner(self, node: ClusterNode) -> ScriptRunner | DurableRunner:
        runner = self._runners.get(node.name)
        if runner is None:
            client = aioredis.Redis(host=node.host, port=node.port,
                                    socket_timeout=constants.REDIS_WAIT_S,
                                    socket_connect_timeout=constants.REDIS_WAIT_S,
                                    **_node_kwargs(self.cluster))
            runner = ScriptRunner(client, observer=self.observer_for(node.name))
            if self.durability and not runner.raw:
                raise ValueError("--durability wait:N needs plain TCP to the masters (WAIT "
                                 "goes on the runner's own connection), not TLS")
            if self.durability:
                runner = DurableRunner(runner, self.durability)
            self._runners[node.name] = runner
        return runner

    def call(self, name: str, keys_: Sequence[str], args: Sequence[str]) -> asyncio.Future:
        """Queue one script call on the master of its slot; the future resolves to its reply."""
        loop = self._loop = asyncio.get_running_loop()
        routed = _Routed(name, keys_, args, loop.create_future(), slot_of_keys(keys_),
                         loop.time())
        self._send(routed)
        return routed.future

    def _send(self, routed: _Routed) -> None:
        try:
            node = self.cluster.nodes_manager.get_node_from_slot(routed.slot)
        except Exception as error:  # noqa: BLE001 - no master known for the slot now
            self._retry_later(routed, ShardUnavailable(f"no master for slot {routed.slot}: "
                                                       f"{error}"))
            return
        inner = self._runner(node).call(routed.name, routed.keys, routed.args)
        inner.add_done_callback(functools.partial(self._answered, routed, node))

    def _answered(self, routed: _Routed, node: ClusterNode, inner: asyncio.Future) -> None:
        error = inner.exception() if not inner.cancelled() else asyncio.CancelledError()
        if routed.future.done():  # the caller gave up: nothing is sent again
            return
        if error is None:
            routed.future.set_result(inner.result())
        elif isinstance(error, MovedError):
            self._count(node.name, "moved")
            self._redirect(routed, error)
        elif isinstance(error, AskError):
            # Never run on the importing node: a script's undeclared keys (holds, the
            # customer's paths) may still be on this one, and would read as missing there.
            # The call waits, like TRYAGAIN, for the slot to finish moving (then MOVED).
            self._count(node.name, "ask")
            self._retry_later(routed, error)
        elif isinstance(error, (TryAgainError, ClusterDownError)):
            self._count(node.name, error_kind(error))
            self._retry_later(routed, error)
        else:
            if isinstance(error, NotReplicated):
                self._note("not replicated " + node.name)
            elif isinstance(error, (RedisConnectionError, OSError)):
                self._note("connection " + node.name)
                self.refresh_map()
            routed.future.set_exception(error)

    def _redirect(self, routed: _Routed, error: MovedError) -> None:
        routed.redirects += 1
        if routed.redirects > REDIRECTS_MAX:
            routed.future.set_exception(ShardUnavailable(
                f"slot {routed.slot} redirected {REDIRECTS_MAX} times: {error}"))
            return
        self._track(self._move_and_send(routed, error))

    async def _move_and_send(self, routed: _Routed, error: MovedError) -> None:
        await self.cluster.nodes_manager.move_slot(error)
        self.refresh_map()  # the rest of the map may have moved too
        if not routed.future.done():
            self._send(routed)

    def _retry_later(self, routed: _Routed, error: Exception) -> None:
        """Send the call again after a pause, while REDIS_WAIT_S since it was queued lasts."""
        pause_s = RETRY_PAUSES_S[min(routed.retries, len(RETRY_PAUSES_S) - 1)]
        routed.retries += 1
        if isinstance(error, (ClusterDownError, ShardUnavailable)):
            self.refresh_map()
        if self._loop.time() + pause_s - routed.queued_at > constants.REDIS_WAIT_S:
            self._note("gave up")
            routed.future.set_exception(ShardUnavailable(
                f"slot {routed.slot} did not take the call within "
                f"{constants.REDIS_WAIT_S:g} s: {error}"))
            return
        self._loop.call_later(pause_s, self._send_if_waited_for, routed)

    def _send_if_waited_for(self, routed: _Routed) -> None:
        if not routed.future.done():
            self._send(routed)

    def _count(self, master: str, kind: str) -> None:
        self.redirects[kind] += 1
        self.observer_for(master).failed(kind, 1)
        self._note(kind)

    def _note(self, event: str) -> None:
        """Count an event; log what was counted at most once per LOG_INTERVAL_S."""
        self._events[event] = self._events.get(event, 0) + 1
        now = self._loop.time()
        if now - self._logged_at >= LOG_INTERVAL_S:
            self._logged_at = now
            events, self._events = self._events, {}
            log.warning("redis cluster: %s", ", ".join(
                f"{count} {name}" for name, count in sorted(events.items())),
                extra={"cluster_events": events})

    def refresh_map(self) -> None:
        """Read the slot map again, in the background, one refresh at a time."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._refresh_map())

    async def _refresh_map(self) -> None:
        try:
            await self.cluster.nodes_manager.initialize()
        except (RedisError, OSError) as error:
            self._note(f"map refresh failed ({type(error).__name__})")
        else:
            self._note_owners()
        await asyncio.sleep(MAP_REFRESH_INTERVAL_S_MIN)  # no refresh storm in an outage

    def _note_owners(self) -> None:
        slots = self.cluster.nodes_manager.slots_cache
        owners = {slot: nodes[0].name for slot, nodes in slots.items() if nodes}
        if self._owners and owners != self._owners:
            masters = len(set(owners.values()))
            self.on_map_change(masters)
            self._note("slot map changed")
        self._owners = owners

    def _track(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait for the calls in flight, then close every master's connection."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for runner in self._runners.values():
            await runner.close()
            await _inner(runner).redis.aclose()
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)


def _node_kwargs(cluster: RedisCluster) -> dict:
    """What a client of one master needs from the cluster client's settings: credentials, and
    TLS with its files (a TLS connection goes through redis-py's pipelines, not the runner's
    own connection)."""
    kwargs = cluster.nodes_manager.connection_kwargs
    found = {"username": kwargs.get("username"), "password": kwargs.get("password")}
    if kwargs.get("connection_class") is SSLConnection:
        found["ssl"] = True
        found.update((name, value) for name, value in kwargs.items()
                     if name.startswith("ssl_"))
    return found


def _inner(runner: ScriptRunner | DurableRunner) -> ScriptRunner:
    return runner.runner if isinstance(runner, DurableRunner) else runner


def runner_for(redis, observer_for: Callable[[str], Observer] | None = None,
               durability: Durability | None = None, **kwargs):
    """The script runner of a redis-py client: slot-aware on a cluster, else one Redis's
    (wrapped in DurableRunner for `durability`). `observer_for(server)` names each server's
    Observer ("" for one Redis); `on_map_change` is the cluster runner's; other `kwargs` go
    to the ScriptRunner of one Redis."""
    observer_for = observer_for or (lambda name: Observer())
    durability = durability or Durability()
    on_map_change = kwargs.pop("on_map_change", None)
    if is_cluster(redis):
        return ClusterScriptRunner(redis, observer_for, durability, on_map_change, **kwargs)
    runner = ScriptRunner(redis, observer=observer_for(""), **kwargs)
    if durability:
        if not runner.raw:
            raise ValueError("--durability wait:N needs a plain TCP or Unix-socket Redis "
                             "(the runner's own connection)")
        return DurableRunner(runner, durability)
    return runner
