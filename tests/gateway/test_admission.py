"""Admission control's limiter: a bounded number of calls in flight, refused at once beyond it
with a retry hint; releases of credit shed last; the limit follows latency and loop lag."""

from __future__ import annotations

import pytest

from creditgate.gateway import admission
from creditgate.gateway.admission import Admission, Kind, Overloaded
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits.constants import (
    ADMISSION_LIMIT_MAX,
    ADMISSION_LIMIT_MIN,
    ADMISSION_WINDOW_S,
)


class Clock:
    def __init__(self):
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_every_rpc_of_the_contract_has_a_place():
    methods = {method.name for service in pb.DESCRIPTOR.services_by_name.values()
               for method in service.methods}
    assert set(admission.KINDS) == methods
    releases = {name for name, kind in admission.KINDS.items() if kind is Kind.RELEASES}
    assert releases == {"Capture", "Void", "Reverse", "Refund", "Repay"}


LIMIT = ADMISSION_LIMIT_MIN + 16


def test_calls_beyond_the_limit_are_refused_at_once_with_a_retry_hint():
    limiter = Admission(limit=LIMIT, now_s=Clock())
    started = [limiter.admit("Authorize") for _ in range(LIMIT)]
    with pytest.raises(Overloaded) as caught:
        limiter.admit("Authorize")
    assert caught.value.retry_after_ms == int(ADMISSION_WINDOW_S * 1000)
    assert "retry after" in str(caught.value) and caught.value.limit == LIMIT
    assert (limiter.in_flight, limiter.admitted, limiter.refused) == (LIMIT, LIMIT, 1)
    limiter.done(started[0])
    limiter.admit("Authorize")  # one left, one in
    assert limiter.in_flight == LIMIT


def test_releases_are_shed_last():
    limiter = Admission(limit=LIMIT, now_s=Clock())
    for _ in range(LIMIT):
        limiter.admit("Authorize")
    with pytest.raises(Overloaded):
        limiter.admit("GetCredit")
    for index in range(LIMIT // 2):  # headroom: half the limit again
        limiter.admit(("Capture", "Void", "Reverse", "Refund", "Repay")[index % 5])
    with pytest.raises(Overloaded):
        limiter.admit("Capture")
    assert limiter.in_flight == LIMIT + LIMIT // 2


def run_window(limiter: Admission, clock: Clock, latency_ms: float, calls: int) -> None:
    """`calls` calls of `latency_ms` each, then the window ends."""
    for _ in range(calls):
        started = limiter.admit("Authorize")
        clock.now_s += latency_ms / 1000
        limiter.done(started)
    clock.now_s += ADMISSION_WINDOW_S
    limiter.lag(0.0)


def test_the_limit_shrinks_when_latency_passes_the_target_and_grows_back():
    clock = Clock()
    limiter = Admission(target_ms=50.0, limit=100, now_s=clock)
    run_window(limiter, clock, latency_ms=80.0, calls=1)
    assert limiter.limit == 90
    for _ in range(40):
        run_window(limiter, clock, latency_ms=80.0, calls=1)
    assert limiter.limit == ADMISSION_LIMIT_MIN  # never below the floor
    # Fast again: the limit grows only while it is reached, by a quarter far below target.
    run_window(limiter, clock, latency_ms=1.0, calls=1)
    assert limiter.limit == ADMISSION_LIMIT_MIN  # not reached: no reason to grow
    grown = []
    for _ in range(12):
        started = [limiter.admit("Authorize") for _ in range(limiter.limit)]
        clock.now_s += 0.001
        for start in started:
            limiter.done(start)
        clock.now_s += ADMISSION_WINDOW_S
        limiter.lag(0.0)
        grown.append(limiter.limit)
    assert grown[0] == ADMISSION_LIMIT_MIN + ADMISSION_LIMIT_MIN // 4
    assert grown[-1] > 100 and grown == sorted(grown)
    assert max(grown) <= ADMISSION_LIMIT_MAX


def test_near_the_target_the_limit_grows_by_one():
    clock = Clock()
    limiter = Admission(target_ms=50.0, limit=LIMIT, now_s=clock)
    started = [limiter.admit("Authorize") for _ in range(LIMIT)]
    clock.now_s += 0.030  # 30 ms: under the target, over half of it
    for start in started:
        limiter.done(start)
    clock.now_s += ADMISSION_WINDOW_S
    limiter.lag(0.0)
    assert limiter.limit == LIMIT + 1


def test_loop_lag_counts_as_latency():
    clock = Clock()
    limiter = Admission(target_ms=50.0, limit=100, now_s=clock)
    limiter.lag(60.0)  # the loop ran 60 ms late: calls waited before any handler ran
    clock.now_s += ADMISSION_WINDOW_S
    limiter.lag(0.0)
    assert limiter.limit == 90
