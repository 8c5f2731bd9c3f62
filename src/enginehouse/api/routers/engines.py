"""/v1/engines: thin handlers, one service call each."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from enginehouse.api.deps import OffersDep, OrgDep, ReplicaCeilingDep, SessionDep
from enginehouse.api.logs import TailDep
from enginehouse.api.paging import PageDep
from enginehouse.api.schemas import DeployRequest, UndeployRequest
from enginehouse.api.views import (
    JsonResponse, deployment_to_dict, engine_to_dict, event_to_dict, page_body,
)
from enginehouse.core.specs import EngineSpec
from enginehouse.services import deployments as deployment_service
from enginehouse.services import engines as engine_service
from enginehouse.services.engines import EngineRead

router = APIRouter(prefix="/v1/engines", tags=["engines"])


def _in_flight(request: Request) -> dict[str, int]:
    return request.app.state.gateway.in_flight_by_replica()


def _engine_view(
    request: Request, session: Session, org: str, engine_id: str, status_code: int = 200
) -> JsonResponse:
    """The engine as it is now (after the change a handler made), with its parts."""
    read = engine_service.read_engine(session, org, engine_id)
    return JsonResponse(engine_to_dict(read, _in_flight(request)), status_code)


@router.post("", status_code=201)
def create_engine(
    spec: EngineSpec, request: Request, session: SessionDep, org: OrgDep, max_replicas: ReplicaCeilingDep,
    offers: OffersDep,
) -> JsonResponse:
    engine = engine_service.create_engine(session, org, spec, max_replicas=max_replicas, offers=offers)
    return _engine_view(request, session, org, engine.id, 201)


@router.get("")
def list_engines(
    request: Request,
    session: SessionDep,
    org: OrgDep,
    page: PageDep,
    task_type: str | None = None,
    base_model: str | None = None,
) -> JsonResponse:
    engines = engine_service.list_engines(session, org, page, task_type, base_model)
    in_flight = _in_flight(request)

    def to_dict(read: EngineRead) -> dict[str, object]:
        return engine_to_dict(read, in_flight)

    return JsonResponse(page_body(engines, to_dict))


@router.get("/{engine_id}")
def get_engine(engine_id: str, request: Request, session: SessionDep, org: OrgDep) -> JsonResponse:
    return _engine_view(request, session, org, engine_id)


@router.delete("/{engine_id}", status_code=202)
def delete_engine(engine_id: str, request: Request, session: SessionDep, org: OrgDep) -> JsonResponse:
    engine = engine_service.delete_engine(session, org, engine_id)
    return _engine_view(request, session, org, engine.id, 202)


@router.post("/{engine_id}/deactivate", status_code=202)
def deactivate_engine(
    engine_id: str, request: Request, session: SessionDep, org: OrgDep
) -> JsonResponse:
    engine = engine_service.deactivate_engine(session, org, engine_id)
    return _engine_view(request, session, org, engine.id, 202)


@router.post("/{engine_id}/reactivate", status_code=202)
def reactivate_engine(
    engine_id: str, request: Request, session: SessionDep, org: OrgDep
) -> JsonResponse:
    engine = engine_service.reactivate_engine(session, org, engine_id)
    return _engine_view(request, session, org, engine.id, 202)


@router.post("/{engine_id}/deploy", status_code=201)
def deploy(engine_id: str, body: DeployRequest, session: SessionDep, org: OrgDep) -> JsonResponse:
    deployment = deployment_service.deploy(session, org, engine_id, body.name, body.source())
    return JsonResponse(deployment_to_dict(deployment_service.read_deployment(session, org, deployment.id)), 201)


@router.post("/{engine_id}/undeploy", status_code=202)
def undeploy(engine_id: str, body: UndeployRequest, session: SessionDep, org: OrgDep) -> JSONResponse:
    deployment = deployment_service.undeploy(session, org, engine_id, body.deployment_name)
    return JSONResponse({"id": deployment.id, "name": deployment.name, "deleted": True}, 202)


@router.get("/{engine_id}/events")
def engine_events(engine_id: str, session: SessionDep, org: OrgDep, page: PageDep) -> JsonResponse:
    events = engine_service.engine_events(session, org, engine_id, page)
    return JsonResponse(page_body(events, event_to_dict))


@router.get("/{engine_id}/replicas/{replica_id}/logs")
def replica_logs(engine_id: str, replica_id: str, request: Request, session: SessionDep, org: OrgDep,
                 tail: TailDep) -> JsonResponse:
    """The last lines of one of the engine's replicas' log, wherever the replica runs."""
    replica = engine_service.get_engine_replica(session, org, engine_id, replica_id)
    lines = request.app.state.provider.replica_log(replica.id, tail) or []
    return JsonResponse({"object": "list", "data": lines})
