"""What the gateway's metrics and request ids cost per call on the hot path, in creditgate's own
Python (gateway/metrics.py, gateway/errors.py `name_call`): a unary Authorize's share (name the
call, count and time it, count its decision), an AuthorizeBatch item's (count its decision),
and a script batch's (count its calls and size), with metrics on and off; and the flush that
moves a second's counts into prometheus_client, in multiprocess mode as `--processes N` runs it.

Run with `make bench` (pytest bench --benchmark-enable), or only these with
`.venv/bin/python -m pytest bench/test_metrics_bench.py --benchmark-enable`.
bench/metrics_cost.py measures the whole gateway with metrics on and off.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

from creditgate.gateway import errors, metrics
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits.lua_source import scripts
from creditgate.limits.reasons import DeclineReason

REQUEST = pb.AuthorizeRequest(
    idempotency_key="pos-0d5f6c1e-7a41-4a0f-9b61-2f1c3a9e5b77", customer_id="cust-8842017731",
    product_id="scan_pay", channel=pb.CHANNEL_QR_SCAN, merchant_id="mer-310115-000482",
    mcc="5411", amount_minor=12_850, currency="CNY")
RESULT = types.SimpleNamespace(reason=DeclineReason.NONE, approved_amount_minor=12_850)
GRPC_METADATA = (("user-agent", "grpc-python/1.76"), ("grpc-accept-encoding", "gzip"))
WITH_ID = (*GRPC_METADATA, ("x-request-id", "till-0042-20261206-000123"),
           ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
SIDES = {"on": metrics.GatewayMetrics, "off": lambda: metrics.NO_METRICS}
BATCH = [types.SimpleNamespace(script=scripts()["reserve"])] * 32


@pytest.mark.parametrize("side", sorted(SIDES))
@pytest.mark.parametrize("given", ["request-id", "none"])
def test_a_unary_authorize(benchmark, side, given):
    recorder = SIDES[side]()
    calls, decisions = recorder.method("Authorize"), recorder.decisions
    metadata = WITH_ID if given == "request-id" else GRPC_METADATA

    def one_call() -> None:
        request_id, trace_id = errors.name_call(metadata)
        decisions.decided(RESULT, REQUEST)
        calls.answered(0.0021, request_id, trace_id)

    benchmark.group = "metrics and request id, per unary Authorize"
    benchmark.pedantic(one_call, rounds=2_000, iterations=50, warmup_rounds=100)
    recorder.flush()


@pytest.mark.parametrize("side", sorted(SIDES))
def test_an_authorize_batch_item(benchmark, side):
    decided = SIDES[side]().decisions.decided

    def one_item() -> None:
        decided(RESULT, REQUEST)

    benchmark.group = "metrics, per AuthorizeBatch item"
    benchmark.pedantic(one_item, rounds=2_000, iterations=50, warmup_rounds=100)


@pytest.mark.parametrize("side", sorted(SIDES))
def test_a_script_batch_of_32(benchmark, side):
    observer = SIDES[side]().redis("127.0.0.1:6379")

    def one_batch() -> None:
        observer.sent(BATCH)
        observer.answered(0.0004)

    benchmark.group = "metrics, per script batch of 32 calls"
    benchmark.pedantic(one_batch, rounds=2_000, iterations=10, warmup_rounds=100)


FLUSH = """
import os, sys, tempfile, time
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()
from creditgate.gateway import metrics
m = metrics.GatewayMetrics()
admission = type("A", (), {"in_flight": 3, "limit": 256})()
methods = [m.method(name) for name in ("Authorize", "AuthorizeBatch", "Capture", "Void")]
observer = m.redis("127.0.0.1:6379")
batch = [type("C", (), {"script": type("S", (), {"name": "reserve"})()})()] * 16
rounds = 200
spent = 0.0
for _ in range(rounds):  # a second's worth of calls of a busy process, then its flush
    for i in range(2_000):
        methods[i % 4].answered(0.001 + (i % 50) / 10_000, "r", "")
    for i in range(125):
        observer.sent(batch)
        observer.answered(0.0005)
    started = time.perf_counter()
    m.flush(admission)
    spent += time.perf_counter() - started
print(spent / rounds * 1e6)
"""


def test_a_flush_in_multiprocess_mode(benchmark):
    """One flush of a busy second (2,000 calls of four methods, 125 script batches) into
    memory-mapped files, measured in a process of its own (multiprocess mode is chosen when
    prometheus_client is imported)."""
    def run() -> float:
        result = subprocess.run([sys.executable, "-c", FLUSH], capture_output=True, text=True,
                                check=True, env={**os.environ})
        return float(result.stdout)

    benchmark.group = "metrics flush, once a second"
    flush_us = benchmark.pedantic(run, rounds=1, iterations=1)
    print(f"one flush in multiprocess mode: {flush_us:.0f} µs")
