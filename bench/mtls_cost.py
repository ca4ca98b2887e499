"""The cost of mutual TLS: unary Authorize and AuthorizeBatch through the real gateway, with
mTLS off and on in the same run, from the same closed-loop load generator.

    .venv/bin/python bench/mtls_cost.py [--rounds 1] [--duration 10] [--warmup 2]
        [--processes 2] [--clients 1] [--connections 8] [--unary-concurrency 64]
        [--batch-concurrency 8] [--batch-min 16] [--batch-max 64] [--customers 20000]
        [--json var/bench/mtls_cost.json]

Each leg is one bench/batch_rate.py run: its own private redis-server and `creditgate serve
--processes N`, the same seeded customers, the same load generator (grpc.aio on uvloop, a
closed loop: every generator keeps its calls in flight over --connections connections, every
item a new purchase). The legs are unary Authorize and AuthorizeBatch, each in plaintext
(--insecure, the loopback caller) and with mutual TLS (--mtls: a private CA made for the leg;
the generators present a client certificate, the gateway verifies it and finds the caller by
its SAN on every call). h2load (bench/maxrate.py) cannot present a client certificate, so it
has no part here. Connections are opened once per leg, so the figures are those of a steady
load (encryption and the per-call identity), not of handshakes.

The legs alternate plaintext and mTLS, round after round (--rounds; plaintext first in odd
rounds, mTLS first in even ones), so that a drift of the machine's other load falls on both
alike; a kind's figures are the medians over its rounds.
Printed, and written to --json, as ratios mTLS / plaintext: authorizations per second, the
gateway's CPU per authorization, and the p50 and p99 latency of a call.

Exit status 1 if a leg failed (a leg's errors or its outbox check), else 0.

The same machinery compares other options of bench/batch_rate.py off and on (Variant):
bench/metrics_cost.py measures the cost of the gateway's metrics with it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import common  # noqa: F401  bench/common.py: puts the repository on sys.path
from common import VAR_BENCH, format_machine, machine

BENCH = Path(__file__).resolve().parent
MODES = ("unary", "batch")
LEG_TIMEOUT_S_BASE = 180.0  # a leg's start-up, seeding and stop, beyond its measured seconds
# What each leg contributes, from bench/batch_rate.py's JSON.
FIGURES = ("authorizations_per_s", "gateway_cpu_us_per_authorization", "latency_ms_p50",
           "latency_ms_p99")


class Variant(NamedTuple):
    """An option of bench/batch_rate.py measured off and on, in alternating legs."""

    key: str  # the leg's field that says whether it was on
    flag: str  # bench/batch_rate.py's option
    off: str  # the two sides' names in the summary
    on: str
    ratio: str  # how a ratio is named in the printed summary
    title: str  # the printed legs' and problems' name of the option
    json: str  # the figures file's default name, under var/bench
    runner: str  # the script's name, for its temporary folders and messages
    # The problems of a leg's bench/batch_rate.py figures beyond errors and the outbox check.
    check: Callable[[dict], list[str]] | None = None


MTLS = Variant("mtls", "--mtls", "plaintext", "mtls", "mTLS/plaintext", "mTLS",
               "mtls_cost.json", "mtls_cost")


def parse_args(argv: list[str] | None, variant: Variant = MTLS,
               description: str = __doc__) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1,
                        help=f"{variant.off} and {variant.on} legs of each kind, alternating")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds a leg")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--processes", type=int, default=2, help="gateway processes")
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes")
    parser.add_argument("--connections", type=int, default=8,
                        help="connections per load generator")
    parser.add_argument("--unary-concurrency", type=int, default=64,
                        help="unary calls in flight per load generator")
    parser.add_argument("--batch-concurrency", type=int, default=8,
                        help="AuthorizeBatch calls in flight per load generator")
    parser.add_argument("--batch-min", type=int, default=16)
    parser.add_argument("--batch-max", type=int, default=64)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--json", type=Path, default=VAR_BENCH / variant.json)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds must be >= 1 and --duration > 0")
    return args


def leg_argv(args: argparse.Namespace, mode: str, on: bool, json_path: Path,
             variant: Variant = MTLS) -> list[str]:
    """The bench/batch_rate.py command of one leg, with the variant's option `on` or not."""
    argv = [sys.executable, str(BENCH / "batch_rate.py"), "--processes", str(args.processes),
            "--clients", str(args.clients), "--connections", str(args.connections),
            "--duration", str(args.duration), "--warmup", str(args.warmup),
            "--customers", str(args.customers), "--batch-min", str(args.batch_min),
            "--batch-max", str(args.batch_max), "--json", str(json_path)]
    if mode == "unary":
        argv += ["--unary", "--concurrency", str(args.unary_concurrency)]
    else:
        argv += ["--concurrency", str(args.batch_concurrency)]
    return argv + ([variant.flag] if on else [])


def run_leg(args: argparse.Namespace, mode: str, on: bool, round_: int,
            variant: Variant = MTLS) -> dict:
    """One leg: its figures, and the problems it reported."""
    prefix = f"creditgate-{variant.runner.replace('_', '-')}-"
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        path = Path(folder) / "leg.json"
        run = subprocess.run(leg_argv(args, mode, on, path, variant), capture_output=True,
                             text=True, timeout=LEG_TIMEOUT_S_BASE + args.warmup + args.duration)
        result = json.loads(path.read_text()) if path.exists() else None
    leg = {"mode": mode, variant.key: on, "round": round_, "exit_code": run.returncode}
    if result is None:
        leg["problems"] = [f"no figures (exit {run.returncode}): {run.stderr.strip()[-500:]}"]
        return leg
    leg.update({
        "authorizations_per_s": result["authorizations_per_s"],
        "gateway_cpu_us_per_authorization": result["cpu_us_per_authorization"].get("gateway"),
        "latency_ms_p50": result["latency_ms_p50"], "latency_ms_p99": result["latency_ms_p99"],
        "errors": result["errors"], "outbox_consistent": result["outbox_consistent"],
        "problems": ([f"errors {result['errors']}"] if result["errors"] else [])
        + ([] if result["outbox_consistent"] else ["outbox mismatch"])
        + (variant.check(result) if variant.check else [])})
    return leg


