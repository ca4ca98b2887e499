"""AuthorizeBatch throughput: authorizations per second through the real gateway, and the CPU
each process spends on them.

    .venv/bin/python bench/batch_rate.py [--processes 2] [--clients 1] [--concurrency 8]
        [--connections 8] [--batch-min 16] [--batch-max 64] [--duration 10] [--warmup 2]
        [--customers 20000] [--unary] [--mtls] [--metrics] [--redis-py] [--cluster]
        [--profile DIR [--native]]
        [--json var/bench/batch_rate.json]

Starts a private redis-server (free port, temporary folder, no RDB, no AOF) and the gateway as
`creditgate serve --processes N` (python -m creditgate.gateway.cli, so the gateway is this
checkout's code), seeds the customers straight into Redis (the put_customer script), then runs
`--clients` load-generator processes. Each keeps `--concurrency` AuthorizeBatch calls in flight over
`--connections` grpc.aio channels (uvloop; SO_REUSEPORT spreads connections, not calls),
every batch of a random size within [batch-min, batch-max], every item a new purchase (unique
idempotency key) of a random customer: scan-to-pay at a POS or by QR code, or an e-commerce
checkout, 1.00 to 5,000.00 CNY. With --unary the clients send the same purchases as unary
Authorize calls instead (`--concurrency` calls in flight each).

With --cluster the gateway's Redis is a Redis Cluster of 3 masters, each with one replica
(tests/cluster_support.py, in the run's temporary folder), reached by its redis+cluster:// URL;
the customers are seeded through the slot-aware runner, the CPU of every redis-server is
reported by role and port, and the script counters are each master's and their sum.
bench/cluster_rate.py runs the same load on one Redis and on the cluster, one after the other.

With --mtls the gateway serves mutual TLS with a private CA made for the run, and the load
generators present a client certificate (bench/common.py serve_options); bench/mtls_cost.py
compares the two.

With --metrics the gateway serves its Prometheus metrics (`--metrics-port`, a free port; the
supervisor's sum of its processes), and the run reads them once at the end (the calls they
counted); bench/metrics_cost.py compares runs with and without.

With --redis-py the gateway runs with CREDITGATE_REDIS_PIPELINE=redis-py: its script runner
sends the batches through redis-py's pipelines instead of its own connection (the way before
limits/transport.py packed commands with hiredis), to compare the two on the same machine.

The rate counts the items answered (approved or declined) between the end of the warm-up and
the end of the run. CPU is read from /proc for that same window, per process: each gateway
process, redis-server, each load generator; 100 % is one core. At the end the bench checks
that every approval the clients saw wrote exactly one `authorized` event (the outbox length is
the seeded customers' `customer_put` events plus the approvals) and exits 1 otherwise.

The figures go to --json (default var/bench/batch_rate.json, read by bench/report.py): the
rate, the CPU of each process and per authorization, Redis' µs per script call, and each process's
cores and each core's busy time (sampled from /proc during the window). `--json -`, or a bare
`--json`, prints them as one JSON line on stdout instead.

--profile DIR records each gateway process with py-spy (`py-spy record --format raw`, the
collapsed stacks) during the measured window, and prints the functions with the most samples
on the CPU: by own time (the leaf frame) and by total time (anywhere on the stack).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import redis  # noqa: E402
import uvloop  # noqa: E402
from common import (  # noqa: E402
    VAR_BENCH,
    CpuSampler,
    Transport,
    free_port,
    machine,
    serve_options,
    start_redis,
)

from creditgate.gateway.pb import creditgate_pb2 as pb  # noqa: E402
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc  # noqa: E402
from creditgate.limits import keys  # noqa: E402
from creditgate.limits.constants import (  # noqa: E402
    AUTHORIZE_BATCH_SIZE_MAX,
    METRICS_FLUSH_INTERVAL_S,
)

PARTITIONS = 256
CAPS = {"total": 10**12, "consumer": 10**12, "consumer.scan_pay": 10**12,
        "consumer.scan_pay.pos": 10**12, "consumer.scan_pay.qr": 10**12,
        "consumer.online": 10**12, "cash": 10**11}
# (product, channel, mcc): the shipped catalog's scan-to-pay and e-commerce products.
PURCHASES = [("scan_pay", pb.CHANNEL_POS, "5411"), ("scan_pay", pb.CHANNEL_QR_SCAN, "5812"),
             ("scan_pay", pb.CHANNEL_QR_SCAN, "5411"), ("ecommerce", pb.CHANNEL_ECOMMERCE,
                                                        "5999")]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
CALL_TIMEOUT_S = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


# -- processes -----------------------------------------------------------------------------------
class RedisServer(NamedTuple):
    role: str  # "single", "master" or "replica"
    port: int
    pid: int

    @property
    def label(self) -> str:
        return "redis-server" if self.role == "single" else f"redis-server {self.role}:{self.port}"


def start_redis_servers(args, folder: Path) -> tuple[str, list[RedisServer], Callable]:
    """One private redis-server, or with --cluster a 3-master cluster: its URL, its servers
    (masters first) and how to stop them."""
    if not args.cluster:
        process, port = start_redis(folder)
        return (f"redis://127.0.0.1:{port}/0", [RedisServer("single", port, process.pid)],
                lambda: stop(process))
    from tests.cluster_support import start_cluster

    (folder / "cluster").mkdir()
    cluster = start_cluster(folder / "cluster")
    masters = {node.port for node in cluster.masters()}
    servers = [RedisServer("master" if node.port in masters else "replica", node.port,
                           node.process.pid) for node in cluster.nodes]
    servers.sort(key=lambda server: (server.role != "master", server.port))
    return cluster.url, servers, cluster.stop


def masters(servers: list[RedisServer]) -> list[RedisServer]:
    """The servers that run the scripts: the single Redis or the cluster's masters."""
    return [server for server in servers if server.role != "replica"]


