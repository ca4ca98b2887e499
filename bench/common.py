"""Shared helpers of the load runners (bench/maxrate.py, bench/openloop.py).

Everything a runner starts is private and local: a redis-server on a free 127.0.0.1 port in a
temporary folder, `creditgate serve --processes N` and the no-op server on free ports, each in
its own process group. `Bench` owns them and stops them in reverse order of start, then removes
the temporary folder, also on Ctrl-C or SIGTERM (both raise KeyboardInterrupt in the runner).

Also here: how runners reach a gateway (Transport: plaintext on loopback, or mutual TLS with a
private development CA made in the temporary folder, or with given files), the bench's
customer population (seeded through Admin.PutCustomer), the request shape both runners send,
Redis' script counters (INFO commandstats) and a sampler of per-process and per-core CPU from
/proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import redis  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from creditgate.gateway import devpki, tls  # noqa: E402
from creditgate.gateway.pb import creditgate_pb2 as pb  # noqa: E402
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc  # noqa: E402

HOST = "127.0.0.1"  # the runners use loopback only
VAR_BENCH = REPO / "var" / "bench"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0  # a gateway drains its calls in flight for up to DRAIN_GRACE_S (10 s)
AUTHORIZE_PATH = "/creditgate.v1.Authorization/Authorize"
PR_SET_PDEATHSIG = 1  # prctl(2)

# The bench population: `bench-0000000`, ... with lines far above what a run can spend, so the
# load is approved. The example catalog's velocity windows still bind: scan_pay approves at
# most 50 purchases per customer and day, so a run of R requests needs well over R / 50
# customers (the runners check it).
CUSTOMER_PREFIX = "bench-"
CUSTOMER_CAPS_MINOR = {
    "total": 1_000_000_000_000,
    "consumer": 1_000_000_000_000,
    "consumer.scan_pay": 1_000_000_000_000,
    "consumer.scan_pay.pos": 1_000_000_000_000,
    "consumer.scan_pay.qr": 1_000_000_000_000,
    "consumer.online": 1_000_000_000_000,
    "cash": 1_000_000_000_000,
}
SCAN_PAY_DAY_COUNT_MAX = 50  # limits/products.toml, products.scan_pay.velocity.day
SEED_CONCURRENCY = 64  # PutCustomer calls in flight while seeding
TICKET_MINOR = 150_000  # the average ticket, 1,500.00 CNY
AMOUNT_MINOR_RANGE = (100, 300_000)  # open-loop amounts: uniform, mean about the ticket


def customer_id(index: int) -> str:
    return f"{CUSTOMER_PREFIX}{index:07d}"


def authorize_request(key: str, customer: str, amount_minor: int = TICKET_MINOR,
                      channel: int = pb.CHANNEL_POS, merchant_id: str = "shop-0001"
                      ) -> pb.AuthorizeRequest:
    """A scan-to-pay purchase of the example catalog: the request both runners send."""
    return pb.AuthorizeRequest(idempotency_key=key, customer_id=customer, product_id="scan_pay",
                               channel=channel, merchant_id=merchant_id, mcc="5411",
                               amount_minor=amount_minor, currency="CNY")


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: flag 0 (not compressed), 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


# -- how a runner reaches the gateway ----------------------------------------------------------
# The callers of the gateways the runners start: the plaintext loopback caller and the mutual
# TLS identity BENCH_URI, each allowed every call the runners make, at any rate they reach.
BENCH_CALLERS = REPO / "bench" / "callers-bench.toml"
BENCH_URI = devpki.spiffe_id("bench", "load")
DEV_TLS_DIR = REPO / "var" / "tls"  # `make run`'s certificates (creditgate certs init)


class Transport(NamedTuple):
    """Plaintext when every file is empty; otherwise TLS, trusting the CA file `ca`, and
    presenting the client certificate `cert` with its key `key` (mutual TLS). Plain strings,
    so it travels in a generator process's configuration."""

    cert: str = ""
    key: str = ""
    ca: str = ""

    @property
    def secure(self) -> bool:
        return bool(self.cert or self.ca)

    def aio_channel(self, target: str, options=()) -> grpc.aio.Channel:
        if not self.secure:
            return grpc.aio.insecure_channel(target, options=list(options))
        return grpc.aio.secure_channel(target, tls.channel_credentials(*self), list(options))

    def channel(self, target: str, options=()) -> grpc.Channel:
        if not self.secure:
            return grpc.insecure_channel(target, options=list(options))
        return grpc.secure_channel(target, tls.channel_credentials(*self), list(options))


