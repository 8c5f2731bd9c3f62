"""The dashboard's pages: sign-in, engines (list, page, create with a deployment, deactivate,
reactivate, delete), deploying a checkpoint or an experiment version onto an engine, removing a
deployment, and the small JSON views the pages poll for live status.

Every handler is thin: it reads or writes through the same services the API uses, so a form
obeys the API's rules and its errors are the API's own words, shown next to the field they name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from enginehouse.api.deps import OffersDep, ReplicaCeilingDep, SessionDep
from enginehouse.api.schemas import DeployRequest
from enginehouse.api.views import JsonResponse, engine_to_dict, event_to_dict, page_body, training_job_to_dict
from enginehouse.core.task_types import SERVABLE_TASK_TYPES
from enginehouse.dashboard import forms
from enginehouse.dashboard.charts import HEIGHT, WIDTH, traffic_charts, window_words
from enginehouse.dashboard.web import (
    COOKIE, FormDep, PageNotFound, UserDep, check_origin, plain, refusal_page, render, see_other, session_token,
    set_session_cookie, templates,
)
from enginehouse.db.models import DeploymentModel
from enginehouse.errors import EnginehouseError, NotFoundError
from enginehouse.services import dashboard_sessions
from enginehouse.services.dashboard_sessions import SignedIn
from enginehouse.services import deployments as deployment_service
from enginehouse.services import engines as engine_service
from enginehouse.services import experiments as experiment_service
from enginehouse.services import training_jobs as job_service
from enginehouse.services.pages import MAX_LIMIT, PageRequest
from enginehouse.services.sizing import select_option

router = APIRouter(include_in_schema=False)

# Each engine action: its button, what it does (said before it is done), and the service call.
ENGINE_ACTIONS: dict[str, tuple[str, str, Callable[..., Any]]] = {
    "deactivate": ("Deactivate", "Its replicas stop and its deployments stop answering (a call wakes it only "
                                 "if it is set to). Nothing is deleted; reactivate brings it back.",
                   engine_service.deactivate_engine),
    "reactivate": ("Reactivate", "Replicas start again and every deployment is loaded before it takes calls.",
                   engine_service.reactivate_engine),
    "delete": ("Delete", "The engine, its replicas and all its deployments go away for good; calls to them "
                         "answer 404. Training jobs and their checkpoints stay.", engine_service.delete_engine),
}


@router.get("/")
def home() -> RedirectResponse:
    return see_other("/engines")


# --- signing in and out ----------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, session: SessionDep, next: str = "/engines") -> Response:
    if dashboard_sessions.resolve(session, session_token(request)) is not None:
        return see_other(_local(next))
    return render(request, "login.html", None, next=_local(next))


@router.post("/login")
async def login(request: Request, session: SessionDep) -> Response:
    check_origin(request)
    form = await request.form()
    key, target = str(form.get("api_key", "")), _local(str(form.get("next", "/engines")))
    try:
        token = dashboard_sessions.sign_in(session, key)
    except EnginehouseError as error:
        return render(request, "login.html", None, 401, next=target, error=error.message)
    response = see_other(target)
    set_session_cookie(response, request, token)
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep, _form: FormDep) -> RedirectResponse:
    dashboard_sessions.sign_out(session, session_token(request))
    response = see_other("/login")
    response.delete_cookie(COOKIE, path="/")
    return response


def _local(target: str) -> str:
    """Only a path on this server is a place to go after signing in (never another site)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/engines"


# --- engines -------------------------------------------------------------------------------


@router.get("/engines")
def engines_page(request: Request, session: SessionDep, user: UserDep, after: str | None = None) -> HTMLResponse:
    engines = _engines_body(request, session, user, after)
    return render(request, "engines.html", user, engines=plain(engines)["data"],
                  next_after=engines["last_id"] if engines["has_more"] else None)


@router.get("/engines.json")
def engines_status(request: Request, session: SessionDep, user: UserDep, after: str | None = None) -> JsonResponse:
    """What the engines page polls: the page of engines as the API shows it."""
    return JsonResponse(_engines_body(request, session, user, after))


def _engines_body(request: Request, session: SessionDep, user: SignedIn, after: str | None) -> dict[str, Any]:
    page = engine_service.list_engines(session, user.organization_id, PageRequest(after=after or None))
    in_flight = request.app.state.gateway.in_flight_by_replica()
    return page_body(page, lambda read: engine_to_dict(read, in_flight))


@router.get("/engines/new")
def new_engine_page(request: Request, user: UserDep, offers: OffersDep) -> HTMLResponse:
    return _new_engine_form(request, user, offers, {"task_type": "text-generation", "deployment_option": "auto"})


