"""The posting worker: reads every partition's outbox through a consumer group, books each
batch of events in ONE SQL transaction, then acknowledges them.

Exactly once: an event can be read twice (the worker died between the commit and the XACK,
or another worker claimed it), but its event id is the ledger's primary key, so it posts once.
Nothing is lost: an entry leaves the group's pending list only when acknowledged, and it is
acknowledged only after its transaction committed (or it went to the dead-letter stream).

    start: create the group at id 0 with MKSTREAM (nothing written before is skipped), then
           re-read this consumer's own pending entries
    loop:  XREADGROUP new entries; every CLAIM_INTERVAL_S, XAUTOCLAIM entries another worker
           left pending longer than claim_idle_ms; every TRIM_INTERVAL_S, trim what every
           group has acknowledged
    stop:  SIGTERM finishes the batch in hand (commit and ack), then exits 0
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sqlite3
import time

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from creditgate.gateway.logs import redacted_url
from creditgate.ledger import books
from creditgate.ledger.metrics import LedgerMetrics
from creditgate.ledger.store import EVENT_COLUMNS, open_store
from creditgate.limits import cluster as limits_cluster
from creditgate.limits import keys, lua_source
from creditgate.limits.constants import LEDGER_BACKLOG_POLL_INTERVAL_S, LEDGER_CLUSTER_POLL_S

log = logging.getLogger("creditgate.ledger")

GROUP = "ledger"
BATCH_SIZE_MAX = 1024  # entries read, booked and committed together (at most)
IN_FLIGHT_MAX = 2  # batches in the database at once (one connection each)
BOOK_SLICE = 128  # entries booked between two turns of the event loop while a batch is in flight
CLAIM_INTERVAL_S = 5.0
STORE_RETRY_FIRST_S = 0.2  # back-off while the ledger store is unavailable, doubling
STORE_RETRY_MAX_S = 5.0
TRIM_INTERVAL_S = 10.0
CLUSTER_POLL_S = LEDGER_CLUSTER_POLL_S
# Test-only fault injection: the worker kills itself (SIGKILL) at this point of its first
# non-empty batch, so the tests can prove nothing is lost or posted twice.
FAULT_ENV = "CREDITGATE_LEDGER_FAULT"
_TYPE = EVENT_COLUMNS.index("type")


class WorkerConfig(msgspec.Struct, kw_only=True):
    redis_url: str = "redis://127.0.0.1:6379/0"
    ledger_dsn: str = "sqlite:///var/ledger.sqlite3"
    schema: str = "public"  # PostgreSQL schema
    partitions: int = 256
    consumer: str = ""  # default: the host name
    batch_size_max: int = BATCH_SIZE_MAX
    block_ms: int = 1000
    claim_idle_ms: int = 30_000  # an entry pending this long at another consumer is taken over
    deliveries_max: int = 5  # an event that failed this many deliveries is dead-lettered
    claim_interval_s: float = CLAIM_INTERVAL_S
    trim_interval_s: float = TRIM_INTERVAL_S
    metrics_host: str = "127.0.0.1"  # loopback only: metrics carry no TLS here
    metrics_port: int = 0  # 0: no metrics served
    # On a cluster: post only the partitions of this node's shard (host:port of its master
    # or a replica); "" for every partition.
    shard: str = ""


class Entry(msgspec.Struct):
    stream: str
    entry_id: str
    fields: dict


class Worker:
    def __init__(self, config: WorkerConfig, redis: aioredis.Redis | None = None, store=None,
                 metrics: LedgerMetrics | None = None):
        assert 0 < config.batch_size_max <= 10_000 and config.deliveries_max >= 1
        self.config = config
        # A stable name: a restarted worker is the same consumer and re-reads what it left
        # pending. Several workers on one host need --consumer names of their own.
        self.consumer = config.consumer or socket.gethostname()
        self.redis = redis or limits_cluster.connect(config.redis_url)
        self.store = store or open_store(config.ledger_dsn, config.schema)
        self.cluster = limits_cluster.is_cluster(self.redis)
        if config.shard and not self.cluster:
            raise ValueError("--shard names a shard of a Redis Cluster: give a "
                             "redis+cluster:// URL")
        self._set_partitions(range(config.partitions))
        self.stalled = False  # the store was unavailable for the last batch
        self._claim_cursor: dict[str, str] = {}
        self.posted = 0
        self.duplicates = 0
        self.dead_lettered = 0
        self.metrics = metrics or LedgerMetrics()
        self._fault = os.environ.get(FAULT_ENV, "")

    def _set_partitions(self, partitions) -> None:
        """Read these partitions' outbox streams (and their dead-letter streams, with the same
        hash tag)."""
        bases = [keys.base(partition) for partition in partitions]
        self.partitions = list(partitions)
        self.dead_letters = {keys.outbox(base): keys.dead_letter(base) for base in bases}
        self.streams = list(self.dead_letters)
        # COUNT bounds each stream, not the reply: spread the batch bound over the streams.
        self.count_per_stream = max(1, -(-self.config.batch_size_max // max(1, len(bases))))

    async def follow_shard(self) -> None:
        """On a cluster with `shard`: read the partitions that shard serves now (they move
        with a resharding; a failover keeps them, its replica names the same shard)."""
        if not self.config.shard:
            return
        partitions = await limits_cluster.shard_partitions(self.redis, self.config.shard,
                                                           self.config.partitions)
        if partitions != self.partitions:
            if self.partitions and len(self.partitions) != self.config.partitions:
                log.warning("shard %s now serves %d partitions (was %d)", self.config.shard,
                            len(partitions), len(self.partitions))
            self._set_partitions(partitions)
            await self._create_groups()

    async def start(self) -> None:
        applied = await self.store.migrate()
        if applied:
            log.info("ledger schema migrations applied: %s", applied)
        if self.config.shard:
            self.partitions = []
            await self.follow_shard()
        else:
            await self._create_groups()

    async def _create_groups(self) -> None:
        if not self.streams:
            return
        pipe = self.redis.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xgroup_create(stream, GROUP, id="0", mkstream=True)
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, ResponseError) and "BUSYGROUP" not in str(result):
                raise result

    # -- reading --------------------------------------------------------------------------
    async def _read(self, last_ids: str, block_ms: int | None) -> list[Entry]:
        if self.cluster:
            return await self._read_each(last_ids, block_ms)
        reply = await self.redis.xreadgroup(
            GROUP, self.consumer, {stream: last_ids for stream in self.streams},
            count=self.count_per_stream, block=block_ms)
        return [Entry(stream.decode(), entry_id.decode(), fields)
                for stream, entries in reply or [] for entry_id, fields in entries
                if fields is not None]  # a pending entry trimmed away has no fields

    async def _read_each(self, last_ids: str, block_ms: int | None) -> list[Entry]:
        """On a cluster, where one XREADGROUP names one slot: one per stream, pipelined (one
        round trip per master), without blocking; an empty read waits `block_ms` at most,
        CLUSTER_POLL_S at a time, and reads again."""
        waited_s, wait_s = 0.0, (block_ms or 0) / 1000
        while True:
            entries = []
            if self.streams:
                pipe = self.redis.pipeline(transaction=False)
                for stream in self.streams:
                    pipe.xreadgroup(GROUP, self.consumer, {stream: last_ids},
                                    count=self.count_per_stream)
                for reply in await pipe.execute():
                    entries += [Entry(stream.decode(), entry_id.decode(), fields)
                                for stream, items in _stream_replies(reply)
                                for entry_id, fields in items if fields is not None]
            if entries or waited_s >= wait_s:
                return entries
            await asyncio.sleep(CLUSTER_POLL_S)
            waited_s += CLUSTER_POLL_S

    async def _claim(self) -> list[Entry]:
        """Take over entries idle at other consumers: one bounded step per stream, resuming
        where the last step stopped (XAUTOCLAIM's cursor), so a long pending list is walked
        through rather than its head claimed again and again."""
        pipe = self.redis.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xautoclaim(stream, GROUP, self.consumer, self.config.claim_idle_ms,
                            start_id=self._claim_cursor.get(stream, "0-0"),
                            count=self.count_per_stream)
        claimed = []
        for stream, result in zip(self.streams, await pipe.execute(), strict=True):
            cursor = result[0].decode() if isinstance(result[0], bytes) else result[0]
            self._claim_cursor[stream] = cursor  # "0-0" once the whole list was walked
            claimed += [Entry(stream, entry_id.decode(), fields)
                        for entry_id, fields in result[1] if fields is not None]
        return claimed

    # -- posting --------------------------------------------------------------------------
    async def process(self, entries: list[Entry]) -> None:
        """Book, commit, acknowledge. Poison events wait for another delivery, then go to the
        dead-letter stream; the rest of the batch flows on."""
        if entries:
            await self._settle(*self._book(entries))

    def _book(self, entries: list[Entry], now_ms: int | None = None) -> tuple[list, list]:
        """(entry, booking) of each entry that can be booked, (entry, reason) of the rest."""
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        bookings, poisoned = [], []
        book = books.book
        for entry in entries:
            try:
                bookings.append((entry, book(f"{entry.stream} {entry.entry_id}", entry.fields,
                                             now_ms)))
            except books.PoisonEvent as reason:
                poisoned.append((entry, str(reason)))
            except Exception as error:  # noqa: BLE001 - nothing in one event may stop the loop
                poisoned.append((entry, f"cannot be booked: {type(error).__name__}: {error}"
                                 [:500]))
        return bookings, poisoned

    async def _settle(self, bookings: list, poisoned: list) -> None:
        """Commit the booked entries in one transaction, then acknowledge them; then the
        poisoned ones. If the database is unavailable (not refusing one event's data), nothing
        is acknowledged or counted against the events: they stay pending, `stalled` is set,
        and the loop retries them after a back-off."""
        started_s = time.perf_counter()
        if bookings:
            try:
                await self._post([booking for _, booking in bookings])
            except Exception as error:  # noqa: BLE001 - classified right below
                if not _refuses_data(error):
                    self.stalled = True
                    log.warning("ledger store unavailable (%s); %d events stay pending",
                                type(error).__name__, len(bookings))
                    return
                log.warning("batch of %d refused (%s); posting one by one", len(bookings),
                            type(error).__name__)
                ok = []
                for entry, booking in bookings:
                    try:
                        await self._post([booking])
                        ok.append((entry, booking))
                    except Exception as single:  # noqa: BLE001
                        if not _refuses_data(single):
                            self.stalled = True
                            return
                        poisoned.append((entry, f"database refused it: {single}"[:500]))
                bookings = ok
        self.stalled = False
        self._fault_point("after_commit")
        await self._ack([entry for entry, _ in bookings])
        if bookings:
            self.metrics.batch_duration.observe(time.perf_counter() - started_s)
        if poisoned:
            await self._handle_poison(poisoned)

    async def _post(self, bookings: list[books.Booking]) -> None:
        events = [b.event for b in bookings]
        lines = [line for b in bookings for line in b.lines]
        customers = [b.customer for b in bookings if b.customer]
        self._fault_point("before_commit")
        posted = await self.store.post(events, lines, customers)
        self.posted += len(posted)
        self.metrics.posted(event[_TYPE] for event in events if event[0] in posted)
        self.duplicates += len(events) - len(posted)

    async def _ack(self, entries: list[Entry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        if by_stream:
            pipe = self.redis.pipeline(transaction=False)
            for stream, ids in by_stream.items():
                pipe.xack(stream, GROUP, *ids)
            await pipe.execute()

    async def _handle_poison(self, poisoned: list[tuple[Entry, str]]) -> None:
        for entry, reason in poisoned:
            pending = await self.redis.xpending_range(entry.stream, GROUP, min=entry.entry_id,
                                                      max=entry.entry_id, count=1)
            if not pending:
                continue  # another worker dead-lettered or posted it meanwhile
            deliveries = pending[0]["times_delivered"]
            if deliveries < self.config.deliveries_max:
                log.warning("event %s %s not booked (delivery %d of %d): %s", entry.stream,
                            entry.entry_id, deliveries, self.config.deliveries_max, reason)
                continue  # stays pending: XAUTOCLAIM delivers it again after claim_idle_ms
            dead = self.dead_letters[entry.stream]
            # The ack and the dead letter in one script, the letter only if this call's ack
            # took the entry off the pending list: it is in exactly one place, once.
            fields = {**entry.fields, b"dead_reason": reason.encode(),
                      b"dead_entry_id": entry.entry_id.encode(),
                      b"dead_deliveries": str(deliveries).encode()}
            moved = await self.redis.eval(
                _dead_letter_script(), 2, entry.stream, dead, GROUP, entry.entry_id,
                *(item for pair in fields.items() for item in pair))
            if not moved:
                continue
            self.dead_lettered += 1
            self.metrics.dead_letters.inc()
            log.error("event %s %s dead-lettered after %d deliveries: %s", entry.stream,
                      entry.entry_id, deliveries, reason)

    def _fault_point(self, point: str) -> None:
        if self._fault == point:
            log.error("fault injection: SIGKILL at %s", point)
            os.kill(os.getpid(), signal.SIGKILL)

    # -- trimming -------------------------------------------------------------------------
    async def trim(self) -> int:
        """Remove entries every group of the stream has acknowledged; never one pending or
        not yet delivered. Returns the number of entries removed."""
        removed = 0
        for stream in self.streams:
            groups = await self.redis.xinfo_groups(stream)
            if not groups:
                continue
            floor = None
            for group in groups:
                bound = group["last-delivered-id"]
                if group["pending"]:
                    summary = await self.redis.xpending(stream, group["name"])
                    if summary["min"] is not None:  # None: acknowledged meanwhile
                        bound = min(bound, summary["min"], key=entry_order)
                floor = bound if floor is None else min(floor, bound, key=entry_order)
            if floor and floor not in (b"0-0", "0-0"):
                # MINID keeps `floor` itself: the last delivered entry, or the oldest pending.
                removed += await self.redis.xtrim(stream, minid=floor, approximate=False)
        return removed

    # -- backlog --------------------------------------------------------------------------
    async def backlog(self) -> tuple[int, int]:
        """(lag, pending) of this group over every partition's outbox: entries not yet
        delivered, and entries delivered but not acknowledged. One pipelined round trip of
        XINFO GROUPS, plus XLEN for a stream whose lag Redis cannot tell (after an XDEL): its
        length less its pending entries then stands in, which may count entries acknowledged
        and not yet trimmed (an upper bound)."""
        pipe = self.redis.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xinfo_groups(stream)
        lag = pending = 0
        unknown: list[tuple[str, int]] = []
        for stream, groups in zip(self.streams, await pipe.execute(raise_on_error=False),
                                  strict=True):
            if isinstance(groups, Exception):
                continue  # no such stream yet: nothing in it
            for group in groups:
                if group["name"] in (GROUP, GROUP.encode()):
                    pending += group["pending"]
                    if group.get("lag") is None:
                        unknown.append((stream, group["pending"]))
                    else:
                        lag += group["lag"]
        if unknown:
            pipe = self.redis.pipeline(transaction=False)
            for stream, _ in unknown:
                pipe.xlen(stream)
            lengths = await pipe.execute()
            lag += sum(max(0, length - waiting)
                       for (_, waiting), length in zip(unknown, lengths, strict=True))
        return lag, pending

    async def watch_backlog(self, stopping: asyncio.Event,
                            interval_s: float = LEDGER_BACKLOG_POLL_INTERVAL_S) -> None:
        """Set the backlog metrics now and every `interval_s` until `stopping`. A Redis that
        cannot be reached leaves the last values (the worker's own loop reports it)."""
        while not stopping.is_set():
            try:
                self.metrics.set_backlog(*await self.backlog())
            except (RedisError, OSError) as error:
                log.debug("outbox backlog not read: %s", type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_s)

    # -- running --------------------------------------------------------------------------
    async def drain(self) -> None:
        """Post everything in the streams now, own pending entries first (tests, reconcile).
        Returns early, leaving entries pending, if the store is unavailable."""
        while entries := await self._read("0", None):
            await self.process(entries)
            if self.stalled:
                return
        in_flight: list[asyncio.Future] = []
        try:
            while not self.stalled and (entries := await self._read(">", None)):
                in_flight = await self._pipeline(in_flight, entries)
        finally:
            await _finish(in_flight)

    async def _pipeline(self, in_flight: list[asyncio.Future],
                        entries: list[Entry]) -> list[asyncio.Future]:
        """Book new entries while earlier batches are still being committed, then hand them
        to the store: up to IN_FLIGHT_MAX batches in the database at once, each on its own
        connection, each in one transaction and acknowledged after its own commit (batches
        are independent: an event's id makes it post once whichever commits first). Only for
        entries read with ">" (new ones): a re-read of pending entries ("0") would see the
        batches in flight again."""
        if not entries:
            return await _finish(in_flight)
        now_ms = int(time.time() * 1000)  # one posting time for the batch, as in process()
        bookings, poisoned = [], []
        for start in range(0, len(entries), BOOK_SLICE):
            if in_flight:
                await asyncio.sleep(0)  # let the batches in flight take their next step
            booked, refused = self._book(entries[start:start + BOOK_SLICE], now_ms)
            bookings += booked
            poisoned += refused
        while len(in_flight) >= IN_FLIGHT_MAX:
            await in_flight.pop(0)
        return [*in_flight, asyncio.ensure_future(self._settle(bookings, poisoned))]

    async def run(self, stopping: asyncio.Event) -> None:
        await self.start()
        # Entries delivered to this consumer before a crash come first.
        await self._retry_own_pending(stopping)
        next_claim = next_trim = time.monotonic()
        in_flight: list[asyncio.Future] = []
        try:
            while not stopping.is_set():
                if self.stalled:
                    in_flight = await _finish(in_flight)
                    await self._retry_own_pending(stopping)
                    continue
                now = time.monotonic()
                if now >= next_claim or now >= next_trim:
                    in_flight = await _finish(in_flight)  # claim and trim see no batch in flight
                if now >= next_claim:
                    next_claim = now + self.config.claim_interval_s
                    await self.follow_shard()
                    await self.process(await self._claim())
                if now >= next_trim:
                    next_trim = now + self.config.trim_interval_s
                    await self.trim()
                in_flight = await self._pipeline(
                    in_flight, await self._read(">", self.config.block_ms))
        finally:
            await _finish(in_flight)  # SIGTERM: the batch in hand is committed and acknowledged

    async def _retry_own_pending(self, stopping: asyncio.Event) -> None:
        """Post this consumer's pending entries (left by a crash, or by a store outage),
        backing off while the store stays unavailable."""
        delay_s = STORE_RETRY_FIRST_S
        while not stopping.is_set():
            entries = await self._read("0", None)
            if not entries:
                # Nothing of ours is pending (posted, or taken over by another worker).
                self.stalled = False
                return
            await self.process(entries)
            if self.stalled:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay_s)
                delay_s = min(delay_s * 2, STORE_RETRY_MAX_S)
            else:
                delay_s = STORE_RETRY_FIRST_S

    async def close(self) -> None:
        await self.store.close()
        await self.redis.aclose()


async def _finish(in_flight: list[asyncio.Future]) -> list[asyncio.Future]:
    """Wait for every batch in flight (each commits and acknowledges); none is left."""
    for future in in_flight:
        await future
    return []


@functools.cache
def _dead_letter_script() -> str:
    return lua_source.script_source("dead_letter")


def _stream_replies(reply) -> list:
    """XREADGROUP's reply as [(stream, entries)]: a list in RESP2, a dict in RESP3."""
    if not reply:
        return []
    return list(reply.items()) if isinstance(reply, dict) else reply


def _refuses_data(error: Exception) -> bool:
    """The database refused the data (a constraint, a value out of range): retrying the same
    rows cannot help. Anything else (no connection, a missing table, a lock timeout) may pass."""
    if isinstance(error, (sqlite3.IntegrityError, sqlite3.DataError)):
        return True
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return False
    return isinstance(error, (asyncpg.exceptions.DataError,
                              asyncpg.exceptions.IntegrityConstraintViolationError))


def entry_order(entry_id) -> tuple[int, int]:
    """A stream entry id ("ms-seq", bytes or str) as a sortable pair."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    milliseconds, _, sequence = text.partition("-")
    return int(milliseconds), int(sequence or 0)


def _drain(stopping: asyncio.Event, signum: int) -> None:
    if not stopping.is_set():
        log.info("ledger worker draining (%s): the batch in hand is committed and "
                 "acknowledged, then it stops", signal.Signals(signum).name)
    stopping.set()


async def serve(config: WorkerConfig) -> int:
    worker = Worker(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _drain, stopping, signum)
    metrics_server = watch = None
    if config.metrics_port:
        metrics_server = worker.metrics.serve(config.metrics_host, config.metrics_port)
        watch = asyncio.create_task(worker.watch_backlog(stopping))
    log.info("ledger worker %s started: %s of %d partitions from %s into %s (schema %s); "
             "metrics %s", worker.consumer,
             f"shard {config.shard}'s" if config.shard else "all", config.partitions,
             redacted_url(config.redis_url),
             redacted_url(config.ledger_dsn), config.schema,
             f"on http://{config.metrics_host}:{metrics_server.server_port}/metrics"
             if metrics_server else "off",
             extra={"consumer": worker.consumer, "partitions": config.partitions,
                    "shard": config.shard or "all",
                    "batch_size_max": config.batch_size_max,
                    "deliveries_max": config.deliveries_max,
                    "claim_idle_ms": config.claim_idle_ms,
                    "metrics_port": config.metrics_port})
    try:
        await worker.run(stopping)
    finally:
        stopping.set()
        if watch:
            await asyncio.gather(watch, return_exceptions=True)
        if metrics_server:
            metrics_server.shutdown()
        await worker.close()
    log.info("ledger worker stopped: %d posted, %d duplicates skipped, %d dead-lettered",
             worker.posted, worker.duplicates, worker.dead_lettered,
             extra={"posted": worker.posted, "duplicates": worker.duplicates,
                    "dead_lettered": worker.dead_lettered})
    return 0