PLAINTEXT = Transport()


def private_pki(folder: Path) -> tuple[list[str], Transport]:
    """A development CA in `folder`: `creditgate serve`'s options for mutual TLS with it, and
    the transport of the runners' caller (BENCH_URI)."""
    authority = devpki.Authority.create("creditgate bench CA")
    folder.mkdir(parents=True, exist_ok=True)
    devpki.write_atomically(folder / "ca.pem", authority.cert_pem)
    server_cert, server_key = authority.issue_server().write(folder, "server")
    client_cert, client_key = authority.issue_client(BENCH_URI).write(folder, "bench")
    options = ["--tls-cert", str(server_cert), "--tls-key", str(server_key),
               "--tls-ca", str(folder / "ca.pem")]
    return options, Transport(str(client_cert), str(client_key), str(folder / "ca.pem"))


def serve_options(folder: Path, mtls: bool) -> tuple[list[str], Transport]:
    """`creditgate serve`'s options for a runner's own gateway (the bench callers; plaintext
    on loopback, or mutual TLS with a private CA made in `folder`), and how to reach it."""
    if not mtls:
        return ["--callers", str(BENCH_CALLERS), "--insecure"], PLAINTEXT
    options, transport = private_pki(folder / "tls")
    return ["--callers", str(BENCH_CALLERS), *options], transport


def add_transport_options(parser, caller: str) -> None:
    """--cert/--key/--ca/--insecure, for a runner that calls a gateway it did not start: by
    default `caller`'s files from `make run` (var/tls) when they exist, else plaintext."""
    group = parser.add_argument_group("transport", "mutual TLS (default: make run's "
                                      f"{caller} certificate under var/tls) or plaintext")
    group.add_argument("--cert", default="", help=f"client certificate (default: "
                       f"var/tls/{caller}.pem if it exists)")
    group.add_argument("--key", default="", help="its private key")
    group.add_argument("--ca", default="", help="the CA of the gateway's certificate "
                       "(default: var/tls/ca.pem if it exists)")
    group.add_argument("--insecure", action="store_true", help="plaintext")


def transport_of(args, caller: str) -> Transport:
    """The transport add_transport_options' options ask for."""
    if args.insecure:
        return PLAINTEXT
    cert = args.cert or str(DEV_TLS_DIR / f"{caller}.pem")
    key = args.key or str(DEV_TLS_DIR / f"{caller}.key")
    ca = args.ca or str(DEV_TLS_DIR / "ca.pem")
    if args.cert or tls.files_exist(cert, key, ca):
        return Transport(cert, key, ca if tls.files_exist(ca) else "")
    return PLAINTEXT


