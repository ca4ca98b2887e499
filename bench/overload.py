"""Past capacity: goodput, refusals and recovery of unary Authorize offered 1x, 2x and 3x the
capacity measured first, every call with a deadline (issue 11's "no collapse").

    .venv/bin/python bench/overload.py [--deadline-ms 200] [--duration-s 10] [--capacity-s 5]
        [--capacity-concurrency 64] [--warm-up-s 2] [--processes 2] [--generators 1]
        [--connections 4] [--customers N] [--seed 1] [--no-aof]
        [--json var/bench/overload.json] [--plot var/bench/overload.png]

The machinery is bench/openloop.py's: a private redis-server and `creditgate serve`, a seeded
population, generator processes that send every call at its due time whether or not earlier
ones were answered, latency counted from the due time. The run: the closed-loop capacity step
(openloop.measure_capacity), an unreported warm-up at 1x, then open-loop steps at 1x, 2x and
3x the capacity and, with no pause after the 3x step, a recovery step at 1x (the calls of the
3x step still in flight when it begins). Every call, the capacity step's included, has the
same deadline (--deadline-ms).

Per step, from every call's record (openloop's run_step with config["records"]):
- goodput: OK answers within the deadline of their due time, per second of the step, and as a
  share of the capacity (target >= 90 %);
- refusals: RESOURCE_EXHAUSTED, and the share answered within 5 ms of the due time (target
  >= 95 %; the share within 5 ms of the send is printed too: the difference is the generator's
  own lag);
- p50/p99 of admitted calls (answered OK, approved or declined) against the deadline, and the
  p99 of every call not refused (a call that timed out counts with the time it took);
- the other outcomes by status (DEADLINE_EXCEEDED, CANCELLED, UNAVAILABLE, NO_ANSWER ...);
- Redis script calls (INFO commandstats, common.script_stats) per answer in time, both counted
  over the same window of wall-clock time (target <= 1.05): a step alone from its start until
  its last call ended; the 3x step until the recovery step starts, the recovery step from then
  on. The gateway runs without its hold-expiry sweeper (unless --sweeper), so that every
  script counted is an Authorize call's: the sweeper's `due` script, once per partition per
  sweep in every process, is otherwise indistinguishable in the counters;
- for the recovery step: the first 1-second window (in steps of 0.1 s, counted from the end of
  the overload) whose answers in time reach 90 % of the capacity, late answers to the 3x
  step's calls included (target: it starts within 1 s).

Exit status 0 when it measured, targets missed included; non-zero when it could not (no OK
answer in the capacity step, a server or a generator that did not start or died).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import openloop  # noqa: E402

DEADLINE_MS_DEFAULT = 200.0
FRACTIONS = (1.0, 2.0, 3.0)  # of the capacity, in this order
RECOVERY_FRACTION = 1.0  # right after the last of FRACTIONS
GOODPUT_SHARE_MIN = 0.90  # of the capacity measured in the same run
REFUSED_FAST_MS = 5.0
REFUSED_FAST_SHARE_MIN = 0.95
SCRIPTS_PER_ANSWER_MAX = 1.05
RECOVERY_S_MAX = 1.0
RECOVERY_WINDOW_S = 1.0  # goodput over this window must reach the share of the capacity
RECOVERY_RESOLUTION_S = 0.1  # the window slides by this much
REFUSED = "RESOURCE_EXHAUSTED"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deadline-ms", type=float, default=DEADLINE_MS_DEFAULT,
                        help="the deadline of every call")
    parser.add_argument("--duration-s", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--capacity-s", type=float, default=openloop.CAPACITY_S_DEFAULT,
                        help="seconds of the closed-loop capacity step")
    parser.add_argument("--capacity-concurrency", type=int,
                        default=openloop.CAPACITY_CONCURRENCY_DEFAULT,
                        help="calls kept in flight per generator in the capacity step")
    parser.add_argument("--warm-up-s", type=float, default=2.0,
                        help="an unreported step at 1x before the 1x step (0: none)")
    parser.add_argument("--processes", type=int, default=2, help="gateway processes")
    parser.add_argument("--generators", type=int, default=1, help="load generator processes")
    parser.add_argument("--connections", type=int, default=4,
                        help="HTTP/2 connections per generator")
    parser.add_argument("--inflight-max", type=int, default=20_000,
                        help="unanswered calls per generator before it stops sending")
    parser.add_argument("--customers", type=int, default=0,
                        help="population (default: enough for the most a run can send)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server", choices=("gateway", "noop"), default="gateway",
                        help="what is measured: the gateway, or bench/noop_server.py (same "
                        "proto, same server options, no work): the floor of this machine, "
                        "its generator and Python gRPC past capacity")
    parser.add_argument("--sweeper", action="store_true",
                        help="run the gateway's hold-expiry sweeper too (its scripts then "
                        "count among the scripts per answer)")
    parser.add_argument("--no-aof", action="store_true",
                        help="run the private redis-server without the append-only file")
    parser.add_argument("--json", type=Path, default=common.VAR_BENCH / "overload.json")
    parser.add_argument("--plot", type=Path, default=None,
                        help="a PNG of goodput and refusals against offered load")
    args = parser.parse_args(argv)
    if not (1 <= args.deadline_ms <= 60_000 and args.duration_s >= 2 * RECOVERY_WINDOW_S
            and args.warm_up_s >= 0 and args.capacity_s > 0):
        parser.error(f"--deadline-ms must be within 1..60000, --duration-s at least "
                     f"{2 * RECOVERY_WINDOW_S:g}, --capacity-s > 0, --warm-up-s >= 0")
    if not (1 <= args.processes <= 64 and 1 <= args.generators <= 64
            and 1 <= args.connections <= 64 and args.inflight_max >= 1
            and 1 <= args.capacity_concurrency <= 4096):
        parser.error("--processes, --generators, --connections must be within 1..64, "
                     "--capacity-concurrency within 1..4096")
    # What openloop.measure_capacity reads: the steps as fractions, the deadline as timeout.
    args.fractions = [*FRACTIONS, RECOVERY_FRACTION]
    args.timeout_s = args.deadline_ms / 1000
    args.rates, args.maximum = None, 0.0
    requests = openloop.CAPACITY_ASSUMED_MAX_PER_S * (
        args.capacity_s + sum(args.fractions) * args.duration_s + args.warm_up_s)
    needed = max(openloop.CUSTOMERS_MIN,
                 math.ceil(requests / openloop.REQUESTS_PER_CUSTOMER_MAX))
    if args.customers == 0:
        args.customers = needed
    elif args.customers < openloop.CUSTOMERS_MIN:
        parser.error(f"--customers must be at least {openloop.CUSTOMERS_MIN}")
    return args


# -- figures from the calls' records -----------------------------------------------------------
# A record: (due, sent, done, status) in seconds from its step's start; status "OK" for an
# answer (approved or declined).
def percentile_ms(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile of seconds, in ms; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)], 3)


def share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def in_time(record: tuple, deadline_s: float) -> bool:
    return record[3] == "OK" and record[2] - record[0] <= deadline_s


def step_figures(results: list[dict], offered_per_s: float, duration_s: float,
                 deadline_s: float, capacity_per_s: float) -> dict:
    """Everything a step's figures need except the window-based ones (scripts, recovery)."""
    records = [record for result in results for record in result["records"]]
    outcomes = Counter(record[3] for record in records)
    lost = sum(result["lost"] for result in results)
    if lost:
        outcomes["NO_ANSWER"] += lost
    good = sum(in_time(record, deadline_s) for record in records)
    refused = [record for record in records if record[3] == REFUSED]
    fast_s = REFUSED_FAST_MS / 1000
    admitted = [record[2] - record[0] for record in records if record[3] == "OK"]
    # A call with no answer waited at least its deadline and openloop's 5 s of grace after it.
    not_refused = [record[2] - record[0] for record in records if record[3] != REFUSED]
    not_refused += [deadline_s + 5.0] * lost
    seconds = max(1, math.ceil(max((record[2] for record in records), default=0.0)))
    per_second = [Counter() for _ in range(seconds)]
    for record in records:
        bucket = per_second[min(seconds - 1, max(0, int(record[2])))]
        kind = ("ok_in_time" if in_time(record, deadline_s) else
                "refused" if record[3] == REFUSED else "other")
        bucket[kind] += 1
    sent = sum(result["sent"] for result in results)
    return {
        "offered_per_s": offered_per_s, "duration_s": duration_s, "sent": sent,
        "not_sent": sum(result["not_sent"] for result in results),
        "outcomes": dict(sorted(outcomes.items())),
        "answers_in_time": good, "goodput_per_s": round(good / duration_s, 1),
        "goodput_share": round(good / duration_s / capacity_per_s, 4),
        "refused": len(refused), "refused_share_of_sent": share(len(refused), sent),
        "refused_fast_share": share(sum(record[2] - record[0] < fast_s for record in refused),
                                    len(refused)),
        "refused_fast_share_from_send": share(
            sum(record[2] - record[1] < fast_s for record in refused), len(refused)),
        "refused_p99_ms": percentile_ms([record[2] - record[0] for record in refused], 0.99),
        "admitted": len(admitted),
        "p50_ms": percentile_ms(admitted, 0.50), "p99_ms": percentile_ms(admitted, 0.99),
        "p99_not_refused_ms": percentile_ms(not_refused, 0.99),
        "send_lag_p99_ms": percentile_ms([record[1] - record[0] for record in records], 0.99),
        "per_second": [{"ok_in_time": bucket["ok_in_time"], "refused": bucket["refused"],
                        "other": bucket["other"]} for bucket in per_second],
    }


