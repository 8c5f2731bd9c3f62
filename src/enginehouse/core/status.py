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
    # Takes no new request; stops once those it has end (scale-down).
    DRAINING = "draining"
    STOPPING = "stopping"
    FAILED = "failed"


# What an event says of a replica whose row is gone (it stopped, or it failed and was replaced).
REPLICA_REMOVED = "removed"
# What an event says of an engine or deployment removed for good (an undeployed one is Removed).
DELETED = "Deleted"
REMOVED = "Removed"


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


R = ReplicaStatus
REPLICA_TRANSITIONS: dict[ReplicaStatus, frozenset[ReplicaStatus]] = {
    R.STARTING: frozenset({R.READY, R.STOPPING, R.FAILED}),
    # ready → starting: it stopped answering as ready (reloading, or hung) and must prove itself again.
    R.READY: frozenset({R.STARTING, R.DRAINING, R.STOPPING, R.FAILED}),
    R.DRAINING: frozenset({R.STOPPING, R.FAILED}),
    R.STOPPING: frozenset({R.FAILED}),
    R.FAILED: frozenset({R.STOPPING}),
}

# The status each kind of object is created in.
INITIAL_ENGINE_STATUSES = frozenset({E.PROVISIONING})
INITIAL_DEPLOYMENT_STATUSES = frozenset({D.PENDING, D.DEPLOYING, D.DEPLOYED, D.DEACTIVATED})
INITIAL_REPLICA_STATUSES = frozenset({R.STARTING})


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


def check_replica_transition(current: ReplicaStatus, new: ReplicaStatus) -> None:
    if new != current and new not in REPLICA_TRANSITIONS[current]:
        raise TransitionError("replica", current.value, new.value)
