"""Sleeping and waking by schedule or inactive timeout, and manual holds: plain values, fixed clocks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from enginehouse.core import schedule
from enginehouse.core.resource_management import (
    HOLD_FOREVER, Change, NextTransition, manual_hold, next_transition, resource_decision,
)
from enginehouse.core.specs import WEEKDAYS
from enginehouse.core.status import EngineStatus

E = EngineStatus
WORKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday"]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _schedule(start: str, end: str, days: list[str], zone: str = "UTC") -> dict[str, Any]:
    return {"timezone": zone, "start_time": start, "end_time": end, "days": days}


def _managed(config: dict[str, Any]) -> dict[str, Any]:
    return {"management_type": "schedule", "management_config": config}


def test_a_window_on_one_day() -> None:
    config = _schedule("09:00", "17:00", ["friday"])
    assert schedule.in_window(config, _at("2026-11-27T10:00"))  # a Friday
    assert not schedule.in_window(config, _at("2026-11-27T17:00"))  # the end is not in it
    assert not schedule.in_window(config, _at("2026-11-28T10:00"))  # Saturday
    assert schedule.next_end(config, _at("2026-11-27T10:00")) == _at("2026-11-27T17:00")
    assert schedule.next_start(config, _at("2026-11-27T10:00")) == _at("2026-12-04T09:00")


def test_a_window_across_midnight_belongs_to_its_start_day() -> None:
    config = _schedule("22:00", "02:00", ["friday"])
    assert schedule.in_window(config, _at("2026-11-27T23:30"))
    assert schedule.in_window(config, _at("2026-11-28T01:30"))  # Saturday night, Friday's window
    assert not schedule.in_window(config, _at("2026-11-28T23:30"))
    assert not schedule.in_window(config, _at("2026-11-27T01:30"))  # Thursday's would-be window
    assert schedule.next_end(config, _at("2026-11-27T23:30")) == _at("2026-11-28T02:00")


def test_a_window_in_its_time_zone() -> None:
    config = _schedule("09:00", "17:00", ["friday"], "America/New_York")
    assert not schedule.in_window(config, _at("2026-11-27T10:00"))  # 05:00 in New York
    assert schedule.in_window(config, _at("2026-11-27T15:00"))
    assert schedule.next_end(config, _at("2026-11-27T15:00")) == _at("2026-11-27T22:00")


def test_windows_follow_the_wall_clock_across_daylight_saving_changes() -> None:
    every_day = _schedule("09:00", "17:00", list(WEEKDAYS), "America/New_York")
    # Clocks go forward on Sunday 2027-03-14: 09:00 is 14:00 UTC the day before, 13:00 UTC after.
    assert schedule.next_start(every_day, _at("2027-03-13T23:00")) == _at("2027-03-14T13:00")
    assert schedule.next_end(every_day, _at("2027-03-14T13:30")) == _at("2027-03-14T21:00")
    # Clocks go back at 02:00 on Sunday 2026-11-01: a night window that night lasts 9 hours.
    nights = _schedule("22:00", "06:00", ["saturday"], "America/New_York")
    assert schedule.next_start(nights, _at("2026-10-31T12:00")) == _at("2026-11-01T02:00")
    assert schedule.next_end(nights, _at("2026-11-01T03:00")) == _at("2026-11-01T11:00")


def test_every_weekday_all_day_never_closes() -> None:
    always = _schedule("00:00", "00:00", list(WEEKDAYS))
    now = _at("2026-11-27T10:00")
    assert schedule.in_window(always, now)
    assert schedule.next_end(always, now) is None and schedule.next_start(always, now) is None
    # Back-to-back days merge: a weekday-only all-day window closes at the weekend.
    weekdays = _schedule("00:00", "00:00", WORKDAYS)
    assert schedule.next_end(weekdays, _at("2026-11-24T10:00")) == _at("2026-11-28T00:00")
    assert schedule.next_start(weekdays, _at("2026-11-24T10:00")) == _at("2026-11-30T00:00")


def test_inactive_timeout_deactivates_an_idle_engine() -> None:
    management = {"management_type": "inactive_timeout", "management_config": {"inactive_duration": 60}}
    now = _at("2026-11-27T10:00")
    assert resource_decision(E.ACTIVE, management, now - timedelta(seconds=30), now) is None
    decision = resource_decision(E.ACTIVE, management, now - timedelta(seconds=61), now)
    assert decision is not None and decision[0] is E.DEACTIVATING
    assert resource_decision(E.INACTIVE, management, now - timedelta(days=1), now) is None
    upcoming = next_transition(E.ACTIVE, management, now - timedelta(seconds=30), None, now)
    assert upcoming == NextTransition(now + timedelta(seconds=30), Change.DEACTIVATE)
    assert next_transition(E.INACTIVE, management, now, None, now) is None


def test_a_schedule_moves_an_engine_in_and_out() -> None:
    management = _managed(_schedule("09:00", "17:00", ["friday"]))
    inside, outside = _at("2026-11-27T10:00"), _at("2026-11-27T20:00")
    assert resource_decision(E.ACTIVE, management, None, outside)[0] is E.DEACTIVATING  # type: ignore[index]
    assert resource_decision(E.INACTIVE, management, None, inside)[0] is E.REACTIVATING  # type: ignore[index]
    assert resource_decision(E.ACTIVE, management, None, inside) is None
    assert next_transition(E.ACTIVE, management, None, None, inside) == NextTransition(
        _at("2026-11-27T17:00"), Change.DEACTIVATE)
    assert next_transition(E.INACTIVE, management, None, None, outside) == NextTransition(
        _at("2026-12-04T09:00"), Change.REACTIVATE)
    assert next_transition(E.FAILED, management, None, None, outside) is None
    assert next_transition(E.ACTIVE, None, None, None, outside) is None


def test_a_manual_reactivation_outside_the_window_holds_until_its_next_end() -> None:
    management = _managed(_schedule("09:00", "17:00", WORKDAYS))
    friday_night = _at("2026-11-27T20:00")
    hold = manual_hold(management, Change.REACTIVATE, friday_night)
    assert hold == _at("2026-11-30T17:00")  # Monday's window's end, not Friday's
    saturday = _at("2026-11-28T12:00")
    assert resource_decision(E.ACTIVE, management, None, saturday, hold) is None
    assert next_transition(E.ACTIVE, management, None, hold, saturday) == NextTransition(
        hold, Change.DEACTIVATE)
    after = _at("2026-11-30T17:01")
    assert resource_decision(E.ACTIVE, management, None, after, hold)[0] is E.DEACTIVATING  # type: ignore[index]


def test_a_manual_deactivation_inside_the_window_holds_until_its_next_start() -> None:
    management = _managed(_schedule("09:00", "17:00", WORKDAYS))
    friday_morning = _at("2026-11-27T10:00")
    hold = manual_hold(management, Change.DEACTIVATE, friday_morning)
    assert hold == _at("2026-11-30T09:00")
    assert resource_decision(E.INACTIVE, management, None, _at("2026-11-27T11:00"), hold) is None
    assert next_transition(E.INACTIVE, management, None, hold, friday_morning) == NextTransition(
        hold, Change.REACTIVATE)
    monday = _at("2026-11-30T09:00")
    assert resource_decision(E.INACTIVE, management, None, monday, hold)[0] is E.REACTIVATING  # type: ignore[index]


def test_manual_changes_that_agree_with_the_schedule_hold_nothing() -> None:
    management = _managed(_schedule("09:00", "17:00", WORKDAYS))
    assert manual_hold(management, Change.REACTIVATE, _at("2026-11-27T10:00")) is None
    assert manual_hold(management, Change.DEACTIVATE, _at("2026-11-27T20:00")) is None
    assert manual_hold(None, Change.DEACTIVATE, _at("2026-11-27T10:00")) is None
    timeout = {"management_type": "inactive_timeout", "management_config": {"inactive_duration": 60}}
    assert manual_hold(timeout, Change.DEACTIVATE, _at("2026-11-27T10:00")) is None


def test_a_deactivation_of_an_always_open_schedule_holds_until_the_next_manual_change() -> None:
    management = _managed(_schedule("00:00", "00:00", list(WEEKDAYS)))
    now = _at("2026-11-27T10:00")
    assert manual_hold(management, Change.DEACTIVATE, now) == HOLD_FOREVER
    assert resource_decision(E.INACTIVE, management, None, now + timedelta(days=30), HOLD_FOREVER) is None
    assert next_transition(E.INACTIVE, management, None, HOLD_FOREVER, now) is None
