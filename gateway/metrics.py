"""The gateway's Prometheus metrics, through prometheus_client: every definition in one place.

Cheap on the hot path. A call, a decision and a script batch only add to plain numbers of the
process (an int, a bucket found by bisection), and a task of the event loop moves them into
prometheus_client's metrics every METRICS_FLUSH_INTERVAL_S: one write per label set that
changed, however many calls changed it. That matters most in multiprocess mode, where each
write into prometheus_client is a write into a memory-mapped file under a lock. So a scrape
sees a process's calls at most METRICS_FLUSH_INTERVAL_S late; in-flight calls and the
admission limit are sampled at the same moment. Rarer events (Redis errors, sweeper releases,
Redis reachability) are written when they happen.

Off (`--metrics-port 0`): NO_METRICS, whose parts record nothing, so instrumented code calls
them without asking whether metrics are on.

`serve --processes N` (MultiprocessView): the supervisor makes a private folder and puts it in
PROMETHEUS_MULTIPROC_DIR before it starts its server processes, which then write their values
into files there (prometheus_client's multiprocess mode); the supervisor serves the sum of
them on the metrics port and removes a dead process's live gauges. Counters keep a dead
process's counts, so totals never go down when a process is replaced. prometheus_client keeps
no exemplars in multiprocess mode; a single process adds the request id (and trace id) of a
recent call to each bucket of the call-duration histogram.

Labels are bounded: methods, status names, decline reasons, the catalog's products, channels,
scripts, error kinds and the Redis servers a gateway talks to. Never a customer or hold id.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import operator
import os
import platform
import shutil
import tempfile
import time
from collections import _count_elements  # Counter.update's C loop, without its Mapping check
from importlib import metadata

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.samples import Exemplar

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits.constants import BATCH_SIZE_MAX, METRICS_FLUSH_INTERVAL_S
from creditgate.limits.reasons import DeclineReason
from creditgate.limits.transport import Observer

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Call durations: fine between 0.5 and 50 ms, where p50, p99 and p99.9 of a healthy gateway
# fall, then coarse up to the deadlines callers give.
DURATION_BUCKETS_S = (0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005,
                      0.006, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
                      0.075, 0.1, 0.25, 0.5, 1.0, 2.0)
ROUND_TRIP_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
                        0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, BATCH_SIZE_MAX)
assert tuple(sorted(set(BATCH_SIZE_BUCKETS))) == BATCH_SIZE_BUCKETS

REASON_LABELS = {int(reason): "approved" if reason == DeclineReason.NONE else reason.name.lower()
                 for reason in DeclineReason}
CHANNEL_LABELS = {number: name.removeprefix("CHANNEL_").lower()
                  for name, number in pb.Channel.items()}
UNKNOWN = "unknown"
_SCRIPT = operator.attrgetter("script")

# The gateway's series carry no `_created` companions: they would double the series for
# nothing a dashboard reads (and multiprocess mode has none).
prometheus_client.disable_created_metrics()


class _Histogram(Histogram):
    """A Histogram that also takes many observations at once: a flush's counts per bucket
    (not cumulative, as the Histogram keeps them) and their sum, and a bucket's exemplar.
    prometheus_client has no public call for either; this is the one place that reaches
    into its buckets (tests/gateway/test_metrics.py fails if they change)."""

    def add(self, counts: list[int], total: float) -> None:
        self._sum.inc(total)
        for bucket, count in zip(self._buckets, counts, strict=True):
            if count:
                bucket.inc(count)

    def exemplar(self, index: int, labels: dict[str, str], value: float) -> None:
        self._buckets[index].set_exemplar(Exemplar(labels, value, time.time()))


class _Observed:
    """One histogram child's observations since the last flush: a count per bucket (the last
    one past every bound) and their sum."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: _Histogram, bounds: tuple[float, ...]):
        self.child, self.bounds = child, bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def flush(self) -> None:
        counts = self.counts
        if any(counts):
            self.counts = [0] * len(counts)
            total, self.total = self.total, 0.0
            self.child.add(counts, total)


class _Nothing:
    """A part of the metrics that records nothing (metrics are off): a method's calls, the
    decisions, a counter."""

    __slots__ = ()

    def answered(self, seconds: float, request_id: str, trace_id: str) -> None:
        return None

    def ended(self, code: str, seconds: float, request_id: str, trace_id: str) -> None:
        return None

    def shed(self, cause: str) -> None:
        return None

    def decided(self, result, request, in_catalog: bool = True) -> None:
        return None

    def inc(self, amount: float = 1) -> None:
        return None

    def compared(self, result: str, product: str, kind: str) -> None:
        return None