def summarise(legs: list[dict], variant: Variant = MTLS) -> dict:
    """Per kind: the medians of the legs off and on, and their ratios (on over off; None
    where a side has no figure)."""
    summary = {}
    for mode in MODES:
        sides = {}
        for name, on in ((variant.off, False), (variant.on, True)):
            measured = [leg for leg in legs if leg["mode"] == mode and leg[variant.key] == on
                        and not leg["problems"]]
            sides[name] = {figure: statistics.median(leg[figure] for leg in measured)
                           if measured and all(leg[figure] is not None for leg in measured)
                           else None for figure in FIGURES}
        sides["ratios"] = {figure: sides[variant.on][figure] / sides[variant.off][figure]
                           if sides[variant.on][figure] and sides[variant.off][figure] else None
                           for figure in FIGURES}
        summary[mode] = sides
    return summary


def format_summary(summary: dict, variant: Variant = MTLS) -> list[str]:
    lines = []
    for mode, sides in summary.items():
        plain, mtls, ratios = sides[variant.off], sides[variant.on], sides["ratios"]
        if ratios["authorizations_per_s"] is None:
            lines.append(f"{mode}: not measured on both sides")
            continue
        what = "unary Authorize" if mode == "unary" else "AuthorizeBatch"
        lines.append(
            f"{what}: {variant.ratio} {ratios['authorizations_per_s']:.3f}x the rate "
            f"({mtls['authorizations_per_s']:,.0f}/s vs {plain['authorizations_per_s']:,.0f}/s), "
            f"{_ratio(ratios['gateway_cpu_us_per_authorization'])} the gateway's CPU per "
            f"authorization ({_us(mtls['gateway_cpu_us_per_authorization'])} vs "
            f"{_us(plain['gateway_cpu_us_per_authorization'])}), "
            f"p50 {ratios['latency_ms_p50']:.2f}x ({mtls['latency_ms_p50']:.1f} vs "
            f"{plain['latency_ms_p50']:.1f} ms), p99 {ratios['latency_ms_p99']:.2f}x "
            f"({mtls['latency_ms_p99']:.1f} vs {plain['latency_ms_p99']:.1f} ms)")
    return lines


def _ratio(value: float | None) -> str:
    return "?" if value is None else f"{value:.3f}x"


def _us(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f} µs"


def compare(argv: list[str] | None, variant: Variant, description: str, heading: str) -> int:
    """Run the legs of `variant` off and on, alternating, and write their summary."""
    args = parse_args(argv, variant, description)
    facts = machine()
    print(f"{heading}: {args.rounds} round(s) of unary Authorize and AuthorizeBatch, "
          f"{variant.off} then {variant.on}, {args.duration:g} s each; gateway "
          f"{args.processes} processes\n{format_machine(facts)}", flush=True)
    legs = []
    try:
        for round_ in range(1, args.rounds + 1):
            for mode in MODES:
                for on in leg_order(round_):
                    leg = run_leg(args, mode, on, round_, variant)
                    legs.append(leg)
                    print_leg(leg, variant)
    except KeyboardInterrupt:
        print(f"{variant.runner}: interrupted", file=sys.stderr)
        return 130
    summary = summarise(legs, variant)
    print("\n".join(format_summary(summary, variant)))
    problems = [f"round {leg['round']} {leg['mode']} "
                f"{variant.title if leg[variant.key] else variant.off}: {problem}"
                for leg in legs for problem in leg["problems"]]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "machine": facts, "argv": sys.argv[1:] if argv is None else list(argv),
        "args": {key: str(value) if isinstance(value, Path) else value
                 for key, value in vars(args).items()},
        "legs": legs, "summary": summary, "problems": problems}, indent=2) + "\n")
    print(f"figures written to {args.json}")
    for problem in problems:
        print(f"{variant.runner}: {problem}", file=sys.stderr)
    return 1 if problems else 0


def leg_order(round_: int) -> tuple[bool, bool]:
    """Off then on in odd rounds, on then off in even ones: a drift of the machine's other load
    during a run falls on both sides alike instead of always on the second."""
    return (False, True) if round_ % 2 else (True, False)


def print_leg(leg: dict, variant: Variant) -> None:
    side = variant.title if leg[variant.key] else variant.off
    width = max(len(variant.title), len(variant.off))
    rate = leg.get("authorizations_per_s")
    print(f"  round {leg['round']} {leg['mode']:5s} {side:{width}s} "
          + (f"{rate:,.0f} authorizations/s, gateway "
             f"{_us(leg['gateway_cpu_us_per_authorization'])} per "
             f"authorization, p50 {leg['latency_ms_p50']:.1f} ms, p99 "
             f"{leg['latency_ms_p99']:.1f} ms" if rate is not None else "")
          + (f"  PROBLEMS: {'; '.join(leg['problems'])}" if leg["problems"] else ""),
          flush=True)


def main(argv: list[str] | None = None) -> int:
    return compare(argv, MTLS, __doc__, "mTLS cost")


if __name__ == "__main__":
    sys.exit(main())