def answers_in_window(timed: list[tuple[float, list[dict]]], deadline_s: float,
                      start_wall: float, end_wall: float) -> int:
    """Answers in time, of any of the (step start, results) given, that arrived within
    [start_wall, end_wall) by the wall clock."""
    return sum(start_wall <= start + record[2] < end_wall and in_time(record, deadline_s)
               for start, results in timed for result in results
               for record in result["records"])


def recovery(timed: list[tuple[float, list[dict]]], deadline_s: float, overload_end: float,
             duration_s: float, capacity_per_s: float) -> dict:
    """From the end of the overload: answers in time per second, and the start of the first
    window of RECOVERY_WINDOW_S whose answers in time reach GOODPUT_SHARE_MIN of the capacity
    (None if none does within the recovery step)."""
    slots = math.ceil(duration_s / RECOVERY_RESOLUTION_S)
    counts = [0] * slots
    for start, results in timed:
        for result in results:
            for record in result["records"]:
                offset = start + record[2] - overload_end
                if 0 <= offset < slots * RECOVERY_RESOLUTION_S and in_time(record, deadline_s):
                    counts[int(offset / RECOVERY_RESOLUTION_S)] += 1
    width = round(RECOVERY_WINDOW_S / RECOVERY_RESOLUTION_S)
    needed = GOODPUT_SHARE_MIN * capacity_per_s * RECOVERY_WINDOW_S
    recovered_s = next((round(slot * RECOVERY_RESOLUTION_S, 3)
                        for slot in range(slots - width + 1)
                        if sum(counts[slot:slot + width]) >= needed), None)
    per_s = round(1 / RECOVERY_RESOLUTION_S)
    return {"recovery_s": recovered_s, "answers_in_time_needed_per_s": round(needed, 1),
            "after_overload_per_s": [sum(counts[slot:slot + per_s])
                                     for slot in range(0, slots, per_s)]}


