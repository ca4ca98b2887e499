"""The ledger's metrics: what a Prometheus scrape of the worker reads equals what it posted
(by type, on both backends), the backlog and lag follow the outbox, a dead letter is counted;
`creditgate ledger --metrics-port` serves them with JSON logs that keep the Redis password
out; `creditgate reconcile` pushes its result to a Pushgateway and writes it to a textfile."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import signal
import sys
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from creditgate.ledger import metrics
from creditgate.limits import keys
from tests.conftest import PARTITIONS, _free_port
from tests.ledger.conftest import dsn_of
from tests.ledger.support import Traffic, outbox_length
from tests.ledger.test_reconcile_cli import ROOT, run_cli

CUSTOMER = "c-metrics"
SECRET = "s3cr3t-redis-pw"  # a password in the worker's Redis URL: it must never be logged


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """/metrics at 127.0.0.1:port as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def posted_by_type(samples: dict) -> dict[str, float]:
    return {dict(labels)["type"]: value for (name, labels), value in samples.items()
            if name == "creditgate_ledger_events_posted_total" and value}


async def some_traffic(gateway, admin, auth) -> Traffic:
    traffic = Traffic(gateway, admin, auth)
    await traffic.put(CUSTOMER)
    first = (await traffic.authorize(CUSTOMER, 10_000)).hold_id
    await traffic.capture(first, 6_000, final=True)
    second = (await traffic.authorize(CUSTOMER, 2_000, channel="qr_scan")).hold_id
    await traffic.void(second)
    await traffic.authorize(CUSTOMER, 3_000)
    return traffic


async def test_scraped_counters_equal_what_the_worker_posted(redis, gateway, admin, auth,
                                                             store, make_worker):
    traffic = await some_traffic(gateway, admin, auth)
    worker = make_worker("w1")
    await worker.start()
    assert await worker.backlog() == (traffic.events, 0)  # all unread: lag, nothing pending
    # One entry delivered and not acknowledged: pending, no longer lag.
    assert len(await worker.redis.xreadgroup("ledger", "w-other", {
        keys.outbox(keys.base(keys.partition_of(CUSTOMER, PARTITIONS))): ">"}, count=1)) == 1
    assert await worker.backlog() == (traffic.events - 1, 1)
    worker.metrics.set_backlog(*await worker.backlog())

    server = worker.metrics.serve("127.0.0.1", 0)
    try:
        before = await asyncio.to_thread(scrape, server.server_port)
        assert before[("creditgate_outbox_backlog_events", ())] == traffic.events
        assert before[("creditgate_ledger_consumer_lag_events", ())] == traffic.events - 1
        assert posted_by_type(before) == {}

        await worker.drain()
        await worker.process(await worker._claim())  # the entry left at the other consumer
        worker.metrics.set_backlog(*await worker.backlog())
        after = await asyncio.to_thread(scrape, server.server_port)
    finally:
        server.shutdown()
    in_ledger = dict(await store.fetch("SELECT type, COUNT(*) FROM ledger_events GROUP BY type"))
    assert in_ledger == {"customer_put": 1, "authorized": 3, "captured": 1, "voided": 1}
    assert posted_by_type(after) == in_ledger
    assert sum(in_ledger.values()) == worker.posted == traffic.events
    assert after[("creditgate_outbox_backlog_events", ())] == 0
    assert after[("creditgate_ledger_consumer_lag_events", ())] == 0
    assert after[("creditgate_ledger_dead_letters_total", ())] == 0
    batches = after[("creditgate_ledger_batch_duration_seconds_count", ())]
    assert batches >= 2 and after[("creditgate_ledger_batch_duration_seconds_sum", ())] > 0


async def test_a_dead_letter_is_counted(redis, gateway, admin, auth, store, make_worker):
    traffic = Traffic(gateway, admin, auth)
    await traffic.put(CUSTOMER)
    stream = keys.outbox(keys.base(keys.partition_of(CUSTOMER, PARTITIONS)))
    await redis.xadd(stream, {"type": "refunded-twice", "event_id": "999-POISON:1"})
    worker = make_worker("w1", deliveries_max=1)
    await worker.start()
    await worker.drain()
    assert worker.dead_lettered == 1 and worker.posted == 1
    samples = {(s.name, tuple(s.labels.items())): s.value
               for family in worker.metrics.registry.collect() for s in family.samples}
    assert samples[("creditgate_ledger_dead_letters_total", ())] == 1
    assert samples[("creditgate_ledger_events_posted_total", (("type", "customer_put"),))] == 1
    assert await worker.backlog() == (0, 0)  # a dead letter is acknowledged


