"""Pure decisions of the reconciler: plain values in, decisions out. No I/O, unit-tested."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from enginehouse.core.resource_management import next_transition
from enginehouse.core.status import DeploymentKind, DeploymentStatus, EngineStatus

D = DeploymentStatus


@dataclass(frozen=True)
class ReplicaFacts:
    """What was observed of one replica in this step."""

    replica_id: str
    ready: bool  # answered /health with status ready
    exited: bool
    exit_reason: str | None = None
    permanent_failure: bool = False  # the replica declared it cannot come up
    loaded: dict[str, str] = field(default_factory=dict)  # fine-tune name → checkpoint path
    age_s: float = 0.0
    # False while a single-model replica serves a fine-tuned model in place of its base model.
    base_served: bool = True
    # Its health check answered (ready or not); False when it did not answer at all.
    answered: bool = True
    # Requests the replica itself says it is running or holding (its /health): the calls every
    # server's gateway sent it, where this server's gateway counts only its own.
    busy: int = 0


@dataclass(frozen=True)
class DeploymentFacts:
    deployment_id: str
    name: str
    kind: DeploymentKind
    status: DeploymentStatus
    checkpoint_path: str | None


@dataclass(frozen=True)
class Fault:
    """Something that kept a replica from serving: it exited, did not start in time, or could not
    be launched. ``permanent`` when trying again cannot help (the replica or provider said so)."""

    reason: str
    permanent: bool = False


@dataclass(frozen=True)
class CrashStreak:
    """Transient faults of an engine's replicas since one was last ready."""

    count: int = 0
    last_reason: str | None = None
    # Wall-clock seconds before which no replica is launched (the backoff after the last fault).
    retry_at: float = 0.0


@dataclass(frozen=True)
class LoadTries:
    """An adapter's failed loads in a row that a retry may fix (a timeout, a replica's 5xx)."""

    count: int = 0
    retry_at: float = 0.0  # wall-clock seconds before which it is not tried again


def after_load_error(
    tries: LoadTries, reason: str, now: float, max_tries: int = 4, backoff_base_s: float = 1.0
) -> tuple[LoadTries, str | None]:
    """The tries after one more transient load error, and the deployment's failure once
    ``max_tries`` of them came in a row (None: try again after a backoff that doubles)."""
    count = tries.count + 1
    if count >= max_tries:
        return LoadTries(count), f"could not load the adapter ({count} tries): {reason}"
    return LoadTries(count, now + backoff_base_s * 2 ** (count - 1)), None


def desired_adapters(deployments: list[DeploymentFacts]) -> dict[str, str]:
    """The adapters every ready replica should hold: each fine-tuned deployment not Failed."""
    return {
        d.name: d.checkpoint_path
        for d in deployments
        if d.kind is DeploymentKind.FINE_TUNED and d.status is not D.FAILED and d.checkpoint_path
    }


def holds_all(replica: ReplicaFacts, desired: dict[str, str]) -> bool:
    """Whether the replica holds every adapter in ``desired`` (name → checkpoint path)."""
    return all(replica.loaded.get(name) == path for name, path in desired.items())