def checks(step: dict, deadline_ms: float) -> dict:
    """Each figure against its target: {name: {value, target, met}}. With nothing refused
    the fast-refusal target holds vacuously."""
    found = {
        "goodput_share": (step["goodput_share"], f">= {GOODPUT_SHARE_MIN:.0%}",
                          step["goodput_share"] >= GOODPUT_SHARE_MIN),
        "refused_fast_share": (step["refused_fast_share"], f">= {REFUSED_FAST_SHARE_MIN:.0%} "
                               f"in < {REFUSED_FAST_MS:g} ms",
                               step["refused_fast_share"] is None
                               or step["refused_fast_share"] >= REFUSED_FAST_SHARE_MIN),
        "p99_ms": (step["p99_ms"], f"< {deadline_ms:g} ms",
                   step["p99_ms"] is not None and step["p99_ms"] < deadline_ms),
        "p99_not_refused_ms": (step["p99_not_refused_ms"], f"< {deadline_ms:g} ms",
                               step["p99_not_refused_ms"] is not None
                               and step["p99_not_refused_ms"] < deadline_ms),
        "scripts_per_answer": (step["scripts_per_answer"], f"<= {SCRIPTS_PER_ANSWER_MAX:g}",
                               step["scripts_per_answer"] is not None
                               and step["scripts_per_answer"] <= SCRIPTS_PER_ANSWER_MAX),
    }
    if "recovery_s" in step:
        found["recovery_s"] = (step["recovery_s"], f"<= {RECOVERY_S_MAX:g} s",
                               step["recovery_s"] is not None
                               and step["recovery_s"] <= RECOVERY_S_MAX)
    return {name: {"value": value, "target": target, "met": bool(met)}
            for name, (value, target, met) in found.items()}


