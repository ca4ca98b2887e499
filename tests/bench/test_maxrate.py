"""bench/maxrate.py end to end on a tiny run, and its check that gRPC errors are not counted
as throughput."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.bench.conftest import BENCH

RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module", autouse=True)
def h2load_installed():
    if shutil.which("h2load") is None:
        message = "h2load is not installed: run `make bench-tools`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.slow
def test_tiny_run_reports_both_servers_and_their_ratio(tmp_path):
    out = tmp_path / "maxrate.json"
    run = subprocess.run(
        [sys.executable, str(BENCH / "maxrate.py"), "--duration-s", "2", "--warm-up-s", "1",
         "--connections", "2", "--streams", "4", "--customers", "50", "--fresh", "100",
         "--json", str(out)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ratio gateway / no-op" in run.stdout
    result = json.loads(out.read_text())
    assert result["problems"] == []
    noop, floor, gateway = result["noop"], result["floor"], result["gateway"]
    for leg in (noop, floor, gateway):
        assert leg["succeeded"] > 0
        assert leg["succeeded"] == leg["done"]
        # Every succeeded request carried a response message: no gRPC error hid in HTTP 200.
        assert abs(leg["response_messages"] - leg["succeeded"]) <= 8
        assert leg["request_ms_min"] <= leg["request_ms_mean"] <= leg["request_ms_max"]
        # Two processes each, both given connections by SO_REUSEPORT, both sampled.
        assert sum(leg["connections_per_process"].values()) == 2
        assert set(leg["cpu"]["cores"]) == {f"cpu{n}" for n in range(os.cpu_count())}
        assert "h2load" in leg["cpu"]["processes"]
    assert {"gateway[1]", "gateway[2]", "redis-server"} <= set(gateway["cpu"]["processes"])
    assert {"no-op[1]", "no-op[2]"} <= set(noop["cpu"]["processes"])
    # The floor: the no-op answer after one script call per request, in its own Redis.
    assert {"floor[1]", "floor[2]", "redis-server"} <= set(floor["cpu"]["processes"])
    assert floor["script"]["calls"] >= floor["done"]
    assert result["floor_ratio"] == pytest.approx(floor["rate_per_s"] / noop["rate_per_s"],
                                                  abs=0.001)
    assert result["ratio"] == pytest.approx(gateway["rate_per_s"] / noop["rate_per_s"],
                                            abs=0.001)
    # h2load repeats one body: the gateway replayed it, wrote nothing, and every request
    # reached Redis as one script call.
    assert gateway["outbox_events_written"] == 0
    assert gateway["replay_script"]["calls"] >= gateway["done"]
    assert gateway["fresh"]["ok"] == gateway["fresh"]["approved"] == 100
    assert gateway["fresh"]["script"]["calls"] >= 100


@pytest.mark.slow
def test_grpc_errors_in_http_200_are_caught(tmp_path):
    """A body the server cannot parse: HTTP 200 with grpc-status INTERNAL in the trailers,
    which h2load counts as succeeded; the DATA byte check must not."""
    import common
    import maxrate
    import noop_server

    args = maxrate.parse_args(["--duration-s", "1", "--warm-up-s", "0", "--connections", "2",
                               "--streams", "2", "--customers", "50", "--fresh", "0"])
    with common.Bench("maxrate-test") as bench:
        port = bench.start_noop(1)
        body = bench.dir / "garbage.grpc"
        body.write_bytes(common.grpc_frame(b"\xff\xff\xff\xff"))
        figures = maxrate.run_h2load(bench, args, port, body, {}, {})
    assert figures["succeeded"] > 0 and figures["status_2xx"] == figures["succeeded"]
    figures["streams_total"] = 4
    problems: list[str] = []
    maxrate.check_h2load(figures, noop_server.APPROVAL.ByteSize(), problems, "no-op")
    assert len(problems) == 1 and "gRPC errors" in problems[0]


def test_h2load_summary_is_parsed():
    output = (
        "finished in 2.00s, 5123.50 req/s, 1.21MB/s\n"
        "requests: 10247 total, 10263 started, 10247 done, 10240 succeeded, 7 failed, "
        "0 errored, 0 timeout\n"
        "status codes: 10240 2xx, 0 3xx, 0 4xx, 7 5xx\n"
        "traffic: 2.42MB (2537650) total, 321.44KB (329152) headers (space savings 93.40%), "
        "1.96MB (2048000) data\n"
        "                     min         max         mean         sd        +/- sd\n"
        "time for request:      452us     30.21ms      3.11ms      1.52ms    84.71%\n")
    import maxrate

    figures = maxrate.parse_h2load(output)
    assert figures["rate_per_s"] == 5123.5 and figures["seconds"] == 2.0
    assert (figures["done"], figures["succeeded"], figures["failed"]) == (10247, 10240, 7)
    assert figures["status_other"] == 7 and figures["bytes_data"] == 2048000
    assert figures["request_ms_min"] == pytest.approx(0.452)
    assert figures["request_ms_max"] == pytest.approx(30.21)
    with pytest.raises(ValueError, match="traffic"):
        maxrate.parse_h2load(output.replace("traffic", "trafic"))
