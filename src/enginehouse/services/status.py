"""The one door for status changes: check the transition table, write, record an event."""

from __future__ import annotations

from sqlalchemy.orm import Session

from enginehouse.core.ids import utcnow
from enginehouse.core.status import (
    DeploymentStatus,
    EngineStatus,
    TransitionError,
    check_deployment_transition,
    check_engine_transition,
)
from enginehouse.db.models import DeploymentModel, EngineModel, EventModel
from enginehouse.errors import ConflictError


def switch_engine_status(
    session: Session, engine: EngineModel, new: EngineStatus, reason: str | None = None
) -> bool:
    """Move ``engine`` to ``new``; returns False when it already was there (nothing recorded)."""
    current = EngineStatus(engine.status)
    if current == new and engine.status_reason == reason:
        return False
    _checked(check_engine_transition, current, new)
    engine.status = new.value
    engine.status_reason = reason
    engine.updated_at = utcnow()
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
    deployment.status = new.value
    deployment.status_reason = reason
    deployment.updated_at = utcnow()
    if current != new:
        record_event(session, deployment.organization_id, deployment.engine_id, deployment.id,
                     deployment.name, current.value, new.value, reason)
    return True


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


def _checked(check, current, new) -> None:  # type: ignore[no-untyped-def]
    try:
        check(current, new)
    except TransitionError as exc:
        raise ConflictError(
            f"{exc}: it is {exc.current}", code="invalid_status_transition"
        ) from None
