"""/v1/training-jobs (fine-tunes and registrations of existing checkpoints) and
/v1/deployment-options."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request

from enginehouse.api.deps import OffersDep, OrgDep, SessionDep
from enginehouse.api.logs import TailDep
from enginehouse.api.paging import PageDep
from enginehouse.api.views import JsonResponse, page_body, training_job_to_dict
from enginehouse.services import training_jobs as job_service
from enginehouse.services.training_jobs import TrainingJobSpec

router = APIRouter(tags=["training jobs"])


@router.post("/v1/training-jobs", status_code=201)
def create_training_job(
    spec: TrainingJobSpec, request: Request, background: BackgroundTasks, session: SessionDep, org: OrgDep
) -> JsonResponse:
    job = job_service.create_training_job(session, org, spec)
    if job.status == "Pending":
        # After the answer, so after the commit: the supervisor's pass then sees the job.
        background.add_task(request.app.state.training.poke)
    return JsonResponse(training_job_to_dict(job_service.read_training_job(session, org, job.id)), 201)


@router.post("/v1/training-jobs/{job_id}/cancel", status_code=202)
def cancel_training_job(
    job_id: str, request: Request, background: BackgroundTasks, session: SessionDep, org: OrgDep
) -> JsonResponse:
    job_service.cancel_training_job(session, org, job_id)
    background.add_task(request.app.state.provider.stop_training, job_id)
    background.add_task(request.app.state.training.poke)
    return JsonResponse(training_job_to_dict(job_service.read_training_job(session, org, job_id)), 202)


@router.get("/v1/training-jobs/{job_id}/logs")
def training_job_logs(job_id: str, request: Request, session: SessionDep, org: OrgDep, tail: TailDep) -> JsonResponse:
    job_service.get_training_job(session, org, job_id)  # 404 unless the caller's
    lines = request.app.state.provider.training_log(job_id, tail) or []
    return JsonResponse({"object": "list", "data": lines})


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
