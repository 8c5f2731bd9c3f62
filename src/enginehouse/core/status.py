"""Status enums and their transition tables (SPEC §4.1, §4.2).

Every status write goes through ``services.status.switch_*_status``, which asks
``check_transition`` here first; an impossible transition is a 409 that names the current status.
"""

from __future__ import annotations

from enum import Enum


class EngineStatus(str, Enum):
    PROVISIONING = "Provisioning"
    ACTIVE = "Active"
    DEACTIVATING = "Deactivating"
    INACTIVE = "Inactive"
    REACTIVATING = "Reactivating"
    DELETING = "Deleting"
    FAILED = "Failed"

    @property
    def wants_replicas(self) -> bool:
        """Statuses in which the engine's replicas should be running (or coming up)."""
        return self in (EngineStatus.PROVISIONING, EngineStatus.ACTIVE, EngineStatus.REACTIVATING)

    @property
    def coming_up(self) -> bool:
        return self in (EngineStatus.PROVISIONING, EngineStatus.REACTIVATING)


class DeploymentStatus(str, Enum):
    PENDING = "Pending"
    DEPLOYING = "Deploying"
    DEPLOYED = "Deployed"
    REACTIVATING = "Reactivating"
    DEACTIVATED = "Deactivated"
    FAILED = "Failed"


class DeploymentKind(str, Enum):
    BASE = "base"
    FINE_TUNED = "fine-tuned"


class ReplicaStatus(str, Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    FAILED = "failed"


E = EngineStatus
ENGINE_TRANSITIONS: dict[EngineStatus, frozenset[EngineStatus]] = {
    E.PROVISIONING: frozenset({E.ACTIVE, E.FAILED, E.DELETING}),
    E.ACTIVE: frozenset({E.DEACTIVATING, E.DELETING, E.FAILED}),
    E.DEACTIVATING: frozenset({E.INACTIVE, E.DELETING}),
    E.INACTIVE: frozenset({E.REACTIVATING, E.DELETING}),
    E.REACTIVATING: frozenset({E.ACTIVE, E.FAILED, E.DELETING}),
    E.FAILED: frozenset({E.DELETING}),
    E.DELETING: frozenset(),
}

D = DeploymentStatus
DEPLOYMENT_TRANSITIONS: dict[DeploymentStatus, frozenset[DeploymentStatus]] = {
    D.PENDING: frozenset({D.DEPLOYING, D.DEPLOYED, D.DEACTIVATED, D.FAILED}),
    # Deploying → Pending: the engine lost its replica while loading and is coming up again.
    D.DEPLOYING: frozenset({D.DEPLOYED, D.FAILED, D.DEACTIVATED, D.PENDING}),
    # Deployed → Deploying: a replica died and is being healed; the deployment reloads onto it.
    D.DEPLOYED: frozenset({D.DEACTIVATED, D.DEPLOYING, D.FAILED}),
    D.REACTIVATING: frozenset({D.DEPLOYED, D.FAILED, D.DEACTIVATED}),
    D.DEACTIVATED: frozenset({D.REACTIVATING, D.DEPLOYING}),
    D.FAILED: frozenset(),
}


class TransitionError(Exception):
    def __init__(self, kind: str, current: str, requested: str) -> None:
        super().__init__(f"cannot move {kind} from {current} to {requested}")
        self.current = current
        self.requested = requested


def check_engine_transition(current: EngineStatus, new: EngineStatus) -> None:
    if new != current and new not in ENGINE_TRANSITIONS[current]:
        raise TransitionError("engine", current.value, new.value)


def check_deployment_transition(current: DeploymentStatus, new: DeploymentStatus) -> None:
    if new != current and new not in DEPLOYMENT_TRANSITIONS[current]:
        raise TransitionError("deployment", current.value, new.value)
