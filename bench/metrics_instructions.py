"""The cost of the gateway's Prometheus metrics counted in instructions, not seconds: the same
calls to the real gateway with metrics off and on, the gateway process run under valgrind's
callgrind, so the figure repeats whatever else the machine runs (bench/metrics_cost.py times
the same comparison, which a shared two-core machine cannot settle to 3 %).

    .venv/bin/python bench/metrics_instructions.py [--runs 3] [--batches 40]
        [--batch-size 32] [--unary 400] [--warmup 20] [--customers 500] [--idle 10]
        [--json var/bench/metrics_instructions.json]

Each side starts its own private redis-server (no persistence) and `creditgate serve
--processes 1 --no-sweeper` (plaintext on loopback, the bench callers, PYTHONHASHSEED=0) under
`valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes`, seeds the same
customers, and sends the same warm-up calls. Then, for each kind of call, callgrind's counter
is switched on and zeroed (`callgrind_control -i on`, `-z`), the calls are sent one after the
other from this process (not counted: only the gateway runs under valgrind), and the counter
is dumped. The figure is the instructions of the gateway's main thread, less the rate it
spends with no calls at all (timers, polling: --idle seconds counted at the end) times the
window's length, divided by the authorizations made. The main thread runs all of the
gateway's Python, so every metric; gRPC's core threads run none, and how often they poll
depends on timing, so counting them would add noise, not cost (leaving them out makes the
ratio larger, not smaller). The calls are the same on both sides (the same seeded random
purchases, each a new one), so the difference is what metrics cost.

The idle rate taken off includes a flush with nothing to write. The flush's writes of the
series a second's calls changed stay in the count, and under callgrind a second holds about
forty times fewer calls than at full speed, so each call here carries some forty times its
share of those writes: the "on" side is counted pessimistically. The sweeper is off on both
sides (not part of the comparison). After the counted calls, the "on" side's metrics are
scraped once to check they counted every decision. --runs runs of both sides, the order
alternating; the figures are the medians.

Printed, and written to --json: instructions per authorization on each side and their ratio,
for unary Authorize and for AuthorizeBatch items. The target (docs/benchmarks.md, "Metrics
cost"): metrics add under 3 %. Exit status 1 if the target is missed or a check failed.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import common
from common import (
    HOST,
    VAR_BENCH,
    Bench,
    free_port,
    machine,
    random_request,
    seed_customers,
    serve_options,
    wait_serving,
)

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from creditgate.limits.constants import METRICS_FLUSH_INTERVAL_S

TARGET = 1.03  # metrics on / off, instructions per authorization
START_UNDER_VALGRIND_S = 600.0  # Python, grpc and protobuf load slowly under valgrind
CALL_TIMEOUT_S = 600.0  # no deadline a callgrind-slowed call could miss
SEED = 20261206


def callgrind_control(*options: str) -> None:
    subprocess.run(["callgrind_control", *options], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.STDOUT, timeout=CALL_TIMEOUT_S)


def dumped_instructions(folder: Path, pid: int, label: str) -> int:
    """Dump callgrind's counts since the last zeroing under `label`; the instructions of the
    process's main thread (its dump of thread 1: callgrind.out.PID.N-01)."""
    before = set(folder.glob("callgrind.out.*"))
    callgrind_control("--dump=" + label, str(pid))
    dumps = sorted(set(folder.glob("callgrind.out.*-01")) - before)
    if len(dumps) != 1:
        raise SystemExit(f"callgrind wrote {len(dumps)} dumps of the main thread for {label}")
    total = re.search(r"^(?:summary|totals):\s+(\d+)", dumps[0].read_text(), re.M)
    if total is None:
        raise SystemExit(f"{dumps[0]} holds no total")
    return int(total.group(1))


def purchases(args, kind: str, count: int) -> list[pb.AuthorizeRequest]:
    """The same purchases on both sides: each a new one (its own idempotency key)."""
    rng = random.Random(f"{SEED}-{kind}")
    return [random_request(rng, f"mi-{kind}-{index}", args.customers) for index in range(count)]


def send(stub, requests: list[pb.AuthorizeRequest], batch_size: int) -> int:
    """Send `requests` one call after another (batches of `batch_size`, or unary if 0);
    returns the items answered with a decision."""
    decided = 0
    if not batch_size:
        for request in requests:
            stub.Authorize(request, timeout=CALL_TIMEOUT_S)
            decided += 1
        return decided
    for start in range(0, len(requests), batch_size):
        reply = stub.AuthorizeBatch(pb.AuthorizeBatchRequest(
            requests=requests[start:start + batch_size]), timeout=CALL_TIMEOUT_S)
        decided += sum(item.HasField("response") for item in reply.items)
    return decided