async def _wait_for(predicate, timeout_s: float = 20.0, what: str = ""):
    deadline = time.monotonic() + timeout_s
    while not (found := await predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return found


async def test_the_ledger_command_serves_its_metrics_and_logs_json_without_secrets(
        redis, redis_server, gateway, admin, auth, tmp_path):
    traffic = await some_traffic(gateway, admin, auth)
    port = _free_port()
    # The test Redis's default user has no password, so it takes any: the URL carries one.
    url = redis_server.url.replace("redis://", f"redis://default:{SECRET}@")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "creditgate.gateway.cli", "ledger", "--redis-url", url,
        "--ledger-dsn", f"sqlite:///{tmp_path / 'ledger.sqlite3'}", "--partitions",
        str(PARTITIONS), "--consumer", "w-cli", "--metrics-port", str(port),
        "--log-format", "json", cwd=ROOT, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CREDITGATE_LOG_FORMAT": "text"})  # the option wins
    try:
        async def all_posted():
            try:
                samples = await asyncio.to_thread(scrape, port)
            except OSError:
                return None
            return sum(posted_by_type(samples).values()) == traffic.events and samples

        samples = await _wait_for(all_posted, what="the worker to post every event")
        assert posted_by_type(samples) == {"customer_put": 1, "authorized": 3, "captured": 1,
                                           "voided": 1}
        assert await outbox_length(redis) == traffic.events  # posted, not yet trimmed
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()[-2000:]
    lines = [json.loads(line) for line in stderr.decode().splitlines()]  # JSON, every one
    assert SECRET not in stderr.decode()
    start, = [line for line in lines if "started" in line["message"]]
    assert start["consumer"] == "w-cli" and start["partitions"] == PARTITIONS
    assert f"redis://***@127.0.0.1:{redis_server.port}/0" in start["message"]
    assert f"http://127.0.0.1:{port}/metrics" in start["message"]
    assert {"time", "level", "logger", "message", "process"} <= set(start)
    assert "request_id" not in start  # not made inside a call
    assert any("draining (SIGTERM)" in line["message"] for line in lines)
    stop, = [line for line in lines if "stopped" in line["message"]]
    assert stop["posted"] == traffic.events


async def test_ledger_metrics_are_served_on_loopback_only():
    code, output = await run_cli("ledger", "--metrics-port", "9999", "--metrics-host",
                                 "0.0.0.0")
    assert code == 2 and "--metrics-host must be a loopback address" in output


class Pushgateway(http.server.ThreadingHTTPServer):
    """A Pushgateway stand-in that keeps each request's method, path and body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                self.server.requests.append(("PUT", self.path, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def gauges(text: str) -> dict[str, float]:
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples}


async def test_reconcile_pushes_and_writes_its_result(redis, redis_server, gateway, admin,
                                                      auth, store, make_worker, tmp_path):
    traffic = await some_traffic(gateway, admin, auth)
    dsn, schema = dsn_of(store)
    pushgateway, textfile = Pushgateway(), tmp_path / "creditgate.prom"
    command = ["reconcile", "--redis-url", redis_server.url, "--ledger-dsn", dsn, "--schema",
               schema, "--partitions", str(PARTITIONS), "--pushgateway",
               f"http://127.0.0.1:{pushgateway.server_port}", "--textfile", str(textfile)]
    try:
        started_s = time.time()
        code, output = await run_cli(*command)
        assert code == 1, output  # nothing posted yet: Redis holds credit the ledger does not
        (method, path, body), = pushgateway.requests
        assert (method, path) == ("PUT", f"/metrics/job/{metrics.RECONCILE_JOB}")
        pushed = gauges(body)
        assert pushed == gauges(textfile.read_text())
        assert pushed["creditgate_reconcile_drifts"] > 0
        assert pushed["creditgate_reconcile_undrained_streams"] == 1
        assert started_s - 1 <= pushed["creditgate_reconcile_last_run_timestamp_seconds"] \
            <= time.time()

        worker = make_worker("w1")
        await worker.start()
        await worker.drain()
        assert worker.posted == traffic.events
        code, output = await run_cli(*command)
        assert code == 0, output
        pushed = gauges(pushgateway.requests[1][2])
        assert pushed == gauges(textfile.read_text())
        assert pushed["creditgate_reconcile_drifts"] == 0
        assert pushed["creditgate_reconcile_undrained_streams"] == 0
    finally:
        pushgateway.shutdown()
        pushgateway.server_close()
    # A Pushgateway that cannot be reached: the result is printed, and the exit code says so.
    command[command.index("--pushgateway") + 1] = f"http://127.0.0.1:{_free_port()}"
    code, output = await run_cli(*command)
    assert code == 4, output
    assert "reconcile: 1 customers" in output and "result not exported" in output
