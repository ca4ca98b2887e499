"""The same AuthorizeBatch load against one Redis and against a 3-master Redis Cluster, in one
run: throughput, and each redis-server's CPU per authorization.

    .venv/bin/python bench/cluster_rate.py [--duration 5] [batch_rate.py's load options ...]
        [--json var/bench/cluster_rate.json]

Runs bench/batch_rate.py twice with the same load options, one after the other: first on one
private redis-server, then with --cluster (3 masters, each with one replica). Prints each leg's
output, then both side by side and the capacity the cluster leg's per-core figures give: for a
rate R, gateway cores = R x the gateway's µs per authorization / 10^6, and Redis masters =
R / (what one master absorbs at REDIS_BUSY_MAX: REDIS_BUSY_MAX x 10^6 / the busiest master's µs
per authorization it served). Exits 1 if either leg fails (errors, or an outbox mismatch).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import VAR_BENCH  # noqa: E402

REDIS_BUSY_MAX = 0.6  # a master is sized to stay under this share of one core
RATES = (5_000, 20_000, 100_000)
LEG_TIMEOUT_S = 600


def run_leg(load: list[str], cluster: bool) -> tuple[dict, str, int]:
    """One batch_rate.py run: its JSON, its printed output and its exit status."""
    argv = [sys.executable, str(BENCH / "batch_rate.py"), *load,
            *(["--cluster"] if cluster else []), "--json", "-"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=LEG_TIMEOUT_S)
    lines = run.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        sys.exit(f"batch_rate.py {'--cluster ' if cluster else ''}failed:\n"
                 f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return result, "\n".join(lines[:-1]), run.returncode


def per_core(leg: dict) -> dict:
    """The leg's figures the capacity rests on: µs of CPU per authorization of the gateway,
    of all its redis-servers, and of its busiest master per authorization that master served."""
    masters = [s for s in leg["redis_servers"] if s["role"] in ("master", "single")]
    own = [s["cpu_us_per_own_authorization"] or 0.0 for s in masters]
    return {"gateway_us": leg["cpu_us_per_authorization"].get("gateway", 0.0),
            "redis_us_all_servers": leg["cpu_us_per_authorization"].get("redis-server", 0.0),
            "master_us": max(own, default=0.0)}


def capacity(figures: dict) -> list[dict]:
    """Gateway cores and Redis masters for each rate of RATES, with the arithmetic's terms."""
    per_master = REDIS_BUSY_MAX * 1e6 / figures["master_us"] if figures["master_us"] else 0.0
    rows = []
    for rate in RATES:
        cores = rate * figures["gateway_us"] / 1e6
        rows.append({"authorizations_per_s": rate, "gateway_cores": cores,
                     "gateway_cores_whole": math.ceil(cores),
                     "master_absorbs_per_s": per_master,
                     "masters": math.ceil(rate / per_master) if per_master else None})
    return rows


def report(legs: dict[str, dict], figures: dict, rows: list[dict]) -> None:
    print("\n== one Redis vs a 3-master cluster (same load, one run; a shared machine: noisy) ==")
    for name, leg in legs.items():
        servers = ", ".join(f"{s['role']}:{s['port']} {s['cpu_percent']:.0f}% "
                            f"({s['cpu_us_per_authorization']:.1f} µs/auth)"
                            for s in leg["redis_servers"])
        print(f"{name:10s} {leg['authorizations_per_s']:9,.0f} auth/s  gateway "
              f"{leg['cpu_us_per_authorization'].get('gateway', 0):.1f} µs/auth  "
              f"redis {leg['cpu_us_per_authorization'].get('redis-server', 0):.1f} µs/auth "
              f"in all; {servers}")
    print(f"capacity (cluster leg): gateway {figures['gateway_us']:.1f} µs/auth; busiest master "
          f"{figures['master_us']:.1f} µs per authorization it served -> "
          f"{rows[0]['master_absorbs_per_s']:,.0f} auth/s per master at "
          f"{REDIS_BUSY_MAX:.0%} busy")
    for row in rows:
        print(f"  {row['authorizations_per_s']:>7,} auth/s: {row['gateway_cores']:.1f} gateway "
              f"cores (-> {row['gateway_cores_whole']}), {row['masters']} master(s)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", default="5", help="measured seconds per leg")
    parser.add_argument("--json", default=str(VAR_BENCH / "cluster_rate.json"))
    args, load = parser.parse_known_args(argv)
    load = ["--duration", args.duration, *load]
    legs, codes = {}, []
    for name, cluster in (("one-redis", False), ("cluster", True)):
        result, output, code = run_leg(load, cluster)
        print(output)
        legs[name] = result
        codes.append(code)
    figures = per_core(legs["cluster"])
    rows = capacity(figures)
    report(legs, figures, rows)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"legs": legs, "per_core": figures, "capacity": rows,
                                "redis_busy_max": REDIS_BUSY_MAX, "load": load,
                                "machine": legs["cluster"]["machine"]}, indent=2) + "\n")
    print(f"figures written to {path}")
    return 1 if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())
