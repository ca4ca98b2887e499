"""Max-rate of unary Authorize: the gateway against a no-op server, same h2load, same run.

    .venv/bin/python bench/maxrate.py [--processes 2] [--duration-s 10] [--warm-up-s 2]
        [--connections 8] [--streams 16] [--threads 1] [--customers 1000] [--fresh 2000]
        [--no-floor] [--no-aof] [--json var/bench/maxrate.json]

h2load (nghttp2-client; `make bench-tools`) posts one gRPC request body over h2c with
--streams concurrent streams on each of --connections connections for --duration-s seconds
after --warm-up-s, first against bench/noop_server.py, then against the same no-op server
with one Redis round trip per call (the floor: `--redis-url`, a script that only returns, sent
through the gateway's script runner; --no-floor skips it), then against `creditgate serve`
(a private redis-server with the append-only file, fsync every second, unless --no-aof; a
seeded population; the outbox), both with --processes processes sharing the port. It prints
both rates, their ratio, and the CPU of every process and core while h2load ran (from /proc).

h2load sends the same body with every request, so after the first every gateway request is
an idempotent replay: the same gRPC and HTTP/2 work, the same hot-path plan (validation,
product rules, the payload fingerprint), the same reserve script call through the batcher,
but the script returns the stored first answer after one GET instead of checking and writing
the limits (docs/benchmarks.md, "Max-rate"). The run proves it and measures what a replay
saves: the outbox gains no event during the h2load leg, and after it --fresh authorizations
with new idempotency keys measure Redis' time per fresh script call (INFO commandstats)
beside the replay's. bench/openloop.py measures fresh authorizations end to end.

gRPC answers errors with HTTP 200 and the status in the trailers, which h2load does not read.
The runner checks the answers instead: one call with the exact body before and after h2load
must be OK and approved, and the DATA bytes h2load received must be one response message per
succeeded request (an error answer has no message), and on the gateway every request must
have reached Redis as one script call.

Exit status: 0 when both legs ran and every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import grpc  # noqa: E402
import redis  # noqa: E402

from creditgate.gateway.pb import creditgate_pb2 as pb  # noqa: E402
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc  # noqa: E402
from creditgate.limits import keys  # noqa: E402
from creditgate.limits.constants import GRPC_CONCURRENT_RPCS_MAX, PARTITIONS_DEFAULT  # noqa: E402

H2LOAD_SLACK_S = 60  # h2load is killed this long after its duration if it has not finished
FRESH_CONCURRENCY = 64


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=2,
                        help="server processes of each server (default 2)")
    parser.add_argument("--duration-s", type=int, default=10, help="measured seconds per leg")
    parser.add_argument("--warm-up-s", type=int, default=2, help="unmeasured seconds first")
    parser.add_argument("--connections", type=int, default=8, help="h2load -c")
    parser.add_argument("--streams", type=int, default=16,
                        help="h2load -m: concurrent streams per connection")
    parser.add_argument("--threads", type=int, default=1, help="h2load -t")
    parser.add_argument("--customers", type=int, default=1000,
                        help="customers seeded into the gateway's Redis")
    parser.add_argument("--fresh", type=int, default=2000,
                        help="fresh authorizations after the gateway leg (0: none)")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip the floor leg: the no-op server with one Redis round trip "
                        "per call (bench/noop_server.py --redis-url)")
    parser.add_argument("--no-aof", action="store_true",
                        help="run the private redis-server without the append-only file")
    parser.add_argument("--json", type=Path, default=common.VAR_BENCH / "maxrate.json",
                        help="where to write the figures (default %(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.processes <= 64:
        parser.error("--processes must be within 1..64")
    if args.duration_s < 1 or args.warm_up_s < 0:
        parser.error("--duration-s must be >= 1 and --warm-up-s >= 0")
    if args.connections < args.processes:
        parser.error("--connections must be at least --processes, or a process gets nothing")
    # Past the gRPC concurrency bound a server answers RESOURCE_EXHAUSTED at once: a fast
    # error that would count as a succeeded request in h2load.
    if args.streams * args.connections > GRPC_CONCURRENT_RPCS_MAX:
        parser.error(f"--streams x --connections must stay <= {GRPC_CONCURRENT_RPCS_MAX}")
    fresh_customers_needed = args.fresh // (common.SCAN_PAY_DAY_COUNT_MAX // 2) + 1
    if args.customers < max(1, fresh_customers_needed):
        parser.error(f"--fresh {args.fresh} needs --customers >= {fresh_customers_needed} "
                     f"(scan_pay approves {common.SCAN_PAY_DAY_COUNT_MAX} a day per customer)")
    return args


# -- h2load -----------------------------------------------------------------------------------
_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout")
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_TRAFFIC = re.compile(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?\((\d+)\) data")
_REQUEST_TIME = re.compile(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+"
                           r"([\d.]+)(us|ms|s)")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_h2load(output: str) -> dict:
    """The figures of h2load's summary; raises ValueError if one is missing."""
    found = {name: pattern.search(output) for name, pattern in (
        ("finished", _FINISHED), ("requests", _REQUESTS), ("status", _STATUS),
        ("traffic", _TRAFFIC), ("request_time", _REQUEST_TIME))}
    missing = [name for name, match in found.items() if match is None]
    if missing:
        raise ValueError(f"h2load's output lacks {', '.join(missing)}:\n{output}")
    finished, requests, status, traffic, request_time = (found[name] for name in found)
    seconds = float(finished[1]) / (1000 if finished[2] == "ms" else 1)
    total, started, done, succeeded, failed, errored, timeout = map(int, requests.groups())
    return {
        "seconds": seconds, "rate_per_s": float(finished[3]), "requests": total,
        "started": started, "done": done, "succeeded": succeeded, "failed": failed,
        "errored": errored, "timeout": timeout,
        "status_2xx": int(status[1]), "status_other": sum(map(int, status.groups()[1:])),
        "bytes_total": int(traffic[1]), "bytes_headers": int(traffic[2]),
        "bytes_data": int(traffic[3]),
        "request_ms_min": float(request_time[1]) * _UNIT_MS[request_time[2]],
        "request_ms_max": float(request_time[3]) * _UNIT_MS[request_time[4]],
        "request_ms_mean": float(request_time[5]) * _UNIT_MS[request_time[6]],
    }


