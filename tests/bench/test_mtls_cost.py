"""bench/mtls_cost.py: its medians and ratios from legs written by hand, and a tiny run end to
end (four bench/batch_rate.py legs: unary and batch, plaintext and mutual TLS)."""

from __future__ import annotations

import json
import subprocess
import sys

import mtls_cost  # bench/mtls_cost.py: tests/bench/conftest.py puts bench/ on sys.path
import pytest

from tests.bench.conftest import BENCH

RUN_TIMEOUT_S = 600


def leg(mode: str, mtls: bool, rate: float, cpu_us: float = 100.0, p50: float = 2.0,
        p99: float = 8.0, problems: tuple[str, ...] = (), round_: int = 1) -> dict:
    return {"mode": mode, "mtls": mtls, "round": round_, "exit_code": 0,
            "authorizations_per_s": rate, "gateway_cpu_us_per_authorization": cpu_us,
            "latency_ms_p50": p50, "latency_ms_p99": p99, "errors": {},
            "outbox_consistent": True, "problems": list(problems)}


def test_ratios_are_mtls_over_plaintext_of_the_medians():
    legs = [leg("unary", False, 1000.0, round_=1), leg("unary", True, 900.0, 110.0, round_=1),
            leg("unary", False, 1200.0, round_=2), leg("unary", True, 1000.0, 120.0, round_=2),
            leg("unary", False, 5000.0, round_=3), leg("unary", True, 1100.0, 130.0, round_=3),
            leg("batch", False, 8000.0, 50.0, 10.0, 20.0),
            leg("batch", True, 7600.0, 55.0, 11.0, 24.0)]
    summary = mtls_cost.summarise(legs)
    unary = summary["unary"]
    assert unary["plaintext"]["authorizations_per_s"] == 1200.0  # the median, not the mean
    assert unary["ratios"]["authorizations_per_s"] == pytest.approx(1000.0 / 1200.0)
    assert unary["ratios"]["gateway_cpu_us_per_authorization"] == pytest.approx(1.2)
    batch = summary["batch"]["ratios"]
    assert batch["authorizations_per_s"] == pytest.approx(0.95)
    assert batch["latency_ms_p99"] == pytest.approx(1.2)
    lines = mtls_cost.format_summary(summary)
    assert lines[1].startswith("AuthorizeBatch: mTLS/plaintext 0.950x the rate (7,600/s vs "
                               "8,000/s), 1.100x the gateway's CPU per authorization")


def test_a_failed_leg_leaves_its_side_not_measured():
    legs = [leg("unary", False, 1000.0), leg("unary", True, 900.0, problems=("errors",)),
            leg("batch", False, 8000.0), leg("batch", True, 7000.0)]
    summary = mtls_cost.summarise(legs)
    assert summary["unary"]["mtls"]["authorizations_per_s"] is None
    assert summary["unary"]["ratios"]["authorizations_per_s"] is None
    assert mtls_cost.format_summary(summary)[0] == "unary: not measured on both sides"


def test_each_leg_is_a_batch_rate_run_of_its_kind(tmp_path):
    args = mtls_cost.parse_args(["--duration", "3", "--processes", "1"])
    unary = mtls_cost.leg_argv(args, "unary", True, tmp_path / "x.json")
    batch = mtls_cost.leg_argv(args, "batch", False, tmp_path / "x.json")
    assert unary[1].endswith("bench/batch_rate.py") and batch[1] == unary[1]
    assert "--unary" in unary and unary[-1] == "--mtls"
    assert unary[unary.index("--concurrency") + 1] == "64"
    assert "--unary" not in batch and "--mtls" not in batch
    assert batch[batch.index("--concurrency") + 1] == "8"
    # Everything else is the same load.
    assert unary[unary.index("--duration") + 1] == batch[batch.index("--duration") + 1] == "3.0"


@pytest.mark.slow
def test_tiny_run_measures_both_kinds_with_and_without_mtls(tmp_path):
    out = tmp_path / "mtls_cost.json"
    run = subprocess.run(
        [sys.executable, str(BENCH / "mtls_cost.py"), "--duration", "1", "--warmup", "0.5",
         "--processes", "1", "--customers", "2000", "--connections", "2",
         "--unary-concurrency", "8", "--batch-concurrency", "2", "--batch-min", "4",
         "--batch-max", "8", "--json", str(out)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    assert [(each["mode"], each["mtls"]) for each in result["legs"]] == [
        ("unary", False), ("unary", True), ("batch", False), ("batch", True)]
    assert all(each["authorizations_per_s"] > 0 and not each["problems"]
               for each in result["legs"])
    for mode in ("unary", "batch"):
        ratios = result["summary"][mode]["ratios"]
        assert all(value > 0 for value in ratios.values()), ratios
    assert "unary Authorize: mTLS/plaintext" in run.stdout
    assert "AuthorizeBatch: mTLS/plaintext" in run.stdout
