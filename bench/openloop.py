"""Open-loop latency of unary Authorize at fixed offered rates, with a plot.

    .venv/bin/python bench/openloop.py [--rates 250,500,1000 | --max-rate R]
        [--fractions 0.25,0.5,0.75,1.0] [--duration-s 10] [--warm-up-s 2] [--processes 2]
        [--generators 1] [--connections 4] [--timeout-s 5] [--customers N] [--seed 1]
        [--no-aof] [--mtls] [--plot var/bench/openloop.png] [--json var/bench/openloop.json]

Starts a private redis-server (append-only file, fsync every second, unless --no-aof) and
`creditgate serve --processes 2`, seeds a population of customers through Admin.PutCustomer,
then offers each rate for --duration-s seconds from --generators processes (grpc.aio on
uvloop, --connections HTTP/2 connections each, so SO_REUSEPORT spreads them over the
gateway's processes). Every request is a new authorization: its own idempotency key, a
customer drawn from the seeded population, an amount drawn uniformly (seeded by --seed).

Open loop: request i of a step is due at start + i / rate by the clock and is sent then,
whether or not earlier ones have been answered, so the offered rate does not drop when the
server slows. Latency runs from the due time, not from the actual send, so a generator that
falls behind adds its lag to the latency instead of hiding it (no coordinated omission); the
lag itself is reported too ("send lag p99"). Latencies of OK answers go into an HDR
histogram (hdrhistogram, microseconds, 3 significant digits), merged over the generators.

Rates: --rates as given; otherwise --fractions of a maximum: --max-rate if given, else the
gateway's measured capacity for this very load (--max-from capacity, the default): a
closed-loop step first (--capacity-concurrency calls kept in flight per generator for
--capacity-s seconds, every call a new authorization) whose rate of OK answers is the
maximum. --max-from maxrate-json takes instead the gateway's rate in the maxrate runner's
JSON (bench/maxrate.py, default var/bench/maxrate.json): h2load replays one request body, so
after the first call every call is an idempotent replay, which costs the gateway and Redis
less than a new authorization; half of that maximum is more than half of what new
authorizations can reach. The JSON records both maxima when both are known.

Per rate it prints p50/p99/p99.9/max, the achieved rate (OK answers that arrived within the
step's duration, per second of it; and "answered": all OK answers over the time from the
step's start to its last answer), errors by status, and the CPU of the gateway's processes,
redis-server and the generators; it writes a PNG of the percentiles against the offered
rate, and the figures as JSON. A step with errors, or with requests the generator could not
send (more than --inflight-max unanswered), is marked: its latencies are not valid alone.

Exit status: 1 if a call failed with a status other than DEADLINE_EXCEEDED, CANCELLED or
RESOURCE_EXHAUSTED (or got no answer after its deadline): an overloaded step, refusals
included, is a result, a failed one is not.
0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

LATENCY_US_MAX = 60_000_000  # the histogram's range: 1 us .. 60 s
SIGNIFICANT_DIGITS = 3
DEFAULT_RATES = (250, 500, 1000, 1500)
CAPACITY_S_DEFAULT = 5.0
CAPACITY_CONCURRENCY_DEFAULT = 64  # calls in flight per generator: enough to saturate 2 cores
# For sizing the population before the capacity is known: no 2-core run comes near this.
CAPACITY_ASSUMED_MAX_PER_S = 8_000
DEFAULT_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
STEP_START_DELAY_S = 0.5  # generators get the step's start time this long in advance
WORKER_SLACK_S = 30.0  # a generator silent this long after its step should have ended: fail
CUSTOMERS_MIN = 1_000
# Customers drawn uniformly: at most this many approvals each on average, far below the
# scan_pay daily count (50), so velocity declines stay rare.
REQUESTS_PER_CUSTOMER_MAX = 20
# What an overloaded gateway answers; other statuses fail the run. RESOURCE_EXHAUSTED: the
# gateway's admission control refused the call at once, a designed outcome. CANCELLED: past
# its capacity, the HTTP/2 transport resets streams it cannot take (seen only in steps whose
# offered rate is above what the gateway achieved), which is overload, not a wrong answer.
OVERLOAD_CODES = frozenset({"DEADLINE_EXCEEDED", "NO_ANSWER", "CANCELLED", "RESOURCE_EXHAUSTED"})
TARGET_P99_MS = 5.0  # issue 5: at half of the measured maximum
TARGET_P999_MS = 20.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="", help="offered rates per second, comma-separated")
    parser.add_argument("--max-rate", type=float, default=0.0,
                        help="the maximum the fractions apply to (default: from --maxrate-json)")
    parser.add_argument("--fractions", default=",".join(map(str, DEFAULT_FRACTIONS)))
    parser.add_argument("--max-from", choices=("capacity", "maxrate-json"), default="capacity",
                        help="the maximum the fractions apply to, without --max-rate: the "
                        "gateway's closed-loop capacity for new authorizations, measured first "
                        "(default), or the max-rate runner's replay figure")
    parser.add_argument("--capacity-s", type=float, default=CAPACITY_S_DEFAULT,
                        help="seconds of the closed-loop capacity step")
    parser.add_argument("--capacity-concurrency", type=int, default=CAPACITY_CONCURRENCY_DEFAULT,
                        help="calls kept in flight per generator in the capacity step")
    parser.add_argument("--maxrate-json", type=Path, default=common.VAR_BENCH / "maxrate.json")
    parser.add_argument("--duration-s", type=float, default=10.0, help="seconds per rate")
    parser.add_argument("--warm-up-s", type=float, default=2.0,
                        help="an unreported step at the lowest rate first (0: none)")
    parser.add_argument("--processes", type=int, default=2, help="gateway processes")
    parser.add_argument("--generators", type=int, default=1, help="load generator processes")
    parser.add_argument("--connections", type=int, default=4,
                        help="HTTP/2 connections per generator")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="deadline of each call")
    parser.add_argument("--inflight-max", type=int, default=20_000,
                        help="unanswered calls per generator before it stops sending")
    parser.add_argument("--customers", type=int, default=0,
                        help=f"population (default: enough for {REQUESTS_PER_CUSTOMER_MAX} "
                        f"requests each, at least {CUSTOMERS_MIN})")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-noop", dest="noop", action="store_false",
                        help="skip the same rates against the no-op server (the latency floor "
                        "of the load generator and gRPC, measured after the gateway)")
    parser.add_argument("--mtls", action="store_true",
                        help="the gateway serves mutual TLS (a private CA made for the run)")
    parser.add_argument("--no-aof", action="store_true",
                        help="run the private redis-server without the append-only file")
    parser.add_argument("--plot", type=Path, default=common.VAR_BENCH / "openloop.png")
    parser.add_argument("--json", type=Path, default=common.VAR_BENCH / "openloop.json")
    args = parser.parse_args(argv)
    args.rates, args.rates_from, args.maximum = choose_rates(args, parser)
    if args.duration_s <= 0 or args.warm_up_s < 0 or args.timeout_s <= 0:
        parser.error("--duration-s and --timeout-s must be > 0, --warm-up-s >= 0")
    if not (1 <= args.processes <= 64 and 1 <= args.generators <= 64
            and 1 <= args.connections <= 64 and args.inflight_max >= 1):
        parser.error("--processes, --generators, --connections must be within 1..64")
    if args.capacity_s <= 0 or not 1 <= args.capacity_concurrency <= 4096:
        parser.error("--capacity-s must be > 0, --capacity-concurrency within 1..4096")
    if args.rates is None:  # fractions of the capacity, known once measured: size for the most
        rates = [CAPACITY_ASSUMED_MAX_PER_S * fraction for fraction in args.fractions]
        requests = (CAPACITY_ASSUMED_MAX_PER_S * args.capacity_s + sum(rates) * args.duration_s
                    + min(rates) * args.warm_up_s)
    else:
        requests = sum(args.rates) * args.duration_s + min(args.rates) * args.warm_up_s
    needed = max(CUSTOMERS_MIN, math.ceil(requests / REQUESTS_PER_CUSTOMER_MAX))
    if args.customers == 0:
        args.customers = needed
    elif args.customers * REQUESTS_PER_CUSTOMER_MAX < requests:
        parser.error(f"--customers {args.customers} is too few for {requests:,.0f} requests "
                     f"(scan_pay approves {common.SCAN_PAY_DAY_COUNT_MAX} a day per customer);"
                     f" give at least {needed}")
    return args


def replay_maximum(path: Path) -> float:
    """The gateway's rate in the max-rate runner's JSON (replays of one body), or 0."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return float(json.loads(path.read_text())["gateway"]["rate_per_s"])
    return 0.0


