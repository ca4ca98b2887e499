"""bench/report.py on figures written into tmp_path, shaped as the runners write them: each
target's verdict on both sides of its limit, "not measured" for a missing file, failed checks,
and a rewrite that touches only the marked block of the doc. No server is started."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import report  # bench/report.py: tests/bench/conftest.py puts bench/ on sys.path

from tests.bench.conftest import BENCH

FACTS = {"cpu": "Test CPU", "cores": "2", "memory": "24 GiB", "kernel": "6.1", "python": "3.11.7",
         "redis": "7.0.15", "postgresql": "15.20", "h2load": "h2load nghttp2/1.52.0",
         "commit": "abc1234"}
BEFORE = "# Benchmarks\n\nIntro | with a pipe.\n\n## Summary\n\n"
AFTER = "\n\nWhy, by hand: 5,168/s and 0.67x.\n\n## Hot path\n\nMore text.\n"
OLD_BLOCK = "\nhand-written: **5,168 authorizations/s** | met |\n"
MACHINE = {"nproc": "2", "cpu": "Test CPU", "python": "3.11.7", "kernel": "6.1",
           "redis": "Redis server v=7.0.15 sha=00000000:0", "load_average": "0.50 0.40 0.30"}


def doc_text() -> str:
    return f"{BEFORE}{report.START_MARKER}{OLD_BLOCK}{report.END_MARKER}{AFTER}"


# -- the runners' JSON, as they write it ------------------------------------------------------
def cpu_report(processes: dict[str, tuple[float, dict[str, int]]],
               cores: dict[str, float]) -> dict:
    """common.CpuSampler.report()'s shape."""
    return {"seconds": 10.0, "cores": cores,
            "processes": {label: {"pid": 100 + n, "cpu_percent": share, "cores": seen}
                          for n, (label, (share, seen)) in enumerate(processes.items())}}


def hotpath(speedup: float) -> dict:
    c_s = 2.0 ** -20  # a power of two: the ratio comes out exactly as given
    bench = [("plan_authorize", "py", c_s * speedup), ("plan_authorize", "c", c_s),
             ("check_id", "py", 1e-6), ("check_id", "c", 1e-7)]
    return {"machine_info": {}, "commit_info": {}, "datetime": "2026-11-25T19:54:28+00:00",
            "version": "5.3.1",
            "benchmarks": [{"group": group, "name": f"test_{group}[{twin}]", "param": twin,
                            "stats": {"median": median, "mean": median}}
                           for group, twin, median in bench]}


def maxrate(ratio: float, problems: tuple[str, ...] = ()) -> dict:
    def leg(rate: float, label: str) -> dict:
        return {"rate_per_s": rate, "succeeded": 10 * int(rate), "done": 10 * int(rate),
                "cpu": cpu_report({f"{label}[1]": (95.0, {"cpu0": 90, "cpu1": 10}),
                                   f"{label}[2]": (93.0, {"cpu1": 85, "cpu0": 15}),
                                   "h2load": (9.0, {"cpu0": 100})},
                                  {"cpu0": 99.0, "cpu1": 98.0})}

    return {"machine": MACHINE, "argv": ["--json", "var/bench/maxrate.json"],
            "args": {"processes": 2, "duration_s": 10, "connections": 8, "streams": 16},
            "noop": leg(1000.0, "no-op"), "gateway": leg(1000.0 * ratio, "gateway"),
            "ratio": round(ratio, 3), "problems": list(problems)}


