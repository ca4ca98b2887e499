"""Calendar windows: the stored UTC-offset schedule agrees with the IANA database, and the Lua
prelude computes the same window numbers as limits/calendar.py."""

from __future__ import annotations

import datetime as dt
import random
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgate.limits import calendar
from creditgate.limits.lua_source import script_source

FROM_S = 1_795_600_000  # 2026-11-25
ZONES = ["Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Sydney",
         "America/Sao_Paulo", "Asia/Kolkata", "Pacific/Chatham", "Africa/Casablanca"]
SCHEDULES = {name: calendar.offset_schedule(name, FROM_S) for name in ZONES}
# Instants from the schedule's start to 25 years later, in whole seconds.
INSTANTS = st.integers(FROM_S - 86_400, FROM_S + 25 * 365 * 86_400)


@settings(max_examples=400, deadline=None)
@given(zone_name=st.sampled_from(ZONES), now_s=INSTANTS)
def test_schedule_matches_the_iana_database(zone_name, now_s):
    local = dt.datetime.fromtimestamp(now_s, zoneinfo.ZoneInfo(zone_name))
    schedule = SCHEDULES[zone_name]
    assert calendar.utc_offset_s(schedule, now_s) == local.utcoffset().total_seconds()
    day, month = calendar.window_numbers(schedule, now_s * 1000)
    assert calendar.civil_from_days(day) == (local.year, local.month, local.day)
    assert month == local.year * 12 + local.month - 1


@settings(max_examples=200, deadline=None)
@given(zone_name=st.sampled_from(ZONES), now_s=INSTANTS)
def test_window_resets_are_the_next_local_midnight(zone_name, now_s):
    tz = zoneinfo.ZoneInfo(zone_name)
    local = dt.datetime.fromtimestamp(now_s, tz)
    day_end_ms, month_end_ms = calendar.window_resets_ms(SCHEDULES[zone_name], now_s * 1000)
    next_day = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), tz)
    first = local.date().replace(day=1)
    next_month = dt.datetime.combine((first + dt.timedelta(days=32)).replace(day=1), dt.time(),
                                     tz)
    # A midnight that a DST change skips does not exist locally; no zone here skips one.
    assert day_end_ms == int(next_day.timestamp()) * 1000
    assert month_end_ms == int(next_month.timestamp()) * 1000


def test_shanghai_has_one_offset():
    assert SCHEDULES["Asia/Shanghai"] == "28800"


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "../etc/passwd", "/etc/localtime"])
def test_unknown_zones_are_refused(name):
    with pytest.raises(calendar.UnknownTimezone):
        calendar.offset_schedule(name, FROM_S)


def test_lua_windows_equal_python(redis_sync):
    """The prelude's arithmetic, run in Redis, against calendar.window_numbers."""
    probe = script_source("probe", body=(
        "local out = {}\n"
        "for i = 2, #ARGV do\n"
        "  local day, month = window_numbers(ARGV[1], tonumber(ARGV[i]))\n"
        "  out[#out + 1] = fmt(day) .. ':' .. fmt(month)\n"
        "end\n"
        "return out\n"))
    rng = random.Random(20261125)
    for zone_name in ZONES:
        sample = [rng.randint(FROM_S - 86_400, FROM_S + 25 * 365 * 86_400) for _ in range(200)]
        # Also the instants around each transition and each local midnight near FROM_S.
        numbers = [int(x) for x in SCHEDULES[zone_name].split(",")[1::2][:6]]
        edges = [t + d for t in numbers for d in (-1, 0, 1)]
        moments_ms = [s * 1000 + 999 for s in sample + edges]
        got = redis_sync.eval(probe, 0, SCHEDULES[zone_name], *moments_ms)
        expected = ["{}:{}".format(*calendar.window_numbers(SCHEDULES[zone_name], ms))
                    for ms in moments_ms]
        assert [g.decode() for g in got] == expected, zone_name
