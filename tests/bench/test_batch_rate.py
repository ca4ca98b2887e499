"""bench/batch_rate.py end to end on a tiny run (its own redis-server and gateway), and its
reading of py-spy's collapsed stacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.bench.conftest import BENCH

RUN_TIMEOUT_S = 180


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["--unary"], ["--redis-py"]],
                         ids=["batch", "unary", "batch-redis-py"])
def test_tiny_run_counts_every_answer_and_each_process_cpu(mode):
    run = subprocess.run(
        [sys.executable, str(BENCH / "batch_rate.py"), "--processes", "1", "--duration", "1.5",
         "--warmup", "0.5", "--customers", "2000", "--concurrency", "4", "--connections", "2",
         "--batch-min", "4", "--batch-max", "8", "--json", *mode],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["answered"] > 0
    assert result["authorizations_per_s"] == pytest.approx(result["answered"] / 1.5)
    assert result["errors"] == {}
    # Every approval the clients saw wrote exactly one `authorized` event, and nothing else did.
    assert result["events"] == result["approved"] >= result["answered"] > 0
    kinds = {name.split(" ")[0] for name in result["cpu_percent"]}
    assert kinds == {"gateway", "redis-server", "load"}
    assert all(share > 0 for share in result["cpu_percent"].values())
    assert "authorizations/s:" in run.stdout and "CPU per authorization" in run.stdout


def test_profile_summary_ranks_own_and_total_time(tmp_path):
    import batch_rate

    collapsed = tmp_path / "gateway-batch-1.txt"
    collapsed.write_text(
        "run (server.py:10);authorize (service.py:5);encode_calls (scripts.py:9) 6\n"
        "run (server.py:10);authorize (service.py:5) 3\n"
        "run (server.py:10);flush (scripts.py:20) 1\n")
    summary = batch_rate.summarise_profile(collapsed, top=3)
    own, total = summary.split("total time:")
    assert "10 samples" in summary
    assert own.index("60.0%  encode_calls (scripts.py)") < own.index("30.0%  authorize")
    assert "100.0%  run (server.py)" in total
    assert "90.0%  authorize (service.py)" in total
