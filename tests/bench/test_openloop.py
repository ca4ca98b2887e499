"""bench/openloop.py end to end on a tiny run, and the open-loop property itself: a slow
server does not slow the sender, and latency counts from the due time."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import grpc
import pytest
from hdrh.histogram import HdrHistogram

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from tests.bench.conftest import BENCH

RUN_TIMEOUT_S = 240


@pytest.mark.slow
def test_tiny_run_reports_percentiles_and_writes_the_plot(tmp_path):
    plot, out = tmp_path / "openloop.png", tmp_path / "openloop.json"
    run = subprocess.run(
        [sys.executable, str(BENCH / "openloop.py"), "--rates", "40,80", "--duration-s", "2",
         "--warm-up-s", "0.5", "--customers", "1000", "--timeout-s", "30",
         "--plot", str(plot), "--json", str(out)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    assert [step["offered_per_s"] for step in result["steps"]] == [40, 80]
    for step in result["steps"]:
        context = f"{step}\n{run.stdout}"
        scheduled = round(step["offered_per_s"] * step["duration_s"])
        assert step["sent"] == scheduled and step["not_sent"] == 0, context
        assert step["ok"] == step["recorded"] == scheduled, context
        assert step["error_count"] == 0, context
        assert step["approved"] == step["ok"], context  # a population far from its limits
        assert 0 < step["p50_ms"] <= step["p99_ms"] <= step["p999_ms"] <= step["max_ms"], \
            context
        assert 0 < step["achieved_per_s"] <= step["offered_per_s"], context
        assert step["cpu_roles"]["gateway"] > 0, context
        assert step["script_usec_per_call"] > 0, context
        assert {"gateway[1]", "gateway[2]", "redis-server", "generator[1]"} <= set(
            step["cpu"]["processes"]), context
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "p99.9" in run.stdout
    # The same rates against the no-op server, in the same run: the latency floor.
    assert [step["offered_per_s"] for step in result["noop_steps"]] == [40, 80]
    for step in result["noop_steps"]:
        scheduled = round(step["offered_per_s"] * step["duration_s"])
        assert step["ok"] == step["recorded"] == scheduled and step["error_count"] == 0, step
        assert "redis-server" not in step["cpu"]["processes"], step


@pytest.mark.slow
def test_rates_are_fractions_of_the_capacity_measured_first(tmp_path):
    """Without --rates or --max-rate, a closed-loop step of new authorizations measures the
    maximum, and the open-loop steps are the given fractions of it."""
    out = tmp_path / "openloop.json"
    run = subprocess.run(
        [sys.executable, str(BENCH / "openloop.py"), "--fractions", "0.05,0.1", "--capacity-s",
         "1.5", "--capacity-concurrency", "8", "--duration-s", "1", "--warm-up-s", "0", "--no-noop",
         "--timeout-s", "30", "--maxrate-json", str(tmp_path / "absent.json"),
         "--plot", str(tmp_path / "openloop.png"), "--json", str(out)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    capacity = result["capacity"]
    assert capacity["errors"] == {} and capacity["concurrency"] == 8
    maximum = capacity["rate_per_s"]
    assert maximum > 0 and result["args"]["maximum"] == maximum
    assert [step["offered_per_s"] for step in result["steps"]] == [
        round(maximum * 0.05), round(maximum * 0.1)]
    assert result["rates_from"].startswith("capacity measured first")
    assert result["replay_maximum_per_s"] is None  # no max-rate JSON at that path
    assert result["noop_steps"] == []  # --no-noop
    # The step's purchases are counted (they draw on the customers' windows) and its CPU kept.
    assert capacity["sent"] >= maximum * 1.5
    assert 0 < capacity["approved_per_s"] <= maximum
    assert capacity["cpu_roles"]["gateway"] > 0 and capacity["cpu_roles"]["generator"] > 0
    assert f"about half of {maximum:,.0f}/s" in run.stdout


@pytest.mark.parametrize("fractions", ["0,0.5", "-0.5", "5", ""])
def test_fractions_outside_0_to_4_are_refused_before_anything_starts(fractions, capsys):
    import openloop

    with pytest.raises(SystemExit):
        openloop.parse_args(["--fractions", fractions])
    assert "fraction" in capsys.readouterr().err


class SlowAuthorization(pb_grpc.AuthorizationServicer):
    DELAY_S = 0.3

    async def Authorize(self, request, context):
        await asyncio.sleep(self.DELAY_S)
        return pb.AuthorizeResponse(approved=True)


async def test_a_slow_server_does_not_slow_the_sender():
    """At 100/s for 1 s against a server that takes 0.3 s per call, all 100 calls leave on
    schedule (a closed loop with 4 connections would send about 13), and each latency
    includes the 0.3 s."""
    import openloop

    server = grpc.aio.server()
    pb_grpc.add_AuthorizationServicer_to_server(SlowAuthorization(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        config = {"timeout_s": 5.0, "inflight_max": 1000, "seed": 1, "run_id": "t",
                  "customers": 10}
        started = time.monotonic()
        outcome = await openloop.run_step([pb_grpc.AuthorizationStub(channel)], 0, config,
                                          "s0", 100.0, 1.0, time.time() + 0.1)
    finally:
        await channel.close()
        await server.stop(0)
    assert outcome["sent"] == 100 and outcome["ok"] == 100
    assert outcome["scheduled_s"] < 1.0 + SlowAuthorization.DELAY_S
    latency = HdrHistogram.decode(outcome["latency"])
    assert latency.get_total_count() == 100
    assert latency.get_min_value() >= SlowAuthorization.DELAY_S * 1e6 * 0.99
    assert time.monotonic() - started < 5.0


async def test_inflight_bound_counts_what_it_could_not_send():
    import openloop

    server = grpc.aio.server()
    pb_grpc.add_AuthorizationServicer_to_server(SlowAuthorization(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        config = {"timeout_s": 5.0, "inflight_max": 10, "seed": 1, "run_id": "t",
                  "customers": 10}
        outcome = await openloop.run_step([pb_grpc.AuthorizationStub(channel)], 0, config,
                                          "s0", 100.0, 0.2, time.time() + 0.05)
    finally:
        await channel.close()
        await server.stop(0)
    # 20 due within 0.2 s while none is answered: 10 in flight, 10 not sent.
    assert (outcome["sent"], outcome["not_sent"], outcome["ok"]) == (10, 10, 10)
