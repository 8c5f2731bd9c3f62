"""/v1/deployments."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from enginehouse.api.deps import OffersDep, OrgDep, ReplicaCeilingDep, SessionDep
from enginehouse.api.paging import PageDep
from enginehouse.api.schemas import CreateDeploymentRequest
from enginehouse.api.views import JsonResponse, deployment_to_dict, page_body
from enginehouse.services import deployments as deployment_service

router = APIRouter(prefix="/v1/deployments", tags=["deployments"])


@router.post("", status_code=201)
def create_deployment(
    body: CreateDeploymentRequest, session: SessionDep, org: OrgDep, max_replicas: ReplicaCeilingDep,
    offers: OffersDep,
) -> JsonResponse:
    if body.engine is not None:
        deployment = deployment_service.create_with_engine(
            session, org, body.name, body.source, body.engine, max_replicas=max_replicas, offers=offers
        )
    else:
        assert body.engine_id is not None
        deployment = deployment_service.deploy(session, org, body.engine_id, body.name, body.source)
    created = deployment_service.read_deployment(session, org, deployment.id)
    return JsonResponse(deployment_to_dict(created), 201)


@router.get("")
def list_deployments(
    session: SessionDep, org: OrgDep, page: PageDep, engine_id: str | None = None
) -> JsonResponse:
    deployments = deployment_service.list_deployments(session, org, page, engine_id)
    return JsonResponse(page_body(deployments, deployment_to_dict))


@router.get("/{deployment_id}")
def get_deployment(deployment_id: str, session: SessionDep, org: OrgDep) -> JsonResponse:
    deployment = deployment_service.read_deployment(session, org, deployment_id)
    return JsonResponse(deployment_to_dict(deployment))


@router.delete("/{deployment_id}", status_code=202)
def remove_deployment(deployment_id: str, session: SessionDep, org: OrgDep) -> JSONResponse:
    deployment = deployment_service.remove_deployment(session, org, deployment_id)
    return JSONResponse({"id": deployment.id, "name": deployment.name, "deleted": True}, 202)
