"""The scripts' clock seen from a gateway host: the offset to Redis' TIME is measured against
the real server, within half a round trip, and a caller's deadline moves by it."""

from __future__ import annotations

import time

from creditgate.limits.clock import RedisClock


async def test_offset_to_redis_time_is_measured_within_its_margin(redis):
    skew_s = 5.0  # this "host" runs five seconds fast
    clock = RedisClock(local_s=lambda: time.time() + skew_s)
    assert not clock.synced and clock.deadline_ms(1.0) == 0
    for _ in range(5):
        await clock.sample(redis.time)
    assert clock.synced
    # The same machine's clock, seen five seconds fast: the offset is -5 s, within the
    # margin (half the best round trip) and the two clocks' reading granularity.
    assert abs(clock.offset_ms + skew_s * 1000) <= clock.margin_ms + 1
    seconds, micros = await redis.time()
    redis_now_ms = seconds * 1000 + micros // 1000
    deadline = clock.deadline_ms(0.2, clock_offset_ms=7)
    assert abs(deadline - (redis_now_ms + 200 + 7)) <= clock.margin_ms + 20
    assert clock.deadline_ms(None) == 0