def h2load_argv(args: argparse.Namespace, port: int, body: Path, duration_s: int) -> list[str]:
    return ["h2load", "-D", str(duration_s), "-c", str(args.connections),
            "-m", str(args.streams), "-t", str(args.threads), "-d", str(body),
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            f"http://{common.HOST}:{port}{common.AUTHORIZE_PATH}"]


def connections_per_process(port: int, pids: dict[str, int]) -> dict[str, int]:
    """Established connections on `port` held by each process (socket inodes in /proc)."""
    inodes = common.tcp_sockets(port, "01")
    counts = {}
    for label, pid in pids.items():
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        count = sum(1 for link in links if link.startswith("socket:[")
                    and link[8:-1] in inodes)
        if count:
            counts[label] = count
    return counts


def run_h2load(bench: common.Bench, args: argparse.Namespace, port: int, body: Path,
               server_pids: dict[str, int], extra_pids: dict[str, int],
               before_measured: Callable[[], None] = lambda: None) -> dict:
    """A warm-up run of h2load, then `before_measured()`, then the measured run while
    sampling CPU; returns the measured run's figures and the CPU report.

    The warm-up is a run of its own rather than h2load's --warm-up-time, whose DATA byte
    count includes the warm-up's responses while its request counts do not."""
    if args.warm_up_s:
        run_once(bench, args, port, body, args.warm_up_s, "warm-up")
    before_measured()
    print("  $ " + " ".join(f"'{part}'" if " " in part else part
                            for part in h2load_argv(args, port, body, args.duration_s)),
          flush=True)
    return run_once(bench, args, port, body, args.duration_s, "measured", server_pids,
                    extra_pids)