def batch(rate: float, errors: dict | None = None, consistent: bool = True) -> dict:
    return {"mode": "batch", "redis_py": False, "processes": 2, "duration_s": 10.0,
            "authorizations_per_s": rate, "answered": int(rate * 10), "approved": 900,
            "declined": {}, "errors": errors or {}, "events": 900 if consistent else 899,
            "outbox_consistent": consistent,
            "cpu_percent": {"gateway 11": 60.0, "gateway 12": 58.0, "redis-server 10": 97.0,
                            "load generator 13": 15.0},
            "cpu_us_per_authorization": {"gateway": 114.0, "redis-server": 151.0,
                                         "load generator": 27.0},
            "cpu_sampled": cpu_report({"gateway[1]": (60.0, {"cpu0": 70, "cpu1": 30}),
                                       "gateway[2]": (58.0, {"cpu0": 55, "cpu1": 45}),
                                       "redis-server": (97.0, {"cpu1": 90, "cpu0": 10}),
                                       "load generator[1]": (15.0, {"cpu0": 100}),
                                       "gateway resource tracker": (0.0, {"cpu0": 100})},
                                      {"cpu0": 98.0, "cpu1": 99.0}),
            "redis": {"evalsha_per_s": rate, "usec_per_evalsha": 169.0,
                      "core_percent_in_scripts": 87.0, "commands_per_evalsha": {}},
            "latency_ms_p50": 50.0, "latency_ms_p99": 90.0, "latency_ms_max": 100.0,
            "machine": MACHINE, "argv": ["--json", "var/bench/batch_rate.json"],
            "args": {"processes": 2, "batch_min": 16, "batch_max": 64, "duration": 10.0}}


def openloop(p99_ms: float = 1.0, p999_ms: float = 2.0, maximum: float = 2000.0,
             half_errors: dict | None = None, not_sent: int = 0) -> dict:
    """Steps at a quarter, half, three quarters and all of `maximum`; the half step carries
    the given figures, the others far worse ones."""
    def step(offered: float, p99: float, p999: float, errors: dict, unsent: int) -> dict:
        return {"offered_per_s": offered, "duration_s": 10.0, "sent": 10 * int(offered),
                "not_sent": unsent, "ok": 10 * int(offered), "approved": 10 * int(offered),
                "errors": errors, "error_count": sum(errors.values()),
                "achieved_per_s": offered, "p50_ms": 0.5, "p99_ms": p99, "p999_ms": p999,
                "max_ms": p999 * 2, "cpu_roles": {},
                "cpu": cpu_report({"gateway[1]": (50.0, {"cpu0": 100})}, {"cpu0": 60.0})}

    steps = [step(round(maximum * fraction), 900.0, 950.0, {}, 0) for fraction in
             (0.25, 0.5, 0.75, 1.0)]
    steps[1] = step(round(maximum * 0.5), p99_ms, p999_ms, half_errors or {}, not_sent)
    return {"machine": MACHINE, "rates_from": "var/bench/maxrate.json x 0.25,0.5,0.75,1.0",
            "argv": ["--json", "var/bench/openloop.json"],
            "args": {"maximum": maximum if maximum else 0.0}, "steps": steps}


def memory(customer: int = 408, hold: int = 285) -> dict:
    return {"holds": 40, "machine": MACHINE, "argv": ["--json", "var/bench/memory.json"],
            "bytes": {"customer Asia/Shanghai": customer - 16,
                      "customer America/New_York": customer, "customer Europe/Berlin": 392,
                      "hold: hold hash": hold - 37, "hold: idempotency record": 0,
                      "hold: open-hold set member": 37, "hold: total": hold,
                      "hold: with a 3-month plan": 317, "hold: UUID customer id": 317}}


def ledger(rate: float, workers: int = 1, ok: bool = True) -> dict:
    return {"workers": workers, "events": 200_000, "batch_size_max": 1024,
            "wall_s": 200_000 / rate, "events_per_s": rate, "posted": 200_000 if ok else 199_999,
            "journal_lines": 540_000, "events_in_table": 200_000, "unbalanced_journals": 0,
            "events_without_lines": 0, "ok": ok,
            "machine": {**MACHINE, "postgresql": "15.20 (Debian 15.20-0+deb12u1)"},
            "argv": ["--workers", str(workers), "--json", f"var/bench/ledger_{workers}.json"]}