def start_gateway(args, redis_url: str, folder: Path) -> tuple[subprocess.Popen, int]:
    """The gateway, plaintext or with mutual TLS (--mtls, a private CA in `folder`); sets
    args.transport, how the load generators reach it."""
    port = free_port()
    log = (folder / "gateway.log").open("wb")
    options, transport = serve_options(folder, args.mtls)
    args.transport = tuple(transport)
    args.metrics_port = free_port() if args.metrics else 0
    if args.metrics:
        options += ["--metrics-port", str(args.metrics_port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "creditgate.gateway.cli", "serve", "--port", str(port),
         "--redis-url", redis_url, "--partitions", str(PARTITIONS),
         "--processes", str(args.processes), *options],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "CREDITGATE_REDIS_PIPELINE": "redis-py" if args.redis_py else ""})
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the gateway exited: {(folder / 'gateway.log').read_text()[-3000:]}")
        listening = (folder / "gateway.log").read_text().count("creditgate listening")
        if listening >= args.processes:
            return process, port
        time.sleep(0.1)
    process.kill()
    sys.exit("the gateway did not start")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def gateway_processes(pid: int) -> list[int]:
    """The server processes `creditgate serve --processes N` started (not multiprocessing's
    resource tracker)."""
    try:
        pids = [int(child) for child in
                Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [child for child in pids
            if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()]


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds the process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# -- seeding ---------------------------------------------------------------------------------
def customer_id(index: int) -> str:
    return f"bench-{index:07d}"


async def seed(redis_url: str, count: int) -> None:
    """put_customer into one Redis or through the cluster's slot-aware runner."""
    from creditgate.limits import cluster
    from creditgate.limits.client import LimitsClient

    client = cluster.connect(redis_url)
    runner = cluster.runner_for(client)
    await runner.load()
    limits = LimitsClient(runner, PARTITIONS)
    for start in range(0, count, 4096):
        await asyncio.gather(*(limits.put_customer(customer_id(i), "active", "Asia/Shanghai",
                                                   CAPS)
                               for i in range(start, min(count, start + 4096))))
    await runner.close()
    await client.aclose()


def script_stats(redis_port: int) -> tuple[int, float, dict[str, tuple[float, float]]]:
    """Since the last CONFIG RESETSTAT: script calls (FCALL), Redis' own µs per call (the
    scripts' execution, without reading and writing the connections), and per command the
    scripts call (redis.call), its calls and µs per script call. What the commands do not
    account for is Lua and the redis.call bridge."""
    client = redis.Redis(port=redis_port)
    stats = client.info("commandstats")
    client.close()
    script = stats.get("cmdstat_fcall", {})
    calls = int(script.get("calls", 0))
    inner = {name.removeprefix("cmdstat_"): (value["calls"] / max(1, calls),
                                             value["usec"] / max(1, calls))
             for name, value in stats.items()
             if name not in ("cmdstat_fcall", "cmdstat_info", "cmdstat_config|resetstat")}
    return calls, float(script.get("usec_per_call", 0.0)), inner


def reset_stats(servers: list[RedisServer]) -> None:
    for server in servers:
        client = redis.Redis(port=server.port)
        client.config_resetstat()
        client.close()


def summed_script_stats(servers: list[RedisServer]) -> tuple[
        int, float, dict[str, tuple[float, float]], dict[str, tuple[int, float]]]:
    """script_stats summed over the masters (µs and calls per FCALL weighted by each master's
    FCALLs), and each master's (FCALLs, µs per FCALL) by label."""
    each = {server.label: script_stats(server.port) for server in masters(servers)}
    calls = sum(found[0] for found in each.values())
    usec = sum(found[0] * found[1] for found in each.values()) / max(1, calls)
    inner: dict[str, tuple[float, float]] = {}
    for found_calls, _, commands in each.values():
        for name, (per_call, us) in commands.items():
            before = inner.get(name, (0.0, 0.0))
            share = found_calls / max(1, calls)
            inner[name] = (before[0] + per_call * share, before[1] + us * share)
    return calls, usec, inner, {label: found[:2] for label, found in each.items()}


def metrics_calls(port: int) -> float | None:
    """The calls the gateway's metrics counted (creditgate_calls_total, every method and
    status), once they have reached its metrics port; None if it could not be read."""
    from prometheus_client.parser import text_string_to_metric_families

    time.sleep(METRICS_FLUSH_INTERVAL_S + 0.5)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == "creditgate_calls_total")