@router.post("/engines/new")
def create_engine(request: Request, session: SessionDep, user: UserDep, form: FormDep, offers: OffersDep,
                  max_replicas: ReplicaCeilingDep) -> Response:
    try:
        spec = forms.engine_spec(form)
        if form.get("preview"):
            # "Check sizing": the option automatic sizing would choose, shown before anything is made.
            return _new_engine_form(request, user, offers, form, sizing=select_option(spec, offers))
        name = forms.deployment_name(form)
        if name:
            source = forms.source(form)
            deployment = deployment_service.create_with_engine(
                session, user.organization_id, name, source, spec, max_replicas=max_replicas, offers=offers)
            engine_id = deployment.engine_id
        else:
            engine_id = engine_service.create_engine(session, user.organization_id, spec,
                                                     max_replicas=max_replicas, offers=offers).id
    except forms.FormError as error:
        session.rollback()
        return _new_engine_form(request, user, offers, form, error.errors, 400)
    except EnginehouseError as error:
        session.rollback()
        return _new_engine_form(request, user, offers, form, forms.errors_of(error), error.status_code)
    return see_other(f"/engines/{engine_id}")


def _new_engine_form(request: Request, user: UserDep, offers: OffersDep, values: dict[str, str],
                     errors: dict[str, str] | None = None, status_code: int = 200,
                     sizing: dict[str, Any] | None = None) -> HTMLResponse:
    return render(request, "new_engine.html", user, status_code, values=values, errors=errors or {}, sizing=sizing,
                  task_types=sorted(t.value for t in SERVABLE_TASK_TYPES),
                  options=[offer.name for offer in offers if offer.available])


@router.get("/engines/{engine_id}")
def engine_page(engine_id: str, request: Request, session: SessionDep, user: UserDep) -> HTMLResponse:
    engine = _engine(request, session, user.organization_id, engine_id)
    page = engine_service.engine_events(session, user.organization_id, engine_id, PageRequest(limit=20))
    events = [plain(event_to_dict(row)) for row in page.items]
    history = request.app.state.gateway.metrics.traffic
    return render(request, "engine.html", user, engine=engine, events=events, actions=ENGINE_ACTIONS,
                  charts=traffic_charts(history.series(engine_id), history.window_s), chart_size=(WIDTH, HEIGHT),
                  window=window_words(history.window_s))


@router.get("/engines/{engine_id}/status.json")
def engine_status(engine_id: str, request: Request, session: SessionDep, user: UserDep) -> JsonResponse:
    """What the engine page polls: the engine as the API shows it."""
    return JsonResponse(_engine_view(request, session, user.organization_id, engine_id))


@router.get("/engines/{engine_id}/parts.html")
def engine_parts(engine_id: str, request: Request, session: SessionDep, user: UserDep) -> HTMLResponse:
    """The engine page's deployment and replica rows, fetched when one came or went."""
    engine = _engine(request, session, user.organization_id, engine_id)
    return HTMLResponse(templates.get_template("_engine_parts.html").render(engine=engine))


@router.get("/engines/{engine_id}/confirm/{action}")
def confirm_engine_action(engine_id: str, action: str, request: Request, session: SessionDep,
                          user: UserDep) -> HTMLResponse:
    try:
        engine = engine_service.get_engine(session, user.organization_id, engine_id)
    except NotFoundError as error:
        raise PageNotFound(error.message) from None
    if action not in ENGINE_ACTIONS:
        return render(request, "not_found.html", user, 404, what=f"no action {action!r}")
    title, consequence, _change = ENGINE_ACTIONS[action]
    return render(request, "confirm.html", user, title=f"{title} engine {engine.name}?", consequence=consequence,
                  action=f"/engines/{engine_id}/{action}", button=title, back=f"/engines/{engine_id}")


# --- deployments ---------------------------------------------------------------------------


@router.get("/engines/{engine_id}/deploy")
def deploy_page(engine_id: str, request: Request, session: SessionDep, user: UserDep,
                training_id: str | None = None, experiment_id: str | None = None) -> HTMLResponse:
    engine = _engine(request, session, user.organization_id, engine_id)
    return _deploy_form(request, session, user, engine,
                        {"training_id": training_id or "", "experiment_id": experiment_id or ""})


@router.post("/engines/{engine_id}/deploy")
def deploy(engine_id: str, request: Request, session: SessionDep, user: UserDep, form: FormDep) -> Response:
    engine = _engine(request, session, user.organization_id, engine_id)
    return deploy_from_form(session, user, {**form, "engine_id": engine_id},
                            lambda values, errors, status: _deploy_form(request, session, user, engine, values, errors,
                                                                        status))


# The API's names for what the deploy forms call otherwise (they pick a checkpoint, its "source").
_SOURCE_FIELDS = {"training_id": "source", "checkpoint": "source", "experiment_id": "source", "version": "source"}


