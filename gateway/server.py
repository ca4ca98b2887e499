"""Build, run and drain the gateway: grpc.aio on uvloop, health and reflection, the sweeper.

SIGTERM drains: health answers NOT_SERVING at once while calls are still answered for
`drain_notice_s` (balancers and clients that watch health stop sending meanwhile), then the
server stops accepting calls, calls in flight finish (up to DRAIN_GRACE_S), and the process
exits 0.

Start-up is refused while Redis may evict keys (maxmemory-policy other than noeviction). It
is refused too without TLS files (gateway/tls.py, re-read when they change) unless `insecure`
asks for plaintext on a loopback address.

Readiness (the health service's "" and the two services) answers NOT_SERVING while Redis may
evict keys or cannot be reached, SERVING once neither holds; liveness (the "liveness" service
name) answers SERVING as long as the process serves. Metrics: gateway/metrics.py, on
`metrics_port` (a loopback address only: they carry no TLS), and under `--processes N` from
the supervisor, summed over its server processes.
`--processes N` replaces a server process that dies (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import multiprocessing
import multiprocessing.connection
import os
import pathlib
import resource
import signal
import socket
import sys
import time
import urllib.parse

import grpc
import msgspec
import redis.asyncio as aioredis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from creditgate.gateway import (
    callers,
    catalogs,
    errors,
    logs,
    metrics,
    registration,
    service,
    shadow,
    sweeper,
    tls,
)
from creditgate.gateway.context import Context
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import catalog
from creditgate.limits import cluster as limits_cluster
from creditgate.limits.client import LimitsClient
from creditgate.limits.clock import RedisClock
from creditgate.limits.constants import (
    CALLERS_CHECK_INTERVAL_S,
    CLOCK_SAMPLE_INTERVAL_S,
    DRAIN_GRACE_S,
    DRAIN_NOTICE_S,
    DRAIN_NOTICE_S_MAX,
    EVICTION_CHECK_INTERVAL_S,
    GRPC_CLIENT_PING_INTERVAL_MS_MIN,
    GRPC_CONCURRENT_RPCS_MAX,
    GRPC_CONNECTION_AGE_GRACE_MS,
    GRPC_CONNECTION_AGE_MS,
    GRPC_CONNECTION_IDLE_MS,
    GRPC_HANDSHAKE_TIMEOUT_MS,
    GRPC_KEEPALIVE_TIME_MS,
    GRPC_KEEPALIVE_TIMEOUT_MS,
    GRPC_MESSAGE_BYTES_MAX,
    GRPC_PENDING_CALLS_MAX,
    GRPC_RESPONSE_BYTES_MAX,
    GRPC_STREAMS_PER_CONNECTION_MAX,
    PARTITIONS_MAX,
    REDIS_CONNECTIONS_MAX,
    REDIS_PING_FAILURES_MAX,
    REDIS_PING_INTERVAL_S,
    REDIS_PING_TIMEOUT_S,
    REDIS_WAIT_S,
    RESTART_DELAY_S_MAX,
    RESTART_DELAY_S_MIN,
    RESTART_RESET_AFTER_S,
)

log = logging.getLogger("creditgate.gateway")

REDIS_PIPELINE_ENV = "CREDITGATE_REDIS_PIPELINE"
NOEVICTION = "noeviction"
# `serve` exits with this code when start-up is refused (a Redis that may evict keys).
EXIT_REFUSED = 3

SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["Authorization"].full_name,
    pb.DESCRIPTOR.services_by_name["Admin"].full_name,
)
# The health service name of liveness: SERVING while the process serves, whatever Redis does
# (readiness is "" and SERVICE_NAMES).
LIVENESS = "liveness"
# Why readiness is NOT_SERVING.
EVICTING, UNREACHABLE = "Redis may evict keys", "Redis unreachable"


class StartupRefused(RuntimeError):
    """A setting that makes serving unsafe: the process must not start."""


def server_options() -> list[tuple[str, int]]:
    """The gRPC server's channel arguments; docs/operations.md explains each value."""
    return [
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", GRPC_MESSAGE_BYTES_MAX),
        ("grpc.max_send_message_length", GRPC_RESPONSE_BYTES_MAX),
        # A burst on one connection reaches the server loop, which answers every call or
        # refuses it with RESOURCE_EXHAUSTED; gRPC core never cancels it for want of room.
        ("grpc.max_concurrent_streams", GRPC_STREAMS_PER_CONNECTION_MAX),
        ("grpc.server.max_pending_requests", GRPC_PENDING_CALLS_MAX),
        ("grpc.server.max_pending_requests_hard_limit", GRPC_PENDING_CALLS_MAX),
        # Idle, dead and never-finished connections are closed, each within a bound: a
        # connection that never completes its handshake holds a file descriptor, and a few
        # thousand of them would keep every new terminal out.
        ("grpc.server_handshake_timeout_ms", GRPC_HANDSHAKE_TIMEOUT_MS),
        ("grpc.max_connection_idle_ms", GRPC_CONNECTION_IDLE_MS),
        ("grpc.max_connection_age_ms", GRPC_CONNECTION_AGE_MS),
        ("grpc.max_connection_age_grace_ms", GRPC_CONNECTION_AGE_GRACE_MS),
        ("grpc.keepalive_time_ms", GRPC_KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", GRPC_KEEPALIVE_TIMEOUT_MS),
        # Terminals behind NAT ping between calls to keep their mapping: that is not abuse.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", GRPC_CLIENT_PING_INTERVAL_MS_MIN),
        # The server keeps pinging a quiet connection until the idle limit closes it.
        ("grpc.http2.max_pings_without_data", 0),
    ]


async def eviction_policy(redis: aioredis.Redis) -> str:
    """Redis's maxmemory-policy: CONFIG GET, or INFO memory where CONFIG is renamed or denied.
    On a cluster, every master's: the first that is not noeviction, if any."""
    if limits_cluster.is_cluster(redis):
        try:
            replies = await redis.config_get("maxmemory-policy",
                                             target_nodes=redis.PRIMARIES)
        except ResponseError:
            replies = {}
        policies = [next(iter(reply.values())) for reply in replies.values() if reply]
        policies = [p.decode() if isinstance(p, bytes) else str(p) for p in policies]
        if not policies:
            raise StartupRefused("cannot read the cluster masters' maxmemory-policy")
        return next((p for p in policies if p != NOEVICTION), NOEVICTION)
    try:
        reply = await redis.config_get("maxmemory-policy")
    except ResponseError:  # unknown command (renamed on managed Redis) or NOPERM (ACL)
        reply = {}
    if reply:
        value = next(iter(reply.values()))
    else:
        value = (await redis.info("memory")).get("maxmemory_policy")
    if value is None:
        raise StartupRefused("cannot read Redis maxmemory-policy (neither CONFIG GET nor INFO "
                             "memory reports it); creditgate needs to know that Redis never "
                             "evicts keys")
    return value.decode() if isinstance(value, bytes) else str(value)


def eviction_refusal(policy: str) -> str:
    """Why creditgate must not serve on a Redis with this policy (the start-up error)."""
    return (f"Redis maxmemory-policy is '{policy}', creditgate needs '{NOEVICTION}': a Redis "
            f"that evicts keys silently loses holds and customers (credit stays held with no "
            f"hold left to release it). Set `maxmemory-policy {NOEVICTION}` in the Redis "
            f"configuration (CONFIG SET maxmemory-policy {NOEVICTION}) and size maxmemory "
            f"for the data; a full Redis then refuses writes, which creditgate answers "
            f"RESOURCE_EXHAUSTED.")


async def refuse_evicting_redis(redis: aioredis.Redis) -> None:
    policy = await eviction_policy(redis)
    if policy != NOEVICTION:
        raise StartupRefused(eviction_refusal(policy))


class Config(msgspec.Struct, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 50051
    redis_url: str = "redis://127.0.0.1:6379/0"
    catalog_path: str = str(catalog.DEFAULT_CATALOG)
    partitions: int = 256
    processes: int = 1
    sweep: bool = True
    clock_offset_ms: int = 0  # tests only
    callers_path: str = ""  # the callers file (gateway/callers.py); required
    # TLS (gateway/tls.py): the server's certificate and key, and the CA that signs the
    # callers' certificates; re-read when they change. Without them, only `insecure` serves.
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    client_auth: str = "required"  # "required": mutual TLS; "none": callers use API keys
    insecure: bool = False  # plaintext, on a loopback address only
    # Prometheus metrics (gateway/metrics.py) on this port, 0 for none; a loopback host only.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    log_format: str = "json"  # of the processes of `--processes N` (gateway/logs.py)
    # Where the top process (the supervisor under --processes N) writes its pid while it runs:
    # `creditgate catalog reload --pid-file` signals it. Empty: none.
    pid_file: str = ""
    # "none", or "wait:N[:MS]": answer a call only once N replicas have its change
    # (limits/cluster.py Durability).
    durability: str = "none"
    # On a cluster: the sweeper sweeps only this shard's partitions (a node's host:port; ""
    # for every partition).
    shard: str = ""
    # On SIGTERM: NOT_SERVING, and calls still answered for this long before the port stops.
    drain_notice_s: float = DRAIN_NOTICE_S
    # A candidate catalog evaluated in shadow on this share of the authorizations (0..1;
    # gateway/shadow.py). Empty: none.
    shadow_catalog_path: str = ""
    shadow_share: float = 1.0


def _file_stamp(path: str) -> tuple[int, ...] | None:
    """What changes when a file is replaced or rewritten (None while it cannot be read)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def check_metrics(config: Config) -> None:
    """Metrics are served over plain HTTP, so on a loopback address only, as plaintext gRPC."""
    if not 0 <= config.metrics_port <= 65535:
        raise StartupRefused(f"--metrics-port must be within 0..65535, not {config.metrics_port}")
    if config.metrics_port and not callers.is_loopback(config.metrics_host):
        raise StartupRefused(f"--metrics-host {config.metrics_host} is not a loopback address: "
                             "metrics are served without TLS, on a loopback address only "
                             "(scrape them through a local agent or proxy)")


def check_drain_notice(config: Config) -> None:
    if not 0 <= config.drain_notice_s <= DRAIN_NOTICE_S_MAX:
        raise StartupRefused(f"--drain-notice-s must be within 0..{DRAIN_NOTICE_S_MAX:g}, not "
                             f"{config.drain_notice_s:g}")


def serve_metrics(start, host: str, port: int):
    """Start serving metrics (`start(host, port)`); a port that cannot be bound refuses
    start-up with the reason."""
    try:
        return start(host, port)
    except OSError as error:
        raise StartupRefused(f"cannot serve metrics on {host}:{port}: "
                             f"{error.strerror or error}") from None


def check_shadow(config: Config) -> None:
    """--shadow-share is a share, and the candidate catalog validates (CatalogError naming
    its file, product and field, as the live catalog's)."""
    if not 0.0 <= config.shadow_share <= 1.0:
        raise StartupRefused(f"--shadow-share must be within 0..1, not {config.shadow_share}")
    if config.shadow_catalog_path:
        catalog.load_catalog(config.shadow_catalog_path)


def check_redis_settings(config: Config) -> None:
    """--durability parses, and --shard names a shard of a cluster."""
    try:
        limits_cluster.Durability(config.durability)
        if limits_cluster.is_cluster_url(config.redis_url):
            limits_cluster.ClusterUrl(config.redis_url)
    except ValueError as error:
        raise StartupRefused(str(error)) from None
    if config.shard and not limits_cluster.is_cluster_url(config.redis_url):
        raise StartupRefused("--shard names a shard of a Redis Cluster: give a "
                             "redis+cluster:// URL")


def redis_client(url: str):
    """The gateway's redis-py client: a bounded pool that waits for a free connection rather
    than failing the batch; on a cluster, redis-py's RedisCluster (its pool per node)."""
    if limits_cluster.is_cluster_url(url):
        return limits_cluster.connect(url, socket_timeout=REDIS_WAIT_S,
                                      socket_connect_timeout=REDIS_WAIT_S)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=REDIS_CONNECTIONS_MAX, timeout=REDIS_WAIT_S,
        socket_timeout=REDIS_WAIT_S, socket_connect_timeout=REDIS_WAIT_S)
    return aioredis.Redis(connection_pool=pool)


def redis_server_name(url: str) -> str:
    """The Redis server of a URL as the metrics' `redis` label names it: host:port, or the
    Unix socket's path (never credentials); a cluster's first seed node."""
    if limits_cluster.is_cluster_url(url):
        host, port = limits_cluster.ClusterUrl(url).seeds[0]
        return f"{host}:{port}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def load_callers(config: Config) -> callers.Callers:
    """The callers file, validated (CallersError names file, caller and field)."""
    if not config.callers_path:
        raise StartupRefused("no callers file: give --callers FILE (README, \"Callers\"); "
                             "without one every call would be refused")
    return callers.load(config.callers_path)


def transport(config: Config) -> tls.CertificateFiles | None:
    """The port's TLS files, checked now; None for plaintext, which only `insecure` on a
    loopback address gets. Anything else refuses start-up: nothing serves in the clear by
    accident."""
    files = tls.TlsFiles(config.tls_cert, config.tls_key, config.tls_ca)
    if config.insecure:
        if any(files):
            raise StartupRefused("both --insecure and TLS files given: choose one")
        if not callers.is_loopback(config.host):
            raise StartupRefused(f"--insecure serves plaintext, which is allowed on a loopback "
                                 f"address only, not on {config.host}; give --tls-cert/"
                                 f"--tls-key/--tls-ca there")
        return None
    if not (files.cert and files.key):
        raise StartupRefused("no TLS configured: give --tls-cert/--tls-key/--tls-ca, or "
                             "--insecure on a loopback address")
    try:
        return tls.CertificateFiles(files, config.client_auth)
    except tls.TlsFilesError as error:
        raise StartupRefused(f"TLS: {error}") from None


class Gateway:
    """A started gateway: its gRPC server, Redis client, health servicer and sweeper."""

    def __init__(self, config: Config, serve_metrics: bool = True):
        """`serve_metrics`: serve this process's metrics on the metrics port; a server
        process of `--processes N` records them for its supervisor to serve instead."""
        if not 1 <= config.partitions <= PARTITIONS_MAX:
            raise ValueError(f"partitions must be within 1..{PARTITIONS_MAX}")
        self.config = config
        check_metrics(config)
        self.metrics = metrics.GatewayMetrics() if config.metrics_port else metrics.NO_METRICS
        self._serve_metrics = serve_metrics
        self.metrics_port = 0
        errors.redact_grpc_metadata_logs()
        # A bad catalog or callers file stops start-up before anything listens; without a
        # callers file every call would be refused, which is no way to start.
        self.catalog = catalog.load_catalog(config.catalog_path)
        log.info("catalog loaded: version %s, %d products from %s", self.catalog.version,
                 len(self.catalog.products), config.catalog_path,
                 extra={"products": len(self.catalog.products), "catalog": config.catalog_path,
                        "version": self.catalog.version})
        check_shadow(config)
        self.shadow = shadow.load(config.shadow_catalog_path, config.shadow_share,
                                  self.metrics.shadow) if config.shadow_catalog_path else None
        if self.shadow is not None:
            log.info("shadow catalog loaded: version %s, %d products from %s, on %g of the "
                     "authorizations", self.shadow.candidate.version,
                     len(self.shadow.candidate.products), config.shadow_catalog_path,
                     config.shadow_share, extra={"catalog": config.shadow_catalog_path,
                                                 "version": self.shadow.candidate.version})
        self.callers = load_callers(config)
        self.tls = transport(config)  # files that cannot be used stop start-up too
        check_redis_settings(config)
        self.redis = redis_client(config.redis_url)
        self.redis_server = redis_server_name(config.redis_url)
        # Readiness PINGs on a connection of its own, with a short timeout and no retries.
        self._ping = limits_cluster.connect(
            config.redis_url, socket_timeout=REDIS_PING_TIMEOUT_S,
            socket_connect_timeout=REDIS_PING_TIMEOUT_S, retry=Retry(NoBackoff(), 0),
            **({} if limits_cluster.is_cluster_url(config.redis_url)
               else {"single_connection_client": True}))
        # The runner's own pipelined connection (one per master on a cluster) unless
        # CREDITGATE_REDIS_PIPELINE=redis-py asks for redis-py's pipelines (the way before it;
        # bench/batch_rate.py --redis-py compares).
        raw = {} if limits_cluster.is_cluster(self.redis) else {
            "raw": False if os.environ.get(REDIS_PIPELINE_ENV) == "redis-py" else None}
        self.runner = limits_cluster.runner_for(
            self.redis, observer_for=lambda name: self.metrics.redis(name or self.redis_server),
            durability=limits_cluster.Durability(config.durability),
            on_map_change=self.metrics.cluster_map_changed, **raw)
        self.limits = LimitsClient(self.runner, config.partitions, config.clock_offset_ms)
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(maximum_concurrent_rpcs=GRPC_CONCURRENT_RPCS_MAX,
                                      options=server_options())
        self.port = 0
        self._sweeper: asyncio.Task | None = None
        self._eviction_watch: asyncio.Task | None = None
        # Admission's loop lag, the callers file, the clock's samples, Redis's reachability,
        # the metrics' flush.
        self._watches: list[asyncio.Task] = []
        self._not_ready: set[str] = set()  # why readiness is NOT_SERVING (EVICTING, ...)
        self.context: Context | None = None  # once started

    async def start(self) -> int:
        try:
            await refuse_evicting_redis(self.redis)
        except StartupRefused:
            await self.redis.aclose()
            await self._ping.aclose()
            raise
        await self.runner.load()
        context = self.context = Context(self.limits, self.catalog, self.callers,
                                         metrics=self.metrics)
        context.shadow = self.shadow
        await context.redis_clock.sample(self.redis.time)  # deadlines travel from the start
        self._start_metrics()
        registration.add_services(self.server, service.AuthorizationService(context),
                                  service.AdminService(context))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self.port = self._listen()
        await self.server.start()
        for name in ("", *SERVICE_NAMES, LIVENESS):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.config.sweep:
            self._sweeper = asyncio.create_task(sweeper.sweep_forever(
                self.limits, counter=self.metrics.sweeper_released,
                partitions_now=self._shard_partitions if self.config.shard else None))
        self._eviction_watch = asyncio.create_task(self._watch_eviction_policy())
        self._watches = [asyncio.create_task(context.admission.watch_loop_lag()),
                         asyncio.create_task(self._watch_callers_file()),
                         asyncio.create_task(self._sample_clock(context.redis_clock)),
                         asyncio.create_task(self._watch_redis()),
                         asyncio.create_task(self.metrics.flush_forever(context.admission))]
        return self.port

    def reload_catalog(self) -> None:
        """SIGHUP: load the catalog file again (gateway/catalogs.py). The calls that start
        after this take the new version; a file that does not validate leaves the old one."""
        if self.context is None:
            log.warning("SIGHUP before the gateway started: the catalog is read at start")
            return
        self._reload_shadow()
        current = self.context.catalog
        live = catalogs.reload(self.config.catalog_path, current)
        if live is current:
            self.metrics.catalog_reload("refused")
            return
        self.context.catalog = live
        self.metrics.catalog(live.version, current.version)
        self.metrics.catalog_reload("reloaded")

    def _reload_shadow(self) -> None:
        """SIGHUP reloads the shadow catalog too; one that does not validate stays out, and
        the candidate in force stays."""
        current = self.context.shadow
        if current is None:
            return
        replaced = shadow.reload(current, self.metrics.shadow)
        if replaced is not current:
            self.context.shadow = replaced
            self.metrics.shadow_catalog(replaced.candidate.version, current.candidate.version)

    async def _shard_partitions(self) -> list[int]:
        """The partitions of `--shard` now (they follow failovers and resharding)."""
        return await limits_cluster.shard_partitions(self.redis, self.config.shard,
                                                     self.config.partitions)

    def _start_metrics(self) -> None:
        """The facts metrics show from the start, and their port (before the gRPC port: a
        metrics port that cannot be bound stops start-up before any call is taken)."""
        self.metrics.catalog(self.catalog.version)
        if self.shadow is not None:
            self.metrics.shadow_catalog(self.shadow.candidate.version)
        self.metrics.redis_up(self.redis_server, True)  # start() just reached it
        if self._serve_metrics:
            self.metrics_port = serve_metrics(self.metrics.serve, self.config.metrics_host,
                                              self.config.metrics_port)
            if self.metrics_port:
                log.info("metrics on http://%s:%d/metrics", _bracketed(self.config.metrics_host),
                         self.metrics_port)

    def _listen(self) -> int:
        """Bind the port: TLS with the configured files, or plaintext (`insecure`, loopback
        only), saying which in the log."""
        address = f"{_bracketed(self.config.host)}:{self.config.port}"
        if self.tls is None:
            port = self.server.add_insecure_port(address)
        else:
            port = self.server.add_secure_port(address, self.tls.credentials())
        if not port:
            raise OSError(f"cannot listen on {address}")
        if self.tls is None:
            log.warning("serving PLAINTEXT on %s:%d (--insecure, loopback only): no TLS; "
                        "calls without an API key are the %s caller", self.config.host, port,
                        callers.LOOPBACK_IDENTITY)
        else:
            log.info("serving TLS on %s:%d, client certificates %s; %s", self.config.host,
                     port, self.config.client_auth, self.tls.current.summary)
        return port

    async def _watch_callers_file(self) -> None:
        """Reload the callers file when it changes, so a caller is added, changed or revoked
        without a restart: the next call of every connection, open ones included, is judged by
        the new file. A file that does not validate is refused and the old one stays in force;
        one log line per change either way, none per check."""
        path = self.config.callers_path
        seen = _file_stamp(path)
        while True:
            await asyncio.sleep(CALLERS_CHECK_INTERVAL_S)
            stamp = _file_stamp(path)
            if stamp == seen:
                continue
            seen = stamp
            try:
                found = callers.load(path)
            except callers.CallersError as error:
                log.error("callers file NOT reloaded, the previous one stays in force: %s",
                          error)
                continue
            self.context.callers = found
            log.warning("callers file reloaded: %d callers", len(found.by_name))

    async def _sample_clock(self, clock: RedisClock) -> None:
        """Keep the offset to Redis' clock fresh; a failed sample keeps the last ones."""
        while True:
            await asyncio.sleep(CLOCK_SAMPLE_INTERVAL_S)
            try:
                await clock.sample(self.redis.time)
            except (RedisError, OSError):
                continue  # an unreachable Redis shows in the calls' statuses

    async def _watch_eviction_policy(self) -> None:
        """Readiness follows Redis's eviction policy: NOT_SERVING while Redis may evict keys,
        SERVING again once it may not. One log line per change, none per check."""
        evicting = False  # start() refused an evicting Redis
        unreadable = False
        while True:
            await asyncio.sleep(EVICTION_CHECK_INTERVAL_S)
            try:
                policy = await eviction_policy(self.redis)
            except (RedisError, OSError, StartupRefused) as error:
                # Readiness is left as it is: an unreachable Redis shows in the calls' statuses.
                if not unreadable:
                    log.warning("cannot read Redis maxmemory-policy: %s", type(error).__name__)
                unreadable = True
                continue
            unreadable = False
            if (policy != NOEVICTION) == evicting:
                continue
            evicting = policy != NOEVICTION
            if evicting:
                log.error("NOT_SERVING: %s", eviction_refusal(policy))
                await self._set_ready(EVICTING, False)
            elif await self._set_ready(EVICTING, True):
                log.warning("SERVING again: Redis maxmemory-policy is %s", NOEVICTION)
            else:
                log.warning("Redis maxmemory-policy is %s again; still NOT_SERVING: %s",
                            NOEVICTION, ", ".join(sorted(self._not_ready)))

    async def _watch_redis(self) -> None:
        """Readiness follows Redis's reachability: a PING every REDIS_PING_INTERVAL_S, given up
        after REDIS_PING_TIMEOUT_S; NOT_SERVING after REDIS_PING_FAILURES_MAX failures in a
        row, SERVING again after one success (creditgate_redis_up shows the same). One log
        line per change, none per check or per failed call."""
        failures = 0
        while True:
            await asyncio.sleep(REDIS_PING_INTERVAL_S)
            try:
                await asyncio.wait_for(self._ping.ping(), 2 * REDIS_PING_TIMEOUT_S)
            except (RedisError, OSError, TimeoutError) as error:
                failures += 1
                if failures == REDIS_PING_FAILURES_MAX:
                    log.error("NOT_SERVING: Redis at %s unreachable, %d PINGs failed in a row "
                              "(%s)", self.redis_server, failures, type(error).__name__)
                    self.metrics.redis_up(self.redis_server, False)
                    await self._set_ready(UNREACHABLE, False)
                continue
            if failures >= REDIS_PING_FAILURES_MAX:
                self.metrics.redis_up(self.redis_server, True)
                if await self._set_ready(UNREACHABLE, True):
                    log.warning("SERVING again: Redis at %s answers", self.redis_server)
                else:
                    log.warning("Redis at %s answers again; still NOT_SERVING: %s",
                                self.redis_server, ", ".join(sorted(self._not_ready)))
            failures = 0

    async def _set_ready(self, reason: str, ready: bool) -> bool:
        """Readiness is SERVING while no reason holds (EVICTING, UNREACHABLE): a watch says
        whether its reason holds, the health service changes when the outcome does, and the
        outcome is returned (True: SERVING)."""
        before = not self._not_ready
        if ready:
            self._not_ready.discard(reason)
        else:
            self._not_ready.add(reason)
        after = not self._not_ready
        if after != before:
            status = health_pb2.HealthCheckResponse.SERVING if after else \
                health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", *SERVICE_NAMES):
                await self.health.set(name, status)
        return after

    async def stop(self, grace_s: float = DRAIN_GRACE_S, notice_s: float = 0.0) -> None:
        """Drain: NOT_SERVING first, calls still answered for `notice_s`, then the port stops
        taking calls, the calls in flight finish (up to `grace_s`), and everything closes.

        The notice is what lets a rolling restart fail no call: gRPC answers CANCELLED, not
        UNAVAILABLE, to a call that reaches the server once it stops (and to one it had taken
        in but not yet handed to the application), so callers must have stopped sending first.
        Balancers and gRPC clients with health checking do so on NOT_SERVING."""
        await self.health.enter_graceful_shutdown()
        if notice_s > 0:
            await asyncio.sleep(notice_s)
        for task in (self._sweeper, self._eviction_watch, *self._watches):
            if task:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.server.stop(grace_s)
        await self.runner.close()
        if self.context.shadow is not None:
            self.context.shadow.close()  # the last interval's differences
        await self.redis.aclose()
        await self._ping.aclose()
        self.metrics.flush(self.context.admission)
        self.metrics.close()


async def _stop_when_orphaned(parent_pid: int, stopping: asyncio.Event) -> None:
    """A server process of `--processes N` drains if its parent dies without telling it."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)
    log.warning("parent process %d is gone; draining", parent_pid)
    stopping.set()


@contextlib.contextmanager
def pid_file(path: str):
    """This process's pid in `path` while it runs (nothing for an empty path)."""
    if not path:
        yield
        return
    written = pathlib.Path(path)
    written.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if written.read_text().split() == [str(os.getpid())]:
                written.unlink()


def raise_open_files_limit() -> None:
    """Every connection holds a file descriptor: allow as many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(config: Config, parent_pid: int | None = None) -> int:
    # A server process of `--processes N` leaves serving metrics to its supervisor.
    gateway = Gateway(config, serve_metrics=parent_pid is None)
    # Handlers first: a SIGTERM that arrives while the gateway starts drains it once started.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    # SIGHUP reloads the catalog; it never stops the gateway (TLS and callers files are
    # reloaded when they change, by themselves).
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_catalog)
    port = await gateway.start()
    log.info("creditgate listening on %s:%d (redis %s, %d partitions, catalog %s)",
             config.host, port, logs.redacted_url(config.redis_url), config.partitions,
             config.catalog_path, extra=_configuration(config, port))
    if parent_pid is not None:
        orphan_watch = asyncio.create_task(_stop_when_orphaned(parent_pid, stopping))
    await stopping.wait()
    if parent_pid is not None:
        orphan_watch.cancel()
    log.info("draining: health NOT_SERVING, calls answered for %.1f s more, then calls in "
             "flight get up to %.0f s", config.drain_notice_s, DRAIN_GRACE_S)
    await gateway.stop(notice_s=config.drain_notice_s)
    log.info("stopped")
    return 0


def _configuration(config: Config, port: int) -> dict[str, object]:
    """The start line's fields: what a reader of the log needs to know this process by. No
    URL keeps its credentials, and no file's content is named (paths only)."""
    return {"host": config.host, "port": port, "redis": logs.redacted_url(config.redis_url),
            "partitions": config.partitions, "processes": config.processes,
            "catalog": config.catalog_path, "callers": config.callers_path,
            "tls": "off" if config.insecure else f"client certificates {config.client_auth}",
            "sweeper": config.sweep, "durability": config.durability,
            "shard": config.shard or "all", "drain_notice_s": config.drain_notice_s}


def run(config: Config, parent_pid: int | None = None) -> int:
    """Run in this process, or in `processes` processes sharing the port (SO_REUSEPORT)."""
    import uvloop

    raise_open_files_limit()
    try:
        # The configuration first, once (a bad catalog or callers file, TLS files that cannot
        # be used, plaintext not on loopback): its message is the one a user needs, whatever
        # else is wrong.
        catalog.load(config.catalog_path)
        check_shadow(config)
        load_callers(config)
        transport(config)
        check_metrics(config)
        check_redis_settings(config)
        check_drain_notice(config)
        if parent_pid is None:
            refuse_port_in_use(config.host, config.port)
        with pid_file(config.pid_file if parent_pid is None else ""):
            if config.processes <= 1:
                return uvloop.run(serve(config, parent_pid))
            if config.port == 0:
                raise ValueError("--processes needs a fixed --port")
            uvloop.run(_refuse_evicting_redis_at(config.redis_url))  # and an evicting Redis
            return Supervisor(config).run()
    except StartupRefused as error:
        print(f"creditgate: start-up refused: {error}", file=sys.stderr)
        return EXIT_REFUSED
    except RedisError as error:  # unreachable, or the user may not read what start-up needs
        print(f"creditgate: start-up refused: cannot use Redis at "
              f"{logs.redacted_url(config.redis_url)}: {type(error).__name__}: "
              f"{str(error)[:200]}", file=sys.stderr)
        return EXIT_REFUSED


def _bracketed(host: str) -> str:
    """An IPv6 address as gRPC's "host:port" needs it ([::1])."""
    bare = host.strip("[]")
    return f"[{bare}]" if ":" in bare else host


def refuse_port_in_use(host: str, port: int) -> None:
    """Refuse to start where another server already listens: SO_REUSEPORT would let this one
    join it silently and take a share of its calls (with another Redis or partition count,
    customers would have two states). The probe binds without SO_REUSEPORT, which any
    listener on the port refuses."""
    if port == 0:
        return
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT only
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise StartupRefused(f"{host}:{port} is already in use by another server; a "
                                     "second creditgate there would silently share its "
                                     "calls") from None
            raise


async def _refuse_evicting_redis_at(url: str) -> None:
    redis = limits_cluster.connect(url, socket_timeout=REDIS_WAIT_S,
                                   socket_connect_timeout=REDIS_WAIT_S)
    try:
        await refuse_evicting_redis(redis)
    finally:
        await redis.aclose()


class RestartDelay:
    """How long a slot of `--processes N` waits before replacing its dead server process: not
    at all the first time, then from RESTART_DELAY_S_MIN doubling to RESTART_DELAY_S_MAX while
    replacements keep dying; a process that lived RESTART_RESET_AFTER_S starts over."""

    def __init__(self) -> None:
        self.delay_s = 0.0

    def after_death(self, lived_s: float) -> float:
        if lived_s >= RESTART_RESET_AFTER_S:
            self.delay_s = 0.0
        delay_s = self.delay_s
        self.delay_s = min(RESTART_DELAY_S_MAX, max(RESTART_DELAY_S_MIN, 2 * self.delay_s))
        return delay_s


class _Slot:
    def __init__(self) -> None:
        self.process: multiprocessing.process.BaseProcess | None = None
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.delay = RestartDelay()


class Supervisor:
    """The parent of `--processes N`. It replaces a server process that ends while the
    parent is not stopping (killed, crashed, or stopped on its own), with back-off; SIGTERM or
    SIGINT to the parent drains every process and replaces none."""

    def __init__(self, config: Config):
        self._config = msgspec.to_builtins(config)
        self._spawn = multiprocessing.get_context("spawn")
        self._slots = [_Slot() for _ in range(config.processes)]
        self._stopping = False
        self._exit_codes: list[int] = []
        self._metrics: metrics.MultiprocessView | metrics.NoView = metrics.NoView()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._hangup)
        # Before any server process starts: they inherit where to write their metrics.
        host, port = self._config["metrics_host"], self._config["metrics_port"]
        self._metrics = serve_metrics(metrics.multiprocess_view, host, port)
        if port:
            log.info("metrics of the %d server processes on http://%s:%d/metrics",
                     len(self._slots), _bracketed(host), self._metrics.port)
        try:
            for slot in self._slots:
                self._start(slot)
            while any(slot.process or slot.restart_at is not None for slot in self._slots):
                self._wait()
                self._reap()
                self._restart_due()
        finally:
            self._metrics.close()
        return max(self._exit_codes, default=0)

    def _hangup(self, _signum, _frame) -> None:
        """SIGHUP: every server process reloads the catalog (a process started later reads
        the file anyway)."""
        live = [slot.process for slot in self._slots
                if slot.process is not None and slot.process.is_alive()]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGHUP)
        log.info("SIGHUP passed to %d server processes: each reloads the catalog", len(live))

    def _stop(self, _signum, _frame) -> None:
        self._stopping = True
        for slot in self._slots:
            slot.restart_at = None
            if slot.process and slot.process.is_alive():
                slot.process.terminate()  # SIGTERM: the process drains

    def _start(self, slot: _Slot) -> None:
        process = self._spawn.Process(target=_child, args=(self._config,), daemon=False)
        process.start()
        slot.process, slot.started_at = process, time.monotonic()
        if self._stopping:  # a signal arrived while it started
            process.terminate()

    def _wait(self) -> None:
        """Until a process exits, a replacement is due, or a second passes (signals)."""
        sentinels = [slot.process.sentinel for slot in self._slots if slot.process]
        due = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        timeout_s = min([1.0, *(at - time.monotonic() for at in due)])
        multiprocessing.connection.wait(sentinels, max(0.0, timeout_s))

    def _reap(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.process is None or slot.process.is_alive():
                continue
            process, slot.process = slot.process, None
            code = process.exitcode
            self._metrics.process_ended(process.pid)
            if self._stopping:
                # Our SIGTERM can reach a process before it handles signals: it had nothing
                # to drain, so it stopped as asked.
                stopped = code == -signal.SIGTERM
                self._exit_codes.append(0 if stopped else code if code >= 0 else 128 - code)
                continue
            # Any other end is replaced, a clean exit too (a process told to stop on its own):
            # capacity never halves silently.
            lived_s = now - slot.started_at
            delay_s = slot.delay.after_death(lived_s)
            slot.restart_at = now + delay_s
            log.warning("server process %d ended (%s) after %.1f s; replacing it in %.1f s",
                        process.pid, _ending(code), lived_s, delay_s)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if not self._stopping and slot.restart_at is not None and slot.restart_at <= now:
                slot.restart_at = None
                self._start(slot)


def _ending(exit_code: int) -> str:
    """How a process ended: its exit code, or the signal that killed it."""
    if exit_code >= 0:
        return f"exit code {exit_code}"
    names = {number.value: number.name for number in signal.Signals}
    return f"signal {names.get(-exit_code, -exit_code)}"


def _child(config: dict) -> None:
    logs.setup(config["log_format"])
    sys.exit(run(Config(**{**config, "processes": 1}), parent_pid=os.getppid()))
