"""bench/script_cost.py on tiny runs: the time of reserve.lua inside a private redis-server,
and its instructions under callgrind with every step of the script found and counted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.bench.conftest import BENCH

RUN_TIMEOUT_S = 300


def run_script_cost(tmp_path, *options: str) -> dict:
    path = tmp_path / "script_cost.json"
    run = subprocess.run(
        [sys.executable, str(BENCH / "script_cost.py"), "--customers", "400", "--json",
         str(path), *options], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "figures written to" in run.stdout
    return json.loads(path.read_text())


@pytest.mark.slow
def test_timed_run_reports_the_script_and_the_commands_it_calls(tmp_path):
    result = run_script_cost(tmp_path, "--calls", "300", "--runs", "2")
    assert len(result["usec_per_call_runs"]) == 2
    assert result["usec_per_call"] == pytest.approx(min(result["usec_per_call_runs"]), abs=0.1)
    assert result["usec_per_call"] > 0
    # A new purchase writes the customer and the hold, both sets, and one outbox event.
    assert {"hset", "zadd", "xadd", "hmget", "time", "zscore"} <= set(result["commands"])
    assert 0 < result["commands_usec_per_call"] < result["usec_per_call"]
    assert result["replay_usec_per_call"] > 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_callgrind_finds_and_counts_every_step_of_reserve(tmp_path):
    # 100 calls per cut: Redis steps Lua's garbage collector every 50 calls, so fewer would
    # leave a cut with or without a step of it and a short step could come out negative.
    result = run_script_cost(tmp_path, "--callgrind", "--segments", "--calls", "100",
                             "--runs", "1")
    steps = {segment["step"]: segment["instructions"] for segment in result["segments"]}
    missing = [step for step, count in steps.items() if count is None]
    assert not missing, f"reserve.lua no longer has these steps' lines: {missing}"
    total = result["instructions_per_call"]
    assert result["empty_call_instructions"] + sum(steps.values()) == total
    # Steps that call Redis cost thousands of instructions each; none is free.
    for step in ("TIME and the deadline", "outbox event (XADD)",
                 "read of the customer (HMGET)"):
        assert steps[step] > 1_000, (step, steps[step])
    assert total > result["empty_call_instructions"] * 2
    # A retry reads what the purchase wrote and writes nothing: cheaper than the purchase.
    assert result["empty_call_instructions"] < result["replay_instructions_per_call"] < total
