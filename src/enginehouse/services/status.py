"""The one door for status changes: check the transition table, write, record an event.

Every status an engine, deployment or replica takes goes through here, its first one included,
and each change is one event. Writes are guarded in the database: the row is updated only if it
still holds the status this writer read (``UPDATE … WHERE status = :expected``), so of two writers
that read the same status (an API call and the reconciler, say) exactly one wins and the other
gets :class:`StatusChangedError`, never a silently lost update.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from enginehouse.core.ids import utcnow
from enginehouse.core.status import (
    INITIAL_DEPLOYMENT_STATUSES,
    INITIAL_ENGINE_STATUSES,
    INITIAL_REPLICA_STATUSES,
    DeploymentStatus,
    EngineStatus,
    ReplicaStatus,
    TransitionError,
    check_deployment_transition,
    check_engine_transition,
    check_replica_transition,
)
from enginehouse.db.models import DeploymentModel, EngineModel, EventModel, ReplicaModel
from enginehouse.errors import ConflictError

StatusT = TypeVar("StatusT", bound=Enum)


class StatusChangedError(ConflictError):
    """Another writer changed the object's status since this one read it."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name} changed status meanwhile; read it again and retry",
                         code="status_changed")


def switch_engine_status(
    session: Session, engine: EngineModel, new: EngineStatus, reason: str | None = None
) -> bool:
    """Move ``engine`` to ``new``; returns False when it already was there (nothing recorded)."""
    current = EngineStatus(engine.status)
    if current == new and engine.status_reason == reason:
        return False
    _checked(check_engine_transition, current, new)
    _guarded_write(session, EngineModel, engine, current, new, reason, "engine", engine.name,
                   updated_at=utcnow())
    if current != new:
        record_event(session, engine.organization_id, engine.id, engine.id, engine.name,
                     current.value, new.value, reason)
    return True


def switch_deployment_status(
    session: Session, deployment: DeploymentModel, new: DeploymentStatus, reason: str | None = None
) -> bool:
    current = DeploymentStatus(deployment.status)
    if current == new and deployment.status_reason == reason:
        return False
    _checked(check_deployment_transition, current, new)
    _guarded_write(session, DeploymentModel, deployment, current, new, reason, "deployment",
                   deployment.name, updated_at=utcnow())
    if current != new:
        record_event(session, deployment.organization_id, deployment.engine_id, deployment.id,
                     deployment.name, current.value, new.value, reason)
    return True


def switch_replica_status(
    session: Session, organization_id: str, replica: ReplicaModel, new: ReplicaStatus,
    reason: str | None = None,
) -> bool:
    """As for engines; a replica's events are its engine's (``organization_id`` is the engine's)."""
    current = ReplicaStatus(replica.status)
    if current == new and replica.status_reason == reason:
        return False
    _checked(check_replica_transition, current, new)
    _guarded_write(session, ReplicaModel, replica, current, new, reason, "replica", replica.id)
    if current != new:
        record_event(session, organization_id, replica.engine_id, replica.id, replica.id,
                     current.value, new.value, reason)
    return True


def record_engine_created(session: Session, engine: EngineModel) -> None:
    """A new engine's first status, as an event (``None`` → its status)."""
    _check_initial(EngineStatus(engine.status), INITIAL_ENGINE_STATUSES, "engine")
    session.add(engine)
    record_event(session, engine.organization_id, engine.id, engine.id, engine.name, None,
                 engine.status, engine.status_reason or "created")


def record_deployment_created(session: Session, deployment: DeploymentModel, reason: str = "created") -> None:
    _check_initial(DeploymentStatus(deployment.status), INITIAL_DEPLOYMENT_STATUSES, "deployment")
    session.add(deployment)
    record_event(session, deployment.organization_id, deployment.engine_id, deployment.id,
                 deployment.name, None, deployment.status, reason)


def record_replica_created(session: Session, organization_id: str, replica: ReplicaModel) -> None:
    _check_initial(ReplicaStatus(replica.status), INITIAL_REPLICA_STATUSES, "replica")
    session.add(replica)
    record_event(session, organization_id, replica.engine_id, replica.id, replica.id, None,
                 replica.status, replica.status_reason or "launched")


def record_removed(
    session: Session, organization_id: str, engine_id: str, object_id: str, name: str,
    last_status: str, removed_as: str, reason: str | None,
) -> None:
    """The last event of an object whose row is being deleted (``removed_as`` says how)."""
    record_event(session, organization_id, engine_id, object_id, name, last_status, removed_as, reason)


def record_event(
    session: Session,
    organization_id: str,
    engine_id: str,
    object_id: str,
    object_name: str,
    from_status: str | None,
    to_status: str,
    reason: str | None,
) -> None:
    session.add(
        EventModel(
            organization_id=organization_id,
            engine_id=engine_id,
            object_id=object_id,
            object_name=object_name,
            from_status=from_status,
            to_status=to_status,
            reason=reason,
            at=utcnow(),
        )
    )


def _guarded_write(
    session: Session, model: Any, row: Any, expected: Enum, new: Enum, reason: str | None,
    kind: str, name: str, **also: Any,
) -> None:
    """``UPDATE … SET status = new WHERE id = … AND status = expected``; the loser of a race
    gets :class:`StatusChangedError`. The object in the session is brought in line with what
    was written, so the ORM does not write it again."""
    session.flush()  # the row's other pending changes (and the row itself, when new) go first
    values = {"status": new.value, "status_reason": reason, **also}
    result = session.execute(
        update(model).where(model.id == row.id, model.status == expected.value).values(**values),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StatusChangedError(kind, name)
    for key, value in values.items():
        set_committed_value(row, key, value)


def _check_initial(status: StatusT, allowed: frozenset[StatusT], kind: str) -> None:
    if status not in allowed:
        raise ValueError(f"a new {kind} cannot start as {status.value}")


def _checked(check: Callable[[Any, Any], None], current: Enum, new: Enum) -> None:
    try:
        check(current, new)
    except TransitionError as exc:
        raise ConflictError(
            f"{exc}: it is {exc.current}", code="invalid_status_transition"
        ) from None
