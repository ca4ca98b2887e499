"""The Locust load test, for real but small: a private Redis, a gateway on a loopback port
(plaintext, and mutual TLS with the development PKI), 2,000 customers seeded by bench/seed.py,
then `locust --headless` in a subprocess with the
midnight-peak shape compressed into 11 seconds. Locust's own CSV output must show every task
type, no failure, and the shape's quiet and peak user counts; Locust must stop by itself.

The population helpers of bench/seed.py are tested in-process; the locustfile is never
imported here, because importing Locust monkey-patches the standard library with gevent.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import importlib.util
import json
import os
import random
import sys
from pathlib import Path

import pytest

from creditgate.gateway import devpki
from creditgate.limits import catalog
from tests.conftest import PARTITIONS, served_gateway

ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).with_name("locust")

SEEDED = 2_000
BASE_USERS = 3
PEAK_FACTOR = 10
# quiet 3 s, ramp 3 s, hold 3 s, decay 2 s: the run ends by itself after 11 s. Locust writes
# its history every second, so each stage shows in it.
SHAPE = {"QUIET_S": "3", "RAMP_S": "3", "HOLD_S": "3", "DECAY_S": "2"}
SEED_TIMEOUT_S = 30.0
# Locust's start-up (about 2 s) + 11 s of shape + its shutdown, with room for a busy machine.
LOCUST_TIMEOUT_S = 45.0
TASK_NAMES = ("Authorize", "Capture partial", "Capture final", "Void", "Refund", "GetCredit")


def _load_seed():
    spec = importlib.util.spec_from_file_location("bench_seed", ROOT / "bench" / "seed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


seed = _load_seed()


# -- bench/seed.py, in-process ------------------------------------------------------------------


def test_profiles_are_deterministic_and_a_smaller_count_is_a_prefix():
    small = list(seed.profiles(300, seed=7))
    large = list(seed.profiles(1_000, seed=7))
    assert small == large[:300]
    assert [p.customer_id for p in small[:2]] == ["lt0000000", "lt0000001"]
    assert list(seed.profiles(300, seed=8)) != small  # the seed decides caps and statuses


def test_profiles_cover_every_catalog_node_with_caps_in_tree_order():
    nodes = seed.catalog_nodes(catalog.load())
    for profile in seed.profiles(200, seed=1):
        assert set(profile.caps_minor) >= nodes
        caps = profile.caps_minor
        assert all(isinstance(cap, int) and cap > 0 for cap in caps.values())
        assert caps["consumer.scan_pay.pos"] <= caps["consumer.scan_pay"] <= caps["consumer"] \
            <= caps["total"]
        assert profile.status in ("active", "frozen", "overdue")


def test_population_permutes_every_id_and_is_zipf_skewed():
    population = seed.Population(1_000, 1.1, seed=3)
    assert sorted(population.index_of_rank(rank) for rank in range(1_000)) == list(range(1_000))
    rng = random.Random(5)
    ranks = collections.Counter(population.draw_rank(rng) for _ in range(20_000))
    # weight of rank r: r^-1.1; over 1,000 customers the first has 1 / H(1000, 1.1) of them.
    harmonic = sum(r ** -1.1 for r in range(1, 1_001))
    assert abs(ranks[0] / 20_000 - 1 / harmonic) < 0.01
    assert ranks[0] > ranks[1] > ranks[9] > ranks.get(500, 0)
    assert seed.Population(1_000, 1.1, seed=3).draw(random.Random(9)) \
        == population.draw(random.Random(9))


# -- the headless Locust run against a real gateway ---------------------------------------------


async def _run(args: list[str], timeout_s: float, log_path: Path, env=None) -> int:
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *args, cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log,
            stderr=asyncio.subprocess.STDOUT)
        try:
            return await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            pytest.fail(f"{args[1]} did not exit by itself within {timeout_s} s:\n"
                        f"{_tail(log_path)}")


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _locust_env(decisions: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("CREDITGATE_LOCUST_")}
    env.update({f"CREDITGATE_LOCUST_{name}": value for name, value in SHAPE.items()})
    env.update({
        "CREDITGATE_LOCUST_POPULATION": str(SEEDED),
        "CREDITGATE_LOCUST_BASE_USERS": str(BASE_USERS),
        "CREDITGATE_LOCUST_PEAK_FACTOR": str(PEAK_FACTOR),
        "CREDITGATE_LOCUST_USER_RATE": "4",
        "CREDITGATE_LOCUST_DECISIONS_JSON": str(decisions),
    })
    return env


def _transport(tmp_path: Path, mtls: bool) -> tuple[dict, list[str], list[str]]:
    """The gateway's TLS settings, then seed.py's and Locust's transport options: plaintext,
    or mutual TLS with `creditgate certs init`'s files (seed.py as the back-office BO-1,
    Locust's users as the switch ACQ-1)."""
    if not mtls:
        return {}, ["--insecure"], ["--insecure"]
    folder = tmp_path / "tls"
    devpki.init(folder, folder / "callers.toml")
    gateway = {"insecure": False, "tls_cert": str(folder / "server.pem"),
               "tls_key": str(folder / "server.key"), "tls_ca": str(folder / "ca.pem"),
               "callers_path": str(folder / "callers.toml")}

    def files(caller: str) -> list[str]:
        return ["--cert", str(folder / f"{caller}.pem"), "--key", str(folder / f"{caller}.key"),
                "--ca", str(folder / "ca.pem")]

    return gateway, files("BO-1"), files("ACQ-1")


