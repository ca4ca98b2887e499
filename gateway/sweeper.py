"""The hold-expiry sweeper: releases holds whose TTL has passed, for customers nobody touches.

Each partition's due set names its customers with open holds at their earliest expiry. Every
SWEEP_INTERVAL_S the sweeper asks the limit layer which customers are due by Redis' clock (one
`due` script call per partition, all in one round trip) and runs the expire script for each.
Several gateways may sweep at once: the script releases a hold only while it is open, in the
same atomic step that closes it, so each hold is released once. The `expired` events it
causes name the caller SWEEPER.
"""

from __future__ import annotations

import asyncio
import logging

from creditgate.gateway import metrics
from creditgate.limits import keys
from creditgate.limits.client import CALLER, LimitsClient
from creditgate.limits.constants import SWEEP_CUSTOMERS_PER_PARTITION_MAX, SWEEP_INTERVAL_S

log = logging.getLogger("creditgate.sweeper")

# The caller name of the sweeper's own calls, and of every `expired` event (whichever call
# found the hold due): every change records who made it.
SWEEPER = keys.EXPIRY_CALLER


async def sweep_once(limits: LimitsClient) -> int:
    """One pass over every partition; returns the number of holds released."""
    token = CALLER.set((SWEEPER, ""))
    try:
        return await _sweep(limits)
    finally:
        CALLER.reset(token)


async def _sweep(limits: LimitsClient) -> int:
    due = await asyncio.gather(*(limits.due(partition, SWEEP_CUSTOMERS_PER_PARTITION_MAX)
                                 for partition in range(limits.partitions)))
    customers = [customer for members in due for customer in members]
    if not customers:
        return 0
    released = await asyncio.gather(*(limits.expire(customer) for customer in customers))
    return sum(released)


async def sweep_forever(limits: LimitsClient, interval_s: float = SWEEP_INTERVAL_S,
                        counter=metrics.NOTHING) -> None:
    """Sweep every `interval_s`; `counter` (creditgate_sweeper_released_holds_total) counts
    the holds released."""
    while True:
        try:
            released = await sweep_once(limits)
            if released:
                counter.inc(released)
                log.info("sweeper released %d expired holds", released)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - the sweeper must outlive a Redis outage
            log.warning("sweep failed: %s", type(error).__name__)
        await asyncio.sleep(interval_s)
