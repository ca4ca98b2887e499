"""Admission control: each process admits a bounded amount of work and refuses the rest at once.

The bound is a concurrency limit that follows measured latency (additive increase,
multiplicative decrease, as Netflix's concurrency-limits AIMD limit): every call admitted is
timed from admission to answer, and the event loop's own lag is sampled, because a call waits
in gRPC and on the loop before its handler runs and that wait is invisible to the handler. At
the end of each window the limit shrinks by DECREASE_FACTOR if the window's mean latency plus
its worst loop lag passed the target, and otherwise grows when the limit was reached in the
window (by a quarter far below the target, by one near it): the limit settles where calls
finish within the target, well inside callers' deadlines.

Calls that release credit (Capture, Void, Reverse, Refund, Repay) are shed last: they may use
RELEASE_HEADROOM more calls beyond the limit, so under overload they keep being answered while
new authorizations are refused, because they free capacity and money.

A refusal costs no parse and no Redis work: RESOURCE_EXHAUSTED with a retry hint.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable

from creditgate.limits.constants import (
    ADMISSION_LAG_SAMPLE_S,
    ADMISSION_LIMIT_INITIAL,
    ADMISSION_LIMIT_MAX,
    ADMISSION_LIMIT_MIN,
    ADMISSION_TARGET_MS,
    ADMISSION_WINDOW_S,
)

DECREASE_FACTOR = 0.9
RELEASE_HEADROOM = 0.5  # releases may use this share of the limit beyond it


class Kind(enum.Enum):
    """What a call does to credit: its place in admission control."""

    RELEASES = "releases"  # shed last
    CONSUMES = "consumes"  # new credit, or a read beside it: shed first


# Every RPC's place; a new RPC must be added here (tests/gateway/test_admission.py checks that
# every method of the proto has one).
KINDS: dict[str, Kind] = {
    "Authorize": Kind.CONSUMES,
    "AuthorizeBatch": Kind.CONSUMES,
    "IncrementAuthorization": Kind.CONSUMES,
    "ForceCapture": Kind.CONSUMES,
    "GetCredit": Kind.CONSUMES,
    "Capture": Kind.RELEASES,
    "Void": Kind.RELEASES,
    "Reverse": Kind.RELEASES,
    "Refund": Kind.RELEASES,
    "PutCustomer": Kind.CONSUMES,
    "SetTemporaryRaise": Kind.CONSUMES,
    "Repay": Kind.RELEASES,
    "GetCustomer": Kind.CONSUMES,
}


class Overloaded(Exception):
    """Refused by admission control: RESOURCE_EXHAUSTED, retry after `retry_after_ms`."""

    def __init__(self, rpc: str, limit: int, retry_after_ms: int):
        super().__init__(f"overloaded: {rpc} refused at {limit} calls in flight; retry after "
                         f"{retry_after_ms} ms with the same idempotency key")
        self.rpc, self.limit, self.retry_after_ms = rpc, limit, retry_after_ms


class Admission:
    """The limiter of one process. `admit` and `done` bracket every call."""

    def __init__(self, target_ms: float = ADMISSION_TARGET_MS,
                 limit: int = ADMISSION_LIMIT_INITIAL, now_s: Callable[[], float] = time.monotonic):
        assert ADMISSION_LIMIT_MIN <= limit <= ADMISSION_LIMIT_MAX
        self.target_ms = target_ms
        self.limit = limit
        self.in_flight = 0
        self._now_s = now_s
        self._window_end_s = now_s() + ADMISSION_WINDOW_S
        self._latency_ms_sum = 0.0  # the window's calls
        self._latency_count = 0
        self._lag_ms_max = 0.0  # the window's worst loop lag
        self._reached = False  # the limit was reached in the window
        self.admitted = self.refused = 0

    def admit(self, rpc: str) -> float:
        """Admit a call now, answering its start time for `done`, or raise Overloaded."""
        bound = self.limit
        if KINDS.get(rpc, Kind.CONSUMES) is Kind.RELEASES:
            bound += max(1, int(self.limit * RELEASE_HEADROOM))
        if self.in_flight >= bound:
            self.refused += 1
            self._reached = True
            raise Overloaded(rpc, self.limit, self.retry_after_ms())
        self.in_flight += 1
        self.admitted += 1
        if self.in_flight >= self.limit:
            self._reached = True
        return self._now_s()

    def done(self, started_s: float) -> None:
        self.in_flight -= 1
        now = self._now_s()
        self._latency_ms_sum += (now - started_s) * 1000
        self._latency_count += 1
        self._end_window(now)

    def retry_after_ms(self) -> int:
        """A hint: about one window, when the limit is next reconsidered."""
        return int(ADMISSION_WINDOW_S * 1000)

    def lag(self, lag_ms: float) -> None:
        """One sample of the event loop's lag."""
        self._lag_ms_max = max(self._lag_ms_max, lag_ms)
        self._end_window(self._now_s())

    def _end_window(self, now: float) -> None:
        if now < self._window_end_s:
            return
        mean_ms = self._latency_ms_sum / self._latency_count if self._latency_count else 0.0
        if mean_ms + self._lag_ms_max > self.target_ms:
            self.limit = max(ADMISSION_LIMIT_MIN, int(self.limit * DECREASE_FACTOR))
        elif self._reached:
            # Far below the target, grow by a quarter (back to capacity within a second after
            # an overload); near it, by one call.
            step = self.limit // 4 if mean_ms + self._lag_ms_max < self.target_ms / 2 else 1
            self.limit = min(ADMISSION_LIMIT_MAX, self.limit + max(1, step))
        self._window_end_s = now + ADMISSION_WINDOW_S
        self._latency_ms_sum, self._latency_count, self._lag_ms_max = 0.0, 0, 0.0
        self._reached = False

    async def watch_loop_lag(self) -> None:
        """Sample the event loop's lag forever: a loop that runs late means calls wait before
        any handler sees them, so the lag counts as latency."""
        loop = asyncio.get_running_loop()
        while True:
            planned = loop.time() + ADMISSION_LAG_SAMPLE_S
            await asyncio.sleep(ADMISSION_LAG_SAMPLE_S)
            self.lag((loop.time() - planned) * 1000)