# -- the run -----------------------------------------------------------------------------------
def run_sequence(generators: openloop.Generators, pids: dict[str, int], redis_url: str,
                 steps: list[tuple[str, float, float]], args: argparse.Namespace
                 ) -> list[dict]:
    """Steps back to back; per step its figures, its scripts per answer in time over its
    window (from its start to the next step's start, the last one until its calls ended) and
    the CPU over the same window."""
    # (wall time, Redis' script counters) per boundary; the first read before anything is sent.
    marks: list[tuple[float, dict]] = [(time.time(), common.script_stats(redis_url))]
    samplers: list[common.CpuSampler] = []
    starts: list[float] = []  # each step's start, the wall-clock time its records count from

    def at_boundary(number: int, at: float) -> None:
        if number == len(steps):  # the last step ends when its last call did: read below
            return
        starts.append(at)
        if number:
            marks.append((time.time(), common.script_stats(redis_url)))
        if samplers:
            samplers[-1].stop()
        samplers.append(common.CpuSampler(pids).start())

    try:
        per_step = generators.sequence(steps, args.timeout_s, at_boundary)
    finally:
        for sampler in samplers:
            sampler.stop()
    marks.append((time.time(), common.script_stats(redis_url)))
    timed = list(zip(starts, per_step, strict=True))
    figures = []
    for number, ((name, rate, duration_s), results) in enumerate(zip(steps, per_step,
                                                                     strict=True)):
        step = {"name": name, "fraction": round(rate / args.maximum, 3),
                **step_figures(results, rate, duration_s, args.timeout_s, args.maximum)}
        (window_start, before), (window_end, after) = marks[number], marks[number + 1]
        scripts = common.script_delta(before, after)
        answers = answers_in_window(timed, args.timeout_s, window_start, window_end)
        step.update(scripts=scripts["calls"], scripts_failed=scripts["failed_calls"],
                    script_usec_per_call=round(scripts["usec_per_call"], 1),
                    answers_in_time_in_window=answers,
                    scripts_window_s=round(window_end - window_start, 3),
                    scripts_per_answer=round(scripts["calls"] / answers, 4) if answers
                    else None)
        if name == "recovery":
            step.update(recovery(timed, args.timeout_s, starts[number], duration_s,
                                 args.maximum))
        step["cpu"] = samplers[number].report()
        step["cpu_roles"] = openloop.cpu_summary(step["cpu"])
        figures.append(step)
    return figures