def outbox_length(servers: list[RedisServer]) -> int:
    """The outbox streams' entries over all partitions (on a cluster: wherever each lives)."""
    if servers[0].role == "single":
        client = redis.Redis(port=servers[0].port)
    else:
        client = redis.RedisCluster(host="127.0.0.1", port=masters(servers)[0].port)
    pipe = client.pipeline(transaction=False)
    for partition in range(PARTITIONS):
        pipe.xlen(keys.outbox(keys.base(partition)))
    total = sum(pipe.execute())
    client.close()
    return total


# -- the load generator ----------------------------------------------------------------------------
class Tally:
    def __init__(self):
        self.approved = 0  # every approval seen, for the outbox check
        self.in_window = 0  # items answered inside the measured window
        self.declined = collections.Counter()
        self.errors = collections.Counter()
        self.calls = 0
        self.latencies_ms: list[float] = []


def purchase(rng: random.Random, key: str, customers: int) -> pb.AuthorizeRequest:
    product, channel, mcc = rng.choice(PURCHASES)
    return pb.AuthorizeRequest(
        idempotency_key=key, customer_id=customer_id(rng.randrange(customers)),
        product_id=product, channel=channel, merchant_id=f"m-{rng.randrange(100_000):05d}",
        mcc=mcc, amount_minor=rng.randrange(100, 500_000), currency="CNY")


def count(tally: Tally, response: pb.AuthorizeResponse) -> None:
    if response.approved:
        tally.approved += 1
    else:
        tally.declined[pb.DeclineReason.Name(response.decline_reason)] += 1


