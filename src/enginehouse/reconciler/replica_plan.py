"""What to do with an engine's replicas, decided from what was observed: a pure function.

``plan_replicas`` takes the replicas as one step saw them (exited or not, ready or not, how long
since each last answered its health check, what each has in flight, how long each has drained),
the count the engine should run, the engine's crash streak and a clock, and says which replicas
are gone, which to stop, which to drain, how many to launch and whether the engine has failed.
The engine step only gathers those facts and applies the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from enginehouse.core.status import EngineStatus, ReplicaStatus
from enginehouse.reconciler.policy import CrashStreak, Fault, ReplicaFacts


@dataclass(frozen=True)
class ReplicaLimits:
    """The bounds a plan holds replicas to (defaults suit the local provider)."""

    # A replica not ready this long after its launch is given up on.
    start_timeout_s: float = 300.0
    # A ready replica whose health check has not answered for this long is hung: replaced.
    hang_timeout_s: float = 30.0
    # A draining replica still busy after this long is stopped anyway.
    drain_timeout_s: float = 120.0
    # Transient faults in a row (with no replica ready in between) after which the engine fails.
    max_crashes: int = 5
    # Launch backoff after the n-th fault in a row: base × 2^(n-1), at most max.
    backoff_base_s: float = 2.0
    backoff_max_s: float = 60.0


@dataclass(frozen=True)
class ObservedReplica:
    facts: ReplicaFacts
    status: ReplicaStatus  # what the control plane last recorded
    # Seconds since its health check last answered (0 when it answered in this step).
    unanswered_s: float = 0.0
    # Requests the gateway has running on it now.
    in_flight: int = 0
    # Seconds since it began draining (None: not draining).
    draining_s: float | None = None


@dataclass(frozen=True)
class ReplicaPlan:
    gone: dict[str, str] = field(default_factory=dict)  # exited: only forget them (id → why)
    stop: dict[str, str] = field(default_factory=dict)  # stop, then forget (id → why)
    drain: list[str] = field(default_factory=list)  # take no new request, stop once idle
    launch: int = 0
    streak: CrashStreak = field(default_factory=CrashStreak)
    # Why the engine cannot come up (it is Failed with this), or None.
    failure: str | None = None
    # Why no replica is launched now though some are missing (a crash backoff), or None.
    held_back: str | None = None

    def keeps(self, replica_id: str) -> bool:
        return replica_id not in self.gone and replica_id not in self.stop


def plan_replicas(
    status: EngineStatus,
    replicas: list[ObservedReplica],
    desired: int,
    streak: CrashStreak,
    now: float,
    limits: ReplicaLimits = ReplicaLimits(),
    can_launch: bool = True,
) -> ReplicaPlan:
    """The plan for one step. ``now`` is wall-clock seconds (the backoff's next try is shown to
    users as a time); ``can_launch`` is False when no provider can give the engine's option."""
    gone: dict[str, str] = {}
    stop: dict[str, str] = {}
    faults: list[Fault] = []
    for replica in replicas:
        facts = replica.facts
        if facts.exited:
            gone[facts.replica_id] = facts.exit_reason or "replica exited"
            faults.append(Fault(gone[facts.replica_id], facts.permanent_failure))
        elif replica.status is ReplicaStatus.STARTING and not facts.ready and facts.age_s > limits.start_timeout_s:
            stop[facts.replica_id] = f"replica did not become ready in {limits.start_timeout_s:.0f} s"
            faults.append(Fault(stop[facts.replica_id]))
        elif replica.status is not ReplicaStatus.STARTING and replica.unanswered_s > limits.hang_timeout_s:
            stop[facts.replica_id] = (f"replica stopped answering its health check "
                                      f"({replica.unanswered_s:.0f} s)")
            faults.append(Fault(stop[facts.replica_id]))
        elif replica.draining_s is not None and (
            replica.in_flight == 0 or replica.draining_s > limits.drain_timeout_s
        ):
            stop[facts.replica_id] = ("drained" if replica.in_flight == 0
                                      else f"still busy after draining {limits.drain_timeout_s:.0f} s")
    streak, failure = judge(faults, streak, now, limits)
    live = [r for r in replicas if r.facts.replica_id not in gone and r.facts.replica_id not in stop]
    if any(r.facts.ready and r.status is ReplicaStatus.STARTING for r in live):
        streak = CrashStreak()  # a replica came up: the streak is over
    if not status.wants_replicas or failure is not None:
        why = f"engine {status.value}" if failure is None else "engine failed"
        stop.update({r.facts.replica_id: why for r in live})
        return ReplicaPlan(gone, stop, [], 0, streak, failure)
    serving = [r for r in live if r.draining_s is None]
    drain, stop_now = _scale_down(serving, desired)
    stop.update({replica_id: "scaled down" for replica_id in stop_now})
    missing = max(0, desired - (len(serving) - len(drain) - len(stop_now)))
    if missing and streak.retry_at > now:
        return ReplicaPlan(gone, stop, drain, 0, streak, None, backoff_reason(streak))
    return ReplicaPlan(gone, stop, drain, missing if can_launch else 0, streak, None)


def judge(faults: list[Fault], streak: CrashStreak, now: float, limits: ReplicaLimits
          ) -> tuple[CrashStreak, str | None]:
    """The streak after ``faults``, and why the engine cannot come up (None: try again).

    A permanent fault fails the engine at once, with its own reason: retrying a base model that
    can never be opened would only repeat the failure. A transient one (a crash, a hang, a start
    that timed out, a launch that may work next time) is healed by a new replica after a backoff
    that doubles with each fault in a row, until ``max_crashes`` of them say the engine is stuck.
    """
    for fault in faults:
        if fault.permanent:
            return streak, fault.reason
        count = streak.count + 1
        delay = min(limits.backoff_base_s * 2 ** (count - 1), limits.backoff_max_s)
        streak = CrashStreak(count, fault.reason, now + delay)
    if streak.count >= limits.max_crashes:
        return streak, f"replica keeps failing ({streak.count} times in a row): {streak.last_reason}"
    return streak, None


def _scale_down(serving: list[ObservedReplica], desired: int) -> tuple[list[str], list[str]]:
    """(ready replicas to drain, not-yet-ready ones to stop) to come down to ``desired``.

    Replicas not ready yet go first (they serve nobody), then the ready ones with the least in
    flight, youngest first among equals (the older ones have warm caches)."""
    excess = len(serving) - desired
    if excess <= 0:
        return [], []
    order = sorted(serving, key=lambda r: (r.facts.ready, r.in_flight, r.facts.age_s))
    chosen = order[:excess]
    return ([r.facts.replica_id for r in chosen if r.facts.ready],
            [r.facts.replica_id for r in chosen if not r.facts.ready])


def backoff_reason(streak: CrashStreak) -> str:
    at = datetime.fromtimestamp(streak.retry_at, timezone.utc).strftime("%H:%M:%S UTC")
    return f"replica failed ({streak.count} in a row): {streak.last_reason}; next try at {at}"
