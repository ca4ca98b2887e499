"""What one reservation costs inside redis-server: reserve.lua alone, no gateway, no network
load beside it.

    .venv/bin/python bench/script_cost.py [--calls 4000] [--runs 4] [--customers 5000]
        [--callgrind] [--segments] [--json var/bench/script_cost.json]

Starts a private redis-server (no persistence), seeds customers through the real
put_customer script, builds each call with the gateway's own plan (hotpath.plan_authorize:
the bench's purchase mix, every call a new purchase that is approved), and sends the calls
as pipelined FCALL of the library's reserve function, 256 per round trip.

- Time (default): Redis' own `usec_per_call` of FCALL (INFO commandstats), the least of
  --runs runs of --calls each, and how much of it the commands the script calls account for
  (the rest is Lua and the bridge between Lua and the commands). Times drift with whatever
  else the machine runs; compare them within one run.
- --callgrind: redis-server runs under valgrind's callgrind, and the figure is the number of
  instructions per call, counted from a zeroed counter to a dump around the measured calls.
  The count is repeatable (the same script, data and binary give the same count, whatever
  else the machine does), so it measures a change to a script where times cannot.
- --segments (with --callgrind): the script cut short before each of its steps (reserve.lua
  with `do return end` inserted, loaded as the function of a library of its own), so the
  difference between two cuts is what that step costs. This is how docs/benchmarks.md's
  table of reserve.lua's steps was made.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import batch_rate  # noqa: E402
import redis  # noqa: E402
from common import HOST, VAR_BENCH, free_port, machine, start_redis  # noqa: E402

from creditgate import hotpath  # noqa: E402
from creditgate.limits import catalog, contracts  # noqa: E402
from creditgate.limits.lua_source import library_source  # noqa: E402

PIPELINE_CALLS = 256
START_TIMEOUT_S = 60.0  # redis-server under valgrind starts slowly
CALLGRIND_CALLS_DEFAULT = 400
# The steps of reserve.lua the --segments cuts are made before: (name, the start of the line
# the cut goes before). A step that a later change removes is reported as missing.
SEGMENTS = (
    ("TIME and the deadline", "local now, late = call_time"),
    ("arguments (the product's rules kept, 4 small ones)", "local base, customer_id, fingerprint"),
    ("idempotency record (GET)", "local replay = decline_replay"),
    ("approval's hold id (SHA-1, EXISTS)", "-- A retry reads its fingerprint"),
    ("release of expired holds (ZSCORE of the due set)", "local hold_key = base"),
    ("read of the customer (HMGET)", "-- One read of the customer hash"),
    ("levels parsed (read_levels)", "local levels, available, short_level = read_levels"),
    ("status and product checks", "local function decline"),
    ("velocity windows", "local day_window, month_window"),
    ("credit checks and counter-offer", "if amount_reason == 0 and short_level"),
    ("customer hash write (HSET)", "-- After this point"),
    ("hold write (path id, HSET)", "-- The optional fields are written"),
    ("open-hold and due sets (ZADD x2)", "redis.call('ZADD', KEYS[KEY_CUSTOMER_HOLDS]"),
    ("outbox event (XADD)", "local event = {"),
    ("reply", "-- A partial approval names its binding level"),
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=None,
                        help=f"calls per run (default 4000; {CALLGRIND_CALLS_DEFAULT} "
                             "with --callgrind)")
    parser.add_argument("--runs", type=int, default=4, help="runs; the least time is kept")
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--callgrind", action="store_true",
                        help="count instructions under valgrind instead of timing")
    parser.add_argument("--segments", action="store_true",
                        help="with --callgrind: the cost of each step of reserve.lua")
    parser.add_argument("--json", type=Path, default=VAR_BENCH / "script_cost.json")
    args = parser.parse_args(argv)
    if args.segments and not args.callgrind:
        parser.error("--segments needs --callgrind (times are too noisy to subtract)")
    if args.calls is None:
        args.calls = CALLGRIND_CALLS_DEFAULT if args.callgrind else 4000
    velocity_per_day = 50  # scan_pay's count window: each customer approves at most 50 a day
    cuts = len(SEGMENTS) + 2 if args.segments else 1  # each cut, and the empty script, runs too
    if args.calls * args.runs * cuts > args.customers * velocity_per_day // 2:
        parser.error("too few customers for that many calls: raise --customers")
    return args


class Calls:
    """Each call a new purchase of the bench's mix, planned as the gateway plans it."""

    def __init__(self, customers: int, seed: int):
        self.rules = hotpath.compile_products(catalog.load())
        self.rng = random.Random(seed)
        self.customers = customers
        self.count = 0

    def next(self, n: int) -> list[tuple[list, list]]:
        plans = []
        for _ in range(n):
            self.count += 1
            request = batch_rate.purchase(self.rng, f"cost-{self.count:09d}", self.customers)
            keys_, args = hotpath.plan_authorize(request, self.rules, batch_rate.PARTITIONS)
            plans.append((keys_, [*contracts.call_header(), *args]))
        return plans


