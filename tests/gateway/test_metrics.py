"""Prometheus metrics on a real gateway and Redis: after a scripted mix of calls (approvals,
declines of several reasons, bad input, a caller refused) the scraped counters equal the calls
by method, status and reason, histogram counts equal calls; with `--processes 2` the supervisor
serves the sum of both processes, and a replaced process's counts stay in it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2_grpc
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from creditgate.gateway import callers, metrics, server
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from creditgate.limits.catalog import load_catalog
from creditgate.limits.constants import ADMISSION_LIMIT_INITIAL
from creditgate.limits.transport import Observer
from tests.conftest import CUSTOMER_CAPS, served_gateway
from tests.gateway.test_server import _start_server, _wait_serving, free_port
from tests.support import api_key, authorize_request

WATCHER_KEY = api_key("WATCHER", "key-of-a-dashboard")
SCRAPE_TIMEOUT_S = 5.0


def callers_file(path: Path) -> str:
    """The suite's loopback caller, and an observer that may not authorize."""
    path.write_text(f"""
[callers.SETUP]
role = ["acquirer", "backoffice"]
identity = "insecure:loopback"
merchants = ["*"]
rate_per_s = 1000000.0
burst = 1000000

[callers.WATCHER]
role = "observer"
api_key_sha256 = "{callers.api_key_hash(WATCHER_KEY)}"
""")
    return str(path)


def scrape(port: int, openmetrics: bool = False) -> str:
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=SCRAPE_TIMEOUT_S) as reply:
        return reply.read().decode()


class Scraped:
    """One scrape's samples, summed over the labels a question leaves open."""

    def __init__(self, text: str):
        self.samples = [sample for family in text_string_to_metric_families(text)
                        for sample in family.samples]

    def value(self, name: str, **labels: str) -> float:
        return sum(sample.value for sample in self.samples if sample.name == name
                   and all(sample.labels.get(key) == want for key, want in labels.items()))

    def labels(self, name: str) -> list[dict[str, str]]:
        return [sample.labels for sample in self.samples if sample.name == name]


async def scraped(port: int) -> Scraped:
    return Scraped(await asyncio.to_thread(scrape, port))


@pytest_asyncio.fixture
async def metered(redis, redis_server, tmp_path):
    async with served_gateway(redis_server, metrics_port=free_port(),
                              callers_path=callers_file(tmp_path / "callers.toml")) as served:
        yield served


