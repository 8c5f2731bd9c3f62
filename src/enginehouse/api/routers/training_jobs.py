"""/v1/training-jobs (registration of existing checkpoints) and /v1/deployment-options."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from enginehouse.api.deps import OffersDep, OrgDep, SessionDep
from enginehouse.api.paging import PageDep
from enginehouse.api.views import JsonResponse, page_body, training_job_to_dict
from enginehouse.services import training_jobs as job_service
from enginehouse.services.training_jobs import TrainingJobSpec

router = APIRouter(tags=["training jobs"])


@router.post("/v1/training-jobs", status_code=201)
def register_training_job(spec: TrainingJobSpec, session: SessionDep, org: OrgDep) -> JsonResponse:
    job = job_service.register_training_job(session, org, spec)
    return JsonResponse(training_job_to_dict(job_service.read_training_job(session, org, job.id)), 201)


@router.get("/v1/training-jobs")
def list_training_jobs(session: SessionDep, org: OrgDep, page: PageDep) -> JsonResponse:
    jobs = job_service.list_training_jobs(session, org, page)
    return JsonResponse(page_body(jobs, training_job_to_dict))


@router.get("/v1/training-jobs/{job_id}")
def get_training_job(job_id: str, session: SessionDep, org: OrgDep) -> JsonResponse:
    return JsonResponse(training_job_to_dict(job_service.read_training_job(session, org, job_id)))


@router.get("/v1/deployment-options")
def deployment_options(_org: OrgDep, offers: OffersDep) -> dict[str, Any]:
    return {"object": "list", "data": [offer.option.to_dict(offer.available) for offer in offers]}
