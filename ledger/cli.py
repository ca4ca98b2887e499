"""The ledger's commands: the worker, reconcile, bills and the journal (see gateway/cli.py)."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import sys

import redis.asyncio as aioredis

from creditgate.gateway.logs import redacted_url
from creditgate.ledger import bills, metrics, reconcile, worker
from creditgate.ledger.store import open_store
from creditgate.limits import cluster as limits_cluster

log = logging.getLogger("creditgate.ledger")
# `reconcile` exits with this code when it could not push or write its result.
EXIT_NOT_EXPORTED = 4


def command(args) -> int:
    if args.ledger_dsn.startswith("sqlite:///") and args.ledger_dsn != "sqlite:///":
        pathlib.Path(args.ledger_dsn.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True)
    if args.command == "ledger":
        import uvloop

        from creditgate.gateway.callers import is_loopback

        if args.metrics_port and not is_loopback(args.metrics_host):
            print(f"creditgate ledger: --metrics-host must be a loopback address (metrics "
                  f"carry no TLS here), not {args.metrics_host}", file=sys.stderr)
            return 2
        return uvloop.run(worker.serve(worker.WorkerConfig(
            redis_url=args.redis_url, ledger_dsn=args.ledger_dsn, schema=args.schema,
            partitions=args.partitions, consumer=args.consumer,
            claim_idle_ms=args.claim_idle_ms, deliveries_max=args.deliveries_max,
            metrics_host=args.metrics_host, metrics_port=args.metrics_port,
            shard=args.shard)))
    try:
        return asyncio.run(_offline(args))
    except (OSError, aioredis.RedisError) as error:
        print(f"creditgate {args.command}: cannot reach Redis or the ledger store: {error}",
              file=sys.stderr)
        return 2


async def _offline(args) -> int:
    store = open_store(args.ledger_dsn, args.schema)
    redis = limits_cluster.connect(args.redis_url)
    try:
        await store.migrate()
        if args.command == "reconcile":
            return await _reconcile(args, redis, store)
        if args.command == "bills":
            try:
                closed = await bills.close(store, args.cycle)
            except ValueError as error:
                print(f"creditgate bills: {error}", file=sys.stderr)
                return 2
            for bill in closed:
                print(f"bill {bill.cycle} {bill.customer_id}: {len(bill.lines)} lines, "
                      f"purchases {bill.purchases_minor}, refunds {bill.refunds_minor}, "
                      f"repayments {bill.repayments_minor}, "
                      f"total {bill.total_minor} {bill.currency} (minor units)")
            print(f"bills close {args.cycle}: {len(closed)} bills")
            return 0
        for line in await journal(store, args.customer, args.limit):
            print(line)
        return 0
    finally:
        await redis.aclose()
        await store.close()


async def _reconcile(args, redis: aioredis.Redis, store) -> int:
    """Compare, print what differs, export the result (--pushgateway, --textfile)."""
    only = None
    if args.shard:
        if not limits_cluster.is_cluster(redis):
            print("creditgate reconcile: --shard needs a redis+cluster:// URL", file=sys.stderr)
            return 2
        only = await limits_cluster.shard_partitions(redis, args.shard, args.partitions)
    report = await reconcile.reconcile(redis, store, args.partitions, only)
    for stream in report.undrained:
        print(f"not drained: {stream} has pending or unread events; run the ledger "
              "worker until it catches up")
    for stream, length in report.dead.items():
        print(f"dead letters: {stream} holds {length} events the ledger could not book")
    for drift in report.drifts:
        print(drift)
    print(f"reconcile: {report.customers} customers, {report.levels} levels, "
          f"{len(report.drifts)} drifts" + ("" if report.ok else " — FAILED"))
    log.info("reconcile: %d customers, %d drifts, %d streams not drained, %d dead-letter "
             "streams", report.customers, len(report.drifts), len(report.undrained),
             len(report.dead), extra={"customers": report.customers,
                                      "drifts": len(report.drifts),
                                      "undrained_streams": len(report.undrained)})
    # 1: Redis and the ledger disagree; 3: they cannot be compared yet.
    code = 1 if report.drifts or report.dead else 3 if report.undrained else 0
    if args.pushgateway or args.textfile:
        result = metrics.reconcile_registry(len(report.drifts), len(report.undrained))
        try:
            metrics.export_reconcile(result, args.pushgateway, args.textfile)
        except OSError as error:
            log.error("reconcile result not exported (pushgateway %s, textfile %s): %s",
                      redacted_url(args.pushgateway) or "-", args.textfile or "-",
                      type(error).__name__)
            print(f"creditgate reconcile: result not exported: {type(error).__name__}: "
                  f"{str(error)[:200]}", file=sys.stderr)
            return code or EXIT_NOT_EXPORTED
    return code


# The journal, newest first: every event's lines, and the events that book none (a limit
# raised, a customer put), so that it shows who made each change.
JOURNAL = ("SELECT e.event_id, e.type, e.hold_id, e.caller, l.account, l.debit_minor, "
           "l.credit_minor FROM ledger_events e LEFT JOIN journal_lines l "
           "ON l.event_id = e.event_id WHERE ($1 = '' OR e.customer_id = $1) "
           "ORDER BY e.posted_at_ms DESC, e.event_id, l.line_no LIMIT $2")


async def journal(store, customer_id: str, limit: int) -> list[str]:
    """The journal's lines as `creditgate journal` prints them: event, type, hold, the caller
    that made the change ('-': none recorded), account and amount."""
    lines = []
    for event_id, kind, hold_id, caller, account, debit, credit in await store.fetch(
            JOURNAL, customer_id, limit * 4):
        side = f"Dr {debit:>12}" if debit else f"Cr {credit:>12}" if credit else ""
        lines.append(f"{event_id:<28} {kind:<14} hold {hold_id or '-':<21} "
                     f"by {caller or '-':<16} {account or '-':<44} {side}".rstrip())
    return lines