def every_file() -> dict[str, dict]:
    return {"hotpath.json": hotpath(6.1), "maxrate.json": maxrate(0.67),
            "batch_rate.json": batch(5168.0), "openloop.json": openloop(8.4, 26.0),
            "memory.json": memory(), "ledger_1.json": ledger(12722.0),
            "ledger_2.json": ledger(13296.0, workers=2),
            "metrics_instructions.json": metrics_instructions(1.017, 1.031)}


def metrics_instructions(unary: float, batch: float) -> dict:
    return {"runs": [{}, {}, {}], "failures": [],
            "unary": {"off": 700_000, "on": 700_000 * unary, "ratio": unary},
            "batch": {"off": 220_000, "on": 220_000 * batch, "ratio": batch}}


# -- helpers ----------------------------------------------------------------------------------
def write(bench_dir: Path, files: dict[str, dict]) -> Path:
    bench_dir.mkdir(exist_ok=True)
    for name, data in files.items():
        (bench_dir / name).write_text(json.dumps(data))
    return bench_dir


def summarise(tmp_path: Path, files: dict[str, dict]) -> str:
    """Write `files`, rewrite a doc with fixed machine facts; the doc's text."""
    bench_dir = write(tmp_path / "bench", files)
    doc = tmp_path / "benchmarks.md"
    if not doc.exists():
        doc.write_text(doc_text())
    report.write_summary(bench_dir, doc, FACTS)
    return doc.read_text()


def rows(text: str) -> dict[str, tuple[str, str, str]]:
    """The summary table: what -> (measured, target, verdict)."""
    found = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and cells[0] not in ("what", "---"):
            found[cells[0]] = (cells[1], cells[2], cells[3])
    return found


def target(what_starts: str) -> report.Target:
    exact = [t for t in report.TARGETS if t.what == what_starts]
    [found] = exact or [t for t in report.TARGETS if t.what.startswith(what_starts)]
    return found


# -- verdicts on both sides of every target ------------------------------------------------------
HOTPATH = "hot path"
UNARY = "unary Authorize"
BATCH = "AuthorizeBatch"
P99 = "open loop at half the max-rate: p99"
P999 = "open loop at half the max-rate: p99.9"
CUSTOMER = "Redis memory: customer"
HOLD = "Redis memory: per open hold"
LEDGER_1 = "ledger posting into PostgreSQL, 1 worker"
LEDGER_2 = "ledger posting into PostgreSQL, 2 workers"
METRICS_UNARY = "metrics on/off, gateway instructions per unary Authorize"
METRICS_BATCH = "metrics on/off, gateway instructions per AuthorizeBatch item"

# (row, files, verdict): the limits are issue 5's (and issue 3's), written out here again.
CASES = [
    (HOTPATH, {"hotpath.json": hotpath(5.0)}, "met"),
    (HOTPATH, {"hotpath.json": hotpath(4.99)}, "missed"),
    (HOTPATH, {"hotpath.json": hotpath(6.1)}, "met"),
    (UNARY, {"maxrate.json": maxrate(0.90)}, "met"),
    (UNARY, {"maxrate.json": maxrate(0.899)}, "missed"),
    (UNARY, {"maxrate.json": maxrate(0.95)}, "met"),
    (BATCH, {"batch_rate.json": batch(25_000.0)}, "met"),
    (BATCH, {"batch_rate.json": batch(24_999.0)}, "missed"),
    (BATCH, {"batch_rate.json": batch(25_001.0)}, "met"),
    (P99, {"openloop.json": openloop(p99_ms=5.0)}, "met"),
    (P99, {"openloop.json": openloop(p99_ms=5.001)}, "missed"),
    (P99, {"openloop.json": openloop(p99_ms=4.9)}, "met"),
    (P999, {"openloop.json": openloop(p999_ms=20.0)}, "met"),
    (P999, {"openloop.json": openloop(p999_ms=20.001)}, "missed"),
    (P999, {"openloop.json": openloop(p999_ms=19.9)}, "met"),
    (CUSTOMER, {"memory.json": memory(customer=1024)}, "met"),
    (CUSTOMER, {"memory.json": memory(customer=1025)}, "missed"),
    (CUSTOMER, {"memory.json": memory(customer=1023)}, "met"),
    (HOLD, {"memory.json": memory(hold=300)}, "met"),
    (HOLD, {"memory.json": memory(hold=301)}, "missed"),
    (HOLD, {"memory.json": memory(hold=299)}, "met"),
    (LEDGER_1, {"ledger_1.json": ledger(20_000.0)}, "met"),
    (LEDGER_1, {"ledger_1.json": ledger(19_999.0)}, "missed"),
    (LEDGER_1, {"ledger_1.json": ledger(20_001.0)}, "met"),
    (LEDGER_2, {"ledger_2.json": ledger(20_000.0, workers=2)}, "met"),
    (LEDGER_2, {"ledger_2.json": ledger(19_999.0, workers=2)}, "missed"),
]


