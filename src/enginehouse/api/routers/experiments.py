"""/v1/experiments: Playground experiments (SPEC §5.1)."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Body, Request

from enginehouse.api.deps import OrgDep, SessionDep
from enginehouse.api.paging import PageDep
from enginehouse.api.views import JsonResponse, list_body
from enginehouse.services import experiments as experiment_service
from enginehouse.services.experiments import ExamplesSpec, ExperimentSpec, TrainSpec

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])


@router.post("", status_code=201)
def create_experiment(
    spec: ExperimentSpec, request: Request, background: BackgroundTasks, session: SessionDep, org: OrgDep
) -> JsonResponse:
    experiment = experiment_service.create_experiment(session, org, spec)
    # After the answer, so after the commit: the supervisor then sees version 1's job.
    background.add_task(request.app.state.training.poke)
    return JsonResponse(experiment_service.experiment_view(session, experiment), 201)


@router.get("")
def list_experiments(session: SessionDep, org: OrgDep, page: PageDep) -> JsonResponse:
    experiments = experiment_service.list_experiments(session, org, page)
    views = experiment_service.experiment_views(session, experiments.items)  # together: no query per row
    return JsonResponse(list_body(views, experiments.has_more))


@router.get("/{experiment_id}")
def get_experiment(experiment_id: str, session: SessionDep, org: OrgDep) -> JsonResponse:
    experiment = experiment_service.get_experiment(session, org, experiment_id)
    return JsonResponse(experiment_service.experiment_view(session, experiment))


@router.post("/{experiment_id}/examples")
def add_examples(experiment_id: str, spec: ExamplesSpec, session: SessionDep, org: OrgDep) -> JsonResponse:
    count = experiment_service.add_examples(session, org, experiment_id, spec)
    return JsonResponse({"object": "experiment.examples", "experiment_id": experiment_id, "count": count})


@router.post("/{experiment_id}/train", status_code=202)
def train(
    experiment_id: str, request: Request, background: BackgroundTasks, session: SessionDep, org: OrgDep,
    spec: TrainSpec | None = Body(default=None),
) -> JsonResponse:
    settings = request.app.state.settings
    version = experiment_service.train_next_version(
        session, org, experiment_id, spec or TrainSpec(), settings.datasets_dir, settings.max_dataset_bytes)
    background.add_task(request.app.state.training.poke)
    return JsonResponse({"object": "experiment.version", "experiment_id": experiment_id, "version": version}, 202)