def format_step(step: dict, deadline_ms: float) -> list[str]:
    verdict = {name: "met" if check["met"] else "missed" for name, check in
               step["checks"].items()}

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f} ms"

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    others = ", ".join(f"{code} {count:,}" for code, count in step["outcomes"].items()
                       if code not in ("OK", REFUSED)) or "none"
    cpu = step["cpu_roles"]
    lines = [
        f"{step['name']}: {step['offered_per_s']:,.0f}/s offered for {step['duration_s']:g} s,"
        f" {step['sent']:,} sent" + (f", {step['not_sent']:,} NOT SENT (generator's bound)"
                                     if step["not_sent"] else ""),
        f"  goodput     {step['goodput_per_s']:>9,.0f}/s in time = "
        f"{pct(step['goodput_share'])} of capacity; target "
        f"{step['checks']['goodput_share']['target']}: {verdict['goodput_share']}",
        f"  refused     {step['refused']:>9,} ({pct(step['refused_share_of_sent'])} of sent), "
        f"{pct(step['refused_fast_share'])} in < {REFUSED_FAST_MS:g} ms of the due time "
        f"({pct(step['refused_fast_share_from_send'])} of the send); target "
        f">= {REFUSED_FAST_SHARE_MIN:.0%}: {verdict['refused_fast_share']}"
        + (" (none refused)" if not step["refused"] else ""),
        f"  admitted    p50 {ms(step['p50_ms'])}, p99 {ms(step['p99_ms'])} "
        f"({step['admitted']:,} OK answers); target < {deadline_ms:g} ms: {verdict['p99_ms']}; "
        f"p99 of all calls not refused {ms(step['p99_not_refused_ms'])}: "
        f"{verdict['p99_not_refused_ms']}",
        f"  other       {others}",
        f"  scripts     {step['scripts']:,} run / {step['answers_in_time_in_window']:,} answers "
        f"in time over {step['scripts_window_s']:.1f} s = "
        + ("-" if step["scripts_per_answer"] is None else f"{step['scripts_per_answer']:.3f}")
        + f"; target <= {SCRIPTS_PER_ANSWER_MAX:g}: {verdict['scripts_per_answer']}",
    ]
    if "recovery_s" in step:
        lines.append(
            "  recovery    " + ("never within the step" if step["recovery_s"] is None else
                                 f"{step['recovery_s']:g} s") +
            f" after the overload (answers in time per second from its end: "
            f"{', '.join(f'{count:,}' for count in step['after_overload_per_s'])}; needed "
            f"{step['answers_in_time_needed_per_s']:,.0f}); target <= {RECOVERY_S_MAX:g} s: "
            f"{verdict['recovery_s']}")
    lines.append(f"  send lag p99 {ms(step['send_lag_p99_ms'])}; CPU gw "
                 f"{cpu.get('gateway', 0):.0f}% redis {cpu.get('redis-server', 0):.0f}% gen "
                 f"{cpu.get('generator', 0):.0f}%")
    return lines