def choose_rates(args: argparse.Namespace, parser: argparse.ArgumentParser
                 ) -> tuple[list[float] | None, str, float]:
    """(rates, where they come from, the maximum they are fractions of or 0). The rates are
    None when they are fractions of the capacity, which main() measures first."""
    maximum = 0.0
    try:
        args.fractions = [float(fraction) for fraction in args.fractions.split(",")]
        if not args.fractions or any(not 0 < fraction <= 4 for fraction in args.fractions):
            parser.error("every fraction must be within (0, 4]")
        if args.rates:
            rates = [float(rate) for rate in args.rates.split(",")]
            source = "--rates"
        elif args.max_rate or args.max_from == "maxrate-json":
            maximum, source = args.max_rate, "--max-rate"
            if not maximum:
                maximum = replay_maximum(args.maxrate_json)
                source = f"{args.maxrate_json} (gateway, replays: {maximum:,.0f}/s)"
            if maximum:
                rates = [round(maximum * fraction) for fraction in args.fractions]
                source += " x " + ",".join(map(str, args.fractions))
            else:
                rates, source = list(DEFAULT_RATES), "default"
        else:
            return None, "capacity", 0.0
    except ValueError as error:
        parser.error(f"rates: {error}")
    if not rates or any(rate <= 0 or rate > 1_000_000 for rate in rates):
        parser.error("every rate must be within (0, 1,000,000]")
    return rates, source, maximum if rates and source != "--rates" else 0.0


