"""Redis memory per customer and per open hold, measured with MEMORY USAGE.

    .venv/bin/python bench/memory.py [--holds N] [--json var/bench/memory.json]

Starts a private redis-server, creates customers through the real scripts (put_customer, one
approved authorization so that the day and month velocity windows exist, then its void), and
reports MEMORY USAGE (SAMPLES 0: exact) of:

* the customer's keys with no open hold: its hash (4 limit nodes, velocity windows), per
  timezone (a zone with daylight-saving changes carries its offset schedule);
* an open hold: the hold, its idempotency record and its member of the customer's open-hold
  set, averaged over N open holds of one customer (N below the product's daily count limit).
  An approval keeps no record of its own (the hold is it: limits/keys.derived_hold_id), so the
  record's figure is 0; a decline's record is not an open hold's cost.
* two heavier holds, without a target: one with an installment plan, one of a customer whose
  id is a 36-character UUID (each with the set member's 37 bytes added).

Issue 5's targets: <= 1024 bytes per customer, <= 300 bytes more per open hold. The outbox
entries are not counted: the ledger worker trims them once posted. The figures also go to
--json (bytes by name, as printed), read by bench/report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis.asyncio as aioredis  # noqa: E402
from common import VAR_BENCH, machine, start_redis  # noqa: E402

from creditgate import hotpath  # noqa: E402
from creditgate.gateway.pb import creditgate_pb2 as pb  # noqa: E402
from creditgate.limits import catalog, keys  # noqa: E402
from creditgate.limits.client import LimitsClient  # noqa: E402
from creditgate.limits.transport import ScriptRunner  # noqa: E402

PARTITIONS = 256
CUSTOMER_BYTES_TARGET = 1024
HOLD_BYTES_TARGET = 300
CAPS = {"total": 2_000_000, "consumer": 1_500_000, "consumer.scan_pay": 900_000,
        "consumer.scan_pay.pos": 700_000}
ZONES = ("Asia/Shanghai", "America/New_York", "Europe/Berlin")


def request(key: str, customer_id: str, amount_minor: int,
            installment_months: int = 0) -> pb.AuthorizeRequest:
    return pb.AuthorizeRequest(idempotency_key=key, customer_id=customer_id,
                               product_id="scan_pay", channel=pb.CHANNEL_POS,
                               merchant_id="merchant-000123", mcc="5411",
                               amount_minor=amount_minor, currency="CNY",
                               installment_months=installment_months)


async def usage(client: aioredis.Redis, key: str) -> int:
    return int(await client.memory_usage(key, samples=0) or 0)


async def measure(port: int, holds: int) -> dict[str, int]:
    client = aioredis.Redis(port=port)
    limits = LimitsClient(ScriptRunner(client), PARTITIONS)
    rules = hotpath.compile_products(catalog.load())
    figures: dict[str, int] = {}

    async def authorize(key: str, customer_id: str, months: int = 0) -> tuple[list[str], str]:
        keys_, args = hotpath.plan_authorize(request(key, customer_id, 1_000, months), rules,
                                             PARTITIONS)
        result = await limits.authorize(keys_, args)
        assert result.approved, result
        return keys_, result.hold_id

    for zone in ZONES:
        customer_id = f"cust-{zone.split('/')[1].lower()}-0001"
        await limits.put_customer(customer_id, "active", zone, CAPS)
        keys_, _ = await authorize(f"first-{customer_id}", customer_id)
        void_keys, void_args = hotpath.plan_void(
            pb.VoidRequest(idempotency_key="void-1", hold_id=(await authorize(
                f"second-{customer_id}", customer_id))[1]), PARTITIONS)
        await limits.void(void_keys, void_args)
        figures[f"customer {zone}"] = await usage(client, keys_[0])

    customer_id = "cust-holds-0001"
    await limits.put_customer(customer_id, "active", "Asia/Shanghai", CAPS)
    base = keys.base(keys.partition_of(customer_id, PARTITIONS))
    holds_key = keys.customer_holds(base, customer_id)
    await authorize("warm-up", customer_id)  # the open-hold set exists before we count
    set_before = await usage(client, holds_key)
    hold_bytes = record_bytes = 0
    for index in range(holds):
        keys_, hold_id = await authorize(f"order-{index:08d}-2026-11-25", customer_id)
        hold_bytes += await usage(client, keys.hold(base, hold_id))
        record_bytes += await usage(client, keys_[4])
    set_bytes = await usage(client, holds_key) - set_before
    figures["hold: hold hash"] = hold_bytes // holds
    figures["hold: idempotency record"] = record_bytes // holds
    figures["hold: open-hold set member"] = set_bytes // holds
    figures["hold: total"] = (hold_bytes + record_bytes + set_bytes) // holds
    # Two heavier cases, reported without a target: a hold with an installment plan, and a
    # customer id of 36 characters (a UUID) instead of 15.
    for label, customer_id, months in (("hold: with a 3-month plan", "cust-plans-0001", 3),
                                       ("hold: UUID customer id", "9f1c2a7e-5b1d-4c3e-8f00-"
                                        "1234567890ab", 0)):
        await limits.put_customer(customer_id, "active", "Asia/Shanghai", CAPS)
        base = keys.base(keys.partition_of(customer_id, PARTITIONS))
        await authorize("warm-up", customer_id, months)
        _, hold_id = await authorize("order-00000001-2026-11-25", customer_id, months)
        figures[label] = await usage(client, keys.hold(base, hold_id)) + 37
    await client.aclose()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--holds", type=int, default=40)
    parser.add_argument("--json", type=Path, default=VAR_BENCH / "memory.json",
                        help="where to write the figures (default %(default)s)")
    args = parser.parse_args(argv)
    facts = machine()
    folder = Path(tempfile.mkdtemp(prefix="creditgate-memory-"))
    process, port = start_redis(folder)
    try:
        figures = asyncio.run(measure(port, args.holds))
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    ok = True
    print(f"Redis memory (MEMORY USAGE, SAMPLES 0), {args.holds} open holds of one customer:")
    for name, value in figures.items():
        target = (CUSTOMER_BYTES_TARGET if name.startswith("customer")
                  else HOLD_BYTES_TARGET if name == "hold: total" else None)
        verdict = "" if target is None else (
            f"  (target <= {target}: {'met' if value <= target else 'MISSED'})")
        ok &= target is None or value <= target
        print(f"  {name:32s} {value:6d} bytes{verdict}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "holds": args.holds, "bytes": figures, "machine": facts,
        "argv": sys.argv[1:] if argv is None else list(argv)}, indent=2) + "\n")
    print(f"figures written to {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
