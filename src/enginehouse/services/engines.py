"""Engines: create, read, deactivate, reactivate, delete. The reconciler does the actual work;
these functions only record what should be and move statuses through the one door."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from enginehouse.core import options
from enginehouse.core.ids import new_id, utcnow
from enginehouse.core.specs import EngineSpec
from enginehouse.core.status import DeploymentKind, DeploymentStatus, EngineStatus
from enginehouse.core.task_types import SERVABLE_TASK_TYPES, TaskType
from enginehouse.db.models import DeploymentModel, EngineModel, EventModel, ReplicaModel
from enginehouse.errors import ConflictError, NotFoundError, ValidationFailedError
from enginehouse.services.status import record_event, switch_deployment_status, switch_engine_status


def name_taken(session: Session, org_id: str, name: str) -> bool:
    """Engines and deployments share one namespace per organization (the base deployment is
    named after its engine)."""
    for model in (EngineModel, DeploymentModel):
        query = select(model.id).where(model.organization_id == org_id, model.name == name)
        if session.scalar(query) is not None:
            return True
    return False


def create_engine(
    session: Session, org_id: str, spec: EngineSpec, *, max_replicas: int | None = None
) -> EngineModel:
    """``max_replicas``: the most replicas this server lets one engine run (None: no limit)."""
    _check_replica_ceiling(spec, max_replicas)
    if spec.task_type not in SERVABLE_TASK_TYPES:
        served = ", ".join(sorted(t.value for t in SERVABLE_TASK_TYPES))
        raise ValidationFailedError(
            f"task type {spec.task_type.value!r} is not served by this installation yet "
            f"(served: {served})",
            param="task_type",
        )
    if spec.deployment_option != "auto" and spec.deployment_option not in options.option_names():
        known = ", ".join(["auto", *sorted(options.option_names())])
        raise ValidationFailedError(
            f"unknown deployment_option {spec.deployment_option!r} (known: {known})",
            param="deployment_option",
        )
    if name_taken(session, org_id, spec.name):
        raise ConflictError(f"the name {spec.name!r} is already taken", code="name_taken", param="name")
    selected, reason = _select_option(spec)
    now = utcnow()
    engine = EngineModel(
        id=new_id("engine"),
        organization_id=org_id,
        name=spec.name,
        task_type=spec.task_type.value,
        base_model=spec.base_model,
        status=EngineStatus.PROVISIONING.value,
        deployment_option=spec.deployment_option,
        selected_option={"name": selected, "reason": reason},
        autoscaling=spec.autoscaling.model_dump() if spec.autoscaling else None,
        resource_management_config=(
            spec.resource_management_config.model_dump()
            if spec.resource_management_config
            else None
        ),
        runtime_options=spec.runtime_options.model_dump(exclude_none=True),
        created_at=now,
        updated_at=now,
        last_access_at=now,
    )
    if selected not in options.available_option_names():
        engine.status_reason = (
            f"waiting for deployment option {selected!r}: this installation cannot provide it"
        )
    session.add(engine)
    session.flush()
    record_event(session, org_id, engine.id, engine.id, engine.name, None,
                 EngineStatus.PROVISIONING.value, engine.status_reason or "created")
    return engine


def _check_replica_ceiling(spec: EngineSpec, ceiling: int | None) -> None:
    if ceiling is None or spec.autoscaling is None:
        return
    for field in ("min_replicas", "max_replicas"):
        wanted = getattr(spec.autoscaling, field)
        if wanted > ceiling:
            raise ValidationFailedError(
                f"autoscaling.{field} is {wanted}, over this server's limit of {ceiling} replicas per "
                f"engine; ask for at most {ceiling} (the operator sets the limit with "
                "ENGINEHOUSE_MAX_REPLICAS_PER_ENGINE)",
                param=f"autoscaling.{field}",
            )


def _select_option(spec: EngineSpec) -> tuple[str, str]:
    if spec.deployment_option == "auto":
        return options.resolve_auto(spec.base_model)
    return spec.deployment_option, "chosen in the engine's deployment_option"


def list_engines(
    session: Session, org_id: str, task_type: str | None = None, base_model: str | None = None
) -> list[EngineModel]:
    query = select(EngineModel).where(EngineModel.organization_id == org_id)
    if task_type:
        query = query.where(EngineModel.task_type == task_type)
    if base_model:
        query = query.where(EngineModel.base_model == base_model)
    return list(session.scalars(query.order_by(EngineModel.created_at)))


def get_engine(session: Session, org_id: str, engine_id: str) -> EngineModel:
    engine = session.get(EngineModel, engine_id)
    if engine is None or engine.organization_id != org_id:
        raise NotFoundError(f"engine {engine_id!r} not found", param="engine_id")
    return engine


def engine_deployments(session: Session, engine_id: str) -> list[DeploymentModel]:
    query = (
        select(DeploymentModel)
        .where(DeploymentModel.engine_id == engine_id)
        .order_by(DeploymentModel.created_at)
    )
    return list(session.scalars(query))


def engine_replicas(session: Session, engine_id: str) -> list[ReplicaModel]:
    query = select(ReplicaModel).where(ReplicaModel.engine_id == engine_id)
    return list(session.scalars(query.order_by(ReplicaModel.started_at)))


def delete_engine(session: Session, org_id: str, engine_id: str) -> EngineModel:
    engine = get_engine(session, org_id, engine_id)
    switch_engine_status(session, engine, EngineStatus.DELETING, "deletion requested")
    return engine


def deactivate_engine(
    session: Session, org_id: str, engine_id: str, reason: str = "deactivation requested"
) -> EngineModel:
    engine = get_engine(session, org_id, engine_id)
    if engine.status != EngineStatus.ACTIVE.value:
        raise ConflictError(
            f"engine {engine.name} is {engine.status}; only an Active engine can be deactivated",
            code="invalid_status_transition",
        )
    switch_engine_status(session, engine, EngineStatus.DEACTIVATING, reason)
    return engine


def reactivate_engine(
    session: Session, org_id: str, engine_id: str, reason: str = "reactivation requested"
) -> EngineModel:
    engine = get_engine(session, org_id, engine_id)
    if engine.status != EngineStatus.INACTIVE.value:
        raise ConflictError(
            f"engine {engine.name} is {engine.status}; only an Inactive engine can be reactivated",
            code="invalid_status_transition",
        )
    switch_engine_status(session, engine, EngineStatus.REACTIVATING, reason)
    deployments = engine_deployments(session, engine.id)
    # On a single-model engine a fine-tuned deployment keeps the base model replaced.
    base_replaced = not TaskType(engine.task_type).serves_lora and any(
        d.kind == DeploymentKind.FINE_TUNED.value for d in deployments
    )
    for deployment in deployments:
        if deployment.kind == DeploymentKind.BASE.value and base_replaced:
            continue
        if deployment.status == DeploymentStatus.DEACTIVATED.value:
            switch_deployment_status(session, deployment, DeploymentStatus.REACTIVATING,
                                     "engine reactivating")
    return engine


def engine_events(session: Session, org_id: str, engine_id: str) -> list[EventModel]:
    get_engine(session, org_id, engine_id)
    query = (
        select(EventModel)
        .where(EventModel.engine_id == engine_id, EventModel.organization_id == org_id)
        .order_by(EventModel.id)
    )
    return list(session.scalars(query))


def touch_engine(session: Session, engine_id: str) -> None:
    """Record an inference request (the inactive timeout counts from the last one)."""
    engine = session.get(EngineModel, engine_id)
    if engine is not None:
        engine.last_access_at = utcnow()
