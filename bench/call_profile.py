"""Where a unary Authorize's CPU goes, counted in instructions: the no-op server, the floor
(the no-op server with one Redis round trip per call) and the gateway, each run under valgrind's
callgrind and sent the same calls one after another.

    .venv/bin/python bench/call_profile.py [--calls 400] [--warmup 50] [--customers 100]
        [--json var/bench/call_profile.json]

Each server runs as one process (PYTHONHASHSEED=0) under `valgrind --tool=callgrind
--instr-atstart=no --separate-threads=yes`: bench/noop_server.py, bench/noop_server.py
--redis-url (a script that only returns, through the gateway's script runner), and `creditgate
serve --processes 1 --no-sweeper` (plaintext on loopback, the bench callers; seeded
customers; every call a new purchase). After --warmup calls, the counter is switched on and
zeroed, --calls calls are sent from this process (not counted), and the counts are dumped;
then --idle seconds with no calls are counted, and that rate of each thread's and object's work
(timers) times the calls' window is taken off, so the figures are the calls' own work.

Printed, and written to --json: per call, the instructions of each server's main thread (which
runs all of its Python and the event loop) split by the shared object they ran in
(libpython: Python code, the gateway's and asyncio's and gRPC's Python parts; cygrpc: gRPC's
Cython layer; loop: uvloop; _message: protobuf; hiredis; _plan_c: the hot path; libc: memory
copies, formatting, system-call wrappers), and the instructions of all threads (gRPC's core
threads poll, so their share varies with timing). redis-server is not counted here:
bench/script_cost.py counts the scripts inside Redis. docs/benchmarks.md ("Where a unary call's
CPU goes") reads these figures beside bench/maxrate.py's rates.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import shutil
import sys
import time
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
from metrics_instructions import START_UNDER_VALGRIND_S, callgrind_control

from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 600.0
SERVERS = ("noop", "floor", "gateway")
_NAMED = re.compile(r"\((\d+)\)(?: (.*))?")


def server_argv(name: str, port: int, redis_url: str, folder: Path) -> list[str]:
    if name == "gateway":
        options, _ = serve_options(folder, mtls=False)
        return [sys.executable, "-m", "creditgate.gateway.cli", "serve", "--host", HOST,
                "--port", str(port), "--redis-url", redis_url, "--processes", "1",
                "--no-sweeper", "--log-format", "text", *options]
    return [sys.executable, "bench/noop_server.py", "--port", str(port),
            *(["--redis-url", redis_url] if name == "floor" else [])]


def by_object(dump: Path) -> collections.Counter:
    """A callgrind dump's own (exclusive) instructions by shared object."""
    counts: collections.Counter = collections.Counter()
    names: dict[str, str] = {}
    current, in_call = "?", False
    for line in dump.read_text().splitlines():
        if line.startswith(("ob=", "cob=")):
            named = _NAMED.match(line.split("=", 1)[1].strip())
            if named and named.group(2):
                names[named.group(1)] = named.group(2)
            if line.startswith("ob="):
                current = names.get(named.group(1), "?") if named else line[3:]
        elif line.startswith("calls="):
            in_call = True  # the next cost line is the call's inclusive cost, not own work
        elif line[:1].isdigit() or line[:1] in "+-*":
            fields = line.split()
            if in_call:
                in_call = False
            elif len(fields) >= 2:
                counts[Path(current).name.split(".cpython")[0].split(".abi3")[0]] += \
                    int(fields[1])
    return counts


def profile(args, name: str) -> dict:
    with Bench(f"call-profile-{name}") as bench:
        redis_url = bench.start_redis(aof=False) if name != "noop" else ""
        port = free_port()
        server = bench.start(name, [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
            f"--callgrind-out-file={bench.dir}/callgrind.out.%p",
            *server_argv(name, port, redis_url, bench.dir)], "server.log",
            env={"PYTHONHASHSEED": "0"})
        common.START_TIMEOUT_S = START_UNDER_VALGRIND_S
        wait_serving(port, server, bench.dir / "server.log", 1)
        if name == "gateway":
            seed_customers(port, args.customers)
        rng = random.Random(f"call-profile-{args.calls}")
        requests = [random_request(rng, f"cp-{index}", args.customers)
                    for index in range(args.warmup + args.calls)]
        with common.PLAINTEXT.channel(f"{HOST}:{port}") as channel:
            stub = pb_grpc.AuthorizationStub(channel)
            for request in requests[:args.warmup]:
                stub.Authorize(request, timeout=CALL_TIMEOUT_S)
            callgrind_control("--instr=on", str(server.pid))
            callgrind_control("--zero", str(server.pid))
            started = time.monotonic()
            for request in requests[args.warmup:]:
                stub.Authorize(request, timeout=CALL_TIMEOUT_S)
            seconds = time.monotonic() - started
            callgrind_control("--dump=calls", str(server.pid))
            callgrind_control("--zero", str(server.pid))
            time.sleep(args.idle)
            callgrind_control("--dump=idle", str(server.pid))
        pid = server.pid
        calls, idle = (sorted(bench.dir.glob(f"callgrind.out.{pid}.{part}-*")) for part in (1, 2))
        main, main_idle = (by_object(next(p for p in dumps if p.name.endswith("-01")))
                           for dumps in (calls, idle))
        # What the main thread does with no calls (timers), at the rate it did it, comes off.
        for obj, count in main_idle.items():
            main[obj] -= count / args.idle * seconds
        every = sum(sum(by_object(path).values()) for path in calls) \
            - sum(sum(by_object(path).values()) for path in idle) / args.idle * seconds
        return {"main_thread_per_call": sum(main.values()) / args.calls,
                "all_threads_per_call": every / args.calls,
                "idle_main_thread_per_s": sum(main_idle.values()) / args.idle,
                "main_thread_by_object_per_call": {
                    obj: count / args.calls for obj, count in main.most_common()}}


def report_lines(figures: dict) -> list[str]:
    objects = sorted({obj for name in SERVERS
                      for obj in figures[name]["main_thread_by_object_per_call"]},
                     key=lambda obj: -figures["gateway"]["main_thread_by_object_per_call"]
                     .get(obj, 0))
    lines = [f"{'instructions per unary call':<32}" + "".join(f"{n:>12}" for n in SERVERS)]
    for obj in objects:
        row = [figures[name]["main_thread_by_object_per_call"].get(obj, 0) for name in SERVERS]
        if max(row) >= 500:
            lines.append(f"  main thread, {obj:<18}" + "".join(f"{v:>12,.0f}" for v in row))
    for key, label in (("main_thread_per_call", "main thread, all"),
                       ("all_threads_per_call", "every thread")):
        lines.append(f"  {label:<30}" + "".join(f"{figures[n][key]:>12,.0f}" for n in SERVERS))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls counted per server")
    parser.add_argument("--warmup", type=int, default=50, help="calls before counting")
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds with no calls, "
                        "counted to take the timers' share off")
    parser.add_argument("--json", default=str(VAR_BENCH / "call_profile.json"))
    args = parser.parse_args(argv)
    if args.calls < 1 or args.warmup < 0 or args.customers < 1:
        parser.error("--calls and --customers must be positive, --warmup not negative")
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install valgrind)")
    figures = {name: profile(args, name) for name in SERVERS}
    print("\n".join(report_lines(figures)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            **figures, "machine": machine(),
            "argv": sys.argv[1:] if argv is None else list(argv)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
