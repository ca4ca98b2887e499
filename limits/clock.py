"""The scripts' clock seen from a gateway host, so a caller's deadline can travel into a script.

Scripts read Redis' TIME; a gateway knows a call's deadline by its own clock. The two differ by
the hosts' skew. `RedisClock` samples TIME now and then and keeps the offset from this host's
monotonic clock (which an NTP step does not move) to TIME, from the sample with the shortest
round trip of the recent ones: the true offset lies within half that round trip of it
(`margin_ms`). A deadline handed to a script is the caller's deadline moved by that
offset, so skew between the hosts cannot approve a late call, or refuse a timely one, by more
than `margin_ms` (plus the hosts' drift since the sample, microseconds per second).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Awaitable, Callable

SAMPLES_KEPT = 16  # the recent samples the best round trip is chosen from


class RedisClock:
    def __init__(self, local_s: Callable[[], float] = time.monotonic):
        self._local_s = local_s
        self._samples: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=SAMPLES_KEPT)  # (round trip ms, Redis minus local ms)

    @property
    def synced(self) -> bool:
        return bool(self._samples)

    @property
    def offset_ms(self) -> float:
        """Redis' TIME minus this host's clock, from the best recent sample."""
        return min(self._samples)[1]

    @property
    def margin_ms(self) -> float:
        """How far offset_ms may be from the truth: half the best sample's round trip."""
        return min(self._samples)[0] / 2

    async def sample(self, redis_time: Callable[[], Awaitable[tuple[int, int]]]) -> None:
        """One sample: `redis_time` answers Redis' TIME as (seconds, microseconds)."""
        before = self._local_s()
        seconds, micros = await redis_time()
        after = self._local_s()
        redis_ms = seconds * 1000 + micros / 1000
        midpoint_ms = (before + after) * 500
        self._samples.append(((after - before) * 1000, redis_ms - midpoint_ms))

    def deadline_ms(self, remaining_s: float | None, clock_offset_ms: int = 0) -> int:
        """The deadline `remaining_s` from now, in ms by the scripts' clock (Redis' TIME plus
        the tests' clock offset); 0 when there is none or the clock is not synced yet."""
        if remaining_s is None or not self._samples:
            return 0
        return max(1, int((self._local_s() + remaining_s) * 1000 + self.offset_ms)
                   + clock_offset_ms)