@pytest.mark.slow
@pytest.mark.parametrize("mtls", [False, True], ids=["plaintext", "mtls"])
async def test_headless_midnight_peak_against_a_real_gateway(redis, redis_server, tmp_path,
                                                             mtls):
    if not LOCUST.exists():
        pytest.fail(f"{LOCUST} is missing: the dev extra installs locust (make venv)")
    gateway_tls, seed_transport, locust_transport = _transport(tmp_path, mtls)
    async with served_gateway(redis_server, **gateway_tls) as gateway:
        target = f"127.0.0.1:{gateway.port}"
        rc = await _run([sys.executable, "bench/seed.py", "--count", str(SEEDED),
                         "--redis-url", redis_server.url, "--partitions", str(PARTITIONS),
                         "--target", target, *seed_transport], SEED_TIMEOUT_S,
                        tmp_path / "seed.log")
        assert rc == 0, _tail(tmp_path / "seed.log")

        decisions_path = tmp_path / "decisions.json"
        rc = await _run([str(LOCUST), "-f", "bench/locustfile.py", "--headless",
                         "--host", target, *locust_transport, "--csv", str(tmp_path / "cg"),
                         "--only-summary"],
                        LOCUST_TIMEOUT_S, tmp_path / "locust.log", _locust_env(decisions_path))
    log = _tail(tmp_path / "locust.log")
    assert rc == 0, log  # Locust exits 1 when any request failed

    with (tmp_path / "cg_stats.csv").open() as file:
        stats = {row["Name"]: row for row in csv.DictReader(file)}
    for name in TASK_NAMES:
        assert int(stats[name]["Request Count"]) > 0, f"no {name} request\n{log}"
        assert int(stats[name]["Failure Count"]) == 0, f"{name} failed\n{log}"
    assert int(stats["Aggregated"]["Failure Count"]) == 0
    assert set(stats) == {*TASK_NAMES, "Aggregated"}

    # The shape ran: the quiet user count first, then the peak, and back down at the end.
    with (tmp_path / "cg_stats_history.csv").open() as file:
        users = [int(row["User Count"]) for row in csv.DictReader(file)
                 if row["Name"] == "Aggregated"]
    running = [count for count in users if count]
    assert running[0] == BASE_USERS, users
    assert max(running) == BASE_USERS * PEAK_FACTOR, users
    assert running[-1] < BASE_USERS * PEAK_FACTOR, users

    # Every drawn customer was seeded (partitions and ids agree), and most purchases pass.
    decisions = json.loads(decisions_path.read_text())
    # Locust writes its final CSV when the run stops, while a user still in a call may finish
    # it (and count its decision) a moment later: at most one call per user apart.
    counted = int(stats["Authorize"]["Request Count"])
    assert counted <= sum(decisions.values()) <= counted + BASE_USERS * PEAK_FACTOR, (
        decisions, counted)
    assert "CUSTOMER_UNKNOWN" not in decisions, decisions
    assert decisions.get("APPROVED", 0) > sum(decisions.values()) // 2, decisions
