"""The ledger's Prometheus metrics: what the posting worker did, how far behind it is, and the
result of the last reconcile.

The worker counts the events it posted, by type, times each batch from its commit to its
acknowledgement, and counts dead letters. Every LEDGER_BACKLOG_POLL_INTERVAL_S it reads its
consumer group on every partition's outbox stream (Worker.backlog: XINFO GROUPS, one pipelined
round trip) and sets the group's lag (entries not yet delivered) and the backlog (lag plus the
entries delivered but not acknowledged), summed over the streams. `ledger --metrics-port N`
serves them on a loopback address (metrics carry no TLS here). Each worker keeps a registry of
its own, so two workers in one process count apart. Labels are bounded: an event's type is one
of books.EVENT_TYPES; no customer, hold or stream is ever a label.

Reconcile's result is a registry of its own too: `reconcile` runs and ends before any scrape,
so it pushes it to a Pushgateway or writes it for node_exporter's textfile collector.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable
from http.server import ThreadingHTTPServer

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    push_to_gateway,
    start_http_server,
    write_to_textfile,
)

from creditgate.ledger import books
from creditgate.limits.constants import METRICS_PUSH_TIMEOUT_S

# A batch is up to the worker's BATCH_SIZE_MAX events in one SQL transaction: from a
# millisecond (SQLite, a few events) to seconds (PostgreSQL under load, or stalling).
BATCH_DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                            2.5, 5.0, 10.0)
# The Pushgateway's job, which each push replaces whole (PUT).
RECONCILE_JOB = "creditgate_reconcile"

# No `_created` companion series, as in the gateway (gateway/metrics.py): nothing reads them.
prometheus_client.disable_created_metrics()


class LedgerMetrics:
    """One worker's metrics, in a registry of its own with the process's standard ones."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.events_posted = Counter(
            "creditgate_ledger_events_posted", "Outbox events the worker posted to the ledger, "
            "by type (an event it found already posted is not counted again)", ["type"],
            registry=registry)
        for kind in books.EVENT_TYPES:  # every series exists from the start, at 0
            self.events_posted.labels(kind)
        self.batch_duration = Histogram(
            "creditgate_ledger_batch_duration_seconds", "Time to commit a batch of events in "
            "one transaction and acknowledge them", buckets=BATCH_DURATION_BUCKETS_S,
            registry=registry)
        self.dead_letters = Counter(
            "creditgate_ledger_dead_letters", "Events moved to a dead-letter stream: changes "
            "Redis made that the ledger could not book", registry=registry)
        self.backlog = Gauge(
            "creditgate_outbox_backlog_events", "Outbox entries the ledger group has not "
            "acknowledged (lag plus pending), over every partition", registry=registry)
        self.lag = Gauge(
            "creditgate_ledger_consumer_lag_events", "Outbox entries not yet delivered to the "
            "ledger group, over every partition", registry=registry)

    def posted(self, types: Iterable[str]) -> None:
        for kind, count in collections.Counter(types).items():
            self.events_posted.labels(kind).inc(count)

    def set_backlog(self, lag: int, pending: int) -> None:
        self.lag.set(lag)
        self.backlog.set(lag + pending)

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        """Serve /metrics on host:port (0: a free port, `server.server_port`) from a thread
        of its own; `shutdown()` stops it."""
        server, _thread = start_http_server(port, host, registry=self.registry)
        return server


def reconcile_registry(drifts: int, undrained_streams: int,
                       now_s: float | None = None) -> CollectorRegistry:
    """A reconcile's result: its drifts, the outbox streams it found not drained (while any
    is, a drift may only be the ledger being behind), and when it ran."""
    registry = CollectorRegistry()
    Gauge("creditgate_reconcile_drifts", "Differences between Redis and the ledger found by the "
          "last reconcile", registry=registry).set(drifts)
    Gauge("creditgate_reconcile_undrained_streams", "Outbox streams with unread or pending "
          "events when the last reconcile ran", registry=registry).set(undrained_streams)
    Gauge("creditgate_reconcile_last_run_timestamp_seconds", "When the last reconcile ran "
          "(Unix time)", registry=registry).set(time.time() if now_s is None else now_s)
    return registry


def export_reconcile(registry: CollectorRegistry, pushgateway: str = "",
                     textfile: str = "") -> None:
    """Push the result to a Pushgateway (replacing the job's previous push) and/or write it
    to a textfile (atomically: written beside it, then renamed over). Raises OSError when
    either cannot be done."""
    if textfile:
        write_to_textfile(textfile, registry)
    if pushgateway:
        push_to_gateway(pushgateway, job=RECONCILE_JOB, registry=registry,
                        timeout=METRICS_PUSH_TIMEOUT_S)