@pytest.mark.parametrize(("row", "files", "verdict"), CASES,
                         ids=[f"{row}-{verdict}-{n}" for n, (row, _, verdict) in enumerate(CASES)])
def test_verdict_on_each_side_of_the_target(tmp_path, row, files, verdict):
    table = rows(summarise(tmp_path, files))
    assert table[target(row).what][2] == verdict
    # Only the targets whose file was written have a verdict; every other one is not measured.
    for other in report.TARGETS:
        if other.source not in files:
            measured, _, other_verdict = table[other.what]
            assert other_verdict == "not measured"
            assert measured.startswith("not measured")


def test_targets_shown_as_the_issues_state_them(tmp_path):
    table = rows(summarise(tmp_path, {}))
    shown = {what: target_text for what, (_, target_text, _) in table.items()}
    assert shown == {
        target(HOTPATH).what: "≥ 5×", target(UNARY).what: "≥ 0.9×",
        target(BATCH).what: "≥ 25,000/s", target(P99).what: "≤ 5 ms",
        target(P999).what: "≤ 20 ms", target(CUSTOMER).what: "≤ 1,024 bytes",
        target(HOLD).what: "≤ 300 bytes",
        target(LEDGER_1).what: "≥ 20,000 events/s (issue 3)",
        target(LEDGER_2).what: "≥ 20,000 events/s (issue 3)",
        target(METRICS_UNARY).what: "≤ 1.03× (issue 15)",
        target(METRICS_BATCH).what: "≤ 1.03× (issue 15)"}


def test_the_figures_are_read_from_their_files(tmp_path):
    table = rows(summarise(tmp_path, every_file()))
    assert table[target(HOTPATH).what][0] == "0.95 µs vs 5.82 µs: **6.10×**"
    assert table[target(UNARY).what][0].startswith("670/s vs 1,000/s: **0.67×** (335/s per")
    assert table[target(BATCH).what][0].startswith(
        "**5,168 authorizations/s** (batches of 16–64, 2 processes, 10 s), 0 errors")
    assert "gateway 114 µs, redis-server 151 µs, load generator 27 µs" in \
        table[target(BATCH).what][0]
    assert table[target(P99).what][0].startswith("p99 **8.40 ms** at 1,000/s offered (half of "
                                                 "2,000/s)")
    assert table[target(P999).what][0].startswith("p99.9 **26.00 ms** at 1,000/s")
    assert table[target(CUSTOMER).what][0].startswith("**408 bytes** (Asia/Shanghai 392, "
                                                      "America/New_York 408")
    assert table[target(HOLD).what][0].startswith("**285 bytes** (hold 248")
    assert table[target(LEDGER_1).what][0] == "**12,722 events/s** (200,000 events, 1 worker)"
    assert table[target(LEDGER_2).what][0] == "**13,296 events/s** (200,000 events, 2 workers)"
    assert table[target(METRICS_UNARY).what][0] == (
        "**1.017×** (711,900 instructions on, 700,000 off; callgrind, median of 3 runs)")
    assert [verdict for _, _, verdict in table.values()] == [
        "met", "missed", "missed", "missed", "missed", "met", "met", "met", "missed",
        "missed", "missed"]


