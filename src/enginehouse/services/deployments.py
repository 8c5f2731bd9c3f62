"""Deployments: the named model versions served on an engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from enginehouse.core.ids import new_id, utcnow
from enginehouse.core.options import OptionOffer
from enginehouse.core.specs import (
    BaseSource,
    DeploymentSource,
    EngineSpec,
    ExperimentSource,
    TrainingJobSource,
)
from enginehouse.core.status import REMOVED, DeploymentKind, DeploymentStatus, EngineStatus
from enginehouse.core.task_types import TaskType
from enginehouse.db.models import DeploymentModel, EngineModel, OrganizationModel
from enginehouse.errors import ConflictError, NotFoundError, ValidationFailedError
from enginehouse.services.experiments import version_checkpoint
from enginehouse.services import engines as engine_service
from enginehouse.services.checkpoints import checkpoint_metadata
from enginehouse.services.engines import DEPLOYMENT_FIELDS
from enginehouse.services.pages import Page, PageRequest, newest_first
from enginehouse.services.reads import epoch_seconds, read, read_columns
from enginehouse.services.status import record_deployment_created, record_removed
from enginehouse.services.training_jobs import get_checkpoint, get_training_job

# The status a new fine-tuned deployment starts in, by its engine's status (SPEC §4.2).
_INITIAL_STATUS: dict[EngineStatus, DeploymentStatus] = {
    EngineStatus.PROVISIONING: DeploymentStatus.PENDING,
    EngineStatus.ACTIVE: DeploymentStatus.DEPLOYING,
    EngineStatus.REACTIVATING: DeploymentStatus.REACTIVATING,
    EngineStatus.DEACTIVATING: DeploymentStatus.DEACTIVATED,
    EngineStatus.INACTIVE: DeploymentStatus.DEACTIVATED,
}


def deploy(
    session: Session, org_id: str, engine_id: str, name: str, source: DeploymentSource
) -> DeploymentModel:
    """Add a fine-tuned deployment of ``source`` to the engine."""
    engine = engine_service.get_engine(session, org_id, engine_id)
    if isinstance(source, BaseSource):
        raise ValidationFailedError(
            "the base deployment is created with its engine; deploy a training_job or experiment",
            param="source",
        )
    initial = _INITIAL_STATUS.get(EngineStatus(engine.status))
    if initial is None:
        raise ConflictError(
            f"engine {engine.name} is {engine.status}; nothing can be deployed onto it",
            code="invalid_status_transition",
        )
    task_type, path = _resolve_source(session, org_id, source)
    if task_type != engine.task_type:
        raise ConflictError(
            f"the checkpoint's task type is {task_type} but engine {engine.name} serves "
            f"{engine.task_type}; create an engine for {task_type}",
            code="task_type_mismatch",
        )
    if engine_service.name_taken(session, org_id, name):
        raise ConflictError(f"the name {name!r} is already taken", code="name_taken", param="name")
    _check_single_model_room(session, engine)
    now = utcnow()
    deployment = DeploymentModel(
        id=new_id("dp"),
        organization_id=org_id,
        engine_id=engine.id,
        name=name,
        kind=DeploymentKind.FINE_TUNED.value,
        source=source.model_dump(),
        checkpoint_path=path,
        status=initial.value,
        task_type=engine.task_type,
        metadata_=checkpoint_metadata(TaskType(engine.task_type), Path(path)),
        created_at=now,
        updated_at=now,
    )
    record_deployment_created(session, deployment)
    session.flush()
    return deployment


def _check_single_model_room(session: Session, engine: EngineModel) -> None:
    """A single-model engine serves one fine-tuned deployment at a time (SPEC §4.3)."""
    if TaskType(engine.task_type).serves_lora:
        return
    for other in engine_service.engine_deployments(session, engine.id):
        if other.kind == DeploymentKind.FINE_TUNED.value:
            raise ConflictError(
                f"engine {engine.name} ({engine.task_type}) serves one model at a time and already "
                f"serves fine-tuned deployment '{other.name}'; remove it first",
                code="engine_occupied",
            )


def _resolve_source(session: Session, org_id: str, source: DeploymentSource) -> tuple[str, str]:
    """(task type, checkpoint directory) of what the source names."""
    if isinstance(source, TrainingJobSource):
        job = get_training_job(session, org_id, source.training_id)
        checkpoint = get_checkpoint(session, org_id, source.training_id, source.checkpoint)
        return job.task_type, checkpoint.path
    if isinstance(source, ExperimentSource):
        return version_checkpoint(session, org_id, source.experiment_id, source.version)
    raise ValidationFailedError("unsupported source", param="source")


def create_with_engine(
    session: Session, org_id: str, name: str, source: DeploymentSource, engine_spec: EngineSpec,
    *, max_replicas: int | None = None, offers: Sequence[OptionOffer] | None = None,
) -> DeploymentModel:
    """Create an engine and a deployment on it in one step (one transaction); ``max_replicas``
    and ``offers`` as for ``engines.create_engine``."""
    if name == engine_spec.name:
        raise ConflictError(
            f"the deployment and its new engine cannot both be named {name!r}", code="name_taken"
        )
    engine = engine_service.create_engine(session, org_id, engine_spec, max_replicas=max_replicas,
                                          offers=offers)
    return deploy(session, org_id, engine.id, name, source)


def create_base_deployment(session: Session, engine: EngineModel) -> DeploymentModel:
    """The base deployment appears when its engine first becomes Active."""
    now = utcnow()
    deployment = DeploymentModel(
        id=new_id("dp"),
        organization_id=engine.organization_id,
        engine_id=engine.id,
        name=engine.name,
        kind=DeploymentKind.BASE.value,
        source=BaseSource(type="base").model_dump(),
        checkpoint_path=None,
        status=DeploymentStatus.DEPLOYED.value,
        task_type=engine.task_type,
        metadata_=checkpoint_metadata(TaskType(engine.task_type), Path(engine.base_model)),
        created_at=now,
        updated_at=now,
    )
    record_deployment_created(session, deployment, "engine became Active")
    session.flush()
    return deployment


def read_deployment(session: Session, org_id: str, deployment_id: str) -> Row[Any]:
    query = select(*read_columns(session, DeploymentModel, DEPLOYMENT_FIELDS)).where(
        DeploymentModel.id == deployment_id, DeploymentModel.organization_id == org_id
    )
    row = read(session, query).first()
    if row is None:
        raise NotFoundError(f"deployment {deployment_id!r} not found", param="deployment_id")
    return row


def list_deployments(
    session: Session, org_id: str, page: PageRequest, engine_id: str | None = None
) -> Page[Row[Any]]:
    """A page of the organization's deployments, newest first; only one engine's with
    ``engine_id`` (404 when the organization has no such engine)."""
    query = select(*read_columns(session, DeploymentModel, DEPLOYMENT_FIELDS)).where(
        DeploymentModel.organization_id == org_id
    )
    if engine_id is not None:
        engine_service.get_engine(session, org_id, engine_id)
        query = query.where(DeploymentModel.engine_id == engine_id)
    return newest_first(session, query, DeploymentModel, org_id, page, "deployment")


@dataclass(frozen=True)
class ModelList:
    """What ``GET /v1/models`` shows: the organization's name and its callable deployments."""

    owner: str | None
    # Rows of name, created (epoch seconds), kind, status, task_type, engine_id.
    models: list[Row[Any]]
    # Engine id → its base deployment's name: an adapter's parent.
    base_names: dict[str, str]