def one_side(args, metrics: bool) -> dict:
    with Bench("metrics-instructions") as bench:
        redis_url = bench.start_redis(aof=False)
        port, metrics_port = free_port(), free_port() if metrics else 0
        options, _ = serve_options(bench.dir, mtls=False)
        gateway = bench.start("gateway", [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
            f"--callgrind-out-file={bench.dir}/callgrind.out.%p", sys.executable, "-m",
            "creditgate.gateway.cli", "serve", "--host", HOST, "--port", str(port),
            "--redis-url", redis_url, "--processes", "1", "--no-sweeper",
            "--metrics-port", str(metrics_port), "--log-format", "text", *options],
            "gateway.log", env={"PYTHONHASHSEED": "0"})
        common.START_TIMEOUT_S = START_UNDER_VALGRIND_S
        wait_serving(port, gateway, bench.dir / "gateway.log", 1)
        seed_customers(port, args.customers)
        figures = {"metrics": metrics}
        with common.PLAINTEXT.channel(f"{HOST}:{port}") as channel:
            stub = pb_grpc.AuthorizationStub(channel)
            send(stub, purchases(args, "warmup-batch", args.warmup * args.batch_size),
                 args.batch_size)
            send(stub, purchases(args, "warmup-unary", args.warmup), 0)
            callgrind_control("--instr=on", str(gateway.pid))
            for kind, size, count in (("unary", 0, args.unary),
                                      ("batch", args.batch_size, args.batches * args.batch_size)):
                callgrind_control("--zero", str(gateway.pid))
                started = time.monotonic()
                decided = send(stub, purchases(args, kind, count), size)
                seconds = time.monotonic() - started  # the calls' window, not the dump's
                instructions = dumped_instructions(bench.dir, gateway.pid, kind)
                figures[kind] = {"authorizations": decided, "instructions": instructions,
                                 "seconds": seconds}
            callgrind_control("--zero", str(gateway.pid))
            time.sleep(args.idle)
            figures["idle_per_s"] = dumped_instructions(bench.dir, gateway.pid, "idle") / args.idle
        for kind in ("unary", "batch"):
            counted = figures[kind]
            per_time = figures["idle_per_s"] * counted["seconds"]
            counted["per_authorization"] = counted["instructions"] / counted["authorizations"]
            counted["per_authorization_less_idle"] = \
                (counted["instructions"] - per_time) / counted["authorizations"]
        if metrics:
            time.sleep(2 * METRICS_FLUSH_INTERVAL_S)
            figures["scraped_authorizations"] = scraped_authorizations(metrics_port)
        return figures


def scraped_authorizations(port: int) -> float:
    """The calls the metrics counted: Authorize calls plus AuthorizeBatch items decided."""
    text = urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=60).read().decode()
    counted = re.findall(r'^creditgate_decisions_total\{[^}]*\} (\S+)$', text, re.M)
    return sum(float(value) for value in counted)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=40, help="AuthorizeBatch calls counted")
    parser.add_argument("--batch-size", type=int, default=32, help="items per batch")
    parser.add_argument("--unary", type=int, default=400, help="unary Authorize calls counted")
    parser.add_argument("--warmup", type=int, default=20, help="batches (and as many unary "
                        "calls) before counting")
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3, help="runs of both sides (alternating "
                        "which goes first); the figures are the medians")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of no calls whose "
                        "instructions (the event loop's timers, the metrics' flush) are counted")
    parser.add_argument("--json", default=str(VAR_BENCH / "metrics_instructions.json"))
    args = parser.parse_args(argv)
    if min(args.batches, args.batch_size, args.unary, args.customers, args.runs) < 1 \
            or args.warmup < 0:
        parser.error("counts must be positive")
    return args


def summarise(args, runs: list[dict]) -> tuple[dict, list[str]]:
    """Medians over the runs of each side's instructions per authorization (less the idle
    rate times the window), their ratios on / off, and what failed."""
    report: dict = {"runs": runs, "target": TARGET, "machine": machine()}
    failures = []
    expected = {"unary": args.unary, "batch": args.batches * args.batch_size}
    made = args.unary + args.batches * args.batch_size + args.warmup * (args.batch_size + 1)
    for run in runs:
        for side, figures in run.items():
            failures += [f"{side}: {figures[kind]['authorizations']} of {count} {kind} "
                         "authorizations decided" for kind, count in expected.items()
                         if figures[kind]["authorizations"] != count]
            if "scraped_authorizations" in figures and figures["scraped_authorizations"] != made:
                failures.append(f"the metrics counted {figures['scraped_authorizations']:.0f} "
                                f"decisions, not {made}")
    for kind in expected:
        per = {side: statistics.median(run[side][kind]["per_authorization_less_idle"]
                                       for run in runs) for side in ("off", "on")}
        ratio = per["on"] / per["off"]
        report[kind] = {**per, "ratio": ratio}
        print(f"{kind:>5}: {per['off']:,.0f} instructions per authorization with metrics off, "
              f"{per['on']:,.0f} on: {ratio:.4f}x ({(ratio - 1) * 100:+.2f} %)")
        if ratio >= TARGET:
            failures.append(f"{kind}: metrics cost {(ratio - 1) * 100:.2f} %, target < 3 %")
    return report, failures


def main(argv=None) -> int:
    args = parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install valgrind)")
    runs = []
    for index in range(args.runs):
        order = (False, True) if index % 2 == 0 else (True, False)
        run = {("on" if metrics else "off"): one_side(args, metrics) for metrics in order}
        for side in ("off", "on"):
            print(f"run {index + 1} {side:>3}: " + ", ".join(
                f"{kind} {run[side][kind]['per_authorization_less_idle']:,.0f}"
                for kind in ("unary", "batch")) + " instructions per authorization")
        runs.append(run)
    report, failures = summarise(args, runs)
    report["failures"] = failures
    report["argv"] = sys.argv[1:] if argv is None else list(argv)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    for failure in failures:
        print("FAILED:", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