# -- not measured, failed checks ---------------------------------------------------------------
def test_no_files_leave_every_figure_not_measured_and_no_old_number(tmp_path):
    text = summarise(tmp_path, {})
    table = rows(text)
    assert [verdict for _, _, verdict in table.values()] == ["not measured"] * len(report.TARGETS)
    assert all(measured.startswith("not measured (") and "missing" in measured
               for measured, _, _ in table.values())
    block = text[text.index(report.START_MARKER):text.index(report.END_MARKER)]
    assert "5,168" not in block and "hand-written" not in block
    assert "# " + str(tmp_path / "bench" / "maxrate.json") + ": missing" in block


def test_a_missing_file_is_not_measured_and_the_others_still_count(tmp_path):
    files = every_file()
    del files["maxrate.json"]
    table = rows(summarise(tmp_path, files))
    assert table[target(UNARY).what][2] == "not measured"
    assert table[target(HOTPATH).what][2] == "met"


@pytest.mark.parametrize(("row", "files", "why"), [
    (UNARY, {"maxrate.json": maxrate(0.95, ("gateway: 3 script calls failed in Redis",))},
     "gateway: 3 script calls failed in Redis"),
    (BATCH, {"batch_rate.json": batch(30_000.0, errors={"UNAVAILABLE": 2})}, "UNAVAILABLE"),
    (BATCH, {"batch_rate.json": batch(30_000.0, consistent=False)}, "899 outbox events for 900"),
    (LEDGER_1, {"ledger_1.json": ledger(30_000.0, ok=False)}, "posted 199,999 of 200,000"),
    (P99, {"openloop.json": openloop(half_errors={"INTERNAL": 1})}, "INTERNAL"),
], ids=["maxrate-problem", "batch-errors", "batch-outbox", "ledger-check", "openloop-internal"])
def test_a_run_whose_own_check_failed_gets_no_verdict(tmp_path, row, files, why):
    verdict = rows(summarise(tmp_path, files))[target(row).what][2]
    assert verdict.startswith("check failed: ")
    assert why in verdict


def test_open_loop_overloaded_at_half_is_missed_whatever_its_percentiles(tmp_path):
    files = {"openloop.json": openloop(p99_ms=1.0, p999_ms=2.0,
                                       half_errors={"DEADLINE_EXCEEDED": 5}, not_sent=3)}
    table = rows(summarise(tmp_path, files))
    for row in (P99, P999):
        assert table[target(row).what][2] == "missed (8 calls overloaded or not sent)"


def test_open_loop_shows_the_no_op_floor_at_the_same_rate(tmp_path):
    """The no-op server's percentiles at the half step's rate stand beside the gateway's (the
    floor of the generator and gRPC), and its steps are listed; the verdict is the gateway's."""
    data = openloop(p99_ms=7.0, p999_ms=9.0)
    floor = openloop(p99_ms=6.5, p999_ms=8.5)["steps"]
    data["noop_steps"] = floor
    data["capacity"] = {"rate_per_s": 2000.0}
    doc = summarise(tmp_path, {"openloop.json": data})
    measured, _, verdict = rows(doc)[target(P99).what]
    assert verdict == "missed"
    assert "half of the capacity for new authorizations, 2,000/s" in measured
    assert measured.endswith("the no-op server at that rate: 6.50 ms")
    assert "against the no-op server in the same run" in doc and "1,000/s: 6.50/8.50 ms" in doc


def test_open_loop_without_a_maximum_is_not_measured(tmp_path):
    data = openloop(p99_ms=1.0, maximum=0.0)
    data["rates_from"] = "--rates"
    measured, _, verdict = rows(summarise(tmp_path, {"openloop.json": data}))[target(P99).what]
    assert verdict == "not measured"
    assert measured == "not measured (rates from --rates, not fractions of a max-rate)"