def deploy_from_form(session: SessionDep, user: SignedIn, form: dict[str, str],
                     again: Callable[[dict[str, str], dict[str, str], int], HTMLResponse]) -> Response:
    """Every deploy form's post (from an engine, a job or an experiment): checked as
    ``POST /v1/engines/{id}/deploy`` checks its body, the refusal shown again by ``again``."""
    try:
        body = {key: form[key] for key in ("name", "training_id", "checkpoint", "experiment_id", "version")
                if form.get(key, "").strip()}
        for key in ("checkpoint", "version"):
            if key in body:
                body[key] = forms.number(form, key)
        request = forms.validated(DeployRequest, body, _SOURCE_FIELDS)
        if not form.get("engine_id"):
            raise forms.FormError({"engine_id": "pick the engine to deploy onto"})
        deployment_service.deploy(session, user.organization_id, form["engine_id"], request.name, request.source())
    except forms.FormError as error:
        session.rollback()
        return again(form, error.errors, 400)
    except EnginehouseError as error:
        session.rollback()
        return again(form, forms.errors_of(error, _SOURCE_FIELDS), error.status_code)
    return see_other(f"/engines/{form['engine_id']}")


def _deploy_form(request: Request, session: SessionDep, user: UserDep, engine: dict[str, Any],
                 values: dict[str, str], errors: dict[str, str] | None = None, status_code: int = 200) -> HTMLResponse:
    """Only what fits the engine is offered: jobs and experiments of its task type and base model."""
    org, fits = user.organization_id, {"task_type": engine["task_type"], "base_model": engine["base_model"]}
    page = PageRequest(limit=MAX_LIMIT)
    jobs = [plain(training_job_to_dict(read))
            for read in job_service.list_training_jobs(session, org, page, **fits).items if read.checkpoints]
    experiments = experiment_service.experiment_views(
        session, experiment_service.list_experiments(session, org, page, **fits).items)
    experiments = [e for e in experiments if any(v["status"] == "Success" for v in e["versions"])]
    chosen_job = next((job for job in jobs if job["id"] == values.get("training_id")), None)
    chosen_experiment = next((e for e in experiments if e["id"] == values.get("experiment_id")), None)
    return render(request, "deploy.html", user, status_code, engine=engine, jobs=jobs, experiments=experiments,
                  job=chosen_job, experiment=chosen_experiment, values=values, errors=errors or {})


@router.get("/deployments/{deployment_id}/remove")
def confirm_remove(deployment_id: str, request: Request, session: SessionDep, user: UserDep) -> HTMLResponse:
    deployment = _deployment(session, user.organization_id, deployment_id)
    return render(request, "confirm.html", user, title=f"Remove deployment {deployment.name}?",
                  consequence="Calls to it answer 404 from now on; requests already running finish. The engine "
                              "and its other deployments are untouched, and the checkpoint stays.",
                  action=f"/deployments/{deployment_id}/remove", button="Remove",
                  back=f"/engines/{deployment.engine_id}")


@router.post("/deployments/{deployment_id}/remove")
def remove(deployment_id: str, request: Request, session: SessionDep, user: UserDep, _form: FormDep) -> Response:
    deployment = _deployment(session, user.organization_id, deployment_id)
    engine_id = deployment.engine_id
    try:
        deployment_service.remove_deployment(session, user.organization_id, deployment_id)
    except EnginehouseError as error:
        session.rollback()
        return refusal_page(request, user, error, f"/engines/{engine_id}")
    return see_other(f"/engines/{engine_id}")


# Last of the engine routes: "/engines/{id}/{action}" would otherwise also catch "/engines/{id}/deploy".
@router.post("/engines/{engine_id}/{action}")
def engine_action(engine_id: str, action: str, request: Request, session: SessionDep, user: UserDep,
                  _form: FormDep) -> Response:
    if action not in ENGINE_ACTIONS:
        return render(request, "not_found.html", user, 404, what=f"no action {action!r}")
    _title, _consequence, change = ENGINE_ACTIONS[action]
    try:
        change(session, user.organization_id, engine_id)
    except EnginehouseError as error:
        session.rollback()
        return refusal_page(request, user, error, f"/engines/{engine_id}")
    return see_other("/engines" if action == "delete" else f"/engines/{engine_id}")


def _engine(request: Request, session: SessionDep, org_id: str, engine_id: str) -> dict[str, Any]:
    return plain(_engine_view(request, session, org_id, engine_id))


def _engine_view(request: Request, session: SessionDep, org_id: str, engine_id: str) -> dict[str, Any]:
    """The engine as the API shows it (stored JSON still embedded as is)."""
    try:
        read = engine_service.read_engine(session, org_id, engine_id)
    except NotFoundError as error:
        raise PageNotFound(error.message) from None
    return engine_to_dict(read, request.app.state.gateway.in_flight_by_replica())


def _deployment(session: SessionDep, org_id: str, deployment_id: str) -> DeploymentModel:
    try:
        return deployment_service.get_deployment(session, org_id, deployment_id)
    except NotFoundError as error:
        raise PageNotFound(error.message) from None