# -- processes ---------------------------------------------------------------------------------
def free_port() -> int:
    # The kernel picks an unused port, released before the server binds it: a small race that
    # is acceptable on a bench machine.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_redis(folder: Path) -> tuple[subprocess.Popen, int]:
    """A private redis-server with no persistence in `folder`, answering PING: (process,
    port). For the scripts that manage their own processes (ledger_bench, batch_rate,
    memory); Bench.start_redis is the same inside a Bench."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: run `make redis-server`")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", HOST, "--dir", str(folder), "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--logfile", str(folder / "redis.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(host=HOST, port=port, socket_timeout=0.5)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                sys.exit(f"redis-server exited:\n{log_tail(folder / 'redis.log')}")
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                if client.ping():
                    return process, port
            time.sleep(0.05)
    finally:
        client.close()
    process.kill()
    sys.exit("redis-server did not answer PING")


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_group(process: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the leader (a gateway forwards it to its children, which drain), then
    SIGKILL to the whole process group it leads if it has not exited in time."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
    # The group is ours alone (start_new_session): kill what is left of it, children included.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _terminate_with_parent() -> None:
    """In the child before exec: SIGTERM when the runner dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class Bench(contextlib.ExitStack):
    """A temporary folder and the processes started into it, stopped and removed on exit."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.dir = Path(".")
        self.processes: dict[str, subprocess.Popen] = {}
        self.transport = PLAINTEXT  # how to reach the gateway start_gateway started

    def __enter__(self) -> Bench:
        super().__enter__()
        # SIGTERM unwinds like Ctrl-C, so the exit callbacks run.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        self.callback(signal.signal, signal.SIGTERM, previous)
        self.dir = Path(self.enter_context(tempfile.TemporaryDirectory(
            prefix=f"creditgate-{self.name}-")))
        return self

    def start(self, label: str, argv: list[str], log_name: str,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.dir / log_name, "ab")  # noqa: SIM115 (closed by the exit stack)
        self.callback(log.close)
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
                                   env={**os.environ, **(env or {})},
                                   preexec_fn=_terminate_with_parent)
        self.callback(stop_group, process)
        self.processes[label] = process
        return process

    def stop(self, label: str) -> None:
        """Stop one process early (its exit callback then finds it gone)."""
        stop_group(self.processes.pop(label))

    # -- the servers --------------------------------------------------------------------------
    def start_redis(self, aof: bool = True) -> str:
        """A private redis-server; returns its URL. With `aof`, the append-only file with
        fsync every second, as `make run` keeps it; without, no persistence at all."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed: run `make redis-server`")
        port = free_port()
        data = self.dir / "redis"
        data.mkdir()
        self.start("redis-server", [
            binary, "--port", str(port), "--bind", HOST, "--dir", str(data), "--save", "",
            "--appendonly", "yes" if aof else "no", "--appendfsync", "everysec",
            "--daemonize", "no", "--logfile", str(data / "redis.log")], "redis.stdout")
        client = redis.Redis(host=HOST, port=port, socket_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        break
                if self.processes["redis-server"].poll() is not None or \
                        time.monotonic() > deadline:
                    raise SystemExit(f"redis-server did not start:\n"
                                     f"{log_tail(data / 'redis.log')}")
                time.sleep(0.05)
        finally:
            client.close()
        return f"redis://{HOST}:{port}/0"

    def start_gateway(self, redis_url: str, processes: int, *extra: str,
                      mtls: bool = False) -> int:
        """`creditgate serve --processes N` (and `extra` options) on a free port, SERVING,
        plaintext or with mutual TLS (a private CA; `self.transport` then presents the bench
        caller's certificate); returns the port."""
        port = free_port()
        options, self.transport = serve_options(self.dir, mtls)
        self.start("gateway", [sys.executable, "-m", "creditgate.gateway.cli", "serve",
                               "--host", HOST, "--port", str(port), "--redis-url", redis_url,
                               "--processes", str(processes), *options, *extra], "gateway.log")
        wait_serving(port, self.processes["gateway"], self.dir / "gateway.log", processes,
                     self.transport)
        return port

    def start_noop(self, processes: int, redis_url: str = "") -> int:
        """bench/noop_server.py with N processes on a free port, SERVING (with `redis_url`,
        one Redis round trip per call: the floor leg); returns the port."""
        port = free_port()
        self.start("noop", [sys.executable, str(REPO / "bench" / "noop_server.py"),
                            "--port", str(port), "--processes", str(processes),
                            *(["--redis-url", redis_url] if redis_url else [])], "noop.log")
        wait_serving(port, self.processes["noop"], self.dir / "noop.log", processes)
        return port


def wait_serving(port: int, process: subprocess.Popen, log_path: Path, processes: int,
                 transport: Transport = PLAINTEXT) -> None:
    """Health SERVING on `port`, then until every one of the `processes` listens: with
    SO_REUSEPORT the first process to listen answers alone until the others have bound."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with transport.channel(f"{HOST}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the server exited with {process.returncode} while starting:"
                                 f"\n{log_tail(log_path)}")
            with contextlib.suppress(grpc.RpcError):
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"the server did not become SERVING in {START_TIMEOUT_S} s:\n"
                                 f"{log_tail(log_path)}")
            time.sleep(0.1)
    while listeners(port) < processes:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {listeners(port)} of {processes} processes listen on "
                             f"{port}:\n{log_tail(log_path)}")
        time.sleep(0.1)


def listeners(port: int) -> int:
    """Listening TCP sockets on `port` (one per process with SO_REUSEPORT), from /proc."""
    return len(tcp_sockets(port, "0A"))


def tcp_sockets(port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets whose local port is `port` in `state` ("0A" LISTEN, "01"
    ESTABLISHED), IPv4 and IPv6 (gRPC listens on a v4-mapped IPv6 socket)."""
    wanted = f":{port:04X}"
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                if fields[1].endswith(wanted) and fields[3] == state:
                    inodes.add(fields[9])
    return inodes


# -- customers ---------------------------------------------------------------------------------
def seed_customers(port: int, count: int, transport: Transport = PLAINTEXT) -> float:
    """Put customers 0..count-1 through Admin.PutCustomer; returns the seconds it took."""
    started = time.monotonic()

    async def put_all() -> None:
        async with transport.aio_channel(f"{HOST}:{port}") as channel:
            admin = pb_grpc.AdminStub(channel)
            indexes = iter(range(count))

            async def putter() -> None:
                for index in indexes:
                    await admin.PutCustomer(pb.PutCustomerRequest(
                        customer_id=customer_id(index), status=pb.CUSTOMER_STATUS_ACTIVE,
                        timezone="Asia/Shanghai", caps_minor=CUSTOMER_CAPS_MINOR), timeout=30)

            await asyncio.gather(*(putter() for _ in range(min(SEED_CONCURRENCY, count))))

    asyncio.run(put_all())
    return time.monotonic() - started


def random_request(rng: random.Random, key: str, customers: int) -> pb.AuthorizeRequest:
    """A purchase by a customer drawn uniformly from the population, at a shop of 10,000."""
    return authorize_request(
        key, customer_id(rng.randrange(customers)), rng.randint(*AMOUNT_MINOR_RANGE),
        pb.CHANNEL_POS if rng.random() < 0.5 else pb.CHANNEL_QR_SCAN,
        f"shop-{rng.randrange(10_000):04d}")


# -- Redis' own counters -----------------------------------------------------------------------
SCRIPT_COMMANDS = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall")


def script_stats(redis_url: str) -> dict[str, int]:
    """Script calls Redis has run, their total execution time and failures, summed over EVAL,
    EVALSHA and FCALL (however the gateway's runner calls its scripts)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        info = client.info("commandstats")
    finally:
        client.close()
    totals = {"calls": 0, "usec": 0, "failed_calls": 0}
    for name in SCRIPT_COMMANDS:
        for field in totals:
            totals[field] += int(info.get(name, {}).get(field, 0))
    return totals


def script_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    calls = after["calls"] - before["calls"]
    return {"calls": calls, "failed_calls": after["failed_calls"] - before["failed_calls"],
            "usec_per_call": (after["usec"] - before["usec"]) / calls if calls else 0.0}


# -- CPU from /proc ----------------------------------------------------------------------------
CLOCK_TICKS_S = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc/*/stat."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat:
                parents[int(entry)] = int(stat[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: [state, ppid, ...]."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _cores() -> dict[str, tuple[int, int]]:
    """(busy, total) clock ticks per core since boot, from /proc/stat."""
    cores = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(value) for value in values[:8]]
                idle = ticks[3] + ticks[4]  # idle + iowait
                cores[name] = (sum(ticks) - idle, sum(ticks))
    return cores


class CpuSampler:
    """Samples CPU time and the last core of labelled processes, and every core's busy time,
    every `interval_s` in a thread, between start() and stop()."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.25):
        self.pids = pids
        self.interval_s = interval_s
        self._samples: list[tuple[float, dict[str, tuple[int, str]],
                                  dict[str, tuple[int, int]]]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        processes = {}
        for label, pid in self.pids.items():
            stat = _proc_stat(pid)
            if stat:
                # utime + stime (fields 14, 15), and the core it last ran on (field 39).
                processes[label] = (int(stat[11]) + int(stat[12]), f"cpu{stat[36]}")
        self._samples.append((time.monotonic(), processes, _cores()))

    def _run(self) -> None:
        while not self._done.is_set():
            self._sample()
            self._done.wait(self.interval_s)

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self._sample()

    def report(self, since: float = 0.0) -> dict:
        """CPU % of one core per process and per core, over the samples taken at or after
        monotonic time `since`; per process also the share of samples on each core."""
        samples = [sample for sample in self._samples if sample[0] >= since] or self._samples
        first, last = samples[0], samples[-1]
        seconds = max(last[0] - first[0], 1e-9)
        processes = {}
        for label, pid in self.pids.items():
            # A process that exits before the end (h2load) counts until its last sample.
            alive = [sample for sample in samples if label in sample[1]]
            if len(alive) < 2:
                continue
            ticks = alive[-1][1][label][0] - alive[0][1][label][0]
            span_s = max(alive[-1][0] - alive[0][0], 1e-9)
            seen = Counter(sample[1][label][1] for sample in alive)
            processes[label] = {
                "pid": pid, "cpu_percent": round(100 * ticks / CLOCK_TICKS_S / span_s, 1),
                "cores": {core: round(100 * n / len(alive)) for core, n in sorted(seen.items())}}
        cores = {}
        for core, (busy, total) in last[2].items():
            busy0, total0 = first[2].get(core, (busy, total))
            cores[core] = round(100 * (busy - busy0) / max(total - total0, 1), 1)
        return {"seconds": round(seconds, 2), "processes": processes, "cores": cores}


def label_processes(roots: dict[str, int]) -> dict[str, int]:
    """Label every process of each root's tree: `gateway` (the supervisor of --processes N),
    `gateway[1]`, `gateway[2]`, ... (its serving children)."""
    labels = {}
    for name, root in roots.items():
        tree = process_tree(root)
        if len(tree) == 1:
            labels[name] = root
            continue
        labels[f"{name} supervisor"] = root
        number = 0
        for pid in tree[1:]:
            command = _cmdline(pid)
            if "resource_tracker" in command:
                labels[f"{name} resource tracker"] = pid
            else:
                number += 1
                labels[f"{name}[{number}]"] = pid
    return labels


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def format_cpu(report: dict) -> list[str]:
    lines = [f"  {'process':<24} {'pid':>7} {'cpu % of a core':>16}  cores it was seen on"]
    for label, row in sorted(report["processes"].items(), key=lambda item: -item[1][
            "cpu_percent"]):
        cores = ", ".join(f"{core} {share}%" for core, share in row["cores"].items())
        lines.append(f"  {label:<24} {row['pid']:>7} {row['cpu_percent']:>16.1f}  {cores}")
    lines.append("  cores busy: " + ", ".join(f"{core} {busy:.0f}%"
                                             for core, busy in report["cores"].items()))
    return lines


# -- the machine -------------------------------------------------------------------------------
def cpu_model(unknown: str = "unknown") -> str:
    """The CPU's model name from /proc/cpuinfo, or `unknown`."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return unknown


def machine() -> dict[str, str]:
    facts = {"nproc": str(os.cpu_count()), "cpu": cpu_model(), "python": platform.python_version(),
             "kernel": platform.release()}
    for name, argv in (("redis", ["redis-server", "--version"]), ("h2load", ["h2load",
                                                                              "--version"])):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            facts[name] = subprocess.run(argv, capture_output=True, text=True,
                                         timeout=5).stdout.strip()
    with contextlib.suppress(OSError):
        facts["load_average"] = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return facts


def format_machine(facts: dict[str, str]) -> str:
    return (f"machine: {facts['nproc']} cores ({facts['cpu']}), Python {facts['python']}, "
            f"{facts.get('redis', 'redis ?').split(' sha=')[0]}, "
            f"load average before the run {facts.get('load_average', '?')}")