def test_a_unary_batch_run_does_not_count_as_authorize_batch(tmp_path):
    data = batch(30_000.0)
    data["mode"] = "unary"
    assert rows(summarise(tmp_path, {"batch_rate.json": data}))[target(BATCH).what][2] == \
        "not measured"


def test_hot_path_without_the_compiled_twin_is_not_measured(tmp_path):
    data = hotpath(6.0)
    data["benchmarks"] = [bench for bench in data["benchmarks"] if bench["param"] == "py"]
    measured, _, verdict = rows(summarise(tmp_path, {"hotpath.json": data}))[target(HOTPATH).what]
    assert verdict == "not measured"
    assert "the c twin did not run" in measured


def test_an_unreadable_file_is_not_measured_and_fails_the_report(tmp_path):
    bench_dir = write(tmp_path / "bench", {"memory.json": {"holds": 40}})
    (bench_dir / "maxrate.json").write_text("{not json")
    doc = tmp_path / "benchmarks.md"
    doc.write_text(doc_text())
    assert report.main(["--bench-dir", str(bench_dir), "--doc", str(doc)]) == 1
    table = rows(doc.read_text())
    for row in (UNARY, CUSTOMER, HOLD):
        measured, _, verdict = table[target(row).what]
        assert verdict == "not measured" and "unreadable" in measured


@pytest.mark.parametrize(("name", "data", "part"), [
    ("openloop.json", {**openloop(), "steps": "not a list"}, "the open-loop steps"),
    ("maxrate.json", {**maxrate(0.95), "argv": 7}, "the commands"),
    ("batch_rate.json", {**batch(30_000.0), "machine": {"load_average": "high"}},
     "the machine"),
    ("ledger_1.json", {**ledger(30_000.0), "machine": "a string"}, "no part"),
    ("batch_rate.json", {**batch(30_000.0), "cpu_sampled": {"cores": {}}}, "the CPU lines"),
], ids=["openloop-steps", "argv", "machine", "ledger-machine", "cpu"])
def test_a_file_of_another_shape_is_reported_not_a_crash(tmp_path, name, data, part):
    bench_dir = write(tmp_path / "bench", {**every_file(), name: data})
    doc = tmp_path / "benchmarks.md"
    doc.write_text(doc_text())
    status = report.main(["--bench-dir", str(bench_dir), "--doc", str(doc)])
    text = doc.read_text()
    if part == "no part":  # tolerated: PostgreSQL's version is then asked of the server
        assert status == 0 and "not shown" not in text
    else:
        assert status == 1
        assert f"({part}: not shown, a figures file could not be read)" in text
    assert rows(text)[target(HOTPATH).what][2] == "met"  # the rest is still written


def mtls_cost(problems: tuple[str, ...] = ()) -> dict:
    """bench/mtls_cost.py's JSON: one round, every figure of mTLS 10 % worse."""
    def side(rate: float) -> dict:
        return {"authorizations_per_s": rate, "gateway_cpu_us_per_authorization": 100.0,
                "latency_ms_p50": 2.0, "latency_ms_p99": 8.0}

    summary = {mode: {"plaintext": side(rate), "mtls": side(rate * 0.9),
                      "ratios": {"authorizations_per_s": 0.9,
                                 "gateway_cpu_us_per_authorization": 1.1,
                                 "latency_ms_p50": 1.1, "latency_ms_p99": 1.1}}
               for mode, rate in (("unary", 2000.0), ("batch", 8000.0))}
    return {"machine": MACHINE, "argv": ["--json", "var/bench/mtls_cost.json"],
            "args": {"rounds": 1, "duration": 10.0}, "legs": [], "summary": summary,
            "problems": list(problems)}