def load(client: redis.Redis, body: str, tag: str) -> str:
    """Load `body` (reserve.lua, or a cut of it) as the only function of a library of its
    own; the name FCALL calls it by."""
    client.function_load(library_source({"reserve": body}, library=f"creditgate_cost{tag}",
                                        suffix=f"_cost{tag}"), replace=True)
    return f"reserve_cost{tag}"


def reserve_body() -> str:
    return (Path(__file__).resolve().parent.parent / "limits" / "lua" / "reserve.lua").read_text()


def send(client: redis.Redis, function: str, plans: list[tuple[list, list]]) -> None:
    """The calls, pipelined; every one must be approved (a retry's answer is its approval)."""
    for start in range(0, len(plans), PIPELINE_CALLS):
        pipe = client.pipeline(transaction=False)
        for keys_, args in plans[start:start + PIPELINE_CALLS]:
            pipe.fcall(function, len(keys_), *keys_, *args)
        replies = pipe.execute()
        refused = [reply for reply in replies if not reply.startswith(b"OK|0|")]
        if refused:  # the figures are for approvals: a decline is a bench bug
            raise SystemExit(f"not approved: {refused[0][:120]!r}")


def timed(client: redis.Redis, calls: Calls, args) -> dict:
    sha = load(client, reserve_body(), "")
    runs = []
    for _ in range(args.runs):
        plans = calls.next(args.calls)
        client.config_resetstat()
        send(client, sha, plans)
        stats = client.info("commandstats")
        evalsha = stats["cmdstat_fcall"]
        inner = {name.removeprefix("cmdstat_"): value["usec"] / evalsha["calls"]
                 for name, value in stats.items()
                 if name not in ("cmdstat_fcall", "cmdstat_config|resetstat")}
        # The same calls again: retries, answered from the holds they made (what bench/
        # maxrate.py's h2load sends after its first call, as it replays one body).
        client.config_resetstat()
        send(client, sha, plans)
        replay = client.info("commandstats")["cmdstat_fcall"]["usec_per_call"]
        runs.append({"usec_per_call": evalsha["usec_per_call"], "commands_usec": inner,
                     "replay_usec_per_call": replay})
    best = min(runs, key=lambda run: run["usec_per_call"])
    return {"usec_per_call": best["usec_per_call"],
            "usec_per_call_runs": [round(run["usec_per_call"], 1) for run in runs],
            "commands_usec_per_call": round(sum(best["commands_usec"].values()), 1),
            "replay_usec_per_call": min(run["replay_usec_per_call"] for run in runs),
            "commands": {name: round(usec, 2) for name, usec in
                         sorted(best["commands_usec"].items(), key=lambda kv: -kv[1])}}


