"""bench/overload.py end to end on a tiny run: every figure for every step, and the figures
consistent with one another (whatever the machine achieves, a result is not a failure)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.bench.conftest import BENCH

RUN_TIMEOUT_S = 120
DURATION_S = 2
FIGURES = ("offered_per_s", "duration_s", "sent", "not_sent", "outcomes", "answers_in_time",
           "goodput_per_s", "goodput_share", "refused", "refused_share_of_sent",
           "refused_fast_share", "refused_fast_share_from_send", "admitted", "p50_ms", "p99_ms",
           "p99_not_refused_ms", "send_lag_p99_ms", "per_second", "scripts",
           "answers_in_time_in_window", "scripts_per_answer", "cpu_roles", "checks")
CHECKS = ("goodput_share", "refused_fast_share", "p99_ms", "p99_not_refused_ms",
          "scripts_per_answer")


def within_0_1(value: float | None) -> bool:
    return value is None or 0 <= value <= 1


@pytest.mark.slow
def test_tiny_run_has_every_figure_for_every_step(tmp_path):
    out, png = tmp_path / "overload.json", tmp_path / "overload.png"
    run = subprocess.run(
        [sys.executable, str(BENCH / "overload.py"), "--duration-s", str(DURATION_S),
         "--capacity-s", "1", "--capacity-concurrency", "8", "--warm-up-s", "0",
         "--json", str(out), "--plot", str(png)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    capacity = result["capacity"]["rate_per_s"]
    assert capacity > 0 and result["deadline_ms"] == 200
    steps = result["steps"]
    assert [step["name"] for step in steps] == ["1x", "2x", "3x", "recovery"]
    assert [step["offered_per_s"] for step in steps] == [round(capacity * fraction)
                                                         for fraction in (1, 2, 3, 1)]
    for step in steps:
        context = f"{step['name']}: {step}\n{run.stdout}"
        assert set(FIGURES) <= set(step), context
        scheduled = round(step["offered_per_s"] * DURATION_S)
        assert step["sent"] + step["not_sent"] == scheduled, context
        # Every call sent has one outcome (NO_ANSWER for one the generator gave up on).
        assert sum(step["outcomes"].values()) == step["sent"], context
        assert step["admitted"] == step["outcomes"].get("OK", 0), context
        assert step["refused"] == step["outcomes"].get("RESOURCE_EXHAUSTED", 0), context
        assert 0 <= step["answers_in_time"] <= step["admitted"], context
        assert 0 <= step["goodput_per_s"] <= step["offered_per_s"], context
        assert step["goodput_share"] == pytest.approx(step["goodput_per_s"] / capacity,
                                                      abs=1e-3), context
        for name in ("refused_share_of_sent", "refused_fast_share",
                     "refused_fast_share_from_send"):
            assert within_0_1(step[name]), context
        assert (step["refused_fast_share"] is None) == (step["refused"] == 0), context
        if step["admitted"]:
            assert 0 < step["p50_ms"] <= step["p99_ms"], context
        assert step["p99_not_refused_ms"] is not None or step["refused"] == step["sent"]
        buckets = step["per_second"]
        assert sum(bucket["ok_in_time"] for bucket in buckets) == step["answers_in_time"]
        assert sum(bucket["refused"] for bucket in buckets) == step["refused"], context
        assert step["scripts"] >= 0 and step["answers_in_time_in_window"] >= 0, context
        if step["answers_in_time_in_window"]:
            assert step["scripts_per_answer"] == pytest.approx(
                step["scripts"] / step["answers_in_time_in_window"], abs=1e-3), context
        else:
            assert step["scripts_per_answer"] is None, context
        assert set(CHECKS) <= set(step["checks"]), context
        for check in step["checks"].values():
            assert check["target"] and isinstance(check["met"], bool), context
        assert step["checks"]["goodput_share"]["met"] == (step["goodput_share"] >= 0.9)
    # A step alone counts its scripts until its last call ended: each answer ran one script.
    for step in steps[:2]:
        assert step["scripts"] >= step["answers_in_time_in_window"] == step["answers_in_time"]
    overload, recovery = steps[2], steps[3]
    assert overload["scripts"] + recovery["scripts"] >= (
        overload["answers_in_time_in_window"] + recovery["answers_in_time_in_window"])
    assert len(recovery["after_overload_per_s"]) == DURATION_S
    assert recovery["recovery_s"] is None or 0 <= recovery["recovery_s"] <= DURATION_S - 1
    assert recovery["checks"]["recovery_s"]["met"] == (
        recovery["recovery_s"] is not None and recovery["recovery_s"] <= 1)
    assert "recovery_s" not in overload
    for figure in ("goodput", "refused", "admitted", "scripts", "recovery"):
        assert f"  {figure} " in run.stdout
    assert run.stdout.count(": met") + run.stdout.count(": missed") >= 4 * len(CHECKS) + 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_noop_server_floor_runs_no_script(tmp_path):
    out = tmp_path / "noop.json"
    run = subprocess.run(
        [sys.executable, str(BENCH / "overload.py"), "--server", "noop",
         "--duration-s", str(DURATION_S), "--capacity-s", "1", "--capacity-concurrency", "8",
         "--warm-up-s", "0", "--json", str(out)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    assert result["capacity"]["rate_per_s"] > 0 and result["args"]["server"] == "noop"
    steps = result["steps"]
    assert [step["name"] for step in steps] == ["1x", "2x", "3x", "recovery"]
    assert all(step["scripts"] == 0 and step["outcomes"] for step in steps), run.stdout
    assert "noop 2 processes" in run.stdout


@pytest.mark.parametrize("argv", [["--deadline-ms", "0"], ["--duration-s", "1"],
                                  ["--processes", "0"], ["--customers", "10"]])
def test_bad_arguments_are_refused_before_anything_starts(argv, capsys):
    import overload

    with pytest.raises(SystemExit):
        overload.parse_args(argv)
    assert "must be" in capsys.readouterr().err
