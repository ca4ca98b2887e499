"""The cost of the gateway's Prometheus metrics: unary Authorize and AuthorizeBatch through the
real gateway, with metrics off and on in the same run, from the same closed-loop load generator.

    .venv/bin/python bench/metrics_cost.py [--rounds 1] [--duration 10] [--warmup 2]
        [--processes 2] [--clients 1] [--connections 8] [--unary-concurrency 64]
        [--batch-concurrency 8] [--batch-min 16] [--batch-max 64] [--customers 20000]
        [--json var/bench/metrics_cost.json]

Each leg is one bench/batch_rate.py run (its own private redis-server and `creditgate serve
--processes N`, the same seeded customers and load generator), with `--metrics` on one side:
the gateway then counts every call, decision and script batch, serves them on a metrics port
(with --processes N: prometheus_client's multiprocess mode, every process writing its values to
memory-mapped files the supervisor sums), and the leg reads them once at the end. The other
side runs with `--metrics-port 0` (metrics off). The legs alternate off and on (off first in
odd rounds, on first in even ones), round after round, so that a drift of the machine's other
load falls on both alike; a kind's figures are the medians over its rounds. Printed, and
written to --json, as ratios on / off: authorizations per second, the gateway's CPU per
authorization, and the p50 and p99 latency of a call. The target: under 3 % of unary and of
batch throughput (docs/benchmarks.md, "Metrics cost").

The machinery is bench/mtls_cost.py's (Variant); exit status 1 if a leg failed, else 0.
"""

from __future__ import annotations

import sys

from mtls_cost import Variant, compare


def counted(result: dict) -> list[str]:
    """A leg with metrics on must have counted the calls it made."""
    if result.get("metrics") and not result.get("metrics_calls"):
        return ["the gateway's metrics counted no calls"]
    return []


METRICS = Variant("metrics", "--metrics", "off", "on", "metrics on/off", "metrics on",
                  "metrics_cost.json", "metrics_cost", counted)


def main(argv: list[str] | None = None) -> int:
    return compare(argv, METRICS, __doc__, "metrics cost")


if __name__ == "__main__":
    sys.exit(main())
