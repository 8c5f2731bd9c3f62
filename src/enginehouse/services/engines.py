"""Engines: create, read, deactivate, reactivate, delete. The reconciler does the actual work;
these functions only record what should be and move statuses through the one door."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Text, cast, func, literal_column, or_, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from enginehouse.core import options
from enginehouse.core.ids import new_id, utcnow
from enginehouse.core.options import OptionOffer
from enginehouse.core.resource_management import Change, manual_hold
from enginehouse.core.specs import EngineSpec
from enginehouse.core.status import DeploymentKind, DeploymentStatus, EngineStatus
from enginehouse.core.task_types import SERVABLE_TASK_TYPES, TaskType
from enginehouse.db.models import DeploymentModel, EngineModel, EventModel, ReplicaModel
from enginehouse.errors import ConflictError, NotFoundError, ValidationFailedError
from enginehouse.services.pages import (
    Page,
    PageRequest,
    newest_first,
    of_base_model,
    of_task_and_base,
    unknown_cursor,
)
from enginehouse.services.reads import dialect_of, grouped, read, read_columns
from enginehouse.services.sizing import select_option
from enginehouse.services.status import record_engine_created, switch_deployment_status, switch_engine_status


def name_taken(session: Session, org_id: str, name: str) -> bool:
    """Engines and deployments share one namespace per organization (the base deployment is
    named after its engine). One query for both tables."""
    engine = select(EngineModel.id).where(EngineModel.organization_id == org_id, EngineModel.name == name)
    deployment = select(DeploymentModel.id).where(
        DeploymentModel.organization_id == org_id, DeploymentModel.name == name
    )
    return bool(session.scalar(select(or_(engine.exists(), deployment.exists()))))


def create_engine(
    session: Session,
    org_id: str,
    spec: EngineSpec,
    *,
    max_replicas: int | None = None,
    offers: Sequence[OptionOffer] | None = None,
) -> EngineModel:
    """``max_replicas``: the most replicas this server lets one engine run (None: no limit).
    ``offers``: the deployment options and which the providers can give now (None: this
    machine's CPU only)."""
    offers = list(offers) if offers is not None else options.default_listing()
    _check_replica_ceiling(spec, max_replicas)
    if spec.task_type not in SERVABLE_TASK_TYPES:
        served = ", ".join(sorted(t.value for t in SERVABLE_TASK_TYPES))
        raise ValidationFailedError(
            f"task type {spec.task_type.value!r} is not served by this installation yet "
            f"(served: {served})",
            param="task_type",
        )
    if spec.deployment_option != "auto" and spec.deployment_option not in options.option_names(offers):
        known = ", ".join(["auto", *sorted(options.option_names(offers))])
        raise ValidationFailedError(
            f"unknown deployment_option {spec.deployment_option!r} (known: {known})",
            param="deployment_option",
        )
    # Sized before the first query: reading the model's files happens outside any transaction.
    selected = select_option(spec, offers)
    if name_taken(session, org_id, spec.name):
        raise ConflictError(f"the name {spec.name!r} is already taken", code="name_taken", param="name")
    now = utcnow()
    engine = EngineModel(
        id=new_id("engine"),
        organization_id=org_id,
        name=spec.name,
        task_type=spec.task_type.value,
        base_model=spec.base_model,
        status=EngineStatus.PROVISIONING.value,
        deployment_option=spec.deployment_option,
        selected_option=selected,
        autoscaling=spec.autoscaling.model_dump() if spec.autoscaling else None,
        resource_management_config=(
            spec.resource_management_config.model_dump()
            if spec.resource_management_config
            else None
        ),
        runtime_options=spec.runtime_options.model_dump(exclude_none=True),
        created_at=now,
        updated_at=now,
        last_access_at=now,
    )
    if selected["name"] not in {offer.name for offer in offers if offer.available}:
        engine.status_reason = options.waiting_reason(selected["name"])
    record_engine_created(session, engine)
    session.flush()
    return engine


def _check_replica_ceiling(spec: EngineSpec, ceiling: int | None) -> None:
    if ceiling is None or spec.autoscaling is None:
        return
    for field in ("min_replicas", "max_replicas"):
        wanted = getattr(spec.autoscaling, field)
        if wanted > ceiling:
            raise ValidationFailedError(
                f"autoscaling.{field} is {wanted}, over this server's limit of {ceiling} replicas per "
                f"engine; ask for at most {ceiling} (the operator sets the limit with "
                "ENGINEHOUSE_MAX_REPLICAS_PER_ENGINE)",
                param=f"autoscaling.{field}",
            )


def get_engine(session: Session, org_id: str, engine_id: str) -> EngineModel:
    engine = session.get(EngineModel, engine_id)
    if engine is None or engine.organization_id != org_id:
        raise NotFoundError(f"engine {engine_id!r} not found", param="engine_id")
    return engine


def engine_deployments(session: Session, engine_id: str) -> list[DeploymentModel]:
    query = (
        select(DeploymentModel)
        .where(DeploymentModel.engine_id == engine_id)
        .order_by(DeploymentModel.created_at, DeploymentModel.id)
    )
    return list(session.scalars(query))


def engine_replicas(session: Session, engine_id: str) -> list[ReplicaModel]:
    query = select(ReplicaModel).where(ReplicaModel.engine_id == engine_id)
    return list(session.scalars(query.order_by(ReplicaModel.started_at)))


def get_engine_replica(session: Session, org_id: str, engine_id: str, replica_id: str) -> ReplicaModel:
    """One replica the engine has now (one replaced or stopped is no longer the engine's)."""
    engine = get_engine(session, org_id, engine_id)
    replica = session.scalar(select(ReplicaModel).where(ReplicaModel.id == replica_id,
                                                         ReplicaModel.engine_id == engine.id))
    if replica is None:
        raise NotFoundError(f"engine {engine.name} has no replica {replica_id!r}", code="replica_not_found",
                            param="replica_id")
    return replica


def delete_engine(session: Session, org_id: str, engine_id: str) -> EngineModel:
    engine = get_engine(session, org_id, engine_id)
    switch_engine_status(session, engine, EngineStatus.DELETING, "deletion requested")
    return engine


def deactivate_engine(
    session: Session, org_id: str, engine_id: str, reason: str = "deactivation requested",
    *, manual: bool = True,
) -> EngineModel:
    """``manual``: asked for by a user, so it holds against the engine's schedule (SPEC §4.4)."""
    engine = get_engine(session, org_id, engine_id)
    if engine.status != EngineStatus.ACTIVE.value:
        raise ConflictError(
            f"engine {engine.name} is {engine.status}; only an Active engine can be deactivated",
            code="invalid_status_transition",
        )
    _hold_against_schedule(engine, Change.DEACTIVATE, manual)
    switch_engine_status(session, engine, EngineStatus.DEACTIVATING, reason)
    return engine


def reactivate_engine(
    session: Session, org_id: str, engine_id: str, reason: str = "reactivation requested",
    *, manual: bool = True,
) -> EngineModel:
    """``manual``: as for :func:`deactivate_engine`."""
    engine = get_engine(session, org_id, engine_id)
    if engine.status != EngineStatus.INACTIVE.value:
        raise ConflictError(
            f"engine {engine.name} is {engine.status}; only an Inactive engine can be reactivated",
            code="invalid_status_transition",
        )
    _hold_against_schedule(engine, Change.REACTIVATE, manual)
    switch_engine_status(session, engine, EngineStatus.REACTIVATING, reason)
    deployments = engine_deployments(session, engine.id)
    # On a single-model engine a fine-tuned deployment keeps the base model replaced.
    base_replaced = not TaskType(engine.task_type).serves_lora and any(
        d.kind == DeploymentKind.FINE_TUNED.value for d in deployments
    )
    for deployment in deployments:
        if deployment.kind == DeploymentKind.BASE.value and base_replaced:
            continue
        if deployment.status == DeploymentStatus.DEACTIVATED.value:
            switch_deployment_status(session, deployment, DeploymentStatus.REACTIVATING,
                                     "engine reactivating")
    return engine


def _hold_against_schedule(engine: EngineModel, change: Change, manual: bool) -> None:
    """A manual change against the schedule holds for a while (until the window next opens or
    closes); one the schedule itself makes ends any hold."""
    hold = manual_hold(engine.resource_management_config, change, utcnow()) if manual else None
    engine.schedule_hold_until = hold


def touch_engine(session: Session, engine_id: str) -> None:
    """Record an inference request (the inactive timeout counts from the last one)."""
    engine = session.get(EngineModel, engine_id)
    if engine is not None:
        engine.last_access_at = utcnow()


# -- reading engines for the API (rows, see services/reads.py) ---------------------------------

# The fields of each kind of row, in order: the views unpack them by position.
ENGINE_FIELDS = (
    "id", "name", "task_type", "base_model", "status", "status_reason", "deployment_option",
    "selected_option", "autoscaling", "resource_management_config", "runtime_options",
    "created_at", "last_access_at", "schedule_hold_until", "autoscaler_decision",
)
DEPLOYMENT_FIELDS = (
    "id", "name", "engine_id", "kind", "source", "status", "status_reason", "task_type",
    "metadata_", "created_at", "updated_at",
)
# An engine in a list names its deployments in short (a page of 100 engines may hold 10,000).
DEPLOYMENT_SUMMARY_FIELDS = ("id", "name", "kind", "status", "status_reason")
REPLICA_FIELDS = ("id", "engine_id", "status", "url", "started_at")
EVENT_FIELDS = ("id", "at", "object_id", "object_name", "from_status", "to_status", "reason")


@dataclass(frozen=True)
class EngineRead:
    """An engine row with its deployments (oldest first, the base one first) and replicas. In a
    list, ``deployments_json`` holds its deployments in short as the JSON text the database
    built, and ``deployments`` is empty."""

    engine: Row[Any]
    deployments: list[Row[Any]]
    replicas: list[Row[Any]]
    deployments_json: str | None = None


def read_engine(session: Session, org_id: str, engine_id: str) -> EngineRead:
    query = select(*read_columns(session, EngineModel, ENGINE_FIELDS)).where(
        EngineModel.id == engine_id, EngineModel.organization_id == org_id
    )
    engine = read(session, query).first()
    if engine is None:
        raise NotFoundError(f"engine {engine_id!r} not found", param="engine_id")
    return _with_parts(session, [engine])[0]


def list_engines(
    session: Session,
    org_id: str,
    page: PageRequest,
    task_type: str | None = None,
    base_model: str | None = None,
) -> Page[EngineRead]:
    """A page of engines, newest first, in four queries whatever its size: the cursor's place,
    the engines, then their deployments and their replicas, each with one ``IN``."""
    query = select(*read_columns(session, EngineModel, ENGINE_FIELDS)).where(
        EngineModel.organization_id == org_id
    )
    query = of_task_and_base(query, EngineModel, task_type, base_model)
    engines = newest_first(session, query, EngineModel, org_id, page, "engine")
    if not engines.items:
        return Page([], engines.has_more)
    ids = [engine[0] for engine in engines.items]
    summaries = _deployment_summaries(session, ids)
    replicas = _replicas_by_engine(session, ids)
    return Page([EngineRead(e, [], replicas.get(e[0], []), summaries.get(e[0], "[]")) for e in engines.items],
                engines.has_more)


def engine_choices(session: Session, org_id: str, task_type: str, base_model: str) -> list[dict[str, str]]:
    """``{"id", "name"}`` of every engine of this task type and base model, newest first: where a
    checkpoint trained for them can be deployed."""
    query = (select(EngineModel.id, EngineModel.name)
             .where(EngineModel.organization_id == org_id, EngineModel.task_type == task_type,
                    of_base_model(EngineModel.base_model, base_model))
             .order_by(EngineModel.created_at.desc(), EngineModel.id))
    return [{"id": engine_id, "name": name} for engine_id, name in read(session, query)]


def _deployment_summaries(session: Session, engine_ids: list[str]) -> dict[str, str]:
    """Each engine's deployments in short, as a JSON array the database builds: on a page of 100
    engines holding 10,000 deployments, making a dict of each row in Python costs more than the
    rest of the page together."""
    deployment = DeploymentModel
    if dialect_of(session) == "postgresql":
        item = func.json_build_object(*_summary_pairs(deployment))
        arrays = select(deployment.engine_id, cast(
            func.json_agg(aggregate_order_by(item, deployment.created_at, deployment.id)), Text))
        query = arrays.where(deployment.engine_id.in_(engine_ids)).group_by(deployment.engine_id)
    else:
        # SQLite aggregates in the order rows arrive; sorted by engine first, each engine's rows
        # arrive together and in order, so its GROUP BY needs no sort of its own. The objects are
        # joined as text: json_group_array would parse each one again.
        ordered = (select(deployment.engine_id, func.json_object(*_summary_pairs(deployment)).label("item"))
                   .where(deployment.engine_id.in_(engine_ids))
                   .order_by(deployment.engine_id, deployment.created_at, deployment.id).subquery())
        array = literal_column("'['").op("||")(func.group_concat(ordered.c.item, ",")).op("||")(literal_column("']'"))
        query = select(ordered.c.engine_id, array).group_by(ordered.c.engine_id)
    return {engine_id: text for engine_id, text in read(session, query)}


def _summary_pairs(deployment: type[DeploymentModel]) -> list[Any]:
    """``'id', id, 'object', 'deployment', …``: the fields of ``DEPLOYMENT_SUMMARY_FIELDS`` and
    the object's type, as the API shows a deployment in an engine list."""
    # Constants written into the SQL (not bound): PostgreSQL cannot type a bare parameter here.
    pairs: list[Any] = []
    for name in DEPLOYMENT_SUMMARY_FIELDS:
        pairs += [literal_column(f"'{name}'"), getattr(deployment, name)]
        if name == "id":
            pairs += [literal_column("'object'"), literal_column("'deployment'")]
    return pairs


def _replicas_by_engine(session: Session, engine_ids: list[str]) -> dict[str, list[Row[Any]]]:
    replicas = (
        select(*read_columns(session, ReplicaModel, REPLICA_FIELDS))
        .where(ReplicaModel.engine_id.in_(engine_ids))
        .order_by(ReplicaModel.started_at, ReplicaModel.id)
    )
    return grouped(read(session, replicas).all(), REPLICA_FIELDS.index("engine_id"))


def _with_parts(session: Session, engines: list[Row[Any]]) -> list[EngineRead]:
    if not engines:
        return []
    ids = [engine[0] for engine in engines]
    deployments = (
        select(*read_columns(session, DeploymentModel, DEPLOYMENT_FIELDS))
        .where(DeploymentModel.engine_id.in_(ids))
        # Not by engine first: grouping below keeps each engine's rows in this order, and
        # PostgreSQL sorts text ids by locale collation, slowly (half the read of a 10,000-row page).
        .order_by(DeploymentModel.created_at, DeploymentModel.id)
    )
    by_engine = grouped(read(session, deployments).all(), DEPLOYMENT_FIELDS.index("engine_id"))
    replicas_by_engine = _replicas_by_engine(session, ids)
    return [EngineRead(e, by_engine.get(e[0], []), replicas_by_engine.get(e[0], [])) for e in engines]


def engine_events(
    session: Session, org_id: str, engine_id: str, page: PageRequest
) -> Page[Row[Any]]:
    """An engine's events in the order they happened, a page at a time.

    Unlike the other lists this one is oldest first: it is a log, read from the start, and
    ``after`` (an event's id) then also serves to follow it, asking for what came since. A
    deleted engine's events stay readable: its log ends with its deletion.
    """
    mine = (EventModel.engine_id == engine_id, EventModel.organization_id == org_id)
    # Held while get_engine looks again: the session's identity map keeps only what is referenced.
    engine = session.get(EngineModel, engine_id)
    if engine is not None or session.scalar(select(EventModel.id).where(*mine).limit(1)) is None:
        get_engine(session, org_id, engine_id)  # 404 for an unknown engine or another organization's
    query = select(*read_columns(session, EventModel, EVENT_FIELDS)).where(*mine)
    if page.after is not None:
        after = _event_cursor(session, org_id, engine_id, page.after)
        query = query.where(EventModel.id > after)
    rows = read(session, query.order_by(EventModel.id).limit(page.limit + 1)).all()
    return Page(rows[: page.limit], len(rows) > page.limit)


def _event_cursor(session: Session, org_id: str, engine_id: str, after: str) -> int:
    """The id ``after`` names, when it is one of this engine's events."""
    if after.isascii() and after.isdigit() and len(after) <= 18:
        query = select(EventModel.id).where(
            EventModel.id == int(after),
            EventModel.engine_id == engine_id,
            EventModel.organization_id == org_id,
        )
        if session.scalar(query) is not None:
            return int(after)
    raise unknown_cursor("event of this engine", after)
