"""The hold-expiry sweeper: releases holds whose TTL has passed, for customers nobody touches.

Each partition's due set names its customers with open holds at their earliest expiry. Every
SWEEP_INTERVAL_S the sweeper asks the limit layer which customers are due by Redis' clock (one
`due` script call per partition, all in one round trip per Redis master) and runs the expire
script for each. On Redis Cluster a gateway started with `--shard HOST:PORT` sweeps only that
shard's partitions, so one sweeper runs per shard. Several gateways may sweep at once: the
script releases a hold only while it is open, in the same atomic step that closes it, so each
hold is released once. The `expired` events it causes name the caller SWEEPER.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from creditgate.gateway import metrics
from creditgate.limits import keys
from creditgate.limits.client import CALLER, LimitsClient
from creditgate.limits.constants import SWEEP_CUSTOMERS_PER_PARTITION_MAX, SWEEP_INTERVAL_S

log = logging.getLogger("creditgate.sweeper")

# The caller name of the sweeper's own calls, and of every `expired` event (whichever call
# found the hold due): every change records who made it.
SWEEPER = keys.EXPIRY_CALLER


async def sweep_once(limits: LimitsClient, partitions: Sequence[int] | None = None) -> int:
    """One pass over `partitions` (default: every partition); returns the number of holds
    released."""
    token = CALLER.set((SWEEPER, ""))
    try:
        return await _sweep(limits, range(limits.partitions) if partitions is None
                            else partitions)
    finally:
        CALLER.reset(token)


async def _sweep(limits: LimitsClient, partitions: Sequence[int]) -> int:
    due = await asyncio.gather(*(limits.due(partition, SWEEP_CUSTOMERS_PER_PARTITION_MAX)
                                 for partition in partitions))
    customers = [customer for members in due for customer in members]
    if not customers:
        return 0
    released = await asyncio.gather(*(limits.expire(customer) for customer in customers))
    return sum(released)


async def sweep_forever(limits: LimitsClient, interval_s: float = SWEEP_INTERVAL_S,
                        counter=metrics.NOTHING,
                        partitions_now: Callable[[], Awaitable[list[int]]] | None = None
                        ) -> None:
    """Sweep every `interval_s`; `counter` (creditgate_sweeper_released_holds_total) counts
    the holds released. `partitions_now()`, asked before each pass, names the partitions to
    sweep (one shard's on a cluster: they move with failovers and resharding); default all."""
    while True:
        try:
            partitions = await partitions_now() if partitions_now else None
            released = await sweep_once(limits, partitions)
            if released:
                counter.inc(released)
                log.info("sweeper released %d expired holds", released)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - the sweeper must outlive a Redis outage
            log.warning("sweep failed: %s", type(error).__name__)
        await asyncio.sleep(interval_s)
