"""Resolve a ``model`` name to a route: the deployment, its engine and a ready replica.

Everything here reads the database; it runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from enginehouse.core.specs import is_name
from enginehouse.core.status import DeploymentKind, DeploymentStatus, EngineStatus, ReplicaStatus
from enginehouse.core.task_types import ENDPOINTS, TaskType
from enginehouse.db.models import DeploymentModel, EngineModel, ReplicaModel
from enginehouse.errors import BadRequestError, ConflictError, ModelNotFoundError, ServiceUnavailableError
from enginehouse.replicaauth import ReplicaAddress
from enginehouse.services import deployments as deployment_service


@dataclass(frozen=True)
class Target:
    """A deployment that can take the request, and the replicas that can serve it."""

    deployment_id: str
    deployment_name: str
    engine_id: str
    replicas: dict[str, ReplicaAddress]  # replica id → where it answers, with its secret
    engine_name: str = ""
    # Replica id → the headers a call forwarded to it carries, made once per route (a route is
    # reused for many calls; see gateway/cache.py).
    forward_headers: dict[str, Mapping[str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        headers = {replica_id: {**_JSON, **address.headers()} for replica_id, address in self.replicas.items()}
        object.__setattr__(self, "forward_headers", headers)

    def without(self, replica_id: str) -> Target:
        """The same route less one replica (one that just failed)."""
        return replace(self, replicas={r: address for r, address in self.replicas.items() if r != replica_id})


# The body a replica is sent is the client's JSON as it came.
_JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Waking:
    """The deployment's engine is asleep (or coming up) and wakes on demand: wait for it."""

    engine_id: str
    deployment_status: str


def resolve(session: Session, org_id: str, model: str, endpoint: str) -> Target | Waking:
    # A name no deployment can have is unknown without asking the database, which may refuse
    # the query outright (PostgreSQL takes no NUL character in text).
    deployment = deployment_service.find_deployment_by_name(session, org_id, model) if is_name(model) else None
    if deployment is None:
        raise ModelNotFoundError(f"The model {_shown(model)} does not exist", param="model")
    _check_endpoint(deployment, endpoint)
    engine = session.get(EngineModel, deployment.engine_id)
    if engine is None or engine.status == EngineStatus.DELETING.value:
        raise ServiceUnavailableError(f"the engine of '{model}' is being deleted", retry_after=5)
    if deployment.status != DeploymentStatus.DEPLOYED.value:
        if not _replaced_base(deployment, engine) and _wakes_on_demand(engine, deployment):
            return Waking(engine.id, deployment.status)
        raise _not_serving(deployment, engine)
    replicas = _ready_replicas(session, engine.id)
    if not replicas:
        if _wakes_on_demand(engine, deployment):
            return Waking(engine.id, deployment.status)
        raise ServiceUnavailableError(
            f"'{model}' has no ready replica right now (engine {engine.status})", retry_after=5
        )
    return Target(deployment.id, deployment.name, engine.id, replicas, engine.name)


def _shown(model: str) -> str:
    # An absurd name is not echoed whole (nor a control character raw).
    return repr(model[:100] + ("…" if len(model) > 100 else ""))


def _check_endpoint(deployment: DeploymentModel, endpoint: str) -> None:
    task_type = TaskType(deployment.task_type)
    fitting = ENDPOINTS[task_type]
    if endpoint not in fitting:
        raise BadRequestError(
            f"'{deployment.name}' is a {task_type.value} deployment; call {' or '.join(fitting)} "
            f"instead of {endpoint}",
            code="wrong_endpoint",
            param="model",
        )


def _wakes_on_demand(engine: EngineModel, deployment: DeploymentModel) -> bool:
    management = engine.resource_management_config or {}
    if management.get("management_type") != "inactive_timeout":
        return False
    if deployment.status == DeploymentStatus.FAILED.value:
        return False
    return engine.status in (
        EngineStatus.INACTIVE.value,
        EngineStatus.DEACTIVATING.value,
        EngineStatus.REACTIVATING.value,
        EngineStatus.ACTIVE.value,
    )


def _not_serving(deployment: DeploymentModel, engine: EngineModel) -> Exception:
    if _replaced_base(deployment, engine):
        return ConflictError(
            f"'{deployment.name}' is not serving: {deployment.status_reason}",
            code="base_replaced", param="model",
        )
    reason = f": {deployment.status_reason}" if deployment.status_reason else ""
    retry = 30 if deployment.status == DeploymentStatus.DEACTIVATED.value else 5
    if deployment.status == DeploymentStatus.FAILED.value:
        retry = 60
    return ServiceUnavailableError(
        f"'{deployment.name}' is {deployment.status}, not serving yet{reason}",
        retry_after=retry,
        code=f"deployment_{deployment.status.lower()}",
    )


def _replaced_base(deployment: DeploymentModel, engine: EngineModel) -> bool:
    """A single-model engine's base deployment while a fine-tune takes its place (SPEC §4.3)."""
    return (
        deployment.kind == DeploymentKind.BASE.value
        and not TaskType(engine.task_type).serves_lora
        and deployment.status == DeploymentStatus.DEACTIVATED.value
        and engine.status in (EngineStatus.ACTIVE.value, EngineStatus.REACTIVATING.value)
    )


def _ready_replicas(session: Session, engine_id: str) -> dict[str, ReplicaAddress]:
    query = select(ReplicaModel.id, ReplicaModel.url, ReplicaModel.secret).where(
        ReplicaModel.engine_id == engine_id, ReplicaModel.status == ReplicaStatus.READY.value
    )
    return {replica_id: ReplicaAddress(url, secret) for replica_id, url, secret in session.execute(query)}