NOTHING = _Nothing()


class CallMetrics:
    """One method's calls since the last flush: how each ended (gRPC status), how long each
    took from the wrapper's start to its answer, and the calls shed (by cause)."""

    __slots__ = ("method", "ok", "codes", "shed_causes", "duration", "exemplars", "_metrics")

    def __init__(self, metrics: GatewayMetrics, method: str):
        self.method, self._metrics = method, metrics
        self.ok = 0
        self.codes: dict[str, int] = {}
        self.shed_causes: dict[str, int] = {}
        self.duration = _Observed(metrics.call_duration.labels(method), DURATION_BUCKETS_S)
        # Per bucket: the last call's (request id, trace id, duration), kept only where
        # prometheus_client can show exemplars (a single process).
        self.exemplars: list | None = [None] * len(self.duration.counts) \
            if metrics.exemplars else None

    def answered(self, seconds: float, request_id: str, trace_id: str) -> None:
        self.ok += 1
        self.observe(seconds, request_id, trace_id)

    def ended(self, code: str, seconds: float, request_id: str, trace_id: str) -> None:
        """A call that ended with status `code` (not OK)."""
        self.codes[code] = self.codes.get(code, 0) + 1
        self.observe(seconds, request_id, trace_id)

    def shed(self, cause: str) -> None:
        """A call refused before any work: `admission`, `quota` or `late`."""
        self.shed_causes[cause] = self.shed_causes.get(cause, 0) + 1

    def observe(self, seconds: float, request_id: str, trace_id: str) -> None:
        duration = self.duration
        index = bisect.bisect_left(duration.bounds, seconds)
        duration.counts[index] += 1
        duration.total += seconds
        if self.exemplars is not None:
            self.exemplars[index] = (request_id, trace_id, seconds)

    def flush(self) -> None:
        metrics, method = self._metrics, self.method
        ok, self.ok = self.ok, 0
        if ok:
            metrics.calls.labels(method, grpc.StatusCode.OK.name).inc(ok)
        codes, self.codes = self.codes, {}
        for code, count in codes.items():
            metrics.calls.labels(method, code).inc(count)
        causes, self.shed_causes = self.shed_causes, {}
        for cause, count in causes.items():
            metrics.shed.labels(method, cause).inc(count)
        self.duration.flush()
        if self.exemplars is not None:
            self._flush_exemplars()

    def _flush_exemplars(self) -> None:
        for index, exemplar in enumerate(self.exemplars):
            if exemplar is not None:
                request_id, trace_id, seconds = exemplar
                labels = {"request_id": request_id, **({"trace_id": trace_id} if trace_id
                                                       else {})}
                self.duration.child.exemplar(index, labels, seconds)
        self.exemplars = [None] * len(self.exemplars)


class Decisions:
    """Authorize and AuthorizeBatch items decided since the last flush, by (decline reason
    number, product, channel number): how many, and the minor units approved."""

    __slots__ = ("counts", "_metrics")

    def __init__(self, metrics: GatewayMetrics):
        self._metrics = metrics
        self.counts: dict[tuple[int, str, int], list[int]] = {}

    def decided(self, result, request, in_catalog: bool = True) -> None:
        """One decision: the reserve script's decoded reply, and the request it answers.
        `in_catalog` False: its product is not in the catalog in force (a decision replayed
        for a retry, gateway/authorize.py, whose product id may be any well-formed text: a
        tombstoned key answers every payload), counted as `unknown` to keep labels bounded."""
        key = (result.reason, request.product_id if in_catalog else UNKNOWN, request.channel)
        entry = self.counts.get(key)
        if entry is None:
            self.counts[key] = [1, result.approved_amount_minor]
        else:
            entry[0] += 1
            entry[1] += result.approved_amount_minor

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        metrics = self._metrics
        for (reason, product, channel), (count, amount_minor) in counts.items():
            channel_label = CHANNEL_LABELS.get(channel, UNKNOWN)
            metrics.decisions_total.labels(REASON_LABELS.get(reason, UNKNOWN), product,
                                     channel_label).inc(count)
            if amount_minor:
                metrics.approved_amount.labels(product, channel_label).inc(amount_minor)


