"""Replicas: the rows the control plane keeps of the replica processes it runs.

Each write goes through the status door (``services/status.py``) with an event on the replica's
engine: launched (``None`` → starting), ready, stopping, removed. The reconciler is the only
writer; it decides, this records.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from enginehouse.core.ids import utcnow
from enginehouse.core.status import REPLICA_REMOVED, ReplicaStatus
from enginehouse.db.models import EngineModel, ReplicaModel
from enginehouse.replicaauth import ReplicaAddress
from enginehouse.services.status import record_removed, record_replica_created, switch_replica_status


def add_replica(
    session: Session, organization_id: str, engine_id: str, replica_id: str, address: ReplicaAddress
) -> ReplicaModel:
    """Record a replica just launched, with where it answers and its secret; it is ``starting``
    until its health check says ready."""
    replica = ReplicaModel(id=replica_id, engine_id=engine_id, status=ReplicaStatus.STARTING.value,
                           url=address.url, secret=address.secret, started_at=utcnow())
    record_replica_created(session, organization_id, replica)
    return replica


def mark_replica(
    session: Session, organization_id: str, replica_id: str, status: ReplicaStatus, reason: str | None = None
) -> bool:
    """Move a replica to ``status``; False when its row is gone or it already was there."""
    replica = session.get(ReplicaModel, replica_id)
    if replica is None:
        return False
    return switch_replica_status(session, organization_id, replica, status, reason)


def remove_replica(session: Session, organization_id: str, replica_id: str, reason: str | None) -> None:
    """Forget a replica whose process is gone (stopped, exited, or given up on)."""
    replica = session.get(ReplicaModel, replica_id)
    if replica is None:
        return
    record_removed(session, organization_id, replica.engine_id, replica.id, replica.id, replica.status,
                   REPLICA_REMOVED, reason)
    session.delete(replica)


def every_replica(session: Session) -> list[tuple[ReplicaModel, str]]:
    """Every replica row with its engine's organization (a server stopping, or starting again)."""
    query = select(ReplicaModel, EngineModel.organization_id).join(
        EngineModel, EngineModel.id == ReplicaModel.engine_id
    )
    return [(replica, organization_id) for replica, organization_id in session.execute(query)]