class Callgrind:
    """redis-server under callgrind; instructions counted around an action."""

    def __init__(self, folder: Path):
        if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
            raise SystemExit("--callgrind needs valgrind: apt-get install valgrind")
        self.folder = folder
        self.port = free_port()
        self.process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/callgrind.%p",
             shutil.which("redis-server"), "--port", str(self.port), "--bind", HOST,
             "--dir", str(folder), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host=HOST, port=self.port)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.process.kill()
                    raise SystemExit("redis-server under valgrind did not start") from None
                time.sleep(0.2)
        client.close()

    def _control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(self.process.pid)], check=True,
                       capture_output=True)

    def instructions(self, action) -> int:
        self._control("-z")
        action()
        for path in glob.glob(f"{self.folder}/callgrind.{self.process.pid}*"):
            os.remove(path)
        self._control("-d")
        total = 0
        for path in glob.glob(f"{self.folder}/callgrind.{self.process.pid}*"):
            for line in Path(path).read_text().splitlines():
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
        if total == 0:
            raise SystemExit("callgrind wrote no totals")
        return total

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def cut_before(source: str, start: str) -> str | None:
    """reserve.lua with `do return end` before the first line that starts with `start`."""
    lines = source.split("\n")
    for index, line in enumerate(lines):
        if line.startswith(start):
            return "\n".join(lines[:index] + ["do return 'OK|0|cut' end"] + lines[index:])
    return None


def counted(client: redis.Redis, grind: Callgrind, calls: Calls, args) -> dict:
    tags = iter(range(1_000))

    def cost(body: str, replays: bool = False) -> float | tuple[float, float]:
        sha = load(client, body, str(next(tags)))
        plans = calls.next(args.calls)
        first = grind.instructions(lambda: send(client, sha, plans)) / args.calls
        if not replays:
            return first
        return first, grind.instructions(lambda: send(client, sha, plans)) / args.calls

    body = reserve_body()
    first, replay = cost(body, replays=True)
    result = {"instructions_per_call": round(first),
              "replay_instructions_per_call": round(replay)}
    if args.segments:
        empty = round(cost("return 'OK|0|empty'"))
        # The cut before a step counts everything before it, so a step costs the cut before
        # the next step less the cut before its own; the first step is the first cut less an
        # empty function's call with the same arguments.
        steps = [("start of the function (the library built the prelude once)", empty)]
        for name, start in SEGMENTS:
            cut = cut_before(body, start)
            steps.append((name, None if cut is None else round(cost(cut))))
        ends = [before for _, before in steps[1:]] + [result["instructions_per_call"]]
        segments = [{"step": name, "instructions":
                     None if before is None or end is None else end - before}
                    for (name, before), end in zip(steps, ends, strict=True)]
        result.update(empty_call_instructions=empty, segments=segments)
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="creditgate-script-cost-"))
    grind = process = None
    try:
        if args.callgrind:
            grind = Callgrind(folder)
            port = grind.port
        else:
            process, port = start_redis(folder)
        asyncio.run(batch_rate.seed(f"redis://127.0.0.1:{port}/0", args.customers))
        client = redis.Redis(host=HOST, port=port)
        calls = Calls(args.customers, args.seed)
        result = {"machine": machine(), "argv": sys.argv[1:], "calls": args.calls,
                  "redis_version": client.info("server")["redis_version"]}
        if args.callgrind:
            result.update(counted(client, grind, calls, args))
            print(f"reserve.lua: {result['instructions_per_call']:,} instructions per call "
                  f"inside redis-server (callgrind, {args.calls} new purchases); "
                  f"{result['replay_instructions_per_call']:,} per retry of an approval")
            if args.segments:
                print(f"  {'FCALL of an empty function with the same arguments':55s} "
                      f"{result['empty_call_instructions']:>9,}")
                for segment in result["segments"]:
                    figure = segment["instructions"]
                    print(f"  {segment['step']:55s} "
                          f"{'(not found)' if figure is None else f'{figure:>9,}'}")
        else:
            result.update(timed(client, calls, args))
            print(f"reserve.lua: {result['usec_per_call']:.1f} µs per call inside redis-server "
                  f"(least of {args.runs} runs of {args.calls}: {result['usec_per_call_runs']}); "
                  f"the commands it calls {result['commands_usec_per_call']:.1f} µs, Lua and "
                  f"the bridge the rest; a retry of an approval "
                  f"{result['replay_usec_per_call']:.1f} µs")
            for name, usec in result["commands"].items():
                print(f"  {name:24s} {usec:6.2f} µs per call")
        client.close()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"figures written to {args.json}")
        return 0
    finally:
        if grind is not None:
            grind.stop()
        if process is not None:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
