"""/v1/engines: thin handlers, one service call each."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from enginehouse.api.deps import OrgDep, ReplicaCeilingDep, SessionDep
from enginehouse.api.schemas import DeployRequest, UndeployRequest
from enginehouse.api.views import deployment_to_dict, engine_to_dict, event_to_dict
from enginehouse.core.specs import EngineSpec
from enginehouse.db.models import EngineModel
from enginehouse.services import deployments as deployment_service
from enginehouse.services import engines as engine_service
from sqlalchemy.orm import Session

router = APIRouter(prefix="/v1/engines", tags=["engines"])


def _engine_view(request: Request, session: Session, engine: EngineModel) -> dict[str, Any]:
    in_flight = request.app.state.gateway.in_flight_by_replica()
    return engine_to_dict(
        engine,
        engine_service.engine_deployments(session, engine.id),
        engine_service.engine_replicas(session, engine.id),
        in_flight,
    )


@router.post("", status_code=201)
def create_engine(
    spec: EngineSpec, request: Request, session: SessionDep, org: OrgDep, max_replicas: ReplicaCeilingDep
) -> dict[str, Any]:
    engine = engine_service.create_engine(session, org, spec, max_replicas=max_replicas)
    return _engine_view(request, session, engine)


@router.get("")
def list_engines(
    request: Request,
    session: SessionDep,
    org: OrgDep,
    task_type: str | None = None,
    base_model: str | None = None,
) -> dict[str, Any]:
    engines = engine_service.list_engines(session, org, task_type, base_model)
    return {"object": "list", "data": [_engine_view(request, session, e) for e in engines]}


@router.get("/{engine_id}")
def get_engine(engine_id: str, request: Request, session: SessionDep, org: OrgDep) -> dict[str, Any]:
    return _engine_view(request, session, engine_service.get_engine(session, org, engine_id))


@router.delete("/{engine_id}", status_code=202)
def delete_engine(engine_id: str, request: Request, session: SessionDep, org: OrgDep) -> dict[str, Any]:
    engine = engine_service.delete_engine(session, org, engine_id)
    return _engine_view(request, session, engine)


@router.post("/{engine_id}/deactivate", status_code=202)
def deactivate_engine(
    engine_id: str, request: Request, session: SessionDep, org: OrgDep
) -> dict[str, Any]:
    engine = engine_service.deactivate_engine(session, org, engine_id)
    return _engine_view(request, session, engine)


@router.post("/{engine_id}/reactivate", status_code=202)
def reactivate_engine(
    engine_id: str, request: Request, session: SessionDep, org: OrgDep
) -> dict[str, Any]:
    engine = engine_service.reactivate_engine(session, org, engine_id)
    return _engine_view(request, session, engine)


@router.post("/{engine_id}/deploy", status_code=201)
def deploy(engine_id: str, body: DeployRequest, session: SessionDep, org: OrgDep) -> dict[str, Any]:
    deployment = deployment_service.deploy(session, org, engine_id, body.name, body.source())
    return deployment_to_dict(deployment)


@router.post("/{engine_id}/undeploy", status_code=202)
def undeploy(engine_id: str, body: UndeployRequest, session: SessionDep, org: OrgDep) -> JSONResponse:
    deployment = deployment_service.undeploy(session, org, engine_id, body.deployment_name)
    return JSONResponse({"id": deployment.id, "name": deployment.name, "deleted": True}, 202)


@router.get("/{engine_id}/events")
def engine_events(engine_id: str, session: SessionDep, org: OrgDep) -> dict[str, Any]:
    events = engine_service.engine_events(session, org, engine_id)
    return {"object": "list", "data": [event_to_dict(e) for e in events]}