class ShadowCounts:
    """The shadow catalog's comparisons since the last flush (gateway/shadow.py): calls by
    result (same, differs, skipped), differences by (product, kind)."""

    __slots__ = ("results", "differences", "_metrics")

    def __init__(self, metrics: GatewayMetrics):
        self._metrics = metrics
        self.results: dict[str, int] = {}
        self.differences: dict[tuple[str, str], int] = {}

    def compared(self, result: str, product: str, kind: str) -> None:
        self.results[result] = self.results.get(result, 0) + 1
        if kind:
            self.differences[product, kind] = self.differences.get((product, kind), 0) + 1

    def flush(self) -> None:
        results, self.results = self.results, {}
        for result, count in results.items():
            self._metrics.shadow_calls.labels(result).inc(count)
        differences, self.differences = self.differences, {}
        for (product, kind), count in differences.items():
            self._metrics.shadow_differences.labels(product, kind).inc(count)


class RedisMetrics(Observer):
    """What one ScriptRunner tells about its Redis server (labelled `redis`): script calls by
    script, each batch's size and round trip since the last flush; errors as they happen."""

    def __init__(self, metrics: GatewayMetrics, server: str):
        self.server, self._metrics = server, metrics
        # By script (the runner's LoadedScript): counted in C, named at the flush.
        self.scripts: collections.Counter = collections.Counter()
        self.batch_size = _Observed(metrics.batch_size.labels(server), BATCH_SIZE_BUCKETS)
        self.round_trip = _Observed(metrics.round_trip.labels(server), ROUND_TRIP_BUCKETS_S)

    def sent(self, calls) -> None:
        self.batch_size.observe(len(calls))
        _count_elements(self.scripts, map(_SCRIPT, calls))

    def answered(self, round_trip_s: float) -> None:
        self.round_trip.observe(round_trip_s)

    def failed(self, kind: str, calls: int) -> None:
        self._metrics.redis_errors.labels(self.server, kind).inc(calls)

    def flush(self) -> None:
        scripts, self.scripts = self.scripts, collections.Counter()
        for script, count in scripts.items():
            self._metrics.script_calls.labels(self.server, script.name).inc(count)
        self.batch_size.flush()
        self.round_trip.flush()