async def drive(args, port: int, index: int, start_at: float, end_at: float) -> dict:
    rng = random.Random(args.seed * 1000 + index)
    tally = Tally()
    serial = 0
    # Separate connections (a local subchannel pool each), so that SO_REUSEPORT spreads them
    # over the gateway processes; the in-flight calls take them in turn.
    transport = Transport(*args.transport)
    channels = [transport.aio_channel(f"127.0.0.1:{port}",
                                      options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(args.connections)]
    stubs = [pb_grpc.AuthorizationStub(channel) for channel in channels]
    try:

        def key() -> str:
            nonlocal serial
            serial += 1
            return f"b{args.seed}-{index}-{serial}"

        async def batches(stub) -> None:
            while time.monotonic() < end_at:
                size = rng.randint(args.batch_min, args.batch_max)
                request = pb.AuthorizeBatchRequest(
                    requests=[purchase(rng, key(), args.customers) for _ in range(size)])
                sent = time.monotonic()
                reply = await stub.AuthorizeBatch(request, timeout=CALL_TIMEOUT_S)
                done = time.monotonic()
                tally.calls += 1
                answered = 0
                for item in reply.items:
                    if item.WhichOneof("outcome") == "error":
                        tally.errors[CODE_NAMES[item.error.code]] += 1
                    else:
                        count(tally, item.response)
                        answered += 1
                if start_at <= done <= end_at:
                    tally.in_window += answered
                    tally.latencies_ms.append((done - sent) * 1000)

        async def unary(stub) -> None:
            while time.monotonic() < end_at:
                request = purchase(rng, key(), args.customers)
                sent = time.monotonic()
                try:
                    response = await stub.Authorize(request, timeout=CALL_TIMEOUT_S)
                except grpc.aio.AioRpcError as error:
                    tally.errors[error.code().name] += 1
                    continue
                done = time.monotonic()
                tally.calls += 1
                count(tally, response)
                if start_at <= done <= end_at:
                    tally.in_window += 1
                    tally.latencies_ms.append((done - sent) * 1000)

        worker = unary if args.unary else batches
        await asyncio.gather(*(worker(stubs[i % len(stubs)]) for i in range(args.concurrency)))
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    return {"approved": tally.approved, "in_window": tally.in_window,
            "declined": dict(tally.declined), "errors": dict(tally.errors),
            "calls": tally.calls, "latencies_ms": tally.latencies_ms}


def client_process(args, port, index, start_at, end_at, results) -> None:
    results.put(uvloop.run(drive(args, port, index, start_at, end_at)))


# -- profiles ------------------------------------------------------------------------------------
def start_profiles(args, pids: list[int], duration_s: float) -> list[tuple[int, Path,
                                                                           subprocess.Popen]]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        sys.exit("--profile needs py-spy (pip install -e '.[dev]')")
    folder = Path(args.profile)
    folder.mkdir(parents=True, exist_ok=True)
    mode = "unary" if args.unary else "batch"
    out = []
    for pid in pids:
        path = folder / f"gateway-{mode}-{pid}.txt"
        # --native needs the process paused while its stack is read; otherwise it runs on.
        how = ["--native"] if args.native else ["--nonblocking"]
        process = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(path),
             "--duration", str(max(1, int(duration_s))), "--rate", "250", *how],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=(folder / f"py-spy-{pid}.log").open("wb"))
        out.append((pid, path, process))
    return out


IDLE_FRAMES = ("epoll_wait", "epoll_pwait", "select", "poll")  # --native shows waits too


def _frame_name(frame: str) -> str:
    """"function (path/to/file.py:line)" -> "function (file.py)"."""
    name, _, where = frame.partition(" (")
    if not where:
        return name
    return f"{name} ({where.rstrip(')').split(':')[0].rsplit('/', 1)[-1]})"


