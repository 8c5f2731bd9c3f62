"""When an engine sleeps and wakes by its ``resource_management_config`` (SPEC §4.4).

Pure decisions over plain values, shared by the reconciler (what to do now), the services (how
long a manual change holds against a schedule) and the views (what happens next, and when).

A manual change that goes against a schedule holds for a while instead of being undone on the
next pass: a reactivation outside the window holds until the window's next end, a deactivation
inside it until the window's next start. The engine stores the instant the hold lasts until.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from enginehouse.core import schedule
from enginehouse.core.status import EngineStatus

# A hold with no end in sight (a schedule whose window never opens again, or never closes):
# it lasts until the next manual change.
HOLD_FOREVER = datetime(9999, 1, 1, tzinfo=timezone.utc)


class Change(str, Enum):
    DEACTIVATE = "deactivate"
    REACTIVATE = "reactivate"


@dataclass(frozen=True)
class NextTransition:
    at: datetime
    change: Change


def _schedule_of(management: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if management and management.get("management_type") == "schedule":
        return management.get("management_config") or {}
    return None


def _timeout_of(management: Mapping[str, Any] | None) -> timedelta | None:
    if management and management.get("management_type") == "inactive_timeout":
        config = management.get("management_config") or {}
        return timedelta(seconds=float(config.get("inactive_duration", 0)))
    return None


def resource_decision(
    status: EngineStatus,
    management: Mapping[str, Any] | None,
    last_access: datetime | None,
    now: datetime,
    hold_until: datetime | None = None,
) -> tuple[EngineStatus, str] | None:
    """Deactivate or reactivate by schedule or inactive timeout; None: nothing to do now."""
    idle_for = _timeout_of(management)
    if idle_for is not None:
        if status is EngineStatus.ACTIVE and last_access is not None and now - last_access >= idle_for:
            seconds = int(idle_for.total_seconds())
            return EngineStatus.DEACTIVATING, f"no inference request for {seconds} s (inactive timeout)"
        return None
    config = _schedule_of(management)
    if config is None or (hold_until is not None and now < hold_until):
        return None
    inside = schedule.in_window(config, now)
    if status is EngineStatus.ACTIVE and not inside:
        return EngineStatus.DEACTIVATING, "outside its schedule window"
    if status is EngineStatus.INACTIVE and inside:
        return EngineStatus.REACTIVATING, "its schedule window opened"
    return None


def manual_hold(management: Mapping[str, Any] | None, change: Change, now: datetime) -> datetime | None:
    """Until when a manual ``change`` made at ``now`` holds against the schedule; None when it
    agrees with the schedule (or there is none), and so needs no hold."""
    config = _schedule_of(management)
    if config is None:
        return None
    inside = schedule.in_window(config, now)
    if change is Change.DEACTIVATE and inside:
        return schedule.next_start(config, now) or HOLD_FOREVER
    if change is Change.REACTIVATE and not inside:
        return schedule.next_end(config, now) or HOLD_FOREVER
    return None


def next_transition(
    status: EngineStatus,
    management: Mapping[str, Any] | None,
    last_access: datetime | None,
    hold_until: datetime | None,
    now: datetime,
) -> NextTransition | None:
    """When the engine next sleeps or wakes by itself, and which; None when nothing is due."""
    idle_for = _timeout_of(management)
    if idle_for is not None:
        if status is EngineStatus.ACTIVE and last_access is not None:
            return NextTransition(max(last_access + idle_for, now), Change.DEACTIVATE)
        return None
    config = _schedule_of(management)
    if config is None or hold_until == HOLD_FOREVER:
        return None
    # Nothing moves the engine before its hold ends; from then on the schedule does.
    since = max(now, hold_until) if hold_until is not None else now
    if status.wants_replicas:
        at = since if not schedule.in_window(config, since) else schedule.next_end(config, since)
        change = Change.DEACTIVATE
    elif status in (EngineStatus.INACTIVE, EngineStatus.DEACTIVATING):
        at = since if schedule.in_window(config, since) else schedule.next_start(config, since)
        change = Change.REACTIVATE
    else:
        return None
    return None if at is None else NextTransition(at, change)