def test_the_cost_of_mutual_tls_is_summarised_as_ratios(tmp_path):
    text = summarise(tmp_path, {**every_file(), "mtls_cost.json": mtls_cost()})
    block = " ".join(text[text.index(report.START_MARKER):].split())
    assert ("Mutual TLS against plaintext (`bench/mtls_cost.py`, same run, same closed-loop "
            "load generator, 1 round of 10 s legs, medians): unary Authorize 0.90× the rate "
            "(1,800/s vs 2,000/s), 1.10× the gateway's CPU per authorization, p99 1.10×; "
            "AuthorizeBatch 0.90× the rate (7,200/s vs 8,000/s)") in block
    assert ".venv/bin/python bench/mtls_cost.py --json var/bench/mtls_cost.json" in block
    (tmp_path / "failed").mkdir()
    failed = summarise(tmp_path / "failed",
                       {"mtls_cost.json": mtls_cost(("round 1 batch mTLS: errors",))})
    assert "Check failed: round 1 batch mTLS: errors." in " ".join(failed.split())


def metrics_cost(problems: tuple[str, ...] = ()) -> dict:
    """bench/metrics_cost.py's JSON: bench/mtls_cost.py's shape with sides off and on."""
    data = mtls_cost(problems)
    data["summary"] = {mode: {"off": sides["plaintext"], "on": sides["mtls"],
                              "ratios": sides["ratios"]}
                       for mode, sides in data["summary"].items()}
    data["argv"] = ["--json", "var/bench/metrics_cost.json"]
    return data


def test_the_cost_of_metrics_is_summarised_as_ratios(tmp_path):
    text = summarise(tmp_path, {**every_file(), "metrics_cost.json": metrics_cost()})
    block = " ".join(text[text.index(report.START_MARKER):].split())
    assert ("Metrics on against off (`bench/metrics_cost.py`, same run, same closed-loop load "
            "generator, 1 round of 10 s legs, medians; target: under 3 % of the rate): unary "
            "Authorize 0.90× the rate (1,800/s vs 2,000/s)") in block
    assert ".venv/bin/python bench/metrics_cost.py --json var/bench/metrics_cost.json" in block


# -- the doc ------------------------------------------------------------------------------------
def test_only_the_marked_block_changes(tmp_path):
    text = summarise(tmp_path, every_file())
    start = text.index(report.START_MARKER) + len(report.START_MARKER)
    end = text.index(report.END_MARKER)
    assert text[:start].encode() == (BEFORE + report.START_MARKER).encode()
    assert text[end:].encode() == (report.END_MARKER + AFTER).encode()
    assert "Machine: 2 cores (Test CPU), 24 GiB" in text[start:end]


def test_running_twice_is_stable(tmp_path):
    first = summarise(tmp_path, every_file())
    second = summarise(tmp_path, every_file())
    assert first == second
    # main() collects the machine itself: still the same doc the second time.
    bench_dir, doc = tmp_path / "bench", tmp_path / "benchmarks.md"
    assert report.main(["--bench-dir", str(bench_dir), "--doc", str(doc)]) == 0
    once = doc.read_text()
    assert report.main(["--bench-dir", str(bench_dir), "--doc", str(doc)]) == 0
    assert doc.read_text() == once
    assert once.count(report.START_MARKER) == once.count(report.END_MARKER) == 1


@pytest.mark.parametrize("doc", [
    "no markers at all\n",
    f"{report.END_MARKER}\n{report.START_MARKER}\n",
    f"{report.START_MARKER}\n{report.END_MARKER}\n{report.START_MARKER}\n",
], ids=["none", "reversed", "twice"])
def test_a_doc_without_one_pair_of_markers_is_left_alone(tmp_path, doc):
    path = tmp_path / "benchmarks.md"
    path.write_text(doc)
    bench_dir = write(tmp_path / "bench", every_file())
    assert report.main(["--bench-dir", str(bench_dir), "--doc", str(path)]) == 2
    assert path.read_text() == doc


