"""What one reconcile step reads from the database, copied out of the session so that the
network and process work that follows happens outside any transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from enginehouse.core.status import DeploymentKind, DeploymentStatus, EngineStatus
from enginehouse.db.models import DeploymentModel, EngineModel
from enginehouse.reconciler.policy import DeploymentFacts
from enginehouse.replicaauth import ReplicaAddress
from enginehouse.services import engines as engine_service


@dataclass(frozen=True)
class ReplicaRow:
    replica_id: str
    status: str
    address: ReplicaAddress  # where it answers, with its secret
    started_at: datetime


@dataclass(frozen=True)
class EngineSnapshot:
    engine_id: str
    organization_id: str
    name: str
    status: EngineStatus
    status_reason: str | None
    task_type: str
    base_model: str
    selected_option: str
    runtime_options: dict[str, Any]
    autoscaling: dict[str, Any] | None
    resource_management: dict[str, Any] | None
    last_access_at: datetime | None
    schedule_hold_until: datetime | None
    # What one replica needs in memory, from the engine's sizing (None: not sized).
    replica_bytes: int | None
    autoscaler_decision: dict[str, Any] | None
    deployments: list[DeploymentFacts]
    replicas: list[ReplicaRow]


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def load_snapshot(session: Session, engine_id: str) -> EngineSnapshot | None:
    engine = session.get(EngineModel, engine_id)
    if engine is None:
        return None
    # Only the columns a step decides on, as plain rows: an engine may hold hundreds of
    # deployments and every engine is read on every pass.
    columns = (DeploymentModel.id, DeploymentModel.name, DeploymentModel.kind, DeploymentModel.status,
               DeploymentModel.checkpoint_path)
    query = (select(*columns).where(DeploymentModel.engine_id == engine.id)
             .order_by(DeploymentModel.created_at, DeploymentModel.id))
    deployments = [
        DeploymentFacts(deployment_id=row[0], name=row[1], kind=DeploymentKind(row[2]),
                        status=DeploymentStatus(row[3]), checkpoint_path=row[4])
        for row in session.execute(query)
    ]
    replicas = [
        ReplicaRow(r.id, r.status, ReplicaAddress(r.url, r.secret), _aware(r.started_at))  # type: ignore[arg-type]
        for r in engine_service.engine_replicas(session, engine.id)
    ]
    return EngineSnapshot(
        engine_id=engine.id,
        organization_id=engine.organization_id,
        name=engine.name,
        status=EngineStatus(engine.status),
        status_reason=engine.status_reason,
        task_type=engine.task_type,
        base_model=engine.base_model,
        selected_option=(engine.selected_option or {}).get("name", "cpu"),
        runtime_options=dict(engine.runtime_options or {}),
        autoscaling=engine.autoscaling,
        resource_management=engine.resource_management_config,
        last_access_at=_aware(engine.last_access_at),
        schedule_hold_until=_aware(engine.schedule_hold_until),
        replica_bytes=((engine.selected_option or {}).get("estimate") or {}).get("total_bytes"),
        autoscaler_decision=engine.autoscaler_decision,
        deployments=deployments,
        replicas=replicas,
    )