def plot(steps: list[dict], capacity_per_s: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = [step for step in steps if step["name"] != "recovery"]
    offered = [step["offered_per_s"] for step in loaded]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.plot(offered, [step["goodput_per_s"] for step in loaded], marker="o",
              label="goodput (OK in time)")
    left.plot(offered, [step["refused"] / step["duration_s"] for step in loaded], marker="s",
              label="refused (RESOURCE_EXHAUSTED)")
    left.plot(offered, [(step["sent"] - step["answers_in_time"] - step["refused"])
                        / step["duration_s"] for step in loaded], marker="^",
              label="other outcomes")
    left.plot(offered, offered, color="grey", linestyle="--", linewidth=0.8, label="offered")
    left.axhline(capacity_per_s, color="black", linestyle=":", linewidth=0.8, label="capacity")
    left.axhline(GOODPUT_SHARE_MIN * capacity_per_s, color="red", linestyle=":",
                 linewidth=0.8, label=f"{GOODPUT_SHARE_MIN:.0%} of capacity")
    left.set_xlabel("offered rate (requests/s)")
    left.set_ylabel("calls/s")
    left.set_title("goodput and refusals against offered load")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    timeline = [step for step in steps if step["name"] in ("3x", "recovery")]
    offset = 0.0
    for step in timeline:
        seconds = [offset + number + 0.5 for number in range(len(step["per_second"]))]
        right.plot(seconds, [bucket["ok_in_time"] for bucket in step["per_second"]],
                   marker="o", label=f"{step['name']}: OK in time")
        right.plot(seconds, [bucket["refused"] for bucket in step["per_second"]],
                   marker="s", linestyle="--", label=f"{step['name']}: refused")
        offset += step["duration_s"]
    right.axhline(GOODPUT_SHARE_MIN * capacity_per_s, color="red", linestyle=":",
                  linewidth=0.8)
    right.set_xlabel("seconds from the start of the 3x step (by answer time, per step)")
    right.set_ylabel("calls per second")
    right.set_title("3x, then 1x at once")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def measure(args: argparse.Namespace) -> tuple[dict, list[dict]]:
    run_id = os.urandom(4).hex()
    with common.Bench("overload") as bench:
        redis_url = bench.start_redis(aof=not args.no_aof)
        if args.server == "noop":  # its Redis runs no script: scripts per answer are 0
            port = bench.start_noop(args.processes)
            bench.processes["gateway"] = bench.processes["noop"]
        else:
            # Without the sweeper unless asked: its `due` scripts would count as
            # reservations in Redis' FCALL counter.
            port = bench.start_gateway(redis_url, args.processes,
                                       *(() if args.sweeper else ("--no-sweeper",)))
            seeded_s = common.seed_customers(port, args.customers)
            print(f"seeded {args.customers:,} customers in {seeded_s:.1f} s", flush=True)
        config = {"target": f"{common.HOST}:{port}", "connections": args.connections,
                  "timeout_s": args.timeout_s, "inflight_max": args.inflight_max,
                  "seed": args.seed, "run_id": run_id, "customers": args.customers,
                  "records": True}
        generators = openloop.Generators(bench, args.generators, config)
        pids = common.label_processes({"gateway": bench.processes["gateway"].pid})
        pids["redis-server"] = bench.processes["redis-server"].pid
        for number, process in enumerate(generators.processes, 1):
            pids[f"generator[{number}]"] = process.pid
        capacity = openloop.measure_capacity(args, generators, pids)
        capacity.pop("cpu")  # its per-process detail; cpu_roles stays
        rates = dict(zip(("1x", "2x", "3x", "recovery"), args.rates, strict=True))
        if args.warm_up_s:
            generators.step("warm-up", rates["1x"], args.warm_up_s, args.timeout_s)
        steps = []
        # 1x and 2x alone; 3x and the recovery at 1x back to back.
        for sequence in (["1x"], ["2x"], ["3x", "recovery"]):
            steps += run_sequence(generators, pids, redis_url,
                                  [(name, rates[name], args.duration_s) for name in sequence],
                                  args)
        generators.stop()
    return capacity, steps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    facts = common.machine()
    print(f"overload, unary Authorize: capacity (closed loop), then 1x, 2x, 3x of it and 1x "
          f"again at once, {args.duration_s:g} s each, deadline {args.deadline_ms:g} ms; "
          f"{args.server} {args.processes} processes; {args.generators} generator(s) x "
          f"{args.connections} connections\n{common.format_machine(facts)}", flush=True)
    try:
        capacity, steps = measure(args)
    except KeyboardInterrupt:
        print("overload: interrupted; gateway, redis-server and generators stopped",
              file=sys.stderr)
        return 130
    for step in steps:
        step["checks"] = checks(step, args.deadline_ms)
        print("\n".join(format_step(step, args.deadline_ms)), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "machine": facts, "argv": sys.argv[1:] if argv is None else list(argv),
        "args": {key: str(value) if isinstance(value, Path) else value
                 for key, value in vars(args).items()},
        "deadline_ms": args.deadline_ms, "capacity": capacity,
        "targets": {"goodput_share_min": GOODPUT_SHARE_MIN,
                    "refused_fast_ms": REFUSED_FAST_MS,
                    "refused_fast_share_min": REFUSED_FAST_SHARE_MIN,
                    "p99_ms_below": args.deadline_ms,
                    "scripts_per_answer_max": SCRIPTS_PER_ANSWER_MAX,
                    "recovery_s_max": RECOVERY_S_MAX},
        "steps": steps}, indent=1) + "\n")
    if args.plot:
        plot(steps, args.maximum, args.plot,
             f"creditgate unary Authorize past capacity ({args.maximum:,.0f}/s measured), "
             f"deadline {args.deadline_ms:g} ms, {args.processes} gateway processes, "
             f"{facts['nproc']} cores ({facts['cpu']}), {args.duration_s:g} s per step")
        print(f"plot written to {args.plot}")
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