def summarise_profile(path: Path, top: int = 15) -> str:
    """The functions with the most samples, by own time (the leaf frame) and by total time
    (anywhere on the stack), from py-spy's collapsed stacks ("frame;...;leaf count" lines)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack:
            continue
        frames = [_frame_name(frame) for frame in stack.split(";")]
        if frames[-1].startswith(IDLE_FRAMES):
            continue
        count_ = int(number)
        samples += count_
        own[frames[-1]] += count_
        for frame in set(frames):
            total[frame] += count_
    lines = [f"{path.name}: {samples} samples on the CPU"]
    for title, counter in (("own time", own), ("total time", total)):
        lines.append(f"  {title}:")
        lines += [f"    {100 * n / max(1, samples):5.1f}%  {frame}"
                  for frame, n in counter.most_common(top)]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------
def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="gateway processes")
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="calls in flight per load-generator process")
    parser.add_argument("--connections", type=int, default=8,
                        help="gRPC connections per load-generator process")
    parser.add_argument("--batch-min", type=int, default=16)
    parser.add_argument("--batch-max", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--unary", action="store_true",
                        help="unary Authorize calls instead of AuthorizeBatch")
    parser.add_argument("--mtls", action="store_true",
                        help="the gateway serves mutual TLS (a private CA made for the run), "
                        "and the load generators present a client certificate")
    parser.add_argument("--metrics", action="store_true",
                        help="the gateway serves its Prometheus metrics (--metrics-port)")
    parser.add_argument("--redis-py", action="store_true",
                        help="the gateway sends its batches through redis-py's pipelines "
                             "(CREDITGATE_REDIS_PIPELINE=redis-py) instead of its own connection")
    parser.add_argument("--cluster", action="store_true",
                        help="a Redis Cluster of 3 masters and 3 replicas instead of one Redis")
    parser.add_argument("--profile", metavar="DIR", default="",
                        help="py-spy each gateway process during the measured window")
    parser.add_argument("--native", action="store_true",
                        help="with --profile: native frames too (C extensions, uvloop, gRPC)")
    parser.add_argument("--json", nargs="?", const="-", default=str(VAR_BENCH / "batch_rate.json"),
                        help="where to write the figures; '-' or no value: one JSON line on "
                             "stdout (default %(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.batch_min <= args.batch_max <= AUTHORIZE_BATCH_SIZE_MAX:
        parser.error(f"need 1 <= --batch-min <= --batch-max <= {AUTHORIZE_BATCH_SIZE_MAX}")
    if min(args.processes, args.clients, args.concurrency, args.connections,
           args.customers) < 1:
        parser.error("--processes, --clients, --concurrency, --connections and --customers "
                     "must be >= 1")
    return args


def redis_servers(servers: list[RedisServer], cpu: dict[str, float],
                  per_master: dict[str, tuple[int, float]], rate: float,
                  duration_s: float) -> list[dict]:
    """Each server's CPU per authorization of the whole run, and a master's per authorization
    it served itself: the run's authorizations in proportion to its FCALLs."""
    total_calls = sum(calls for calls, _ in per_master.values())
    out = []
    for server in servers:
        share = cpu[server.label]
        calls, usec = per_master.get(server.label, (0, 0.0))
        served = rate * (calls / total_calls if total_calls else 0.0)
        out.append({"role": server.role, "port": server.port, "cpu_percent": share,
                    "cpu_us_per_authorization": share * 1e4 / rate if rate else 0.0,
                    "authorizations_per_s": served,
                    "cpu_us_per_own_authorization": share * 1e4 / served if served else None,
                    "fcall_per_s": calls / duration_s, "usec_per_fcall": usec})
    return out


