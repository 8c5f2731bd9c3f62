"""When an engine's schedule window is open, and when it next opens or closes (SPEC §4.4).

A schedule is a daily window in a time zone, on some weekdays. A window that crosses midnight
belongs to the day it starts on; ``start_time == end_time`` is the whole of its day. Windows are
turned into concrete intervals in UTC, built from local wall-clock times, so that a daylight-saving
change moves them the way a clock on the wall does; back-to-back intervals (every day 00:00–00:00,
or a window ending the minute the next starts) merge into one.

Everything here is pure: a configuration and an instant in, instants out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from enginehouse.core.specs import WEEKDAYS

# How far around an instant windows are laid out. A week and a day covers every weekly pattern;
# an interval that still touches the edge has no end (or start) in sight: the window never closes.
_DAYS_BEFORE = 1
_DAYS_AFTER = 8


@dataclass(frozen=True)
class Interval:
    start: datetime  # UTC
    end: datetime  # UTC, exclusive
    # True when the interval runs into the edge of the days laid out (the window never closes).
    open_start: bool = False
    open_end: bool = False

    def holds(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


def intervals(config: Mapping[str, Any], around: datetime) -> list[Interval]:
    """The schedule's windows near ``around``, as merged UTC intervals in order."""
    zone = ZoneInfo(config.get("timezone") or "UTC")
    today = around.astimezone(zone).date()
    days = tuple(sorted(set(config.get("days") or WEEKDAYS)))
    return list(_intervals_around(zone, config["start_time"], config["end_time"], days, today))


# The windows depend on ``around`` only through its local date: a page of engines on schedules,
# or a reconciler pass over them, lays each schedule out once a day rather than once a call.
@lru_cache(maxsize=4096)
def _intervals_around(zone: ZoneInfo, start_time: str, end_time: str, days: tuple[str, ...], today: date
                      ) -> tuple[Interval, ...]:
    start, end = _clock(start_time), _clock(end_time)
    first = today - timedelta(days=_DAYS_BEFORE)
    last = today + timedelta(days=_DAYS_AFTER)
    raw: list[tuple[datetime, datetime]] = []
    day = first
    while day <= last:
        if WEEKDAYS[day.weekday()] in days:
            raw.append(_window_of(day, start, end, zone))
        day += timedelta(days=1)
    edge_start = _local(first, time(0, 0), zone)
    edge_end = _local(last + timedelta(days=1), time(0, 0), zone)
    merged: list[Interval] = []
    for window_start, window_end in raw:
        if merged and window_start <= merged[-1].end:
            previous = merged[-1]
            merged[-1] = Interval(previous.start, max(previous.end, window_end), previous.open_start)
        else:
            merged.append(Interval(window_start, window_end, window_start <= edge_start))
    return tuple(Interval(i.start, i.end, i.open_start, i.end >= edge_end) for i in merged)


def in_window(config: Mapping[str, Any], now: datetime) -> bool:
    return any(interval.holds(now) for interval in intervals(config, now))


def next_start(config: Mapping[str, Any], now: datetime) -> datetime | None:
    """When a window next opens after ``now`` (None: it never opens, or never closes)."""
    for interval in intervals(config, now):
        if interval.start > now and not interval.open_start:
            return interval.start
    return None


def next_end(config: Mapping[str, Any], now: datetime) -> datetime | None:
    """When the window open at ``now``, or else the next one, closes (None: never)."""
    for interval in intervals(config, now):
        if interval.end > now:
            return None if interval.open_end else interval.end
    return None


def _window_of(day: date, start: time, end: time, zone: ZoneInfo) -> tuple[datetime, datetime]:
    if start == end:
        return _local(day, time(0, 0), zone), _local(day + timedelta(days=1), time(0, 0), zone)
    end_day = day if start < end else day + timedelta(days=1)
    return _local(day, start, zone), _local(end_day, end, zone)


def _local(day: date, clock: time, zone: ZoneInfo) -> datetime:
    # A wall-clock time skipped by a daylight-saving change counts as the instant the clock
    # would read it had it not jumped (fold=0), as zoneinfo resolves it.
    return datetime.combine(day, clock, tzinfo=zone).astimezone(timezone.utc)


def _clock(hh_mm: str) -> time:
    hours, minutes = hh_mm.split(":")
    return time(int(hours), int(minutes))