class GatewayMetrics:
    """Every metric of one gateway process, registered in `registry`."""


    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        # prometheus_client shows exemplars only outside multiprocess mode.
        self.exemplars = MULTIPROC_DIR_ENV not in os.environ
        self._define_calls()
        self._define_redis()
        self._define_state()
        self.decisions = Decisions(self)
        self.shadow = ShadowCounts(self)
        self._methods: dict[str, CallMetrics] = {}
        self._servers: dict[str, RedisMetrics] = {}
        self.build_info.labels(_version(), platform.python_version(), grpc.__version__).set(1)
        self._http: tuple | None = None

    def _define_calls(self) -> None:
        r = self.registry
        self.calls = Counter(
            "creditgate_calls_total", "Calls answered, by method and gRPC status name.",
            ["method", "code"], registry=r)
        self.call_duration = _Histogram(
            "creditgate_call_duration_seconds", "From the gateway's wrapper taking a call to "
            "its answer or refusal, by method.", ["method"], registry=r,
            buckets=DURATION_BUCKETS_S)
        self.decisions_total = Counter(
            "creditgate_decisions_total", "Authorize and AuthorizeBatch items decided, by "
            "reason (approved, or the decline reason), product and channel.",
            ["reason", "product", "channel"], registry=r)
        self.approved_amount = Counter(
            "creditgate_approved_amount_minor_total", "Minor units approved (held), by "
            "product and channel.", ["product", "channel"], registry=r)
        self.shed = Counter(
            "creditgate_shed_calls_total", "Calls refused before any work, by method and "
            "cause: admission (the process's limit), quota (the caller's rate), late (the "
            "deadline passed before the call started).", ["method", "cause"], registry=r)

    def _define_redis(self) -> None:
        r = self.registry
        self.script_calls = Counter(
            "creditgate_script_calls_total", "Script calls sent to Redis, by server and "
            "script.", ["redis", "script"], registry=r)
        self.round_trip = _Histogram(
            "creditgate_redis_round_trip_seconds", "One pipelined batch of script calls, "
            "from writing it to its last reply, by server.", ["redis"], registry=r,
            buckets=ROUND_TRIP_BUCKETS_S)
        self.batch_size = _Histogram(
            "creditgate_redis_batch_size", "Script calls per pipelined batch, by server.",
            ["redis"], registry=r, buckets=BATCH_SIZE_BUCKETS)
        self.redis_errors = Counter(
            "creditgate_redis_errors_total", "Script calls that met a Redis error, by server "
            "and kind (connection, timeout, loading, readonly, out_of_memory, noscript, "
            "reply, other; on a cluster also moved, ask, tryagain, clusterdown, by the "
            "master that answered, and not_replicated under --durability wait:N).",
            ["redis", "kind"], registry=r)
        self.cluster_map_changes = Counter(
            "creditgate_redis_cluster_map_changes_total", "Refreshes of the Redis Cluster "
            "slot map that found a slot's master changed (a failover, a resharding).",
            registry=r)
        self.cluster_masters = Gauge(
            "creditgate_redis_cluster_masters", "Masters serving the cluster's slots, as the "
            "gateway's slot map last saw them.", registry=r, multiprocess_mode="livemax")
        self.redis_up_gauge = Gauge(
            "creditgate_redis_up", "1 while the gateway reaches the Redis server (what "
            "readiness follows), 0 after a few failed PINGs in a row.", ["redis"],
            registry=r, multiprocess_mode="livemin")

    def _define_state(self) -> None:
        r = self.registry
        self.in_flight = Gauge(
            "creditgate_in_flight_calls", "Calls admitted and not yet answered (sampled).",
            registry=r, multiprocess_mode="livesum")
        self.admission_limit = Gauge(
            "creditgate_admission_limit", "Calls admission control lets in at once (the sum "
            "over a host's server processes).", registry=r, multiprocess_mode="livesum")
        self.sweeper_released = Counter(
            "creditgate_sweeper_released_holds_total", "Expired holds the sweeper released.",
            registry=r)
        self.catalog_info = Gauge(
            "creditgate_catalog_info", "Server processes serving each version of the product "
            "catalog (1 per process; 0 for a version a reload replaced).", ["version"],
            registry=r, multiprocess_mode="livesum")
        self.catalog_reloads = Counter(
            "creditgate_catalog_reloads_total", "Catalog reloads, by result: reloaded, or "
            "refused (the file did not validate; the version in force stays).", ["result"],
            registry=r)
        self.shadow_catalog_info = Gauge(
            "creditgate_shadow_catalog_info", "Server processes evaluating each version of a "
            "candidate catalog in shadow (1 per process; 0 for a version a reload replaced).",
            ["version"], registry=r, multiprocess_mode="livesum")
        self.shadow_calls = Counter(
            "creditgate_shadow_calls_total", "Calls sampled for the shadow catalog, by result: "
            "same (the candidate decides as the live catalog), differs, skipped (a retry, "
            "holds due for release, a failure on either side).", ["result"], registry=r)
        self.shadow_differences = Counter(
            "creditgate_shadow_differences_total", "Calls the shadow catalog decides "
            "differently, by product and kind: outcome (approved vs declined), reason (both "
            "declined), amount (both approved), product_absent, invalid (the candidate "
            "refuses the request).", ["product", "kind"], registry=r)
        self.build_info = Gauge(
            "creditgate_build_info", "1, labelled with creditgate's, Python's and gRPC's "
            "versions.", ["version", "python", "grpc"], registry=r, multiprocess_mode="livemax")

    # -- the parts the gateway records with ---------------------------------------------------
    def method(self, rpc: str) -> CallMetrics:
        if rpc not in self._methods:
            self._methods[rpc] = CallMetrics(self, rpc)
        return self._methods[rpc]

    def redis(self, server: str) -> RedisMetrics:
        if server not in self._servers:
            self._servers[server] = RedisMetrics(self, server)
        return self._servers[server]

    def redis_up(self, server: str, up: bool) -> None:
        self.redis_up_gauge.labels(server).set(1 if up else 0)

    def cluster_map_changed(self, masters: int) -> None:
        self.cluster_map_changes.inc()
        self.cluster_masters.set(masters)

    def catalog(self, version: str, previous: str | None = None) -> None:
        """The catalog version this process serves (after `previous`, on a reload)."""
        if previous is not None and previous != version:
            self.catalog_info.labels(previous).set(0)
        self.catalog_info.labels(version).set(1)

    def catalog_reload(self, result: str) -> None:
        self.catalog_reloads.labels(result).inc()

    def shadow_catalog(self, version: str, previous: str | None = None) -> None:
        """The candidate version this process evaluates in shadow (after `previous`)."""
        if previous is not None and previous != version:
            self.shadow_catalog_info.labels(previous).set(0)
        self.shadow_catalog_info.labels(version).set(1)

    def flush(self, admission=None) -> None:
        """Move what the process counted into prometheus_client, and sample admission."""
        for part in (*self._methods.values(), self.decisions, self.shadow,
                     *self._servers.values()):
            part.flush()
        if admission is not None:
            self.in_flight.set(admission.in_flight)
            self.admission_limit.set(admission.limit)

    async def flush_forever(self, admission) -> None:
        try:
            while True:
                self.flush(admission)
                await asyncio.sleep(METRICS_FLUSH_INTERVAL_S)
        finally:
            self.flush(admission)  # a drained process's last calls are counted too

    # -- the HTTP port ------------------------------------------------------------------------
    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (0: a free port); returns the port."""
        self._http = listen(host, port, self.registry)
        return self._http[0].server_port

    def close(self) -> None:
        if self._http is not None:
            close(self._http)
            self._http = None


class NoMetrics:
    """Metrics off: every part records nothing, at the cost of a call."""

    decisions = NOTHING
    sweeper_released = NOTHING
    shadow = NOTHING

    def method(self, rpc: str) -> _Nothing:
        return NOTHING

    def redis(self, server: str) -> Observer:
        return Observer()

    def redis_up(self, server: str, up: bool) -> None:
        return None

    def cluster_map_changed(self, masters: int) -> None:
        return None

    def catalog(self, version: str, previous: str | None = None) -> None:
        return None

    def catalog_reload(self, result: str) -> None:
        return None

    def shadow_catalog(self, version: str, previous: str | None = None) -> None:
        return None

    def flush(self, admission=None) -> None:
        return None

    async def flush_forever(self, admission) -> None:
        return None

    def serve(self, host: str, port: int) -> int:
        return 0

    def close(self) -> None:
        return None


NO_METRICS = NoMetrics()


def _version() -> str:
    try:
        return metadata.version("creditgate")
    except metadata.PackageNotFoundError:
        return UNKNOWN


def listen(host: str, port: int, registry: CollectorRegistry) -> tuple:
    """prometheus_client's HTTP server for `registry` on host:port, in a thread of its own
    (scrapes never wait for the event loop, nor the loop for them)."""
    return prometheus_client.start_http_server(port, addr=host, registry=registry)


def close(http: tuple) -> None:
    server, thread = http
    server.shutdown()
    server.server_close()
    thread.join()


class MultiprocessView:
    """The supervisor's side of `serve --processes N`: a private folder for the server
    processes' values (PROMETHEUS_MULTIPROC_DIR, inherited by the processes it starts after
    this), and their sum served on the metrics port."""

    def __init__(self, host: str, port: int):
        self.path = tempfile.mkdtemp(prefix="creditgate-metrics-")
        self._previous = os.environ.get(MULTIPROC_DIR_ENV)
        os.environ[MULTIPROC_DIR_ENV] = self.path
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.path)
        try:
            self._http = listen(host, port, registry)
        except OSError:
            self._forget()
            raise
        self.port = self._http[0].server_port

    def process_ended(self, pid: int) -> None:
        """A server process is gone: its live gauges leave the sum (its counts stay)."""
        multiprocess.mark_process_dead(pid, self.path)

    def close(self) -> None:
        close(self._http)
        self._forget()

    def _forget(self) -> None:
        if self._previous is None:
            os.environ.pop(MULTIPROC_DIR_ENV, None)
        else:
            os.environ[MULTIPROC_DIR_ENV] = self._previous
        with contextlib.suppress(OSError):
            shutil.rmtree(self.path)


class NoView:
    """Metrics off under `serve --processes N`."""

    def process_ended(self, pid: int) -> None:
        return None

    def close(self) -> None:
        return None


def multiprocess_view(host: str, port: int) -> MultiprocessView | NoView:
    return MultiprocessView(host, port) if port else NoView()