def measure(args, redis_url: str, servers: list[RedisServer], folder: Path) -> SimpleNamespace:
    """Seed, start the gateway and the load generators, and read everything the report needs
    for the measured window; the gateway is stopped on the way out."""
    run = SimpleNamespace()
    seed_started = time.monotonic()
    uvloop.run(seed(redis_url, args.customers))
    run.seed_s = time.monotonic() - seed_started
    events_before = outbox_length(servers)
    gateway, port = start_gateway(args, redis_url, folder)
    try:
        gateway_pids = gateway_processes(gateway.pid) if args.processes > 1 else [gateway.pid]
        start_at = time.monotonic() + args.warmup + 0.5  # the clients' start-up is not measured
        end_at = start_at + args.duration
        spawn = multiprocessing.get_context("spawn")
        results = spawn.Queue()
        clients = [spawn.Process(target=client_process,
                                 args=(args, port, index, start_at, end_at, results))
                   for index in range(args.clients)]
        for client in clients:
            client.start()
        run.watched = {**{f"gateway {pid}": pid for pid in gateway_pids},
                       **{server.label: server.pid for server in servers},
                       **{f"load generator {c.pid}": c.pid for c in clients}}
        time.sleep(max(0.0, start_at - time.monotonic()))
        run.profiles = (start_profiles(args, gateway_pids, args.duration) if args.profile
                        else [])
        # Which core each process ran on, and how busy each core was: sampled in a thread of
        # this (otherwise sleeping) process; the CPU figures themselves are the two readings.
        sampler = CpuSampler({
            **{f"gateway[{n}]": pid for n, pid in enumerate(gateway_pids, 1)},
            **{server.label: server.pid for server in servers},
            **{f"load generator[{n}]": c.pid for n, c in enumerate(clients, 1)}}).start()
        cpu_before = {name: cpu_s(pid) for name, pid in run.watched.items()}
        reset_stats(servers)
        time.sleep(max(0.0, end_at - time.monotonic()))
        run.cpu = {name: 100 * (cpu_s(pid) - cpu_before[name]) / args.duration
                   for name, pid in run.watched.items()}
        sampler.stop()
        run.sampled = sampler.report()
        run.script_calls, run.script_us, run.inner, run.per_master = summed_script_stats(
            servers)
        run.tallies = [results.get(timeout=CALL_TIMEOUT_S + 30) for _ in clients]
        for client in clients:
            client.join()
        for _, _, process in run.profiles:
            process.wait(timeout=60)
        run.events = outbox_length(servers) - events_before
        run.counted = metrics_calls(args.metrics_port) if args.metrics else None
    finally:
        stop(gateway)
    return run


def tally_up(args, run: SimpleNamespace, servers: list[RedisServer]) -> None:
    """The load generators' tallies summed, the rate, and the CPU per authorization."""
    run.answered = sum(t["in_window"] for t in run.tallies)
    run.approved = sum(t["approved"] for t in run.tallies)
    run.declined = collections.Counter()
    run.errors = collections.Counter()
    for t in run.tallies:
        run.declined.update(t["declined"])
        run.errors.update(t["errors"])
    run.latencies = [ms for t in run.tallies for ms in t["latencies_ms"]]
    run.rate = run.answered / args.duration
    run.cpu_us_per_authorization = {}
    if run.answered:
        per_item = {role: sum(v for k, v in run.cpu.items() if k.startswith(role))
                    for role in ("gateway", "redis-server", "load generator")}
        run.cpu_us_per_authorization = {name: share * 1e4 / run.rate
                                        for name, share in per_item.items()}
    run.by_server = redis_servers(servers, run.cpu, run.per_master, run.rate, args.duration)
    run.consistent = run.events == run.approved


def print_run(args, run: SimpleNamespace) -> None:
    kind = "unary Authorize" if args.unary else (
        f"AuthorizeBatch of {args.batch_min}-{args.batch_max}")
    kind += " (redis-py pipelines)" if args.redis_py else ""
    kind += ", mutual TLS" if args.mtls else ""
    kind += ", metrics on" if args.metrics else ""
    kind += ", Redis Cluster of 3 masters + 3 replicas" if args.cluster else ", one Redis"
    print(f"{kind}: {args.processes} gateway process(es), {args.clients} load generator(s) x "
          f"{args.concurrency} calls in flight on {args.connections} connections, "
          f"{args.customers} customers "
          f"(seeded in {run.seed_s:.1f} s)")
    print(f"authorizations/s: {run.rate:,.0f} ({run.answered:,} answered in "
          f"{args.duration:g} s; {run.approved:,} approved in all, declined "
          f"{dict(run.declined) or 0}, errors {dict(run.errors) or 0})")
    print(f"call latency ms: p50 {percentile(run.latencies, 0.5):.1f}  "
          f"p99 {percentile(run.latencies, 0.99):.1f}  max {max(run.latencies, default=0):.1f}")
    print("CPU over the measured window (100% = one core):")
    for name, share in run.cpu.items():
        print(f"  {name:28s} {share:6.1f}%")
    print(f"  {'total':28s} {sum(run.cpu.values()):6.1f}% of {os.cpu_count() * 100}%")
    if run.cpu_us_per_authorization:
        print("CPU per authorization: " + ", ".join(
            f"{name} {us:.1f} µs" for name, us in run.cpu_us_per_authorization.items()))
    print_redis(args, run)
    for _, path, _ in run.profiles:
        print(summarise_profile(path))
    if args.metrics:
        print(f"metrics: {run.counted if run.counted is not None else 'unreadable'} calls "
              f"counted (creditgate_calls_total, warm-up included)")
    print(f"outbox check: {run.events:,} authorized events for {run.approved:,} approvals: "
          f"{'ok' if run.consistent else 'MISMATCH'}")