def run_once(bench: common.Bench, args: argparse.Namespace, port: int, body: Path,
             duration_s: int, name: str, server_pids: dict[str, int] | None = None,
             extra_pids: dict[str, int] | None = None) -> dict:
    out_path = bench.dir / f"h2load-{port}-{name}.out"
    process = bench.start("h2load", h2load_argv(args, port, body, duration_s), out_path.name)
    sampler = None
    if server_pids is not None:
        sampler = common.CpuSampler({**server_pids, **(extra_pids or {}),
                                     "h2load": process.pid}).start()
    spread: dict[str, int] = {}
    try:
        if server_pids is not None:
            time.sleep(min(1.0, duration_s / 2))
            spread = connections_per_process(port, server_pids)
        process.wait(timeout=duration_s + H2LOAD_SLACK_S)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"h2load ({name}) did not finish in time") from None
    finally:
        if sampler:
            sampler.stop()
        bench.stop("h2load")
    output = out_path.read_text(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"h2load ({name}) exited with {process.returncode}:\n{output}")
    figures = parse_h2load(output)
    if sampler:
        figures["cpu"] = sampler.report()
    figures["connections_per_process"] = spread
    return figures


# -- checks -----------------------------------------------------------------------------------
def call_raw(port: int, message: bytes) -> bytes:
    """One Authorize with exactly these request bytes; returns the response bytes (raises on a
    status other than OK)."""
    with grpc.insecure_channel(f"{common.HOST}:{port}") as channel:
        method = channel.unary_unary(common.AUTHORIZE_PATH)  # bytes in, bytes out
        return method(message, timeout=10)


def check_answer(port: int, message: bytes, when: str, problems: list[str]) -> int:
    """Call with the body's message; records a problem unless OK and approved. Returns the
    response's size in bytes (0 after an error)."""
    try:
        answer = call_raw(port, message)
    except grpc.RpcError as error:
        problems.append(f"{when}: {error.code().name}: {error.details()}")
        return 0
    reply = pb.AuthorizeResponse.FromString(answer)
    if not reply.approved:
        problems.append(f"{when}: not approved ({pb.DeclineReason.Name(reply.decline_reason)})")
    return len(answer)


def check_h2load(figures: dict, response_bytes: int, problems: list[str], leg: str) -> None:
    """Every succeeded request got one response message: gRPC errors carry none."""
    if figures["succeeded"] == 0:
        problems.append(f"{leg}: h2load completed no request")
        return
    for name in ("failed", "errored", "timeout", "status_other"):
        if figures[name]:
            problems.append(f"{leg}: h2load counted {figures[name]} {name}")
    frame = 5 + response_bytes
    messages = figures["bytes_data"] / frame
    figures["response_messages"] = round(messages, 1)
    # A request in flight when the duration ends may be counted on one side only: allow one
    # such per stream.
    slack = figures.get("streams_total", 0)
    if abs(messages - figures["succeeded"]) > slack:
        problems.append(
            f"{leg}: {figures['bytes_data']} bytes of DATA hold {messages:.1f} responses of "
            f"{frame} bytes for {figures['succeeded']} succeeded requests: some answers were "
            f"gRPC errors")