async def outcome(call) -> str:
    """A call's status name."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return "OK"


async def test_scraped_counters_equal_the_calls(metered):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
        admin, auth = pb_grpc.AdminStub(channel), pb_grpc.AuthorizationStub(channel)
        await admin.PutCustomer(pb.PutCustomerRequest(
            customer_id="c-1", status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
        answers = [await auth.Authorize(request, timeout=5) for request in (
            authorize_request("a-1", "c-1", 1_000),
            authorize_request("a-2", "c-1", 2_500, channel="qr_scan"),
            authorize_request("a-3", "c-1", 4_000, product_id="ecommerce", channel="ecommerce",
                              mcc="5999"),
            authorize_request("d-1", "c-1", 1_000, mcc="7995"),  # gambling
            authorize_request("d-2", "c-1", 600_000),  # beyond the POS level's cap
            authorize_request("d-3", "c-1", 700_000),
            authorize_request("d-4", "nobody", 1_000))]
        batch = await auth.AuthorizeBatch(pb.AuthorizeBatchRequest(requests=[
            authorize_request("b-1", "c-1", 1_500),
            authorize_request("b-2", "nobody", 1_000),
            authorize_request("b-3", "", 1_000)]), timeout=5)  # an item's bad input
        bad = await outcome(auth.Authorize(authorize_request("x-1", "", 1_000), timeout=5))
        refused = await outcome(auth.Authorize(authorize_request("r-1", "c-1", 1_000),
                                               metadata=(("x-api-key", WATCHER_KEY),),
                                               timeout=5))
    assert [a.approved for a in answers] == [True] * 3 + [False] * 4
    assert [item.WhichOneof("outcome") for item in batch.items] == ["response"] * 2 + ["error"]
    assert (bad, refused) == ("INVALID_ARGUMENT", "PERMISSION_DENIED")

    metered.metrics.flush(metered.context.admission)
    got = await scraped(metered.metrics_port)
    calls = "creditgate_calls_total"
    assert got.value(calls, method="Authorize", code="OK") == 7
    assert got.value(calls, method="Authorize", code="INVALID_ARGUMENT") == 1
    assert got.value(calls, method="Authorize", code="PERMISSION_DENIED") == 1
    assert got.value(calls, method="AuthorizeBatch", code="OK") == 1
    assert got.value(calls, method="PutCustomer", code="OK") == 1
    assert got.value(calls) == 11
    for method, count in (("Authorize", 9), ("AuthorizeBatch", 1), ("PutCustomer", 1)):
        assert got.value("creditgate_call_duration_seconds_count", method=method) == count
        assert got.value("creditgate_call_duration_seconds_bucket", method=method,
                         le="+Inf") == count
        assert got.value("creditgate_call_duration_seconds_sum", method=method) > 0

    decisions = "creditgate_decisions_total"
    assert got.value(decisions, reason="approved") == 4
    assert got.value(decisions, reason="approved", product="scan_pay", channel="pos") == 2
    assert got.value(decisions, reason="approved", product="scan_pay", channel="qr_scan") == 1
    assert got.value(decisions, reason="approved", product="ecommerce",
                     channel="ecommerce") == 1
    assert got.value(decisions, reason="mcc_not_allowed") == 1
    assert got.value(decisions, reason="insufficient_credit") == 2
    assert got.value(decisions, reason="customer_unknown") == 2  # unary and batch
    assert got.value(decisions) == 9
    amount = "creditgate_approved_amount_minor_total"
    assert got.value(amount, product="scan_pay", channel="pos") == 1_000 + 1_500
    assert got.value(amount) == 1_000 + 2_500 + 4_000 + 1_500

    # Every script call went to Redis in a batch, each batch answered.
    scripts = got.value("creditgate_script_calls_total", script="reserve")
    assert scripts == 9  # the bad batch item never reached Redis
    assert got.value("creditgate_script_calls_total", script="put_customer") == 1
    batches = got.value("creditgate_redis_batch_size_count")
    assert got.value("creditgate_redis_batch_size_sum") == got.value(
        "creditgate_script_calls_total")
    assert got.value("creditgate_redis_round_trip_seconds_count") == batches > 0
    assert got.value("creditgate_redis_errors_total") == 0
    assert got.value("creditgate_shed_calls_total") == 0
    server_label = metered.redis_server
    assert got.value("creditgate_redis_up", redis=server_label) == 1
    assert got.value("creditgate_in_flight_calls") == 0
    assert got.value("creditgate_admission_limit") == ADMISSION_LIMIT_INITIAL
    catalog = got.labels("creditgate_catalog_info")
    assert catalog == [{"version": load_catalog(metered.config.catalog_path).version}]
    (build,) = got.labels("creditgate_build_info")
    assert build["python"] and build["grpc"] == grpc.__version__


async def test_the_sweepers_releases_are_counted(redis, redis_server):
    async with served_gateway(redis_server, metrics_port=free_port(), sweep=True) as gateway, \
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        await pb_grpc.AdminStub(channel).PutCustomer(pb.PutCustomerRequest(
            customer_id="swept", status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
        reply = await pb_grpc.AuthorizationStub(channel).Authorize(
            authorize_request("s-1", "swept", 1_000), timeout=5)
        # The scripts' clock moves past the hold's expiry; nobody touches the customer.
        gateway.limits.clock_offset_ms = reply.hold_expires_at_ms - reply.decided_at_ms + 1_000

        async def released() -> bool:
            gateway.metrics.flush()
            got = await scraped(gateway.metrics_port)
            return got.value("creditgate_sweeper_released_holds_total") == 1

        await until(released, timeout_s=5.0)


async def test_no_label_names_a_customer_or_a_hold(metered):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
        admin, auth = pb_grpc.AdminStub(channel), pb_grpc.AuthorizationStub(channel)
        await admin.PutCustomer(pb.PutCustomerRequest(
            customer_id="secret-customer", status=pb.CUSTOMER_STATUS_ACTIVE,
            caps_minor=CUSTOMER_CAPS))
        answer = await auth.Authorize(authorize_request("k-1", "secret-customer", 1_000))
    metered.metrics.flush()
    text = await asyncio.to_thread(scrape, metered.metrics_port)
    assert "secret-customer" not in text and answer.hold_id not in text and "k-1" not in text


async def test_the_duration_histogram_carries_request_ids_as_exemplars(metered):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
        auth = pb_grpc.AuthorizationStub(channel)
        await outcome(auth.Authorize(
            authorize_request("e-1", "nobody", 1_000), timeout=5,
            metadata=(("x-request-id", "till-7-0042"),
                      ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))))
    metered.metrics.flush()
    text = await asyncio.to_thread(scrape, metered.metrics_port, True)
    buckets = [line for line in text.splitlines()
               if line.startswith("creditgate_call_duration_seconds_bucket{")
               and 'method="Authorize"' in line and " # {" in line]
    assert len(buckets) == 1, buckets
    assert 'request_id="till-7-0042"' in buckets[0]
    assert 'trace_id="4bf92f3577b34da6a3ce929d0e0e4736"' in buckets[0]


async def test_metrics_off_record_nothing(gateway):
    assert gateway.config.metrics_port == 0
    assert gateway.metrics is metrics.NO_METRICS and gateway.metrics_port == 0
    assert gateway.context.metrics is metrics.NO_METRICS
    assert type(gateway.runner.observer) is Observer  # the runner notes nothing


def test_a_metrics_host_beyond_loopback_is_refused():
    config = server.Config(metrics_port=9464, metrics_host="0.0.0.0")
    with pytest.raises(server.StartupRefused, match="not a loopback address"):
        server.check_metrics(config)
    server.check_metrics(server.Config(metrics_port=0, metrics_host="0.0.0.0"))  # off
    server.check_metrics(server.Config(metrics_port=9464, metrics_host="::1"))


async def test_serve_refuses_a_metrics_host_beyond_loopback(redis_server):
    process = await _start_server(redis_server, free_port(), "--metrics-port", "9464",
                                  "--metrics-host", "0.0.0.0")
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == server.EXIT_REFUSED
    assert "start-up refused: --metrics-host 0.0.0.0 is not a loopback address" in \
        stderr.decode()


# -- serve --processes 2 ----------------------------------------------------------------------
def server_processes(supervisor_pid: int) -> list[int]:
    children = Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children").read_text().split()
    return [int(child) for child in children
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
            and b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()]


def multiproc_dir(pid: int) -> Path:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    (entry,) = [item for item in environ if item.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return Path(entry.split(b"=", 1)[1].decode())


def own_value(folder: Path, file: str, name: str, scratch: Path, **labels: str) -> float:
    """A metric as one server process alone wrote it: its own file of the multiprocess
    folder, read by prometheus_client in a folder of its own."""
    scratch.mkdir(exist_ok=True)
    for old in scratch.iterdir():
        old.unlink()
    shutil.copy(folder / file, scratch)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(scratch))
    return sum(sample.value for family in registry.collect() for sample in family.samples
               if sample.name == name
               and all(sample.labels.get(key) == want for key, want in labels.items()))


def live_gauge_pids(folder: Path) -> set[int]:
    """The processes whose live gauges are in the sum (gauge_livesum_<pid>.db)."""
    return {int(path.stem.rsplit("_", 1)[1]) for path in folder.glob("gauge_livesum_*.db")}


async def limits_add_up(port: int, folder: Path, pids: list[int], scratch: Path) -> bool:
    """The served admission limit is the sum of what each live process wrote (each limit
    follows its own latency, so the values are read, not assumed)."""
    if live_gauge_pids(folder) != set(pids):
        return False
    own = sum(own_value(folder, f"gauge_livesum_{pid}.db", "creditgate_admission_limit",
                        scratch) for pid in pids)
    return (await scraped(port)).value("creditgate_admission_limit") == own > 0


async def until(check, timeout_s: float = 20.0, every_s: float = 0.2):
    """The first truthy result of `check()` (a coroutine function), or AssertionError."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(every_s)


