"""The replica plan with plain values and a fixed clock: launch, heal, back off, fail, drain."""

from __future__ import annotations

from enginehouse.core.status import EngineStatus, ReplicaStatus
from enginehouse.reconciler.policy import CrashStreak, Fault, ReplicaFacts, replica_busy, requests_on
from enginehouse.reconciler.replica_plan import (
    ObservedReplica, ReplicaLimits, ReplicaPlan, judge, plan_replicas,
)

E, R = EngineStatus, ReplicaStatus
NOW = 1_800_000_000.0
LIMITS = ReplicaLimits(start_timeout_s=300, hang_timeout_s=30, drain_timeout_s=120, max_crashes=3,
                       backoff_base_s=2, backoff_max_s=60)


def replica(rid: str, *, ready: bool = True, exited: bool = False, status: R = R.READY, age_s: float = 100,
            unanswered_s: float = 0, in_flight: int = 0, draining_s: float | None = None,
            reason: str | None = None, permanent: bool = False) -> ObservedReplica:
    facts = ReplicaFacts(rid, ready=ready, exited=exited, exit_reason=reason, permanent_failure=permanent,
                         age_s=age_s)
    return ObservedReplica(facts, status, unanswered_s, in_flight, draining_s)


def plan(replicas: list[ObservedReplica], desired: int = 1, status: E = E.ACTIVE,
         streak: CrashStreak = CrashStreak(), now: float = NOW, can_launch: bool = True) -> ReplicaPlan:
    return plan_replicas(status, replicas, desired, streak, now, LIMITS, can_launch)


def test_a_new_engine_launches_what_it_wants() -> None:
    assert plan([], desired=2, status=E.PROVISIONING).launch == 2
    assert plan([replica("a")], desired=2).launch == 1
    assert plan([replica("a")], desired=1) == ReplicaPlan()
    assert plan([], desired=2, can_launch=False).launch == 0


def test_a_sleeping_engine_stops_every_replica() -> None:
    result = plan([replica("a"), replica("b", ready=False, status=R.STARTING)], status=E.DEACTIVATING)
    assert result.stop == {"a": "engine Deactivating", "b": "engine Deactivating"} and result.launch == 0


def test_an_exited_replica_is_forgotten_and_replaced_after_a_backoff() -> None:
    result = plan([replica("a", exited=True, ready=False, reason="exited (code -9)")])
    assert result.gone == {"a": "exited (code -9)"}
    assert result.launch == 0  # backing off: 2 s after the first fault
    assert result.streak == CrashStreak(1, "exited (code -9)", NOW + 2)
    assert result.held_back is not None and "next try at" in result.held_back
    later = plan([], streak=result.streak, now=NOW + 2.5)
    assert later.launch == 1 and later.held_back is None


def test_backoff_doubles_then_the_engine_fails_with_the_last_reason() -> None:
    streak = CrashStreak()
    for count, delay in ((1, 2), (2, 4)):
        streak, failure = judge([Fault(f"crash {count}")], streak, NOW, LIMITS)
        assert failure is None and streak.retry_at == NOW + delay
    streak, failure = judge([Fault("crash 3")], streak, NOW, LIMITS)
    assert failure == "replica keeps failing (3 times in a row): crash 3"
    result = plan([replica("a", exited=True, ready=False, reason="crash 3")], streak=CrashStreak(2, "x", NOW))
    assert result.failure is not None and result.launch == 0


def test_a_permanent_fault_fails_at_once_with_its_own_reason() -> None:
    result = plan([replica("a", exited=True, ready=False, reason="model does not load", permanent=True)])
    assert result.failure == "model does not load" and result.launch == 0
    _, failure = judge([Fault("exited (code 1)"), Fault("cannot open", permanent=True)], CrashStreak(), NOW,
                       LIMITS)
    assert failure == "cannot open"