def test_commands_and_machine_come_from_the_runs(tmp_path):
    text = summarise(tmp_path, every_file())
    bench_dir = tmp_path / "bench"
    assert f"    .venv/bin/python -m pytest bench --benchmark-enable -q --benchmark-json " \
           f"{bench_dir}/hotpath.json\n" in text
    assert "    .venv/bin/python bench/ledger_bench.py --workers 2 --json " \
           "var/bench/ledger_2.json\n" in text
    assert "    .venv/bin/python bench/batch_rate.py --json var/bench/batch_rate.json\n" in text
    assert "load average (1 min) before the runners 0.50–0.50" in " ".join(text.split())


def test_cpu_lines_show_which_process_keeps_which_core_busy(tmp_path):
    text = " ".join(summarise(tmp_path, every_file()).split())  # unwrapped
    assert ("* AuthorizeBatch (`bench/batch_rate.py`): cores busy cpu0 98%, cpu1 99%; "
            "redis-server 97% (seen on cpu1 90%, cpu0 10%), gateway[1] 60% (seen on cpu0 70%, "
            "cpu1 30%), gateway[2] 58%") in text
    assert "resource tracker" not in text  # idle processes are left out
    assert "* max-rate, gateway leg: cores busy cpu0 99%, cpu1 98%; gateway[1] 95%" in text
    assert "* max-rate, no-op server leg:" in text
    assert "* open loop at 1,000/s: cores busy cpu0 60%; gateway[1] 50%" in text
    assert "Open loop, every step (offered: p99/p99.9; rates from var/bench/maxrate.json x " \
           "0.25,0.5,0.75,1.0): 500/s: 900.00/950.00 ms; 1,000/s: 8.40/26.00 ms" in text


# -- one place for each fact ---------------------------------------------------------------------
def test_the_runners_print_the_same_targets_and_overload_codes():
    import ledger_bench
    import memory
    import openloop

    assert target(CUSTOMER).limit == memory.CUSTOMER_BYTES_TARGET
    assert target(HOLD).limit == memory.HOLD_BYTES_TARGET
    assert target(P99).limit == openloop.TARGET_P99_MS
    assert target(P999).limit == openloop.TARGET_P999_MS
    assert report.OVERLOAD_CODES == openloop.OVERLOAD_CODES
    assert report.LEDGER_DSN_DEFAULT == ledger_bench.DEFAULT_DSN


def test_make_bench_runs_the_commands_and_files_the_report_reads():
    makefile = (BENCH.parent / "Makefile").read_text()
    recipe = makefile[makefile.index("\nbench:"):]
    recipe = recipe[:recipe.index("\n\n")]
    recipe = recipe.replace("$(VENV)/bin/python", report.PYTHON).replace(
        "$(BENCH_DIR)", "var/bench")
    assert report.hotpath_command("var/bench/hotpath.json") in recipe
    for name, runner in report.RUNNERS:
        if runner != "pytest":
            assert re.search(rf"{re.escape(runner)} [^\"]*--json var/bench/{re.escape(name)}",
                             recipe), name
    assert "rm -f var/bench/*.json" in recipe
    assert "bench/report.py --bench-dir var/bench" in recipe


def test_the_unary_profile_names_each_server_and_the_gateways_largest_shares():
    def server(total: float, shares: dict) -> dict:
        return {"main_thread_per_call": total, "main_thread_by_object_per_call": shares}

    files = {"call_profile.json": {
        "noop": server(330_000, {}), "floor": server(378_000, {}),
        "gateway": server(664_000, {"libpython3.11.so.1.0": 455_000, "cygrpc": 69_000})}}
    [line] = report.call_profile_lines(files)
    assert "no-op server 330,000, floor (no-op + one Redis call) 378,000, gateway 664,000" in \
        line.replace("\n", " ")
    assert line.replace("\n", " ").endswith("libpython3.11.so.1.0 455,000, cygrpc 69,000.")
    assert report.call_profile_lines({}) == []