def list_models(session: Session, org_id: str) -> ModelList:
    """Every deployment a client can call (all but Failed ones), oldest first, in one answer:
    OpenAI clients read ``/v1/models`` whole. Three queries, whatever the count."""
    owner = session.scalar(select(OrganizationModel.name).where(OrganizationModel.id == org_id))
    bases = select(DeploymentModel.engine_id, DeploymentModel.name).where(
        DeploymentModel.organization_id == org_id,
        DeploymentModel.kind == DeploymentKind.BASE.value,
    )
    query = (
        select(
            DeploymentModel.name,
            epoch_seconds(session, DeploymentModel.created_at).label("created"),
            DeploymentModel.kind,
            DeploymentModel.status,
            DeploymentModel.task_type,
            DeploymentModel.engine_id,
        )
        .where(
            DeploymentModel.organization_id == org_id,
            DeploymentModel.status != DeploymentStatus.FAILED.value,
        )
        .order_by(DeploymentModel.created_at, DeploymentModel.id)
    )
    base_names = {engine_id: name for engine_id, name in read(session, bases)}
    return ModelList(owner, read(session, query).all(), base_names)


def get_deployment(session: Session, org_id: str, deployment_id: str) -> DeploymentModel:
    deployment = session.get(DeploymentModel, deployment_id)
    if deployment is None or deployment.organization_id != org_id:
        raise NotFoundError(f"deployment {deployment_id!r} not found", param="deployment_id")
    return deployment


def find_deployment_by_name(session: Session, org_id: str, name: str) -> DeploymentModel | None:
    query = select(DeploymentModel).where(
        DeploymentModel.organization_id == org_id, DeploymentModel.name == name
    )
    return session.scalar(query)


def remove_deployment(session: Session, org_id: str, deployment_id: str) -> DeploymentModel:
    """Forget the deployment; the reconciler unloads it from the replicas. Requests already
    running on it are let finish by the replica."""
    deployment = get_deployment(session, org_id, deployment_id)
    if deployment.kind == DeploymentKind.BASE.value:
        raise ConflictError(
            f"{deployment.name} is its engine's base deployment; it goes away only with the "
            "engine (DELETE /v1/engines/{id})",
            code="base_deployment",
        )
    record_removed(session, org_id, deployment.engine_id, deployment.id, deployment.name,
                   deployment.status, REMOVED, "undeploy requested")
    session.delete(deployment)
    return deployment


def undeploy(session: Session, org_id: str, engine_id: str, deployment_name: str) -> DeploymentModel:
    engine = engine_service.get_engine(session, org_id, engine_id)
    deployment = find_deployment_by_name(session, org_id, deployment_name)
    if deployment is None or deployment.engine_id != engine.id:
        raise NotFoundError(
            f"engine {engine.name} has no deployment named {deployment_name!r}",
            param="deployment_name",
        )
    return remove_deployment(session, org_id, deployment.id)

