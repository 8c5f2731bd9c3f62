"""Training jobs and Playground experiments in the dashboard: lists and pages that follow a job
while it runs (progress, checkpoints with their test results, logs), a fine-tune started from an
uploaded JSONL file, and experiments created from class descriptions, given examples, and
trained into their next version.

As everywhere in the dashboard, each form goes through the services the API uses, so it obeys the
API's rules and its refusals are the API's words beside the field they name.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile

from enginehouse.api.deps import SessionDep, get_database
from enginehouse.api.views import training_job_to_dict
from enginehouse.dashboard import forms
from enginehouse.dashboard.pages import deploy_from_form
from enginehouse.dashboard.web import (
    FormDep,
    PageNotFound,
    UserDep,
    plain,
    refusal_page,
    render,
    see_other,
    templates,
)
from enginehouse.errors import EnginehouseError, NotFoundError
from enginehouse.services import datasets as dataset_service
from enginehouse.services import engines as engine_service
from enginehouse.services import experiments as experiment_service
from enginehouse.services import training_jobs as job_service
from enginehouse.services.dashboard_sessions import SignedIn
from enginehouse.services.experiments import ExamplesSpec, ExperimentSpec, Mode, TrainSpec
from enginehouse.services.pages import PageRequest
from enginehouse.services.training_jobs import TRAINABLE, TrainingJobSpec

router = APIRouter(include_in_schema=False)

# Where the dashboard's fine-tune form posts (a multipart upload, streamed like POST /v1/datasets).
NEW_JOB_PATH = "/training-jobs/new"
LOG_LINES = 200
_CHUNK_BYTES = 1 << 20


# --- training jobs ---------------------------------------------------------------------------


@router.get("/training-jobs")
def jobs_page(request: Request, session: SessionDep, user: UserDep, after: str | None = None) -> HTMLResponse:
    page = job_service.list_training_jobs(session, user.organization_id, PageRequest(after=after or None))
    jobs = [plain(training_job_to_dict(read)) for read in page.items]
    return render(request, "jobs.html", user, jobs=jobs, next_after=jobs[-1]["id"] if page.has_more and jobs else None)


@router.get(NEW_JOB_PATH)
def new_job_page(request: Request, user: UserDep) -> HTMLResponse:
    return _new_job_form(request, user, {"task_type": "classification", "train_test_split_ratio": "0.1"})


@router.post(NEW_JOB_PATH)
async def start_job(request: Request, user: UserDep, form: FormDep) -> Response:
    upload = (await request.form()).get("file")  # parsed once, by the form check
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _new_job_form(request, user, form, {"file": "choose a JSONL file to train on"}, 400)
    try:
        # Checked before the upload is stored: a refused name or ratio costs no write. The dataset's
        # id is not known yet; a stand-in takes its place until it is.
        spec = forms.validated(TrainingJobSpec, {**_job_body(form), "train_dataset_id": "ds-pending"}, _JOB_FIELDS)
    except forms.FormError as error:
        return _new_job_form(request, user, form, error.errors, 400)
    try:
        job_id = await run_in_threadpool(_store_and_start, request, user, upload, spec)
    except forms.FormError as error:
        return _new_job_form(request, user, form, error.errors, 400)
    except EnginehouseError as error:
        return _new_job_form(request, user, form, forms.errors_of(error, _JOB_FIELDS), error.status_code)
    request.app.state.training.poke()
    return see_other(f"/training-jobs/{job_id}")


# The API's names for what the fine-tune form calls otherwise.
_JOB_FIELDS = {"train_dataset_id": "file", "parameters": "num_train_epochs"}


def _job_body(form: dict[str, str]) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    for field in ("num_train_epochs", "learning_rate"):
        if form.get(field, "").strip():
            parameters[field] = forms.number(form, field)
    body: dict[str, Any] = {"name": form.get("name", "").strip(), "task_type": form.get("task_type", ""),
                            "base_model": form.get("base_model", "").strip(), "parameters": parameters or None}
    if form.get("train_test_split_ratio", "").strip():
        body["train_test_split_ratio"] = forms.number(form, "train_test_split_ratio")
    return body


def _store_and_start(request: Request, user: SignedIn, upload: UploadFile, spec: TrainingJobSpec) -> str:
    settings = request.app.state.settings
    with get_database(request).session() as session:
        chunks = iter(lambda: upload.file.read(_CHUNK_BYTES), b"")
        dataset = dataset_service.store_dataset(session, user.organization_id, spec.name, chunks,
                                                settings.datasets_dir, settings.max_dataset_bytes)
        try:
            job = job_service.start_fine_tune(session, user.organization_id,
                                              spec.model_copy(update={"train_dataset_id": dataset.id}))
        except Exception:
            # Nothing is kept of a refused form: the file goes with the dataset row never committed.
            session.rollback()
            dataset_service.forget_file(dataset.path)
            raise
        return job.id


def _new_job_form(request: Request, user: SignedIn, values: dict[str, str], errors: dict[str, str] | None = None,
                  status_code: int = 200) -> HTMLResponse:
    return render(request, "new_job.html", user, status_code, values=values, errors=errors or {},
                  task_types=sorted(t.value for t in TRAINABLE))


@router.get("/training-jobs/{job_id}")
def job_page(job_id: str, request: Request, session: SessionDep, user: UserDep) -> HTMLResponse:
    return _job_page(request, session, user, job_id, {}, {})


def _job_page(request: Request, session: SessionDep, user: SignedIn, job_id: str, values: dict[str, str],
              errors: dict[str, str], status_code: int = 200) -> HTMLResponse:
    job = _job(session, user, job_id)
    return render(request, "job.html", user, status_code, job=job, live=_job_live_html(request, user, job),
                  engines=engine_service.engine_choices(session, user.organization_id, job["task_type"],
                                                        job["base_model"]),
                  values=values, errors=errors)


@router.post("/training-jobs/{job_id}/deploy")
def deploy_checkpoint(job_id: str, request: Request, session: SessionDep, user: UserDep, form: FormDep) -> Response:
    """A checkpoint of this job onto an engine that fits it (the first creation flow, from the job)."""
    _job(session, user, job_id)
    return deploy_from_form(session, user, {**form, "training_id": job_id},
                            lambda values, errors, status: _job_page(request, session, user, job_id, values, errors,
                                                                     status))


@router.get("/training-jobs/{job_id}/live.json")
def job_live(job_id: str, request: Request, session: SessionDep, user: UserDep) -> JSONResponse:
    return JSONResponse({"html": _job_live_html(request, user, _job(session, user, job_id))})


def _job_live_html(request: Request, user: SignedIn, job: dict[str, Any]) -> str:
    logs = request.app.state.provider.training_log(job["id"], LOG_LINES) or []
    return templates.get_template("_job_live.html").render(job=job, logs=logs, user=user)


@router.post("/training-jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request, session: SessionDep, user: UserDep, _form: FormDep) -> Response:
    _job(session, user, job_id)
    try:
        job_service.cancel_training_job(session, user.organization_id, job_id)
    except EnginehouseError as error:
        session.rollback()
        return refusal_page(request, user, error, f"/training-jobs/{job_id}")
    session.commit()
    request.app.state.provider.stop_training(job_id)
    request.app.state.training.poke()
    return see_other(f"/training-jobs/{job_id}")


def _job(session: SessionDep, user: SignedIn, job_id: str) -> dict[str, Any]:
    try:
        return plain(training_job_to_dict(job_service.read_training_job(session, user.organization_id, job_id)))
    except NotFoundError as error:
        raise PageNotFound(error.message) from None


# --- experiments ---------------------------------------------------------------------------


@router.get("/experiments")
def experiments_page(request: Request, session: SessionDep, user: UserDep, after: str | None = None) -> HTMLResponse:
    page = experiment_service.list_experiments(session, user.organization_id, PageRequest(after=after or None))
    experiments = experiment_service.experiment_views(session, page.items)
    return render(request, "experiments.html", user, experiments=experiments,
                  next_after=experiments[-1]["id"] if page.has_more and experiments else None)


@router.get("/experiments/new")
def new_experiment_page(request: Request, user: UserDep) -> HTMLResponse:
    return _new_experiment_form(request, user, {"mode": "decision"})


@router.post("/experiments/new")
def create_experiment(request: Request, session: SessionDep, user: UserDep, form: FormDep) -> Response:
    try:
        spec = forms.validated(ExperimentSpec, _experiment_body(form), {"classes": "classes"})
        experiment = experiment_service.create_experiment(session, user.organization_id, spec)
    except forms.FormError as error:
        session.rollback()
        return _new_experiment_form(request, user, form, error.errors, 400)
    except EnginehouseError as error:
        session.rollback()
        return _new_experiment_form(request, user, form, forms.errors_of(error), error.status_code)
    session.commit()
    request.app.state.training.poke()
    return see_other(f"/experiments/{experiment.id}")


def _experiment_body(form: dict[str, str]) -> dict[str, Any]:
    """Classes come one per line as ``name: description``; a regression's one class takes its
    range and the two descriptions from fields of their own."""
    mode = form.get("mode", "")
    classes = []
    for number, line in enumerate(form.get("classes", "").splitlines(), start=1):
        if not line.strip():
            continue
        name, colon, description = line.partition(":")
        if not colon:
            raise forms.FormError({"classes": f"line {number}: write each class as 'name: description'"})
        classes.append({"name": name.strip(), "description": description.strip()})
    if mode == Mode.REGRESSION.value and classes:
        classes[0].update({
            "min_value": forms.number(form, "min_value"), "max_value": forms.number(form, "max_value"),
            "low_description": form.get("low_description", "").strip(),
            "high_description": form.get("high_description", "").strip()})
    return {"name": form.get("name", "").strip(), "mode": mode, "base_model": form.get("base_model", "").strip(),
            "classes": classes}


def _new_experiment_form(request: Request, user: SignedIn, values: dict[str, str],
                         errors: dict[str, str] | None = None, status_code: int = 200) -> HTMLResponse:
    return render(request, "new_experiment.html", user, status_code, values=values, errors=errors or {},
                  modes=[m.value for m in Mode])


@router.get("/experiments/{experiment_id}")
def experiment_page(experiment_id: str, request: Request, session: SessionDep, user: UserDep) -> HTMLResponse:
    return _experiment_page(request, session, user, experiment_id, {}, {})


def _experiment_page(request: Request, session: SessionDep, user: SignedIn, experiment_id: str,
                     values: dict[str, str], errors: dict[str, str], status_code: int = 200) -> HTMLResponse:
    try:
        experiment = experiment_service.get_experiment(session, user.organization_id, experiment_id)
    except NotFoundError as error:
        raise PageNotFound(error.message) from None
    view = experiment_service.experiment_view(session, experiment)
    return render(request, "experiment.html", user, status_code, experiment=view, values=values, errors=errors,
                  live=templates.get_template("_experiment_live.html").render(experiment=view),
                  engines=engine_service.engine_choices(session, user.organization_id, view["task_type"],
                                                        view["base_model"]))


@router.post("/experiments/{experiment_id}/deploy")
def deploy_version(experiment_id: str, request: Request, session: SessionDep, user: UserDep,
                   form: FormDep) -> Response:
    """A version of this experiment onto an engine that fits it (the third creation flow)."""
    return deploy_from_form(session, user, {**form, "experiment_id": experiment_id},
                            lambda values, errors, status: _experiment_page(request, session, user, experiment_id,
                                                                            values, errors, status))


@router.get("/experiments/{experiment_id}/live.json")
def experiment_live(experiment_id: str, session: SessionDep, user: UserDep) -> JSONResponse:
    try:
        experiment = experiment_service.get_experiment(session, user.organization_id, experiment_id)
    except NotFoundError as error:
        raise PageNotFound(error.message) from None
    view = experiment_service.experiment_view(session, experiment)
    return JSONResponse({"html": templates.get_template("_experiment_live.html").render(experiment=view)})


@router.post("/experiments/{experiment_id}/examples")
def add_examples(experiment_id: str, request: Request, session: SessionDep, user: UserDep,
                 form: FormDep) -> Response:
    try:
        experiment = experiment_service.get_experiment(session, user.organization_id, experiment_id)
        read = _entity_examples if experiment.mode == Mode.NER.value else _examples
        spec = forms.validated(ExamplesSpec, {"examples": read(form.get("examples", ""))}, {"examples": "examples"})
        experiment_service.add_examples(session, user.organization_id, experiment_id, spec)
    except forms.FormError as error:
        session.rollback()
        return _experiment_page(request, session, user, experiment_id, form, error.errors, 400)
    except EnginehouseError as error:
        session.rollback()
        return _experiment_page(request, session, user, experiment_id, form, {"examples": error.message},
                                error.status_code)
    return see_other(f"/experiments/{experiment_id}")


def _examples(text: str) -> list[dict[str, Any]]:
    """One example a line, ``label: text`` (a regression's label is its number)."""
    examples: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        label, colon, example = line.partition(":")
        if not colon or not example.strip():
            raise forms.FormError({"examples": f"line {number}: write each example as 'label: text'"})
        try:
            examples.append({"text": example.strip(), "value": float(label)})
        except ValueError:
            examples.append({"text": example.strip(), "label": label.strip()})
    if not examples:
        raise forms.FormError({"examples": "write at least one example"})
    return examples


# An entity in an ner example line: ``[the words](type)``.
_MARKED_ENTITY = re.compile(r"\[([^\[\]]+)\]\(([^()]+)\)")


def _entity_examples(text: str) -> list[dict[str, Any]]:
    """One ner example a line, its entities marked in place: ``Ada flew to [Oslo](city)``."""
    examples: list[dict[str, Any]] = []
    for line in (raw.strip() for raw in text.splitlines()):
        if not line:
            continue
        plain, entities, end = "", [], 0
        for marked in _MARKED_ENTITY.finditer(line):
            plain += line[end:marked.start()]
            entities.append({"start": len(plain), "end": len(plain) + len(marked[1]), "label": marked[2].strip()})
            plain += marked[1]
            end = marked.end()
        examples.append({"text": plain + line[end:], "entities": entities})
    if not examples:
        raise forms.FormError({"examples": "write at least one example"})
    return examples


@router.post("/experiments/{experiment_id}/train")
def train(experiment_id: str, request: Request, session: SessionDep, user: UserDep, _form: FormDep) -> Response:
    settings = request.app.state.settings
    try:
        experiment_service.train_next_version(session, user.organization_id, experiment_id, TrainSpec(),
                                              settings.datasets_dir, settings.max_dataset_bytes)
    except EnginehouseError as error:
        session.rollback()
        return _experiment_page(request, session, user, experiment_id, {}, {"train": error.message},
                                error.status_code)
    session.commit()
    request.app.state.training.poke()
    return see_other(f"/experiments/{experiment_id}")