# -- a generator process -----------------------------------------------------------------------
def generator_main(conn, index: int, config: dict) -> None:
    import signal

    import uvloop

    # Ctrl-C reaches the whole process group: the parent stops the generators itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    uvloop.run(_generator(conn, index, config))


async def _generator(conn, index: int, config: dict) -> None:
    from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc

    loop = asyncio.get_running_loop()
    # A local subchannel pool per channel: each is its own TCP connection.
    transport = common.Transport(*config.get("transport", ()))
    channels = [transport.aio_channel(config["target"],
                                      options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(config["connections"])]
    try:
        await asyncio.wait_for(asyncio.gather(*(channel.channel_ready()
                                                for channel in channels)), 30)
        stubs = [pb_grpc.AuthorizationStub(channel) for channel in channels]
        conn.send(("ready", index))
        while True:
            step = await loop.run_in_executor(None, conn.recv)
            if step is None:
                break
            if isinstance(step, list):  # Generators.sequence: steps back to back
                conn.send(await asyncio.gather(*(run_step(stubs, index, config, **one)
                                                 for one in step)))
            elif step.pop("closed_loop", False):
                conn.send(await run_capacity(stubs, index, config, **step))
            else:
                conn.send(await run_step(stubs, index, config, **step))
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


async def run_step(stubs: list, index: int, config: dict, name: str, rate_per_s: float,
                   duration_s: float, start_at: float) -> dict:
    """Offer `rate_per_s` for `duration_s` from wall-clock time `start_at`; the figures. With
    config["records"], also every call as (due, sent, done, status name) in seconds from the
    start ("OK" for an answer): bench/overload.py computes its figures from them."""
    import grpc
    from hdrh.histogram import HdrHistogram

    latency = HdrHistogram(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
    lag = HdrHistogram(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
    rng = random.Random(f"{config['seed']}-{index}-{name}")
    outcome = {"name": name, "index": index, "sent": 0, "ok": 0, "ok_in_window": 0,
               "approved": 0, "not_sent": 0, "errors": {}}
    last_done = [0.0]
    pending: set[asyncio.Task] = set()
    timeout_s, inflight_max = config["timeout_s"], config["inflight_max"]
    records: list[tuple[float, float, float, str]] | None = [] if config.get("records") else None

    async def one(stub, request, due: float, sent: float) -> None:
        try:
            reply = await stub.Authorize(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            code = error.code().name
            outcome["errors"][code] = outcome["errors"].get(code, 0) + 1
            if records is not None:
                records.append((due - start, sent - start, time.monotonic() - start, code))
        else:
            done = time.monotonic()
            latency.record_value(max(1, round((done - due) * 1e6)))
            outcome["ok"] += 1
            outcome["ok_in_window"] += done <= window_end
            outcome["approved"] += reply.approved
            if records is not None:
                records.append((due - start, sent - start, done - start, "OK"))
        last_done[0] = time.monotonic()

    interval_s = 1.0 / rate_per_s
    count = round(rate_per_s * duration_s)
    start = time.monotonic() + (start_at - time.time())
    window_end = start + duration_s
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    number = 0
    while number < count:
        now = time.monotonic()
        # Everything due by now goes out now: a late loop catches up, it does not skip.
        due_count = min(count, int((now - start) / interval_s) + 1)
        while number < due_count:
            due = start + number * interval_s
            if len(pending) >= inflight_max:
                outcome["not_sent"] += 1
            else:
                lag.record_value(max(1, round((now - due) * 1e6)))
                request = common.random_request(
                    rng, f"ol-{config['run_id']}-{index}-{name}-{number}", config["customers"])
                task = asyncio.create_task(one(stubs[number % len(stubs)], request, due, now))
                pending.add(task)
                task.add_done_callback(pending.discard)
                outcome["sent"] += 1
            number += 1
        if number < count:
            await asyncio.sleep(max(0.0, start + number * interval_s - time.monotonic()))
    scheduled_s = time.monotonic() - start
    if pending:
        await asyncio.wait(set(pending), timeout=timeout_s + 5.0)
    outcome["lost"] = len(pending)  # no answer even after the deadline: counted as errors
    for task in pending:
        task.cancel()
    outcome.update(latency=latency.encode(), lag=lag.encode(), scheduled_s=scheduled_s,
                   elapsed_s=max(last_done[0] - start, 1e-9))
    if records is not None:
        outcome["records"] = records
    return outcome


async def run_capacity(stubs: list, index: int, config: dict, name: str, concurrency: int,
                       duration_s: float, start_at: float) -> dict:
    """Closed loop: `concurrency` callers, each sending its next new authorization when the
    last is answered, for `duration_s` from wall-clock time `start_at`; OK answers counted."""
    import grpc

    outcome = {"name": name, "index": index, "sent": 0, "ok_in_window": 0,
               "approved_in_window": 0, "errors": {}}
    start = time.monotonic() + (start_at - time.time())
    window_end = start + duration_s
    timeout_s = config["timeout_s"]
    await asyncio.sleep(max(0.0, start - time.monotonic()))

    async def caller(number: int) -> None:
        rng = random.Random(f"{config['seed']}-{index}-{name}-{number}")
        sent = 0
        while time.monotonic() < window_end:
            request = common.random_request(
                rng, f"ol-{config['run_id']}-{index}-{name}-{number}-{sent}",
                config["customers"])
            sent += 1
            outcome["sent"] += 1
            try:
                reply = await stubs[number % len(stubs)].Authorize(request, timeout=timeout_s)
            except grpc.aio.AioRpcError as error:
                code = error.code().name
                outcome["errors"][code] = outcome["errors"].get(code, 0) + 1
            else:
                if time.monotonic() <= window_end:
                    outcome["ok_in_window"] += 1
                    outcome["approved_in_window"] += reply.approved

    await asyncio.gather(*(caller(number) for number in range(concurrency)))
    return outcome


# -- the parent ------------------------------------------------------------------------------
class Generators:
    """--generators processes (spawned) connected by pipes; stopped on exit."""

    def __init__(self, bench: common.Bench, count: int, config: dict):
        spawn = multiprocessing.get_context("spawn")
        self.pipes = []
        self.processes = []
        for index in range(count):
            parent_end, child_end = spawn.Pipe()
            process = spawn.Process(target=generator_main, args=(child_end, index, config),
                                    daemon=True)
            process.start()
            child_end.close()
            self.pipes.append(parent_end)
            self.processes.append(process)
        bench.callback(self.stop)
        for pipe in self.pipes:
            self._receive(pipe, 60.0)

    def _receive(self, pipe, timeout_s: float):
        if not pipe.poll(timeout_s):
            raise SystemExit(f"a load generator did not answer within {timeout_s:.0f} s")
        try:
            return pipe.recv()
        except EOFError:
            raise SystemExit("a load generator died") from None

    def step(self, name: str, rate_per_s: float, duration_s: float, timeout_s: float
             ) -> list[dict]:
        start_at = time.time() + STEP_START_DELAY_S
        share = rate_per_s / len(self.pipes)
        for pipe in self.pipes:
            pipe.send({"name": name, "rate_per_s": share, "duration_s": duration_s,
                       "start_at": start_at})
        wait_s = STEP_START_DELAY_S + duration_s + timeout_s + WORKER_SLACK_S
        return [self._receive(pipe, wait_s) for pipe in self.pipes]

    def sequence(self, steps: list[tuple[str, float, float]], timeout_s: float,
                 at_boundary=lambda number, at: None) -> list[list[dict]]:
        """Steps (name, rate, duration) back to back with no pause between them: the calls of
        one still in flight when the next begins. at_boundary(i, at) runs here at wall-clock
        time `at`, the start of step i, and at_boundary(len(steps), at) at the end of the
        last one's schedule, e.g. to read Redis' counters there. Per step, the generators'
        results."""
        start_at = time.time() + STEP_START_DELAY_S
        boundaries = [start_at]
        for _name, _rate, duration_s in steps:
            boundaries.append(boundaries[-1] + duration_s)
        for pipe in self.pipes:
            pipe.send([{"name": name, "rate_per_s": rate / len(self.pipes),
                        "duration_s": duration_s, "start_at": boundaries[number]}
                       for number, (name, rate, duration_s) in enumerate(steps)])
        for number, boundary in enumerate(boundaries):
            time.sleep(max(0.0, boundary - time.time()))
            at_boundary(number, boundary)
        wait_s = timeout_s + WORKER_SLACK_S
        by_generator = [self._receive(pipe, wait_s) for pipe in self.pipes]
        return [[results[number] for results in by_generator] for number in range(len(steps))]

    def capacity(self, concurrency: int, duration_s: float, timeout_s: float) -> dict:
        """The closed-loop step: OK answers per second over all generators, and errors."""
        start_at = time.time() + STEP_START_DELAY_S
        for pipe in self.pipes:
            pipe.send({"name": "capacity", "closed_loop": True, "concurrency": concurrency,
                       "duration_s": duration_s, "start_at": start_at})
        wait_s = STEP_START_DELAY_S + duration_s + timeout_s + WORKER_SLACK_S
        results = [self._receive(pipe, wait_s) for pipe in self.pipes]
        errors: dict[str, int] = {}
        for result in results:
            for code, count in result["errors"].items():
                errors[code] = errors.get(code, 0) + count
        return {"rate_per_s": sum(result["ok_in_window"] for result in results) / duration_s,
                "approved_per_s": sum(result["approved_in_window"] for result in results)
                / duration_s,
                "sent": sum(result["sent"] for result in results),
                "errors": errors, "concurrency": concurrency * len(self.pipes),
                "duration_s": duration_s}

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        # A generator interrupted in the middle of a step reads None only after it: end it.
        for process in self.processes:
            process.join(timeout=2)
            if process.is_alive():
                process.terminate()
                process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join()


def merge(results: list[dict], offered: float, duration_s: float) -> dict:
    from hdrh.histogram import HdrHistogram

    latency = HdrHistogram(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
    lag = HdrHistogram(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
    errors: dict[str, int] = {}
    for result in results:
        latency.decode_and_add(result["latency"])
        lag.decode_and_add(result["lag"])
        for code, count in result["errors"].items():
            errors[code] = errors.get(code, 0) + count
    lost = sum(result["lost"] for result in results)
    if lost:
        errors["NO_ANSWER"] = lost
    ok = sum(result["ok"] for result in results)
    ok_in_window = sum(result["ok_in_window"] for result in results)
    elapsed_s = max(result["elapsed_s"] for result in results)

    def ms(histogram, percentile: float) -> float:
        return round(histogram.get_value_at_percentile(percentile) / 1000, 3)

    return {
        "offered_per_s": offered, "duration_s": duration_s,
        "sent": sum(result["sent"] for result in results),
        "not_sent": sum(result["not_sent"] for result in results),
        "ok": ok, "approved": sum(result["approved"] for result in results),
        "errors": errors, "error_count": sum(errors.values()),
        # OK answers that arrived within the step's duration, per second of it: the offered
        # rate while the server keeps up, its capacity once it does not.
        "achieved_per_s": round(ok_in_window / duration_s, 1), "elapsed_s": round(elapsed_s, 3),
        # All OK answers over the time from the step's start to its last answer.
        "answered_per_s": round(ok / elapsed_s, 1),
        "p50_ms": ms(latency, 50), "p99_ms": ms(latency, 99), "p999_ms": ms(latency, 99.9),
        "max_ms": round(latency.get_max_value() / 1000, 3),
        "recorded": latency.get_total_count(),
        "send_lag_p99_ms": ms(lag, 99), "send_lag_max_ms": round(lag.get_max_value() / 1000, 3),
    }


def cpu_summary(report: dict) -> dict[str, float]:
    """CPU % of one core per role: the gateway's processes, redis-server, the generators."""
    roles: dict[str, float] = {}
    for label, row in report["processes"].items():
        role = label.split("[")[0].split(" ")[0]
        roles[role] = round(roles.get(role, 0.0) + row["cpu_percent"], 1)
    return roles


def plot(steps: list[dict], path: Path, title: str, noop_steps: list[dict] = ()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offered = [step["offered_per_s"] for step in steps]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for key, label, marker in (("p50_ms", "p50", "o"), ("p99_ms", "p99", "s"),
                               ("p999_ms", "p99.9", "^")):
        left.plot(offered, [step[key] for step in steps], marker=marker, label=label)
    if noop_steps:
        left.plot([step["offered_per_s"] for step in noop_steps],
                  [step["p99_ms"] for step in noop_steps], marker="s", color="grey",
                  linestyle="-.", label="no-op server p99")
    left.axhline(TARGET_P99_MS, color="grey", linestyle="--", linewidth=0.8)
    left.axhline(TARGET_P999_MS, color="grey", linestyle=":", linewidth=0.8)
    left.set_yscale("log")
    left.set_xlabel("offered rate (requests/s)")
    left.set_ylabel("latency from the due time (ms)")
    left.set_title("latency percentiles (dashed: 5 ms, dotted: 20 ms)")
    left.grid(True, which="both", alpha=0.3)
    left.legend()
    right.plot(offered, [step["achieved_per_s"] for step in steps], marker="o",
               label="achieved (OK answers)")
    right.plot(offered, offered, color="grey", linestyle="--", linewidth=0.8, label="offered")
    right.set_xlabel("offered rate (requests/s)")
    right.set_ylabel("requests/s")
    right.set_title("achieved against offered")
    right.grid(True, alpha=0.3)
    right.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def format_step(step: dict) -> str:
    errors = ", ".join(f"{code} {count}" for code, count in sorted(step["errors"].items()))
    flags = []
    if step["error_count"]:
        flags.append(f"ERRORS: {errors}")
    if step["not_sent"]:
        flags.append(f"NOT SENT: {step['not_sent']}")
    cpu = step["cpu_roles"]
    return (f"  {step['offered_per_s']:>9,.0f} {step['achieved_per_s']:>9,.0f} "
            f"{step['answered_per_s']:>9,.0f} "
            f"{step['p50_ms']:>8.2f} {step['p99_ms']:>8.2f} {step['p999_ms']:>8.2f} "
            f"{step['max_ms']:>9.1f} {step['send_lag_p99_ms']:>8.2f} "
            f"{step['approved'] / max(step['ok'], 1):>7.1%}  "
            f"gw {cpu.get('gateway', 0):.0f}% redis {cpu.get('redis-server', 0):.0f}% "
            f"gen {cpu.get('generator', 0):.0f}%  {step['script_usec_per_call']:.0f} us"
            + (f"  {'; '.join(flags)}" if flags else ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    facts = common.machine()
    run_id = os.urandom(4).hex()
    steps: list[dict] = []
    noop_steps: list[dict] = []
    rates_text = ("fractions " + ", ".join(map(str, args.fractions)) + " of the capacity "
                  "measured first" if args.rates is None else
                  ", ".join(f"{rate:,.0f}" for rate in args.rates) + f" per second "
                  f"({args.rates_from})")
    capacity = None
    print(f"open loop, unary Authorize: rates {rates_text}, {args.duration_s:g} s each; gateway "
          f"{args.processes} processes; {args.generators} generator(s) x {args.connections} "
          f"connections\n{common.format_machine(facts)}", flush=True)
    try:
        with common.Bench("openloop") as bench:
            redis_url = bench.start_redis(aof=not args.no_aof)
            port = bench.start_gateway(redis_url, args.processes, mtls=args.mtls)
            seeded_s = common.seed_customers(port, args.customers, bench.transport)
            print(f"seeded {args.customers:,} customers in {seeded_s:.1f} s", flush=True)
            config = {"target": f"{common.HOST}:{port}", "connections": args.connections,
                      "timeout_s": args.timeout_s, "inflight_max": args.inflight_max,
                      "seed": args.seed, "run_id": run_id, "customers": args.customers,
                      "transport": tuple(bench.transport)}
            generators = Generators(bench, args.generators, config)
            pids = common.label_processes({"gateway": bench.processes["gateway"].pid})
            pids["redis-server"] = bench.processes["redis-server"].pid
            for number, process in enumerate(generators.processes, 1):
                pids[f"generator[{number}]"] = process.pid
            if args.rates is None:
                capacity = measure_capacity(args, generators, pids)
            if args.warm_up_s:
                generators.step("warm-up", min(args.rates), args.warm_up_s, args.timeout_s)
            print(f"  {'offered/s':>9} {'achieved':>9} {'answered':>9} {'p50 ms':>8} {'p99 ms':>8} "
                  f"{'p99.9 ms':>8} {'max ms':>9} {'lag p99':>8} {'approved':>8}  CPU (% of a "
                  f"core), Redis per script call", flush=True)
            steps = run_steps(args, generators, pids, "s", redis_url)
            generators.stop()
            bench.stop("gateway")
            bench.stop("redis-server")
        if args.noop:
            noop_steps = noop_leg(args, run_id)
    except KeyboardInterrupt:
        print("openloop: interrupted; gateway, redis-server and generators stopped",
              file=sys.stderr)
        return 130
    title = (f"creditgate unary Authorize, open loop, gateway {args.processes} processes, "
             f"{facts['nproc']} cores ({facts['cpu']}), {args.duration_s:g} s per rate")
    plot(steps, args.plot, title, noop_steps)
    lines = target_lines(args, steps)
    print("\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "machine": facts, "rates_from": args.rates_from, "capacity": capacity,
        "replay_maximum_per_s": replay_maximum(args.maxrate_json) or None,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "args": {key: str(value) if isinstance(value, Path) else value
                 for key, value in vars(args).items()},
        "steps": steps, "noop_steps": noop_steps}, indent=2) + "\n")
    print(f"plot written to {args.plot}, figures to {args.json}")
    # Overload is a measured outcome (deadlines passed, calls not sent); any other error is a
    # failure of the gateway or the run.
    failures = {code: count for step in steps + noop_steps
                for code, count in step["errors"].items() if code not in OVERLOAD_CODES}
    if failures:
        print(f"openloop: errors other than overload: {failures}", file=sys.stderr)
    return 1 if failures else 0


def noop_leg(args: argparse.Namespace, run_id: str) -> list[dict]:
    """The same offered rates against bench/noop_server.py (same proto, same server options,
    same processes, no work): the latency floor of this load generator and gRPC on this
    machine, measured in the same run as the gateway's."""
    print(f"the same rates against the no-op server ({args.processes} processes):", flush=True)
    with common.Bench("openloop-noop") as bench:
        port = bench.start_noop(args.processes)
        config = {"target": f"{common.HOST}:{port}", "connections": args.connections,
                  "timeout_s": args.timeout_s, "inflight_max": args.inflight_max,
                  "seed": args.seed, "run_id": run_id + "-noop", "customers": args.customers}
        generators = Generators(bench, args.generators, config)
        pids = common.label_processes({"gateway": bench.processes["noop"].pid})
        for number, process in enumerate(generators.processes, 1):
            pids[f"generator[{number}]"] = process.pid
        if args.warm_up_s:
            generators.step("warm-up", min(args.rates), args.warm_up_s, args.timeout_s)
        return run_steps(args, generators, pids, "n")


def run_steps(args: argparse.Namespace, generators: Generators, pids: dict[str, int],
              prefix: str, redis_url: str | None = None) -> list[dict]:
    """Every rate of args.rates for args.duration_s, each step's figures and CPU; with a Redis,
    the µs per script call it spent in the step too (0 without: the no-op server's leg)."""
    steps = []
    for number, rate in enumerate(args.rates):
        before = common.script_stats(redis_url) if redis_url else None
        sampler = common.CpuSampler(pids).start()
        try:
            results = generators.step(f"{prefix}{number}", rate, args.duration_s, args.timeout_s)
        finally:
            sampler.stop()
        step = merge(results, rate, args.duration_s)
        step["cpu"] = sampler.report()
        step["cpu_roles"] = cpu_summary(step["cpu"])
        step["script_usec_per_call"] = round(common.script_delta(
            before, common.script_stats(redis_url))["usec_per_call"], 1) if redis_url else 0.0
        steps.append(step)
        line = format_step(step)
        print(line if redis_url else line.replace("gw ", "no-op ", 1), flush=True)
    return steps


def measure_capacity(args: argparse.Namespace, generators: Generators, pids: dict[str, int]
                     ) -> dict:
    """The closed-loop capacity step; sets args.rates (its fractions) and args.maximum. Its
    CPU shows whether the gateway or the load generator ran out first."""
    sampler = common.CpuSampler(pids).start()
    try:
        capacity = generators.capacity(args.capacity_concurrency, args.capacity_s,
                                       args.timeout_s)
    finally:
        sampler.stop()
    capacity["cpu"] = sampler.report()
    capacity["cpu_roles"] = cpu_summary(capacity["cpu"])
    maximum = capacity["rate_per_s"]
    cpu = capacity["cpu_roles"]
    print(f"  capacity (closed loop, {capacity['concurrency']} calls in flight, "
          f"{args.capacity_s:g} s, new authorizations): {maximum:,.0f} OK answers/s "
          f"({capacity['approved_per_s']:,.0f} approved); gw {cpu.get('gateway', 0):.0f}% "
          f"redis {cpu.get('redis-server', 0):.0f}% gen {cpu.get('generator', 0):.0f}%"
          + (f", errors {capacity['errors']}" if capacity["errors"] else ""), flush=True)
    if maximum <= 0:
        raise SystemExit(f"openloop: no OK answer in the capacity step: {capacity['errors']}")
    args.rates = [round(maximum * fraction) for fraction in args.fractions]
    if min(args.rates) < 1:
        raise SystemExit(f"openloop: a fraction of the capacity ({maximum:,.0f}/s) rounds to "
                         f"less than 1/s: {args.fractions}")
    args.maximum = maximum
    args.rates_from = (f"capacity measured first ({maximum:,.0f}/s, closed loop) x "
                       + ",".join(map(str, args.fractions)))
    # The capacity step's own purchases count too: they drew on the same customers' windows.
    requests = (capacity["sent"] + sum(args.rates) * args.duration_s
                + min(args.rates) * args.warm_up_s)
    if requests > args.customers * REQUESTS_PER_CUSTOMER_MAX:
        raise SystemExit(f"openloop: the capacity ({maximum:,.0f}/s) needs more customers "
                         f"than the {args.customers:,} seeded: pass --customers "
                         f"{math.ceil(requests / REQUESTS_PER_CUSTOMER_MAX)}")
    return capacity


def target_lines(args: argparse.Namespace, steps: list[dict]) -> list[str]:
    """Issue 5's latency target, read at the step offered closest to half the maximum."""
    maximum = args.maximum
    if not maximum:
        return []
    half = min(steps, key=lambda step: abs(step["offered_per_s"] - maximum / 2))
    met = half["p99_ms"] <= TARGET_P99_MS and half["p999_ms"] <= TARGET_P999_MS \
        and not half["error_count"]
    return [f"at {half['offered_per_s']:,.0f}/s (about half of {maximum:,.0f}/s): p99 "
            f"{half['p99_ms']:.2f} ms, p99.9 {half['p999_ms']:.2f} ms; target p99 <= "
            f"{TARGET_P99_MS:g} ms and p99.9 <= {TARGET_P999_MS:g} ms: "
            f"{'met' if met else 'NOT met'}"]


if __name__ == "__main__":
    sys.exit(main())
