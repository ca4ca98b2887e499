"""Calendar windows in the customer's own timezone, from Redis time.

Scripts cannot consult the IANA database, so a customer's record carries a UTC-offset schedule
built here when the customer is put: "OFFSET[,SINCE_S,OFFSET]..." in seconds, with the
transitions of the next TZ_SCHEDULE_YEARS years. The Lua prelude (limits/lua/_lib.lua) reads it
with the same arithmetic as `utc_offset_s` and `window_numbers` below; the model uses these.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo

from creditgate.limits.constants import TZ_SCHEDULE_YEARS

DAY_S = 86_400
_PROBE_S = DAY_S  # no zone changes its offset and back within one day


class UnknownTimezone(ValueError):
    pass


def zone(name: str) -> zoneinfo.ZoneInfo:
    if not name or "\x00" in name or name.startswith(("/", ".")) or ".." in name:
        raise UnknownTimezone(name)
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise UnknownTimezone(name) from None


def offset_schedule(name: str, from_s: int, years: int = TZ_SCHEDULE_YEARS) -> str:
    """The zone's UTC offsets from `from_s` (Unix seconds) on, as the scripts read them.

    Cached per zone and day: computing one costs about 20 ms, which PutCustomer must not
    spend on the event loop for every customer."""
    return _offset_schedule(name, from_s - from_s % DAY_S, years)


@functools.lru_cache(maxsize=1024)
def _offset_schedule(name: str, from_s: int, years: int) -> str:
    tz = zone(name)

    def offset_at(s: int) -> int:
        moment = dt.datetime.fromtimestamp(s, tz=dt.UTC).astimezone(tz)
        return int(moment.utcoffset().total_seconds())  # type: ignore[union-attr]

    start = from_s - 2 * DAY_S  # windows look back up to a day; a margin costs nothing
    parts = [str(offset_at(start))]
    current = offset_at(start)
    end = from_s + years * 366 * DAY_S
    probe = start
    while probe < end:
        following = probe + _PROBE_S
        if offset_at(following) != current:
            low, high = probe, following  # offset_at(low) == current != offset_at(high)
            while high - low > 1:
                middle = (low + high) // 2
                if offset_at(middle) == current:
                    low = middle
                else:
                    high = middle
            current = offset_at(high)
            parts += [str(high), str(current)]
        probe = following
    return ",".join(parts)


def utc_offset_s(schedule: str, now_s: int) -> int:
    numbers = [int(part) for part in schedule.split(",")]
    offset = numbers[0]
    for index in range(1, len(numbers), 2):
        if now_s >= numbers[index]:
            offset = numbers[index + 1]
        else:
            break
    return offset


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day number counted from 1970-01-01 (H. Hinnant's algorithm)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    year = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return (year + 1 if month <= 2 else year), month, day


def days_from_civil(year: int, month: int, day: int) -> int:
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def window_numbers(schedule: str, now_ms: int) -> tuple[int, int]:
    """(local day number, local month number = year * 12 + month - 1) at `now_ms`."""
    now_s = now_ms // 1000
    day = (now_s + utc_offset_s(schedule, now_s)) // DAY_S
    year, month, _ = civil_from_days(day)
    return day, year * 12 + month - 1


def window_resets_ms(schedule: str, now_ms: int) -> tuple[int, int]:
    """Unix ms at which the current local day and month end (next local midnight)."""
    now_s = now_ms // 1000
    offset = utc_offset_s(schedule, now_s)
    day = (now_s + offset) // DAY_S
    year, month, _ = civil_from_days(day)
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
    day_end_s = (day + 1) * DAY_S
    month_end_s = days_from_civil(next_year, next_month, 1) * DAY_S
    return (
        (day_end_s - utc_offset_s(schedule, day_end_s - offset)) * 1000,
        (month_end_s - utc_offset_s(schedule, month_end_s - offset)) * 1000,
    )