def test_a_replica_that_comes_up_ends_the_streak() -> None:
    streak = CrashStreak(2, "x", NOW + 100)
    came_up = replica("a", ready=True, status=R.STARTING)
    assert plan([came_up], streak=streak).streak == CrashStreak()
    # One that was up already says nothing of the one that keeps crashing beside it.
    assert plan([replica("a"), replica("b", exited=True, ready=False)], desired=2, streak=streak).streak.count == 3


def test_a_replica_that_never_becomes_ready_is_stopped() -> None:
    slow = replica("a", ready=False, status=R.STARTING, age_s=301)
    assert plan([slow]).stop == {"a": "replica did not become ready in 300 s"}
    loading = replica("a", ready=False, status=R.STARTING, age_s=200, unanswered_s=200)
    assert plan([loading]) == ReplicaPlan()  # still loading its model: not hung


def test_a_hung_replica_is_replaced_but_a_busy_one_is_not() -> None:
    hung = replica("a", ready=False, unanswered_s=31)
    result = plan([hung, replica("b")], desired=2)
    assert result.stop == {"a": "replica stopped answering its health check (31 s)"}
    assert result.launch == 0 and result.streak.count == 1  # after the backoff
    busy = replica("a", unanswered_s=0, in_flight=50)
    assert plan([busy]) == ReplicaPlan()


def test_scale_down_drains_the_least_busy_ready_replica_first() -> None:
    old_busy, young_busy, idle = (replica("old", in_flight=3, age_s=500), replica("young", in_flight=3, age_s=50),
                                  replica("idle", in_flight=0, age_s=500))
    assert plan([old_busy, young_busy, idle], desired=2).drain == ["idle"]
    assert plan([old_busy, young_busy], desired=1).drain == ["young"]
    starting = replica("new", ready=False, status=R.STARTING, age_s=5)
    result = plan([old_busy, starting], desired=1)
    assert result.stop == {"new": "scaled down"} and result.drain == []


def test_a_draining_replica_stops_once_idle_or_after_the_bound() -> None:
    draining = replica("a", status=R.DRAINING, in_flight=2, draining_s=10)
    assert plan([draining, replica("b")]) == ReplicaPlan()
    assert plan([replace_in_flight(draining, 0), replica("b")]).stop == {"a": "drained"}
    late = replica("a", status=R.DRAINING, in_flight=1, draining_s=121)
    assert plan([late, replica("b")]).stop == {"a": "still busy after draining 120 s"}


def test_a_draining_replica_does_not_count_toward_the_desired_number() -> None:
    draining = replica("a", status=R.DRAINING, in_flight=2, draining_s=10)
    assert plan([draining], desired=1).launch == 1


def replace_in_flight(observed: ObservedReplica, in_flight: int) -> ObservedReplica:
    return ObservedReplica(observed.facts, observed.status, observed.unanswered_s, in_flight, observed.draining_s)


def test_requests_another_servers_gateway_sent_keep_a_draining_replica() -> None:
    """This server's gateway forwarded nothing to it; the replica says it runs two (sent through
    another server sharing the database): it is not stopped until they end."""
    busy = ReplicaFacts("a", ready=True, exited=False, age_s=100,
                        busy=replica_busy({"status": "ready", "running": 1, "waiting": 1}))
    assert busy.busy == 2 and requests_on(busy, 0) == 2 and requests_on(busy, 5) == 5
    draining = ObservedReplica(busy, R.DRAINING, 0, requests_on(busy, 0), 10)
    assert plan([draining, replica("b")]) == ReplicaPlan()
    idle = ReplicaFacts("a", ready=True, exited=False, age_s=100, busy=replica_busy({"running": 0}))
    assert plan([ObservedReplica(idle, R.DRAINING, 0, requests_on(idle, 0), 10), replica("b")]).stop == {
        "a": "drained"}


def test_a_replica_that_says_nothing_of_its_queue_counts_as_idle() -> None:
    assert replica_busy({}) == replica_busy({"running": "3", "waiting": None}) == 0
    assert replica_busy({"running": True, "waiting": -1}) == 0  # not a count
