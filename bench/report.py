"""The summary of docs/benchmarks.md, written from the figures the runners left as JSON.

    .venv/bin/python bench/report.py [--bench-dir var/bench] [--doc docs/benchmarks.md]

`make bench` runs every runner with its figures going to a JSON file under var/bench/
(RUNNERS below), then this script. It reads those files and the machine (CPU, cores, memory,
Python, Redis, PostgreSQL, h2load, the commit) and rewrites only the text between the
summary markers of the doc: the machine, the commands that produced the figures, a table of
each figure against its target with met / missed computed here, and the CPU of each process
and core in the runs that load the machine most. A figure whose file is missing reads "not
measured", and one whose run failed its own check reads "check failed": never an older
number. The text outside the markers is left byte for byte as it was.

The targets (issue 5's, and issue 3's ledger rate) are TARGETS below, in one place.

Exit status: 0 when the doc was written; 1 when a figures file could not be read (the doc is
still written, that figure reading "not measured"); 2 when the doc has no summary markers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import cpu_model  # bench/ is the script's own folder

REPO = Path(__file__).resolve().parent.parent
START_MARKER = "<!-- bench:summary:start -->"
END_MARKER = "<!-- bench:summary:end -->"
NOT_MEASURED = "not measured"
PYTHON = ".venv/bin/python"  # as `make bench` calls the runners ($(VENV)/bin/python)
# Statuses an overloaded gateway answers in the open loop (bench/openloop.py's OVERLOAD_CODES):
# a step with them is overloaded, a run with any other status failed.
OVERLOAD_CODES = frozenset({"DEADLINE_EXCEEDED", "NO_ANSWER", "CANCELLED", "RESOURCE_EXHAUSTED"})
LEDGER_DSN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"  # bench/ledger_bench.py's
PG_PROBE_TIMEOUT_S = 3.0
CPU_SHOWN_MIN_PERCENT = 1.0  # processes below this share of a core are left out of a CPU line
WRAP_WIDTH = 96  # prose lines of the block, as the rest of the doc is wrapped


class Unreadable(Exception):
    """A figures file exists but lacks what the report reads."""


# What reading a figures file of another shape than expected raises.
SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError,
                Unreadable)


# -- figures ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    """One measured figure: `value` is what its target compares (None: not measured), `text`
    what the table shows. `failed_check` names a check of the run itself that failed: the
    figure then gets no verdict. `missed_because` makes it missed whatever the value (the
    open loop's step at half the max-rate had failed or unsent calls)."""

    value: float | None
    text: str
    failed_check: str = ""
    missed_because: str = ""


def hotpath_speedup(data: dict) -> Figure:
    """pytest-benchmark's JSON: the median of `plan_authorize`, Python twin over Cython."""
    medians = {bench["param"]: bench["stats"]["median"] for bench in data["benchmarks"]
               if bench["group"] == "plan_authorize"}
    if "py" not in medians or "c" not in medians:
        missing = " and ".join(f"the {name} twin" for name in ("py", "c") if name not in medians)
        return Figure(None, f"{NOT_MEASURED} ({missing} did not run: extension not built?)")
    ratio = medians["py"] / medians["c"]
    return Figure(ratio, f"{medians['c'] * 1e6:.2f} µs vs {medians['py'] * 1e6:.2f} µs: "
                         f"**{ratio:.2f}×**")


def unary_ratio(data: dict) -> Figure:
    """bench/maxrate.py: the gateway's h2load rate over the no-op server's, same run."""
    noop, gateway, args = data["noop"], data["gateway"], data["args"]
    ratio = gateway["rate_per_s"] / noop["rate_per_s"] if noop["rate_per_s"] else 0.0
    text = (f"{gateway['rate_per_s']:,.0f}/s vs {noop['rate_per_s']:,.0f}/s: **{ratio:.2f}×** "
            f"({gateway['rate_per_s'] / args['processes']:,.0f}/s per gateway process; "
            f"{args['processes']} processes each, h2load -c {args['connections']} "
            f"-m {args['streams']}, {args['duration_s']} s)")
    return Figure(ratio, text, failed_check="; ".join(data.get("problems", [])))


def batch_rate(data: dict) -> Figure:
    """bench/batch_rate.py: AuthorizeBatch items answered per second of the window."""
    if data["mode"] != "batch" or data.get("redis_py"):
        return Figure(None, f"{NOT_MEASURED} (the run was {data['mode']}"
                            f"{', redis-py' if data.get('redis_py') else ''}, not AuthorizeBatch)")
    rate = data["authorizations_per_s"]
    per = data["cpu_us_per_authorization"]
    redis = data["redis"]
    errors = sum(data["errors"].values())
    batches = data.get("args", {})
    sizes = (f"batches of {batches['batch_min']}–{batches['batch_max']}, "
             if "batch_min" in batches else "")
    text = (f"**{rate:,.0f} authorizations/s** ({sizes}{data['processes']} processes, "
            f"{data['duration_s']:g} s), {errors} errors; CPU per authorization: "
            + ", ".join(f"{role} {us:.0f} µs" for role, us in per.items())
            + f"; Redis {redis['usec_per_evalsha']:.0f} µs per script call, "
              f"{redis['core_percent_in_scripts']:.0f} % of a core inside scripts")
    problems = []
    if errors:
        problems.append(f"errors {data['errors']}")
    if not data["outbox_consistent"]:
        problems.append(f"{data['events']} outbox events for {data['approved']} approvals")
    return Figure(rate, text, failed_check="; ".join(problems))


def half_step(data: dict) -> dict | None:
    """The open loop's step offered closest to half the maximum (as bench/openloop.py reads
    its target), or None when its rates were not fractions of a maximum."""
    maximum = data["args"]["maximum"]
    if not maximum or not data["steps"]:
        return None
    return min(data["steps"], key=lambda step: abs(step["offered_per_s"] - maximum / 2))


def openloop_percentile(key: str, name: str) -> Callable[[dict], Figure]:
    def read(data: dict) -> Figure:
        step = half_step(data)
        if step is None:
            return Figure(None, f"{NOT_MEASURED} (rates from {data['rates_from']}, not "
                                f"fractions of a max-rate)")
        # The maximum is the gateway's closed-loop capacity for new authorizations when the
        # open loop measured it first (bench/openloop.py --max-from capacity, the default).
        what = "the capacity for new authorizations, " if data.get("capacity") else ""
        text = (f"{name} **{step[key]:,.2f} ms** at {step['offered_per_s']:,.0f}/s offered "
                f"(half of {what}{data['args']['maximum']:,.0f}/s), {step['duration_s']:g} s")
        floor = [each for each in data.get("noop_steps", [])
                 if each["offered_per_s"] == step["offered_per_s"]]
        if floor:
            text += f"; the no-op server at that rate: {floor[0][key]:,.2f} ms"
        failed = {code: count for each in data["steps"] for code, count in each["errors"].items()
                  if code not in OVERLOAD_CODES}
        lost = step["error_count"] + step["not_sent"]
        return Figure(step[key], text,
                      failed_check=f"calls failed: {failed}" if failed else "",
                      missed_because=f"{lost:,} calls overloaded or not sent" if lost else "")
    return read


def memory_customer(data: dict) -> Figure:
    """bench/memory.py: the largest customer of its zones."""
    zones = {name.removeprefix("customer "): size for name, size in data["bytes"].items()
             if name.startswith("customer ")}
    if not zones:
        raise Unreadable("no customer figure")
    largest = max(zones.values())
    return Figure(largest, f"**{largest:,} bytes** ("
                  + ", ".join(f"{zone} {size:,}" for zone, size in zones.items()) + ")")


def memory_hold(data: dict) -> Figure:
    figures = data["bytes"]
    total = figures["hold: total"]
    return Figure(total, f"**{total:,} bytes** (hold {figures['hold: hold hash']:,}, "
                         f"idempotency record {figures['hold: idempotency record']:,}, "
                         f"open-hold set member {figures['hold: open-hold set member']:,}; "
                         f"mean of {data['holds']} holds)")


def metrics_instructions(kind: str) -> Callable[[dict], Figure]:
    """bench/metrics_instructions.py: the gateway's instructions per authorization of `kind`
    (unary or batch), metrics on over off (callgrind, medians of its runs)."""
    def read(data: dict) -> Figure:
        counted = data[kind]
        failed = "; ".join(f for f in data.get("failures", []) if "decided" in f or "counted" in f)
        return Figure(counted["ratio"], f"**{counted['ratio']:.3f}×** ({counted['on']:,.0f} "
                      f"instructions on, {counted['off']:,.0f} off; callgrind, median of "
                      f"{len(data['runs'])} runs)", failed_check=failed)
    return read


def ledger_rate(data: dict) -> Figure:
    """bench/ledger_bench.py: events posted per second, from the first read to the last ack."""
    rate = data["events_per_s"]
    return Figure(rate, f"**{rate:,.0f} events/s** ({data['events']:,} events, "
                        f"{data['workers']} worker{'s' if data['workers'] > 1 else ''})",
                  failed_check="" if data["ok"] else
                  f"posted {data['posted']:,} of {data['events']:,}, "
                  f"{data['unbalanced_journals']} unbalanced journals")


# -- targets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    what: str
    source: str  # the runner's JSON file, in the bench folder
    read: Callable[[dict], Figure]
    relation: str  # ">=" or "<="
    limit: float
    unit: str
    issue: int = 5

    def __post_init__(self):
        assert self.relation in (">=", "<="), self.relation

    def shown(self) -> str:
        sign = "≥" if self.relation == ">=" else "≤"
        issue = "" if self.issue == 5 else f" (issue {self.issue})"
        return f"{sign} {self.limit:,g}{self.unit}{issue}"

    def verdict(self, figure: Figure) -> str:
        if figure.value is None:
            return NOT_MEASURED
        if figure.failed_check:
            return "check failed"
        if figure.missed_because:
            return "missed"
        met = figure.value >= self.limit if self.relation == ">=" else figure.value <= self.limit
        return "met" if met else "missed"


TARGETS: tuple[Target, ...] = (
    Target("hot path `plan_authorize`, Cython vs Python twin (pytest-benchmark medians)",
           "hotpath.json", hotpath_speedup, ">=", 5, "×"),
    Target("unary Authorize, gateway vs a no-op server of the same proto, same h2load",
           "maxrate.json", unary_ratio, ">=", 0.90, "×"),
    Target("AuthorizeBatch, new purchases (`bench/batch_rate.py`)",
           "batch_rate.json", batch_rate, ">=", 25_000, "/s"),
    Target("open loop at half the max-rate: p99", "openloop.json",
           openloop_percentile("p99_ms", "p99"), "<=", 5, " ms"),
    Target("open loop at half the max-rate: p99.9", "openloop.json",
           openloop_percentile("p999_ms", "p99.9"), "<=", 20, " ms"),
    Target("Redis memory: customer with 4 nodes and windows (largest zone)",
           "memory.json", memory_customer, "<=", 1024, " bytes"),
    Target("Redis memory: per open hold, idempotency included",
           "memory.json", memory_hold, "<=", 300, " bytes"),
    Target("metrics on/off, gateway instructions per unary Authorize",
           "metrics_instructions.json", metrics_instructions("unary"), "<=", 1.03, "×",
           issue=15),
    Target("metrics on/off, gateway instructions per AuthorizeBatch item",
           "metrics_instructions.json", metrics_instructions("batch"), "<=", 1.03, "×",
           issue=15),
    Target("ledger posting into PostgreSQL, 1 worker", "ledger_1.json", ledger_rate,
           ">=", 20_000, " events/s", issue=3),
    Target("ledger posting into PostgreSQL, 2 workers", "ledger_2.json", ledger_rate,
           ">=", 20_000, " events/s", issue=3),
)

# (JSON file, the runner that writes it) in the order `make bench` runs them.
RUNNERS: tuple[tuple[str, str], ...] = (
    ("hotpath.json", "pytest"),
    ("ledger_1.json", "bench/ledger_bench.py"),
    ("ledger_2.json", "bench/ledger_bench.py"),
    ("memory.json", "bench/memory.py"),
    ("maxrate.json", "bench/maxrate.py"),
    ("openloop.json", "bench/openloop.py"),
    ("batch_rate.json", "bench/batch_rate.py"),
    ("mtls_cost.json", "bench/mtls_cost.py"),
    ("metrics_cost.json", "bench/metrics_cost.py"),
    ("metrics_instructions.json", "bench/metrics_instructions.py"),
    ("call_profile.json", "bench/call_profile.py"),
    ("overload.json", "bench/overload.py"),
    ("script_cost.json", "bench/script_cost.py"),
    ("script_cost_callgrind.json", "bench/script_cost.py"),
)


# -- reading ------------------------------------------------------------------------------------
def load(bench_dir: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """({file name: its JSON} for the files present, {file name: why unreadable})."""
    found, unreadable = {}, {}
    for name, _ in RUNNERS:
        path = bench_dir / name
        if not path.exists():
            continue
        try:
            found[name] = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            unreadable[name] = f"{type(error).__name__}: {error}"
    return found, unreadable


def measure(target: Target, files: dict[str, dict], unreadable: dict[str, str],
            bench_dir: Path) -> Figure:
    data = files.get(target.source)
    if data is None:
        why = "unreadable" if target.source in unreadable else "missing"
        return Figure(None, f"{NOT_MEASURED} ({display(bench_dir / target.source)} {why})")
    try:
        return target.read(data)
    except SHAPE_ERRORS as error:
        unreadable[target.source] = f"{type(error).__name__}: {error}"
        return Figure(None, f"{NOT_MEASURED} ({display(bench_dir / target.source)} "
                            f"unreadable)")


def display(path: Path) -> str:
    """A path as the doc shows it: relative to the repository when inside it."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(REPO))
    return str(path)


# -- the machine --------------------------------------------------------------------------------
def _run(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(argv, capture_output=True, text=True, timeout=10,
                              cwd=REPO).stdout.strip()
    return ""


def _postgresql_version() -> str:
    """The server version at the DSN bench/ledger_bench.py uses, or "" when unreachable."""
    dsn = os.environ.get("LEDGER_BENCH_DSN", LEDGER_DSN_DEFAULT)
    try:
        import asyncio

        import asyncpg
    except ImportError:
        return ""

    async def version() -> str:
        connection = await asyncpg.connect(dsn, timeout=PG_PROBE_TIMEOUT_S)
        try:
            return await connection.fetchval("SHOW server_version")
        finally:
            await connection.close()

    try:
        return asyncio.run(asyncio.wait_for(version(), PG_PROBE_TIMEOUT_S * 2))
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return ""


def collect_machine(files: dict[str, dict]) -> dict[str, str]:
    """The machine as it is now: CPU model, cores, memory, Python, Redis, PostgreSQL (the
    ledger runner's record of it, or asked now), h2load, the commit."""
    model = cpu_model("unknown CPU")
    memory = ""
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 2**20:.0f} GiB"
                break
    redis = _run(["redis-server", "--version"]).split(" sha=")[0]
    recorded = [data.get("machine") for name, data in sorted(files.items())
                if name.startswith("ledger_")]
    postgresql = next((str(machine["postgresql"]) for machine in recorded
                       if isinstance(machine, dict) and machine.get("postgresql")), "")
    commit = _run(["git", "rev-parse", "--short", "HEAD"])
    if commit and _run(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes in the work tree)"
    return {"cpu": model, "cores": str(os.cpu_count()), "memory": memory,
            "kernel": platform.release(), "python": platform.python_version(),
            "redis": redis.removeprefix("Redis server v=") or "not found",
            "postgresql": (postgresql or _postgresql_version() or "not reachable").split(" ")[0],
            "h2load": _run(["h2load", "--version"]) or "not found",
            "commit": commit or "unknown"}


def when(bench_dir: Path, files: dict[str, dict]) -> str:
    """When the figures were written: their files' modification times, in UTC."""
    times = sorted(datetime.datetime.fromtimestamp((bench_dir / name).stat().st_mtime,
                                                   datetime.UTC) for name in files)
    if not times:
        return "no figures"
    first, last = times[0], times[-1]
    if first.date() == last.date():
        return f"{first:%Y-%m-%d %H:%M}–{last:%H:%M} UTC"
    return f"{first:%Y-%m-%d %H:%M} UTC – {last:%Y-%m-%d %H:%M} UTC"


# -- rendering ----------------------------------------------------------------------------------
def machine_line(facts: dict[str, str], files: dict[str, dict], written: str) -> str:
    loads = [float(data["machine"]["load_average"].split()[0]) for data in files.values()
             if "load_average" in data.get("machine", {})]
    load = (f"; load average (1 min) before the runners {min(loads):.2f}–{max(loads):.2f}"
            if loads else "")
    return wrap(f"Machine: {facts['cores']} cores ({facts['cpu']}), {facts['memory']}, Linux "
                f"{facts['kernel']}; Python {facts['python']}, Redis {facts['redis']}, "
                f"PostgreSQL {facts['postgresql']}, {facts['h2load']}; commit "
                f"{facts['commit']}. Figures written {written}{load}.")


def wrap(text: str, indent: str = "") -> str:
    return textwrap.fill(text, WRAP_WIDTH, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


def command_lines(files: dict[str, dict], bench_dir: Path, doc_path: Path) -> list[str]:
    lines = []
    for name, runner in RUNNERS:
        path = display(bench_dir / name)
        if name not in files:
            lines.append(f"    # {path}: missing, so its figures read \"{NOT_MEASURED}\"")
        elif runner == "pytest":
            # pytest-benchmark's JSON does not record the command: this is the one `make
            # bench` runs (tests/bench/test_report.py checks the Makefile says the same).
            lines.append(f"    {hotpath_command(path)}")
        else:
            argv = files[name].get("argv")
            arguments = shlex.join(argv) if argv is not None else "# arguments not recorded"
            lines.append(f"    {PYTHON} {runner} {arguments}".rstrip())
    lines.append(f"    {PYTHON} bench/report.py --bench-dir {display(bench_dir)} "
                 f"--doc {display(doc_path)}")
    return lines


def hotpath_command(path: str) -> str:
    return f"{PYTHON} -m pytest bench --benchmark-enable -q --benchmark-json {path}"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_lines(figures: list[tuple[Target, Figure]]) -> list[str]:
    lines = ["| what | measured | target | |", "| --- | --- | --- | --- |"]
    for target, figure in figures:
        verdict = target.verdict(figure)
        if figure.failed_check:
            verdict += f": {figure.failed_check}"
        elif verdict == "missed" and figure.missed_because:
            verdict += f" ({figure.missed_because})"
        lines.append(f"| {cell(target.what)} | {cell(figure.text)} | {target.shown()} | "
                     f"{cell(verdict)} |")
    return lines


def openloop_lines(files: dict[str, dict]) -> list[str]:
    data = files.get("openloop.json")
    if not data or not data.get("steps"):
        return []
    steps = "; ".join(
        f"{step['offered_per_s']:,.0f}/s: {step['p99_ms']:,.2f}/{step['p999_ms']:,.2f} ms"
        + (f" ({step['error_count'] + step['not_sent']:,} overloaded or not sent)"
           if step["error_count"] + step["not_sent"] else "")
        for step in data["steps"])
    lines = [wrap(f"Open loop, every step (offered: p99/p99.9; rates from "
                  f"{data['rates_from']}): {steps}.")]
    if data.get("noop_steps"):
        floor = "; ".join(f"{step['offered_per_s']:,.0f}/s: {step['p99_ms']:,.2f}/"
                          f"{step['p999_ms']:,.2f} ms" for step in data["noop_steps"])
        lines += ["", wrap(f"The same rates against the no-op server in the same run (the "
                           f"latency floor of this load generator and gRPC on this machine; "
                           f"p99/p99.9): {floor}.")]
    return lines


def script_cost_lines(files: dict[str, dict]) -> list[str]:
    """What one reservation costs inside redis-server (bench/script_cost.py): the time, the
    commands' share, and with callgrind the instructions of each step of reserve.lua."""
    timed, counted = files.get("script_cost.json"), files.get("script_cost_callgrind.json")
    if not timed and not counted:
        return []
    lines = []
    if timed:
        lines.append(wrap(
            f"reserve.lua alone (`bench/script_cost.py`, pipelined new purchases, no gateway): "
            f"{timed['usec_per_call']:.1f} µs per call inside redis-server, of which the "
            f"commands it calls {timed['commands_usec_per_call']:.1f} µs (the rest is Lua "
            f"and the bridge between Lua and the commands); runs "
            f"{', '.join(f'{run:.1f}' for run in timed['usec_per_call_runs'])} µs. A retry of "
            f"an approval (what h2load's replays are): {timed['replay_usec_per_call']:.1f} µs."))
    if counted:
        lines.append(wrap(
            f"Counted by callgrind (repeatable whatever else runs): "
            f"{counted['instructions_per_call']:,} instructions per call, "
            f"{counted['replay_instructions_per_call']:,} per retry of an approval."))
        if counted.get("segments"):
            lines += ["", "| step of reserve.lua | instructions per call |", "| --- | --- |",
                      f"| FCALL of an empty function, same arguments | "
                      f"{counted['empty_call_instructions']:,} |"]
            lines += [f"| {cell(segment['step'])} | "
                      + ("(step not found)" if segment["instructions"] is None
                         else f"{segment['instructions']:,}") + " |"
                      for segment in counted["segments"]]
    return lines


def mtls_lines(files: dict[str, dict]) -> list[str]:
    """The cost of mutual TLS (bench/mtls_cost.py): each kind's ratios, mTLS over plaintext,
    measured in the same run with the same load generator."""
    data = files.get("mtls_cost.json")
    if not data:
        return []
    return [wrap(f"Mutual TLS against plaintext (`bench/mtls_cost.py`, same run, same "
                 f"closed-loop load generator, {_rounds(data)}): "
                 + "; ".join(_cost_kinds(data, "plaintext", "mtls")) + "."
                 + _check_failed(data))]


def metrics_cost_lines(files: dict[str, dict]) -> list[str]:
    """The cost of the gateway's metrics (bench/metrics_cost.py): each kind's ratios, metrics
    on over off, measured in the same run with the same load generator (target: under 3 %)."""
    data = files.get("metrics_cost.json")
    if not data:
        return []
    return [wrap(f"Metrics on against off (`bench/metrics_cost.py`, same run, same closed-loop "
                 f"load generator, {_rounds(data)}; target: under 3 % of the rate): "
                 + "; ".join(_cost_kinds(data, "off", "on")) + "." + _check_failed(data))]


def call_profile_lines(files: dict[str, dict]) -> list[str]:
    """Where a unary call's instructions go (bench/call_profile.py): each server's main thread
    per call, and the gateway's largest shares by shared object."""
    data = files.get("call_profile.json")
    if not data:
        return []
    main = {name: data[name]["main_thread_per_call"] for name in ("noop", "floor", "gateway")}
    shares = sorted(data["gateway"]["main_thread_by_object_per_call"].items(),
                    key=lambda item: -item[1])[:5]
    return [wrap("A unary Authorize's instructions in the server's main thread (`bench/"
                 f"call_profile.py`, callgrind, calls one after another): no-op server "
                 f"{main['noop']:,.0f}, floor (no-op + one Redis call) {main['floor']:,.0f}, "
                 f"gateway {main['gateway']:,.0f}; the gateway's largest shares: "
                 + ", ".join(f"{obj} {count:,.0f}" for obj, count in shares) + ".")]


def _rounds(data: dict) -> str:
    rounds = data["args"]["rounds"]
    return (f"{rounds} round{'s' if rounds > 1 else ''} of {data['args']['duration']:g} s "
            f"legs, medians")


def _check_failed(data: dict) -> str:
    return " Check failed: " + "; ".join(data["problems"]) + "." if data.get("problems") else ""


def _cost_kinds(data: dict, off: str, on: str) -> list[str]:
    """Each kind's ratios, `on` over `off`, from a cost runner's summary."""
    kinds = []
    for mode, what in (("unary", "unary Authorize"), ("batch", "AuthorizeBatch")):
        sides = data["summary"][mode]
        ratios, with_, without = sides["ratios"], sides[on], sides[off]
        if ratios["authorizations_per_s"] is None:
            kinds.append(f"{what}: {NOT_MEASURED}")
            continue
        cpu = ratios["gateway_cpu_us_per_authorization"]
        kinds.append(
            f"{what} {ratios['authorizations_per_s']:.2f}× the rate "
            f"({with_['authorizations_per_s']:,.0f}/s vs {without['authorizations_per_s']:,.0f}/s)"
            + (f", {cpu:.2f}× the gateway's CPU per authorization" if cpu else "")
            + f", p99 {ratios['latency_ms_p99']:.2f}×")
    return kinds


def cpu_text(report: dict) -> str:
    """Each core's busy time, then each process's share of a core and the cores it was seen
    on, busiest first."""
    cores = ", ".join(f"{core} {busy:.0f}%" for core, busy in report["cores"].items())
    processes = []
    for label, row in sorted(report["processes"].items(),
                             key=lambda item: (-item[1]["cpu_percent"], item[0])):
        if row["cpu_percent"] < CPU_SHOWN_MIN_PERCENT:
            continue
        seen = sorted(row["cores"].items(), key=lambda item: (-item[1], item[0]))
        processes.append(f"{label} {row['cpu_percent']:.0f}% (seen on "
                         + ", ".join(f"{core} {share}%" for core, share in seen) + ")")
    return f"cores busy {cores}; " + ", ".join(processes)


def cpu_lines(files: dict[str, dict]) -> list[str]:
    """Which process keeps which core busy, in the runs that load the machine most."""
    runs = []
    if "batch_rate.json" in files and "cpu_sampled" in files["batch_rate.json"]:
        runs.append(("AuthorizeBatch (`bench/batch_rate.py`)",
                     files["batch_rate.json"]["cpu_sampled"]))
    if "maxrate.json" in files:
        for leg, title in (("gateway", "max-rate, gateway leg"),
                           ("noop", "max-rate, no-op server leg")):
            if "cpu" in files["maxrate.json"].get(leg, {}):
                runs.append((title, files["maxrate.json"][leg]["cpu"]))
    if "openloop.json" in files:
        step = half_step(files["openloop.json"])
        if step is not None and "cpu" in step:
            runs.append((f"open loop at {step['offered_per_s']:,.0f}/s", step["cpu"]))
    if not runs:
        return []
    lines = [wrap("CPU while each ran (% of one core per process, and the share of its samples "
                  "seen on each core; from /proc):"), ""]
    lines += [wrap(f"* {title}: {cpu_text(report)}", "  ") for title, report in runs]
    return lines


def render(files: dict[str, dict], figures: list[tuple[Target, Figure]],
           facts: dict[str, str], bench_dir: Path, doc_path: Path, written: str,
           unreadable: dict[str, str]) -> str:
    """The text between the markers (without them). A part that cannot be read from the
    files says so in the block, and in `unreadable`."""

    def part(name: str, build: Callable[[], list[str]]) -> list[str]:
        try:
            lines = build()
        except SHAPE_ERRORS as error:
            unreadable[name] = f"{type(error).__name__}: {error}"
            lines = [f"({name}: not shown, a figures file could not be read)"]
        return [*lines, ""] if lines else []

    return "\n".join([
        "<!-- Written by bench/report.py from the runners' JSON: `make bench` rewrites it. -->",
        "",
        *part("the machine", lambda: [machine_line(facts, files, written)]),
        "Command: `make bench`; the commands of the runners, as each recorded them:",
        "",
        *part("the commands", lambda: command_lines(files, bench_dir, doc_path)),
        *table_lines(figures),
        "",
        *part("the open-loop steps", lambda: openloop_lines(files)),
        *part("the CPU lines", lambda: cpu_lines(files)),
        *part("the script's cost", lambda: script_cost_lines(files)),
        *part("the cost of mutual TLS", lambda: mtls_lines(files)),
        *part("the cost of metrics", lambda: metrics_cost_lines(files)),
        *part("the unary call's profile", lambda: call_profile_lines(files)),
    ])


def replace_block(doc: str, block: str) -> str:
    """`doc` with the text between the markers replaced by `block`; the rest unchanged."""
    if doc.count(START_MARKER) != 1 or doc.count(END_MARKER) != 1:
        raise ValueError(f"the doc must hold {START_MARKER} and {END_MARKER} once each")
    start = doc.index(START_MARKER) + len(START_MARKER)
    end = doc.index(END_MARKER)
    if end < start:
        raise ValueError(f"{END_MARKER} comes before {START_MARKER}")
    return f"{doc[:start]}\n{block.strip()}\n{doc[end:]}"


def write_summary(bench_dir: Path, doc_path: Path, facts: dict[str, str] | None = None
                  ) -> tuple[list[tuple[Target, Figure]], dict[str, str]]:
    """Rewrite the doc's summary from the figures in `bench_dir`; returns each target's
    figure, and what could not be read (a file or a part of the summary: why). `facts` (the
    machine) is collected when not given. Raises ValueError when the doc lacks the markers."""
    files, unreadable = load(bench_dir)
    figures = [(target, measure(target, files, unreadable, bench_dir)) for target in TARGETS]
    facts = facts if facts is not None else collect_machine(files)
    block = render(files, figures, facts, bench_dir, doc_path, when(bench_dir, files),
                   unreadable)
    doc = doc_path.read_text()
    updated = replace_block(doc, block)
    if updated != doc:
        temporary = doc_path.with_name(doc_path.name + ".tmp")
        temporary.write_text(updated)
        temporary.replace(doc_path)
    return figures, unreadable


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench-dir", type=Path, default=REPO / "var" / "bench",
                        help="where the runners wrote their JSON (default %(default)s)")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="the doc whose summary is rewritten (default %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        figures, unreadable = write_summary(args.bench_dir, args.doc)
    except ValueError as error:
        print(f"report: {args.doc}: {error}", file=sys.stderr)
        return 2
    for target, figure in figures:
        print(f"  {target.verdict(figure):<13} {target.what}: {figure.text.replace('**', '')}")
    print(f"summary written to {display(args.doc)} from {display(args.bench_dir)}/*.json")
    for name, why in unreadable.items():
        print(f"report: {name}: could not be read from {display(args.bench_dir)}: {why}",
              file=sys.stderr)
    return 1 if unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
