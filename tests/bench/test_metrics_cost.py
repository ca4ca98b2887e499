"""bench/metrics_cost.py: bench/mtls_cost.py's machinery with metrics off and on; its ratios
from legs written by hand, its check that a leg with metrics counted its calls, and a tiny run
end to end (four bench/batch_rate.py legs: unary and batch, metrics off and on)."""

from __future__ import annotations

import json
import subprocess
import sys

import metrics_cost  # bench/metrics_cost.py: tests/bench/conftest.py puts bench/ on sys.path
import pytest
from mtls_cost import format_summary, leg_argv, leg_order, parse_args, summarise

from tests.bench.conftest import BENCH

RUN_TIMEOUT_S = 600


def leg(mode: str, on: bool, rate: float, cpu_us: float = 100.0) -> dict:
    return {"mode": mode, "metrics": on, "round": 1, "exit_code": 0,
            "authorizations_per_s": rate, "gateway_cpu_us_per_authorization": cpu_us,
            "latency_ms_p50": 2.0, "latency_ms_p99": 8.0, "errors": {},
            "outbox_consistent": True, "problems": []}


def test_ratios_are_metrics_on_over_off():
    legs = [leg("unary", False, 1000.0), leg("unary", True, 980.0, 102.0),
            leg("batch", False, 8000.0, 50.0), leg("batch", True, 7900.0, 51.0)]
    summary = summarise(legs, metrics_cost.METRICS)
    assert set(summary["unary"]) == {"off", "on", "ratios"}
    assert summary["unary"]["ratios"]["authorizations_per_s"] == pytest.approx(0.98)
    assert summary["batch"]["ratios"]["gateway_cpu_us_per_authorization"] == pytest.approx(1.02)
    lines = format_summary(summary, metrics_cost.METRICS)
    assert lines[0].startswith("unary Authorize: metrics on/off 0.980x the rate (980/s vs "
                               "1,000/s), 1.020x the gateway's CPU per authorization")


def test_each_leg_is_a_batch_rate_run_with_or_without_metrics(tmp_path):
    args = parse_args(["--duration", "3"], metrics_cost.METRICS)
    assert args.json.name == "metrics_cost.json"
    on = leg_argv(args, "unary", True, tmp_path / "x.json", metrics_cost.METRICS)
    off = leg_argv(args, "unary", False, tmp_path / "x.json", metrics_cost.METRICS)
    assert on == [*off, "--metrics"] and "--mtls" not in on


def test_a_leg_whose_metrics_counted_nothing_is_a_problem():
    assert metrics_cost.counted({"metrics": True, "metrics_calls": 1234.0}) == []
    assert metrics_cost.counted({"metrics": False, "metrics_calls": None}) == []
    assert metrics_cost.counted({"metrics": True, "metrics_calls": None}) == [
        "the gateway's metrics counted no calls"]


@pytest.mark.slow
def test_tiny_run_measures_both_kinds_with_metrics_off_and_on(tmp_path):
    out = tmp_path / "metrics_cost.json"
    run = subprocess.run(
        [sys.executable, str(BENCH / "metrics_cost.py"), "--duration", "1", "--warmup", "0.5",
         "--processes", "2", "--customers", "2000", "--connections", "2",
         "--unary-concurrency", "8", "--batch-concurrency", "2", "--batch-min", "4",
         "--batch-max", "8", "--json", str(out)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    assert [(each["mode"], each["metrics"]) for each in result["legs"]] == [
        ("unary", False), ("unary", True), ("batch", False), ("batch", True)]
    assert all(each["authorizations_per_s"] > 0 and not each["problems"]
               for each in result["legs"])
    for mode in ("unary", "batch"):
        assert all(value > 0 for value in result["summary"][mode]["ratios"].values())
    assert "unary Authorize: metrics on/off" in run.stdout
    assert "AuthorizeBatch: metrics on/off" in run.stdout


def test_the_order_of_the_sides_alternates_between_rounds():
    # A drift of the machine's load during a run falls on both sides alike.
    assert [leg_order(round_) for round_ in (1, 2, 3)] == [
        (False, True), (True, False), (False, True)]
