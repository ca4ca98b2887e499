"""bench/cluster_rate.py end to end on a tiny run: one Redis, then a 3-master cluster, with the
same load; and its capacity arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.bench.conftest import BENCH

RUN_TIMEOUT_S = 300


@pytest.mark.slow
def test_tiny_run_has_both_legs_and_each_masters_cpu(tmp_path):
    out = tmp_path / "cluster_rate.json"
    run = subprocess.run(
        [sys.executable, str(BENCH / "cluster_rate.py"), "--duration", "1.5", "--warmup", "0.5",
         "--processes", "1", "--customers", "2000", "--concurrency", "4", "--connections", "2",
         "--batch-min", "4", "--batch-max", "8", "--json", str(out)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    assert set(result["legs"]) == {"one-redis", "cluster"}
    for leg in result["legs"].values():
        assert leg["answered"] > 0 and leg["errors"] == {}
        # Every approval wrote exactly one `authorized` event, wherever its partition lives.
        assert leg["outbox_consistent"] and leg["events"] == leg["approved"] > 0
    assert [s["role"] for s in result["legs"]["one-redis"]["redis_servers"]] == ["single"]
    servers = result["legs"]["cluster"]["redis_servers"]
    assert sorted(s["role"] for s in servers) == ["master"] * 3 + ["replica"] * 3
    masters = [s for s in servers if s["role"] == "master"]
    assert all(s["cpu_percent"] > 0 and s["fcall_per_s"] > 0 for s in masters)
    assert all(s["cpu_us_per_own_authorization"] > 0 for s in masters)
    assert sum(s["authorizations_per_s"] for s in masters) == pytest.approx(
        result["legs"]["cluster"]["authorizations_per_s"])
    assert [row["authorizations_per_s"] for row in result["capacity"]] == [5_000, 20_000,
                                                                           100_000]
    assert "one Redis vs a 3-master cluster" in run.stdout


def test_capacity_arithmetic():
    import cluster_rate

    rows = cluster_rate.capacity({"gateway_us": 40.0, "master_us": 60.0})
    # 0.6 x 10^6 µs of one core a second / 60 µs = 10,000 authorizations/s per master.
    assert rows[0]["master_absorbs_per_s"] == pytest.approx(10_000)
    assert [row["masters"] for row in rows] == [1, 2, 10]
    assert [row["gateway_cores"] for row in rows] == pytest.approx([0.2, 0.8, 4.0])
    assert [row["gateway_cores_whole"] for row in rows] == [1, 1, 4]