async def authorize_on_new_connections(port: int, prefix: str, count: int) -> None:
    """`count` calls, each on a connection of its own: the kernel spreads connections (not
    calls) over the processes sharing the port."""
    for index in range(count):
        async with grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            reply = await pb_grpc.AuthorizationStub(ch).Authorize(
                authorize_request(f"{prefix}{index}", "multi", 1_000), timeout=10)
            assert reply.approved


@pytest.mark.slow
async def test_the_supervisor_serves_the_sum_of_its_processes(redis, redis_server, tmp_path):
    port, metrics_port = free_port(), free_port()
    process = await _start_server(redis_server, port, "--processes", "2", "--metrics-port",
                                  str(metrics_port))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await _wait_serving(health_pb2_grpc.HealthStub(channel), process)
            await pb_grpc.AdminStub(channel).PutCustomer(pb.PutCustomerRequest(
                customer_id="multi", status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
        pids = server_processes(process.pid)
        folder = multiproc_dir(pids[0])
        # Both processes write their live gauges: the limits add up.
        await until(lambda: limits_add_up(metrics_port, folder, pids, tmp_path / "gauges"))
        await authorize_on_new_connections(port, "m", 16)
        authorized = {"method": "Authorize", "code": "OK"}
        got = await until(lambda: _holds(metrics_port, "creditgate_calls_total", 16,
                                         **authorized))
        assert got.value("creditgate_call_duration_seconds_count", method="Authorize") == 16
        assert got.value("creditgate_decisions_total", reason="approved") == 16
        assert got.value("creditgate_script_calls_total", script="reserve") == 16
        shares = [own_value(folder, f"counter_{pid}.db", "creditgate_calls_total",
                            tmp_path / "counters", **authorized) for pid in pids]
        assert len(shares) == 2 and all(shares), shares  # each process served some
        assert sum(shares) == 16

        # A replaced process: its counts stay in the sum, its live gauges leave it.
        killed = pids[0]
        os.kill(killed, signal.SIGKILL)
        await until(lambda: _replaced(process.pid, killed))
        pids = server_processes(process.pid)
        await until(lambda: limits_add_up(metrics_port, folder, pids, tmp_path / "gauges"))
        assert not list(folder.glob(f"gauge_live*_{killed}.db"))
        await authorize_on_new_connections(port, "n", 4)
        await until(lambda: _holds(metrics_port, "creditgate_calls_total", 20, **authorized))
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=15)
    assert not folder.exists()  # the supervisor removed its folder


async def _holds(port: int, name: str, want: float, **labels: str) -> Scraped | None:
    got = await scraped(port)
    return got if got.value(name, **labels) == want else None


async def _replaced(supervisor_pid: int, killed: int) -> bool:
    pids = server_processes(supervisor_pid)
    return len(pids) == 2 and killed not in pids


async def test_a_replayed_decision_of_a_product_out_of_the_catalog_keeps_labels_bounded(
        metered):
    """A tombstoned key (a Reverse before its original) answers any payload with its decline,
    so the read-only replay answers an Authorize of any well-formed product id the catalog
    does not have: the decisions counter labels it `unknown`, never the client's text (an
    abusive client would otherwise add a label set per call)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
        admin, auth = pb_grpc.AdminStub(channel), pb_grpc.AuthorizationStub(channel)
        await admin.PutCustomer(pb.PutCustomerRequest(
            customer_id="c-9", status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
        await auth.Reverse(pb.ReverseRequest(customer_id="c-9",
                                             original_idempotency_key="k-gone"), timeout=5)
        answers = [await auth.Authorize(authorize_request("k-gone", "c-9", 1_000,
                                                          product_id=f"junk-{n}"), timeout=5)
                   for n in range(3)]
    assert [a.approved for a in answers] == [False] * 3
    metered.metrics.flush(metered.context.admission)
    got = await scraped(metered.metrics_port)
    products = {labels["product"] for labels in got.labels("creditgate_decisions_total")}
    assert products == {metrics.UNKNOWN}