def print_redis(args, run: SimpleNamespace) -> None:
    calls, us = run.script_calls, run.script_us
    print(f"redis: {calls / args.duration:,.0f} FCALL/s, {us:.1f} µs per call "
          f"inside the script ({calls * us / 1e4 / args.duration:.1f}% of a core)")
    if run.inner:
        ranked = sorted(run.inner.items(), key=lambda item: -item[1][1])
        print("  of which the commands the script calls, per FCALL: " + ", ".join(
            f"{name} {count:.1f}x {us:.1f} µs" for name, (count, us) in ranked[:8])
            + f"; together {sum(us for _, us in run.inner.values()):.1f} µs")
    if args.cluster:
        print("per redis-server (100% = one core):")
        for item in run.by_server:
            print(f"  {item['role']:7s} :{item['port']}  {item['cpu_percent']:5.1f}%  "
                  f"{item['cpu_us_per_authorization']:5.1f} µs per authorization of the run"
                  + (f", {item['cpu_us_per_own_authorization']:5.1f} µs per authorization it "
                     f"served ({item['authorizations_per_s']:,.0f}/s, "
                     f"{item['fcall_per_s']:,.0f} FCALL/s)" if item["role"] == "master" else ""))


def result_of(args, run: SimpleNamespace, facts: dict, argv) -> dict:
    calls, us = run.script_calls, run.script_us
    return {
        "mode": "unary" if args.unary else "batch", "redis_py": args.redis_py,
        "mtls": args.mtls, "metrics": args.metrics, "metrics_calls": run.counted,
        "processes": args.processes, "duration_s": args.duration, "cluster": args.cluster,
        "authorizations_per_s": run.rate, "answered": run.answered, "approved": run.approved,
        "declined": dict(run.declined), "errors": dict(run.errors), "events": run.events,
        "outbox_consistent": run.consistent,
        # % of one core per process over the window, and µs of CPU per authorization by role.
        "cpu_percent": run.cpu, "cpu_us_per_authorization": run.cpu_us_per_authorization,
        "cpu_sampled": run.sampled,
        # Each redis-server: role, port, % of a core, µs per authorization (of all the run's
        # authorizations), and on a master its FCALLs.
        "redis_servers": run.by_server,
        "redis": {"evalsha_per_s": calls / args.duration,
                  "usec_per_evalsha": us,
                  "core_percent_in_scripts": calls * us / 1e4 / args.duration,
                  "commands_per_evalsha": {name: {"calls": n, "usec": u}
                                           for name, (n, u) in run.inner.items()}},
        "latency_ms_p50": percentile(run.latencies, 0.5),
        "latency_ms_p99": percentile(run.latencies, 0.99),
        "latency_ms_max": max(run.latencies, default=0.0),
        "machine": facts, "argv": sys.argv[1:] if argv is None else list(argv),
        "args": vars(args)}


def main(argv=None) -> int:
    args = parse_args(argv)
    facts = machine()  # before the run: the load average is the machine's, not ours
    folder = Path(tempfile.mkdtemp(prefix="creditgate-batch-rate-"))
    try:
        redis_url, servers, stop_redis = start_redis_servers(args, folder)
        try:
            run = measure(args, redis_url, servers, folder)
        finally:
            stop_redis()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    tally_up(args, run, servers)
    print_run(args, run)
    result = result_of(args, run, facts, argv)
    if args.json == "-":
        print(json.dumps(result))
    else:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"figures written to {path}")
    return 0 if run.consistent and not run.errors else 1


if __name__ == "__main__":
    sys.exit(main())
