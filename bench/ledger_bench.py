"""Ledger posting throughput: outbox streams in Redis -> ledger.worker.Worker -> PostgreSQL.

    .venv/bin/python bench/ledger_bench.py [--events N] [--pg-dsn DSN] [--workers 1|2]
                                           [--batch-size-max K]
                                           [--json var/bench/ledger_WORKERS.json]

Starts a private redis-server (free port, temporary folder, no RDB, no AOF), creates a fresh
PostgreSQL schema (dropped at the end), fills the 256 partition outbox streams with N events
shaped exactly as the Lua scripts write them (~45% authorized, ~35% captured, ~15% voided,
~5% expired; unique event ids), then times Worker.drain() from the first read to the last ack
and checks that N events were posted and that every journal balances.

--batch-size-max is WorkerConfig.batch_size_max, the most entries booked in one transaction
(default 1024); the worker spreads it over the streams as XREADGROUP's per-stream COUNT
(ceil(K / 256)).

With --workers 2, two worker processes (different consumer names, one group) drain together.
The figures also go to --json (default var/bench/ledger_1.json for one worker,
ledger_2.json for two, ...), read by bench/report.py.
This is a script, not a pytest test (it needs PostgreSQL and takes a few seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402
import redis  # noqa: E402
import uvloop  # noqa: E402
from common import VAR_BENCH, machine, start_redis  # noqa: E402

from creditgate.ledger.worker import Worker, WorkerConfig  # noqa: E402
from creditgate.limits import keys  # noqa: E402
from creditgate.limits.constants import HOLD_TOKEN_LENGTH  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PARTITIONS = 256
CUSTOMERS = 50_000
XADD_CHUNK = 5_000  # commands per pipeline round trip while filling
TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# (product, channel, mcc, currency, limit nodes root first) as reserve.lua joins them
PRODUCTS = [
    ("scan_pay", "qr_scan", "5411", "CNY", "total,consumer,consumer.scan_pay,consumer.scan_pay.qr"),
    ("scan_pay", "pos", "5812", "CNY", "total,consumer,consumer.scan_pay,consumer.scan_pay.pos"),
    ("ecommerce", "ecommerce", "5999", "CNY", "total,consumer,consumer.online"),
    ("cash", "cash", "6011", "CNY", "total,cash"),
]
# Event types per block of 20: 45% authorized, 35% captured, 15% voided, 5% expired.
MIX = ["authorized"] * 9 + ["captured"] * 7 + ["voided"] * 3 + ["expired"]


# -- events --------------------------------------------------------------------------------
def generate(count: int, seed: int = 1) -> list[tuple[str, dict[str, str]]]:
    """(outbox stream, fields) in posting order. Follow-ups take the oldest open hold made in
    the run, or one authorized before it (a fresh hold id, seq 1 taken) when none is open."""
    rng = random.Random(seed)
    now = 1_790_000_000_000
    open_holds: list[dict] = []  # FIFO of open holds: state of each
    out: list[tuple[str, dict[str, str]]] = []

    def new_hold() -> dict:
        customer_id = f"cust-{rng.randrange(CUSTOMERS):010d}"
        partition = keys.partition_of(customer_id, PARTITIONS)
        product, channel, mcc, currency, nodes = rng.choice(PRODUCTS)
        token = "".join(rng.choices(TOKEN_ALPHABET, k=HOLD_TOKEN_LENGTH))
        return {"customer_id": customer_id, "partition": partition,
                "hold_id": keys.hold_id(partition, token), "product_id": product,
                "channel": channel, "mcc": mcc, "currency": currency, "nodes": nodes,
                "merchant_id": f"mer-{rng.randrange(100_000, 999_999)}-{rng.randrange(10**6):06d}",
                "amount": rng.randrange(100, 5_000_000), "captured": 0, "seq": 1}

    types: list[str] = []
    head = 0
    while len(out) < count:
        if not types:
            types = MIX[:]
            rng.shuffle(types)
        kind = types.pop()
        now += rng.randrange(0, 3)
        if kind == "authorized":
            h = new_hold()
            fields = {"type": "authorized", "event_id": f"{h['hold_id']}:1",
                      "customer_id": h["customer_id"], "hold_id": h["hold_id"],
                      "product_id": h["product_id"], "merchant_id": h["merchant_id"],
                      "mcc": h["mcc"], "channel": h["channel"], "currency": h["currency"],
                      "nodes": h["nodes"], "amount_minor": str(h["amount"]),
                      "expires_at_ms": str(now + 604_800_000), "at_ms": str(now)}
            open_holds.append(h)
        else:
            if head < len(open_holds):
                h = open_holds[head]
                head += 1
            else:
                h = new_hold()  # authorized before the run
            h["seq"] += 1
            held = h["amount"] - h["captured"]
            common = {"type": kind, "event_id": f"{h['hold_id']}:{h['seq']}",
                      "customer_id": h["customer_id"], "hold_id": h["hold_id"],
                      "product_id": h["product_id"], "merchant_id": h["merchant_id"],
                      "currency": h["currency"], "nodes": h["nodes"]}
            if kind == "captured":
                final = rng.random() < 0.75
                amount = rng.randrange(1, held + 1) if held > 1 else held
                released = held - amount if final else 0
                h["captured"] += amount
                fields = {**common, "amount_minor": str(amount), "released_minor": str(released),
                          "captured_total_minor": str(h["captured"]), "final": str(int(final)),
                          "at_ms": str(now)}
                if not final and h["amount"] > h["captured"]:
                    open_holds.append(h)  # partly captured: still open
            else:  # voided, expired: release what stays held
                fields = {**common, "released_minor": str(held),
                          "captured_total_minor": str(h["captured"]), "at_ms": str(now)}
        out.append((keys.outbox(keys.base(h["partition"])), fields))
    return out


def fill(client: redis.Redis, events: list[tuple[str, dict[str, str]]]) -> None:
    for start in range(0, len(events), XADD_CHUNK):
        pipe = client.pipeline(transaction=False)
        for stream, fields in events[start:start + XADD_CHUNK]:
            pipe.xadd(stream, fields)
        pipe.execute()


# -- redis-server ----------------------------------------------------------------------------
# -- timing ----------------------------------------------------------------------------------
class Timer:
    def __init__(self):
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, function):
        async def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1
        return timed

    def wrap_sync(self, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1
        return timed


def instrument(worker: Worker) -> dict[str, Timer]:
    """Time the worker's phases by wrapping its methods on the instance (nothing per event).
    The worker books batch N+1 while batch N is in the database, so "post" and "ack" (inside
    the batch's task) overlap "read" and "book" (in the loop): the shares add up to more than
    the wall time."""
    timers = {name: Timer() for name in ("read", "book", "settle", "post", "ack")}
    worker._read = timers["read"].wrap(worker._read)
    worker._book = timers["book"].wrap_sync(worker._book)
    worker._settle = timers["settle"].wrap(worker._settle)
    worker.store.post = timers["post"].wrap(worker.store.post)
    worker._ack = timers["ack"].wrap(worker._ack)
    return timers


def make_worker(args, port: int, schema: str, consumer: str) -> Worker:
    config = WorkerConfig(redis_url=f"redis://127.0.0.1:{port}/0", ledger_dsn=args.pg_dsn,
                          schema=schema, partitions=PARTITIONS, consumer=consumer,
                          batch_size_max=args.batch_size_max)
    return Worker(config)


async def run_worker(args, port: int, schema: str, consumer: str, ready=None) -> dict:
    worker = make_worker(args, port, schema, consumer)
    try:
        await worker.start()  # groups and migrations: not timed
        # Warm the pool's connection and statement cache outside the timed part.
        await worker.store.fetch("SELECT count(*) FROM ledger_events")
        timers = instrument(worker)
        if ready is not None:
            ready.wait()  # a multiprocessing.Barrier: every worker starts together
        started = time.time()
        await worker.drain()
        ended = time.time()
        return {"consumer": consumer, "started": started, "ended": ended,
                "posted": worker.posted, "duplicates": worker.duplicates,
                "dead": worker.dead_lettered,
                "timers": {name: (t.seconds, t.calls) for name, t in timers.items()}}
    finally:
        await worker.close()


def child(args, port, schema, consumer, ready, results) -> None:
    try:
        results.put(uvloop.run(run_worker(args, port, schema, consumer, ready)))
    except BaseException as error:
        ready.abort()
        results.put({"consumer": consumer, "error": repr(error)})
        raise


async def prepare(args, port: int, schema: str) -> None:
    """Schema, migrations and consumer groups, once, before any timed worker starts."""
    worker = make_worker(args, port, schema, "bench-setup")
    try:
        await worker.start()
    finally:
        await worker.close()


# -- main ------------------------------------------------------------------------------------
async def verify(dsn: str, schema: str) -> tuple[int, int, int, int]:
    """(events, journal lines, unbalanced events, events without lines): one query."""
    connection = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        row = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM ledger_events),"
            " (SELECT count(*) FROM journal_lines),"
            " (SELECT count(*) FROM (SELECT event_id FROM journal_lines GROUP BY event_id"
            "   HAVING sum(debit_minor) <> sum(credit_minor)) AS u),"
            " (SELECT count(*) FROM ledger_events e WHERE NOT EXISTS"
            "   (SELECT 1 FROM journal_lines l WHERE l.event_id = e.event_id))")
        return tuple(row)
    finally:
        await connection.close()


async def server_version(dsn: str) -> str:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()


async def drop_schema(dsn: str, schema: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


def report(args, results: list[dict], wall: float, checked, fill_s: float) -> bool:
    events, lines, unbalanced, lineless = checked
    posted = sum(r["posted"] for r in results)
    ok = posted == args.events == events and unbalanced == 0 and lineless == 0
    print(f"\nledger posting benchmark: {args.workers} worker(s), "
          f"batch_size_max={args.batch_size_max} ({PARTITIONS} streams)")
    print(f"  filled        {args.events:,} events in {fill_s:.1f} s (not timed)")
    print(f"  posted        {posted:,} events, {lines:,} journal lines "
          f"(duplicates {sum(r['duplicates'] for r in results)}, "
          f"dead-lettered {sum(r['dead'] for r in results)})")
    print(f"  wall          {wall:.3f} s   ->   {args.events / wall:,.0f} events/s")
    print(f"  check         events in table {events:,} (== N: {events == args.events}), "
          f"unbalanced journals {unbalanced}, events without lines {lineless}")
    for r in results:
        t = r["timers"]
        own = r["ended"] - r["started"]
        batches = t["settle"][1]
        print(f"  [{r['consumer']}] {r['posted']:,} posted in {batches} batches "
              f"(mean {r['posted'] / max(batches, 1):,.0f} per batch) in {own:.3f} s; "
              "time inside each step (read and book overlap post and ack):")
        for label, name in (("XREADGROUP + decode (_read)", "read"),
                            ("book (books.book via _book)", "book"),
                            ("store.post (COPY + INSERT + COMMIT)", "post"),
                            ("XACK (_ack)", "ack")):
            seconds = t[name][0]
            print(f"      {label:36s} {seconds:7.3f} s  {100 * seconds / own:5.1f}% of wall")
    print("  result        " + ("OK" if ok else "FAILED"))
    return ok


def write_json(args, argv: list[str], results: list[dict], wall: float, checked, ok: bool,
               facts: dict) -> None:
    events, lines, unbalanced, lineless = checked
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "workers": args.workers, "events": args.events, "batch_size_max": args.batch_size_max,
        "wall_s": wall, "events_per_s": args.events / wall,
        "posted": sum(r["posted"] for r in results), "journal_lines": lines,
        "events_in_table": events, "unbalanced_journals": unbalanced,
        "events_without_lines": lineless, "ok": ok, "machine": facts, "argv": argv},
        indent=2) + "\n")
    print(f"figures written to {args.json}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--pg-dsn", default=os.environ.get("LEDGER_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--workers", type=int, default=1, choices=(1, 2, 3, 4))
    parser.add_argument("--batch-size-max", type=int, default=WorkerConfig().batch_size_max)
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the figures (default var/bench/ledger_WORKERS.json)")
    args = parser.parse_args(argv)
    args.json = args.json or VAR_BENCH / f"ledger_{args.workers}.json"
    facts = machine()

    schema = f"ledger_bench_{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as folder:
        server, port = start_redis(Path(folder))
        try:
            started = time.perf_counter()
            client = redis.Redis(port=port)
            fill(client, generate(args.events))
            assert sum(client.xlen(keys.outbox(keys.base(p))) for p in range(PARTITIONS)) \
                == args.events
            client.close()
            fill_s = time.perf_counter() - started
            try:
                uvloop.run(prepare(args, port, schema))
                if args.workers == 1:
                    results = [uvloop.run(run_worker(args, port, schema, "bench-1"))]
                else:
                    context = multiprocessing.get_context("spawn")
                    ready, queue = context.Barrier(args.workers), context.Queue()
                    processes = [context.Process(target=child, args=(
                        args, port, schema, f"bench-{i + 1}", ready, queue))
                        for i in range(args.workers)]
                    for process in processes:
                        process.start()
                    results = [queue.get() for _ in processes]
                    for process in processes:
                        process.join()
                    if failed := [r for r in results if "error" in r]:
                        sys.exit(f"worker failed: {failed}")
                wall = max(r["ended"] for r in results) - min(r["started"] for r in results)
                checked = asyncio.run(verify(args.pg_dsn, schema))
                facts["postgresql"] = asyncio.run(server_version(args.pg_dsn))
            finally:
                asyncio.run(drop_schema(args.pg_dsn, schema))
        finally:
            server.terminate()
            server.wait(timeout=10)
    ok = report(args, results, wall, checked, fill_s)
    write_json(args, sys.argv[1:] if argv is None else list(argv), results, wall, checked, ok,
               facts)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