def outbox_events(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        pipe = client.pipeline(transaction=False)
        for partition in range(PARTITIONS_DEFAULT):
            pipe.xlen(keys.outbox(keys.base(partition)))
        return sum(pipe.execute())
    finally:
        client.close()


def fresh_authorizations(port: int, count: int, customers: int, run_id: str) -> dict:
    """`count` authorizations with new idempotency keys, FRESH_CONCURRENCY in flight."""
    outcome = {"count": count, "ok": 0, "approved": 0, "errors": {}}

    async def drive() -> None:
        async with grpc.aio.insecure_channel(f"{common.HOST}:{port}") as channel:
            stub = pb_grpc.AuthorizationStub(channel)
            numbers = iter(range(count))

            async def caller() -> None:
                for number in numbers:
                    request = common.authorize_request(
                        f"fresh-{run_id}-{number}", common.customer_id(number % customers))
                    try:
                        reply = await stub.Authorize(request, timeout=10)
                    except grpc.aio.AioRpcError as error:
                        name = error.code().name
                        outcome["errors"][name] = outcome["errors"].get(name, 0) + 1
                        continue
                    outcome["ok"] += 1
                    outcome["approved"] += reply.approved

            await asyncio.gather(*(caller() for _ in range(min(FRESH_CONCURRENCY, count))))

    asyncio.run(drive())
    return outcome


# -- the legs ---------------------------------------------------------------------------------
def noop_leg(args: argparse.Namespace, body: Path, message: bytes, problems: list[str]) -> dict:
    with common.Bench("maxrate-noop") as bench:
        port = bench.start_noop(args.processes)
        pids = common.label_processes({"no-op": bench.processes["noop"].pid})
        response_bytes = check_answer(port, message, "no-op before h2load", problems)
        figures = run_h2load(bench, args, port, body, pids, {})
        check_answer(port, message, "no-op after h2load", problems)
        figures["streams_total"] = args.connections * args.streams
        figures["response_bytes"] = response_bytes
        check_h2load(figures, response_bytes, problems, "no-op")
        return figures


def floor_leg(args: argparse.Namespace, body: Path, message: bytes, problems: list[str]) -> dict:
    """The no-op server with one Redis round trip per call (bench/noop_server.py --redis-url):
    the floor of any gateway that asks Redis once per call with this server core."""
    with common.Bench("maxrate-floor") as bench:
        redis_url = bench.start_redis(aof=not args.no_aof)
        port = bench.start_noop(args.processes, redis_url)
        pids = common.label_processes({"floor": bench.processes["noop"].pid})
        response_bytes = check_answer(port, message, "floor before h2load", problems)
        before: dict = {}
        figures = run_h2load(bench, args, port, body, pids,
                             {"redis-server": bench.processes["redis-server"].pid},
                             lambda: before.update(common.script_stats(redis_url)))
        check_answer(port, message, "floor after h2load", problems)
        figures["streams_total"] = args.connections * args.streams
        figures["response_bytes"] = response_bytes
        check_h2load(figures, response_bytes, problems, "floor")
        figures["script"] = common.script_delta(before, common.script_stats(redis_url))
        if figures["script"]["calls"] < figures["done"]:
            problems.append(f"floor: {figures['done']} requests done but only "
                            f"{figures['script']['calls']} script calls in Redis")
        return figures


def gateway_leg(args: argparse.Namespace, body: Path, message: bytes, run_id: str,
                problems: list[str]) -> dict:
    with common.Bench("maxrate-gateway") as bench:
        redis_url = bench.start_redis(aof=not args.no_aof)
        port = bench.start_gateway(redis_url, args.processes)
        seeded_s = common.seed_customers(port, args.customers)
        print(f"  seeded {args.customers} customers in {seeded_s:.1f} s", flush=True)
        pids = common.label_processes({"gateway": bench.processes["gateway"].pid})
        # The first call authorizes; every request of h2load then replays it.
        response_bytes = check_answer(port, message, "gateway before h2load", problems)
        before: dict = {}

        def count() -> None:
            before.update(events=outbox_events(redis_url),
                          scripts=common.script_stats(redis_url))

        figures = run_h2load(bench, args, port, body, pids,
                             {"redis-server": bench.processes["redis-server"].pid}, count)
        scripts = common.script_delta(before["scripts"], common.script_stats(redis_url))
        figures["outbox_events_written"] = outbox_events(redis_url) - before["events"]
        check_answer(port, message, "gateway after h2load", problems)
        figures["streams_total"] = args.connections * args.streams
        figures["response_bytes"] = response_bytes
        check_h2load(figures, response_bytes, problems, "gateway")
        figures["replay_script"] = scripts
        completed = figures["done"]
        if scripts["failed_calls"]:
            problems.append(f"gateway: {scripts['failed_calls']} script calls failed in Redis")
        if scripts["calls"] < completed:
            problems.append(f"gateway: {completed} requests done but only {scripts['calls']} "
                            f"script calls in Redis")
        if figures["outbox_events_written"]:
            problems.append(f"gateway: {figures['outbox_events_written']} outbox events were "
                            f"written during h2load: not every request was a replay")
        if args.fresh:
            before = common.script_stats(redis_url)
            fresh = fresh_authorizations(port, args.fresh, args.customers, run_id)
            fresh["script"] = common.script_delta(before, common.script_stats(redis_url))
            if fresh["ok"] != args.fresh or fresh["approved"] != args.fresh:
                problems.append(f"gateway: fresh authorizations: {fresh['ok']} OK, "
                                f"{fresh['approved']} approved of {args.fresh}, errors "
                                f"{fresh['errors']}")
            figures["fresh"] = fresh
        return figures


# -- report -----------------------------------------------------------------------------------
def report(args: argparse.Namespace, result: dict) -> list[str]:
    noop, gateway = result["noop"], result["gateway"]
    ratio = gateway["rate_per_s"] / noop["rate_per_s"] if noop["rate_per_s"] else 0.0
    result["ratio"] = round(ratio, 3)
    lines = [
        "",
        f"max-rate, unary Authorize: h2load -c {args.connections} -m {args.streams} "
        f"-t {args.threads}, {args.duration_s} s after a warm-up run of {args.warm_up_s} s, "
        f"{args.processes} server processes each",
        common.format_machine(result["machine"]),
    ]
    floor = result.get("floor")
    legs = [("no-op server", noop), *([("floor (1 Redis call)", floor)] if floor else []),
            ("gateway (replays)", gateway)]
    for name, leg in legs:
        lines.append(
            f"  {name:<18} {leg['rate_per_s']:>10,.0f} req/s  "
            f"({leg['rate_per_s'] / args.processes:,.0f} per process; {leg['succeeded']:,} "
            f"succeeded, mean {leg['request_ms_mean']:.2f} ms, max "
            f"{leg['request_ms_max']:.1f} ms; connections per process "
            f"{'/'.join(map(str, leg['connections_per_process'].values())) or '?'})")
    lines.append(f"  ratio gateway / no-op: {ratio:.2f} (target: >= 0.90)")
    if floor:
        result["floor_ratio"] = round(floor["rate_per_s"] / noop["rate_per_s"], 3) \
            if noop["rate_per_s"] else 0.0
        lines.append(f"  ratio floor / no-op: {result['floor_ratio']:.2f} (no creditgate work; "
                     f"Redis {floor['script']['usec_per_call']:.1f} us per script call)")
    replay = gateway["replay_script"]
    lines.append(f"  Redis during the gateway leg: {replay['calls'] / max(gateway['done'], 1):.2f}"
                 f" script calls per request, {replay['usec_per_call']:.1f} us per call, "
                 f"{gateway['outbox_events_written']} outbox events written")
    if "fresh" in gateway:
        fresh = gateway["fresh"]
        lines.append(f"  fresh authorizations after it: {fresh['ok']:,} OK, "
                     f"{fresh['approved']:,} approved of {fresh['count']:,}; Redis "
                     f"{fresh['script']['usec_per_call']:.1f} us per script call "
                     f"(a replay: {replay['usec_per_call']:.1f} us)")
    for name, leg in [(name.split(" ")[0], leg) for name, leg in legs]:
        lines.append(f"CPU while h2load drove the {name} ({leg['cpu']['seconds']} s sampled):")
        lines += common.format_cpu(leg["cpu"])
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("h2load") is None:
        print("maxrate: h2load is not installed: run `make bench-tools` "
              "(apt-get install nghttp2-client)", file=sys.stderr)
        return 2
    run_id = os.urandom(4).hex()
    # One customer, one idempotency key: the body every h2load request carries.
    message = common.authorize_request(f"maxrate-{run_id}", common.customer_id(0)) \
        .SerializeToString()
    result: dict = {"machine": common.machine(),
                    "argv": sys.argv[1:] if argv is None else list(argv), "args": {
        key: str(value) if isinstance(value, Path) else value for key, value in vars(args)
        .items()}}
    problems: list[str] = []
    try:
        with common.Bench("maxrate") as bench:
            body = bench.dir / "authorize.grpc"
            body.write_bytes(common.grpc_frame(message))
            print(f"no-op server, {args.processes} processes:", flush=True)
            result["noop"] = noop_leg(args, body, message, problems)
            if args.floor:
                print(f"floor (no-op + one Redis call), {args.processes} processes:", flush=True)
                result["floor"] = floor_leg(args, body, message, problems)
            print(f"gateway, {args.processes} processes:", flush=True)
            result["gateway"] = gateway_leg(args, body, message, run_id, problems)
    except KeyboardInterrupt:
        print("maxrate: interrupted; servers stopped", file=sys.stderr)
        return 130
    print("\n".join(report(args, result)))
    result["problems"] = problems
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"figures written to {args.json}")
    for problem in problems:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