def plan_adapters(desired: dict[str, str], loaded: dict[str, str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(what to load as (name, path), what to unload) to make ``loaded`` equal ``desired``.

    A name whose path changed (a deployment removed and a new one made under the same name)
    is unloaded first, then loaded from the new path.
    """
    unload = [name for name, path in loaded.items() if desired.get(name) != path]
    load = [(name, path) for name, path in desired.items() if loaded.get(name) != path]
    return load, unload


def derive_engine_status(
    status: EngineStatus, replicas: list[ReplicaFacts], failure: str | None
) -> tuple[EngineStatus, str | None] | None:
    """The engine status the observed replicas imply, or None to leave it as it is.

    ``failure`` is a reason the engine cannot come up (declared by a replica, a start that timed
    out too often, or a crash loop).
    """
    live = [r for r in replicas if not r.exited]
    if status.wants_replicas:
        if failure is not None:
            return EngineStatus.FAILED, failure
        if status.coming_up and any(r.ready for r in live):
            return EngineStatus.ACTIVE, None
        return None
    if status is EngineStatus.DEACTIVATING and not live:
        return EngineStatus.INACTIVE, None
    return None


def derive_deployment_status(
    engine_status: EngineStatus,
    engine_reason: str | None,
    deployment: DeploymentFacts,
    ready_replicas: list[ReplicaFacts],
    load_error: str | None,
    replaced_by: str | None = None,
) -> tuple[DeploymentStatus, str | None]:
    """The status a deployment should have given its engine and what its replicas hold.

    ``replaced_by`` names the fine-tuned deployment that a single-model engine serves in place of
    its base model (SPEC §4.3); the base deployment is Deactivated meanwhile.
    """
    current = deployment.status
    if current is D.FAILED:
        return current, None
    if engine_status is EngineStatus.FAILED:
        return D.FAILED, f"engine failed: {engine_reason}" if engine_reason else "engine failed"
    if deployment.kind is DeploymentKind.BASE and replaced_by is not None:
        return D.DEACTIVATED, replaced_reason(replaced_by)
    if engine_status in (EngineStatus.DEACTIVATING, EngineStatus.INACTIVE):
        return D.DEACTIVATED, None
    if load_error is not None:
        return D.FAILED, load_error
    if ready_replicas and all(_serves(r, deployment) for r in ready_replicas):
        if engine_status in (EngineStatus.ACTIVE, EngineStatus.REACTIVATING):
            return D.DEPLOYED, None
    if engine_status is EngineStatus.PROVISIONING:
        return D.PENDING, None
    if current in (D.REACTIVATING, D.DEACTIVATED) or engine_status is EngineStatus.REACTIVATING:
        return D.REACTIVATING, None
    return D.DEPLOYING, None


def _serves(replica: ReplicaFacts, deployment: DeploymentFacts) -> bool:
    if deployment.kind is DeploymentKind.BASE:
        return replica.ready and replica.base_served
    return replica.loaded.get(deployment.name) == deployment.checkpoint_path


def replaced_reason(fine_tuned_name: str) -> str:
    return f"replaced by fine-tuned deployment '{fine_tuned_name}' (this engine serves one model at a time)"


def single_model_replacement(deployments: list[DeploymentFacts]) -> str | None:
    """On a single-model engine: the fine-tuned deployment that takes the base model's place."""
    for deployment in deployments:
        if deployment.kind is DeploymentKind.FINE_TUNED and deployment.status is not D.FAILED:
            return deployment.name
    return None


def at_rest(status: EngineStatus, management: dict[str, Any] | None, has_replicas: bool) -> bool:
    """An engine a step would find nothing to do for: Inactive or Failed, no replica left to stop,
    and no schedule that could open its window. It moves again only by an API call (or a waking
    request), which changes its status, so it is stepped again from then on."""
    if status not in (EngineStatus.INACTIVE, EngineStatus.FAILED) or has_replicas:
        return False
    return not (management and management.get("management_type") == "schedule")


def next_step_in(
    status: EngineStatus,
    management: dict[str, Any] | None,
    has_replicas: bool,
    last_access: datetime | None,
    hold_until: datetime | None,
    now: datetime,
    busy_interval_s: float,
) -> float | None:
    """Seconds until an engine needs its next step on its own account (replicas to watch, a
    transition under way, a schedule falling due); None when only a change to it (an API write,
    a waking request) or the slow periodic resync has anything for a step to do."""
    if status not in (EngineStatus.INACTIVE, EngineStatus.FAILED) or has_replicas:
        return busy_interval_s  # its replicas' health checks, launches and drains are due
    upcoming = next_transition(status, management, last_access, hold_until, now)
    if upcoming is None:
        return None
    return max(0.0, (upcoming.at - now).total_seconds())


def replica_busy(health_body: dict[str, object]) -> int:
    """Requests a replica reports running and waiting in its /health answer (0 when it says
    nothing of them, as a replica of a task type without a queue does)."""
    total = 0
    for key in ("running", "waiting"):
        value = health_body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            total += value
    return total


def requests_on(facts: ReplicaFacts, gateway_in_flight: int) -> int:
    """The requests a replica has now, as far as anyone knows: this server's gateway sees only
    the calls it forwarded, the replica sees every server's (but not one still on its way)."""
    return max(gateway_in_flight, facts.busy)
