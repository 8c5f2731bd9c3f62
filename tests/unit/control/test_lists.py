"""Paged lists against a real database (SQLite, and PostgreSQL when given): the order, the
cursor, the limits, the filters, organizations kept apart, and a fixed number of queries per
page whatever its size."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlalchemy.orm import Session

from enginehouse.core.ids import new_id, utcnow
from enginehouse.core.specs import EngineSpec, TrainingJobSource
from enginehouse.core.status import DeploymentStatus, EngineStatus
from enginehouse.db.models import DeploymentModel, EngineModel, ReplicaModel, TrainingJobModel
from enginehouse.db.session import Database
from enginehouse.errors import BadRequestError, NotFoundError
from enginehouse.services import deployments, engines, orgs, training_jobs
from enginehouse.services.pages import MAX_LIMIT, Page, PageRequest
from enginehouse.services.status import switch_deployment_status, switch_engine_status
from tests.unit.control.conftest import fake_lora_checkpoint

INSTANT = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def make_engine(session: Session, org_id: str, name: str, task_type: str = "text-generation",
                base_model: str = "/models/base") -> EngineModel:
    spec = EngineSpec(name=name, base_model=base_model, task_type=task_type)
    return engines.create_engine(session, org_id, spec)


def make_job(session: Session, org_id: str, tmp_path: Path, name: str = "job",
             epochs: int = 1) -> TrainingJobModel:
    path = str(fake_lora_checkpoint(tmp_path / "adapter"))
    spec = training_jobs.TrainingJobSpec(
        name=name, task_type="text-generation", base_model="/models/base",
        checkpoints=[training_jobs.CheckpointSpec(checkpoint=e, path=path) for e in range(1, epochs + 1)],
    )
    return training_jobs.register_training_job(session, org_id, spec)


def deploy(session: Session, org_id: str, engine: EngineModel, job: TrainingJobModel, name: str) -> str:
    source = TrainingJobSource(type="training_job", training_id=job.id, checkpoint=1)
    return deployments.deploy(session, org_id, engine.id, name, source).id


def same_instant(session: Session, model: Any, ids: list[str], when: datetime = INSTANT) -> None:
    """Give rows one creation time, as rows created in the same instant have."""
    session.execute(update(model).where(model.id.in_(ids)).values(created_at=when))
    session.flush()


def walk(list_page: Callable[[PageRequest], Page[Any]], limit: int) -> list[list[str]]:
    """Every page from the first, following ``after``; the ids of each page. Every page but the
    last must say there is more."""
    pages: list[list[str]] = []
    seen: set[str] = set()
    after: str | None = None
    while True:
        page = list_page(PageRequest(limit=limit, after=after))
        ids = [_id(item) for item in page.items]
        assert not seen & set(ids), f"page {len(pages) + 1} repeats {seen & set(ids)}"
        seen.update(ids)
        pages.append(ids)
        assert len(ids) <= limit
        if not page.has_more:
            return pages
        assert len(ids) == limit
        after = ids[-1]


def _id(item: Any) -> str:
    for attribute in ("engine", "job"):  # EngineRead, TrainingJobRead
        if hasattr(item, attribute):
            return str(getattr(item, attribute).id)
    return str(item.id)


def newest_first(session: Session, model: Any, org_id: str) -> list[str]:
    """The order a list must have: (created_at, id) descending, computed here independently."""
    rows = session.query(model.created_at, model.id).filter(model.organization_id == org_id).all()
    return [row_id for _, row_id in sorted(rows, reverse=True)]


# -- order and cursor ------------------------------------------------------------------------


def test_engine_pages_cover_every_engine_once_newest_first(session: Session, org_id: str) -> None:
    created = [make_engine(session, org_id, f"e{i}").id for i in range(7)]
    # five created in one instant, one before and one after it
    same_instant(session, EngineModel, created[1:6])
    same_instant(session, EngineModel, [created[0]], INSTANT - timedelta(seconds=1))
    same_instant(session, EngineModel, [created[6]], INSTANT + timedelta(microseconds=1))
    expected = newest_first(session, EngineModel, org_id)
    assert expected[0] == created[6] and expected[-1] == created[0]

    def page(request: PageRequest) -> Page[Any]:
        return engines.list_engines(session, org_id, request)

    for limit in (1, 2, 3, 7):
        pages = walk(page, limit)
        assert [i for p in pages for i in p] == expected, f"limit {limit}"
    assert len(walk(page, 7)) == 1
    assert walk(page, 6) == [expected[:6], expected[6:]]


def test_deployment_pages_with_equal_timestamps_across_engines(
    session: Session, org_id: str, tmp_path: Path
) -> None:
    job = make_job(session, org_id, tmp_path)
    first, second = make_engine(session, org_id, "a"), make_engine(session, org_id, "b")
    ids = [deploy(session, org_id, first if i % 2 else second, job, f"d{i}") for i in range(9)]
    same_instant(session, DeploymentModel, ids)
    expected = newest_first(session, DeploymentModel, org_id)
    assert sorted(expected) == sorted(ids) and expected == sorted(ids, reverse=True)

    pages = walk(lambda r: deployments.list_deployments(session, org_id, r), 4)
    assert [len(p) for p in pages] == [4, 4, 1]
    assert [i for p in pages for i in p] == expected

    only_first = walk(lambda r: deployments.list_deployments(session, org_id, r, first.id), 2)
    on_first = [i for i in expected if i in {ids[k] for k in range(1, 9, 2)}]
    assert [i for p in only_first for i in p] == on_first


def test_a_page_neither_skips_nor_repeats_when_rows_come_and_go(
    session: Session, org_id: str, tmp_path: Path
) -> None:
    job = make_job(session, org_id, tmp_path)
    engine = make_engine(session, org_id, "e")
    ids = [deploy(session, org_id, engine, job, f"d{i}") for i in range(6)]
    same_instant(session, DeploymentModel, ids)
    expected = newest_first(session, DeploymentModel, org_id)

    first = deployments.list_deployments(session, org_id, PageRequest(limit=3))
    assert [d.id for d in first.items] == expected[:3] and first.has_more
    # Meanwhile one deployment is added (newest, so before the cursor) and a later one removed.
    deploy(session, org_id, engine, job, "late")
    deployments.remove_deployment(session, org_id, expected[4])
    session.flush()
    rest = deployments.list_deployments(session, org_id, PageRequest(limit=3, after=expected[2]))
    assert [d.id for d in rest.items] == [expected[3], expected[5]] and not rest.has_more


def test_training_job_pages_carry_their_checkpoints(session: Session, org_id: str, tmp_path: Path) -> None:
    jobs = [make_job(session, org_id, tmp_path, f"job{i}", epochs=i + 1) for i in range(4)]
    same_instant(session, TrainingJobModel, [j.id for j in jobs[:3]])
    expected = newest_first(session, TrainingJobModel, org_id)
    pages = walk(lambda r: training_jobs.list_training_jobs(session, org_id, r), 3)
    assert [i for p in pages for i in p] == expected

    page = training_jobs.list_training_jobs(session, org_id, PageRequest(limit=MAX_LIMIT))
    epochs = {read.job.id: [c.checkpoint for c in read.checkpoints] for read in page.items}
    assert epochs == {job.id: list(range(1, i + 2)) for i, job in enumerate(jobs)}


def test_events_are_a_log_oldest_first(session: Session, org_id: str, tmp_path: Path) -> None:
    engine = make_engine(session, org_id, "e")
    other = make_engine(session, org_id, "other")
    job = make_job(session, org_id, tmp_path)
    for i in range(4):
        deploy(session, org_id, engine, job, f"d{i}")
    switch_engine_status(session, engine, EngineStatus.ACTIVE, "up")

    everything = engines.engine_events(session, org_id, engine.id, PageRequest(limit=MAX_LIMIT))
    assert not everything.has_more
    names = [e.object_name for e in everything.items]
    assert names == ["e", "d0", "d1", "d2", "d3", "e"]
    ids = [e.id for e in everything.items]
    assert ids == sorted(ids)

    pages = walk(lambda r: engines.engine_events(session, org_id, engine.id, r), 4)
    assert [i for p in pages for i in p] == [str(i) for i in ids]
    # after serves to follow the log: nothing after the last one until something happens
    tail = engines.engine_events(session, org_id, engine.id, PageRequest(after=str(ids[-1])))
    assert tail.items == []
    deploy(session, org_id, engine, job, "d4")
    tail = engines.engine_events(session, org_id, engine.id, PageRequest(after=str(ids[-1])))
    assert [e.object_name for e in tail.items] == ["d4"]

    other_event = engines.engine_events(session, org_id, other.id, PageRequest()).items[0].id
    for after in ("nope", "-1", "99999999", str(other_event), "1" * 40):
        with pytest.raises(BadRequestError) as refused:
            engines.engine_events(session, org_id, engine.id, PageRequest(after=after))
        assert refused.value.code == "invalid_cursor" and refused.value.param == "after"


# -- limits, filters, organizations ------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1])
def test_limit_out_of_range_is_refused(limit: int) -> None:
    with pytest.raises(BadRequestError) as refused:
        PageRequest(limit=limit)
    assert refused.value.param == "limit" and "1 to 1000" in refused.value.message


def test_an_unknown_cursor_is_refused(session: Session, org_id: str) -> None:
    make_engine(session, org_id, "e")
    listings = [
        lambda r: engines.list_engines(session, org_id, r),
        lambda r: deployments.list_deployments(session, org_id, r),
        lambda r: training_jobs.list_training_jobs(session, org_id, r),
    ]
    for list_page in listings:
        with pytest.raises(BadRequestError) as refused:
            list_page(PageRequest(after="engine-0000000000000000"))
        assert refused.value.code == "invalid_cursor" and "list again" in refused.value.message


def test_engine_filters(session: Session, org_id: str) -> None:
    text = make_engine(session, org_id, "t1").id
    make_engine(session, org_id, "c1", task_type="classification")
    other_base = make_engine(session, org_id, "t2", base_model="/models/other").id

    def ids(**filters: str) -> list[str]:
        page = engines.list_engines(session, org_id, PageRequest(), **filters)
        return [read.engine.id for read in page.items]

    assert ids(task_type="text-generation") == [other_base, text]
    assert ids(base_model="/models/other") == [other_base]
    assert ids(task_type="classification", base_model="/models/other") == []
    # a cursor is a position in the order; a row the filter leaves out still has one
    classification = ids(task_type="classification")[0]
    page = engines.list_engines(session, org_id, PageRequest(after=classification),
                                task_type="text-generation")
    assert [read.engine.id for read in page.items] == [text]


def test_other_organizations_rows_are_never_listed(session: Session, org_id: str, tmp_path: Path) -> None:
    orgs.create_organization(session, "other")
    other = orgs.create_api_key(session, "other").organization_id
    theirs = make_engine(session, other, "e")
    their_job = make_job(session, other, tmp_path / "theirs")
    their_dp = deploy(session, other, theirs, their_job, "dp")
    ours = make_engine(session, org_id, "e")

    assert [r.engine.id for r in engines.list_engines(session, org_id, PageRequest()).items] == [ours.id]
    assert deployments.list_deployments(session, org_id, PageRequest()).items == []
    assert training_jobs.list_training_jobs(session, org_id, PageRequest()).items == []
    assert deployments.list_models(session, org_id).models == []
    for cursor in (theirs.id, their_dp, their_job.id):
        with pytest.raises(BadRequestError):
            engines.list_engines(session, org_id, PageRequest(after=cursor))
        with pytest.raises(BadRequestError):
            deployments.list_deployments(session, org_id, PageRequest(after=cursor))
    with pytest.raises(NotFoundError):
        deployments.list_deployments(session, org_id, PageRequest(), engine_id=theirs.id)
    with pytest.raises(NotFoundError):
        engines.engine_events(session, org_id, theirs.id, PageRequest())
    with pytest.raises(NotFoundError):
        engines.read_engine(session, org_id, theirs.id)
    with pytest.raises(NotFoundError):
        deployments.read_deployment(session, org_id, their_dp)
    with pytest.raises(NotFoundError):
        training_jobs.read_training_job(session, org_id, their_job.id)


def test_models_are_every_callable_deployment_with_its_parent(
    session: Session, org_id: str, tmp_path: Path
) -> None:
    engine = make_engine(session, org_id, "base-e")
    job = make_job(session, org_id, tmp_path)
    switch_engine_status(session, engine, EngineStatus.ACTIVE)
    deployments.create_base_deployment(session, engine)
    names = [f"ft{i}" for i in range(120)]  # more than a default page: all of them, at once
    ids = [deploy(session, org_id, engine, job, name) for name in names]
    failed = session.get(DeploymentModel, ids[0])
    assert failed is not None
    switch_deployment_status(session, failed, DeploymentStatus.FAILED, "corrupt weights")
    session.flush()

    listed = deployments.list_models(session, org_id)
    assert listed.owner == "acme"
    assert [m.name for m in listed.models] == ["base-e", *names[1:]]
    assert {listed.base_names.get(m.engine_id) for m in listed.models} == {"base-e"}
    created = session.get(DeploymentModel, ids[1]).created_at  # type: ignore[union-attr]
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    assert listed.models[1].created == int(created.timestamp())


# -- a fixed number of queries per page --------------------------------------------------------


@contextmanager
def statements(database: Database) -> Iterator[list[str]]:
    """The SQL statements sent to the database inside the block."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(database.engine, "before_cursor_execute", record)


def seed(database: Database, org_id: str, tmp_path: Path, engine_count: int, per_engine: int) -> None:
    """Two training jobs; engines, each with deployments, two replicas and events; committed."""
    with database.session() as session:
        job = make_job(session, org_id, tmp_path / new_id("j"), new_id("job"), epochs=2)
        make_job(session, org_id, tmp_path / new_id("j"), new_id("job"), epochs=3)
        for _ in range(engine_count):
            engine = make_engine(session, org_id, new_id("e"))
            for _ in range(per_engine):
                deploy(session, org_id, engine, job, new_id("d"))
            for _ in range(2):
                session.add(ReplicaModel(id=new_id("replica"), engine_id=engine.id, status="ready",
                                         url="http://127.0.0.1:1", started_at=utcnow()))


def queries_per_read(database: Database, org_id: str) -> dict[str, int]:
    """How many statements each read takes, in a fresh session (nothing cached, nothing to flush)."""
    with database.session() as session:
        engine_id = engines.list_engines(session, org_id, PageRequest(limit=1)).items[0].engine.id
        deployment_id = deployments.list_deployments(session, org_id, PageRequest(limit=1)).items[0].id
        job_id = training_jobs.list_training_jobs(session, org_id, PageRequest(limit=1)).items[0].job.id
        event_id = engines.engine_events(session, org_id, engine_id, PageRequest(limit=1)).items[0].id
    reads: dict[str, Callable[[Session], object]] = {
        "engines": lambda s: engines.list_engines(s, org_id, PageRequest(limit=MAX_LIMIT)),
        "engines after": lambda s: engines.list_engines(s, org_id, PageRequest(after=engine_id)),
        "engines filtered": lambda s: engines.list_engines(s, org_id, PageRequest(), "text-generation"),
        "engine": lambda s: engines.read_engine(s, org_id, engine_id),
        "deployments": lambda s: deployments.list_deployments(s, org_id, PageRequest(limit=MAX_LIMIT)),
        "deployments after": lambda s: deployments.list_deployments(
            s, org_id, PageRequest(after=deployment_id)),
        "deployments of an engine": lambda s: deployments.list_deployments(
            s, org_id, PageRequest(), engine_id),
        "deployment": lambda s: deployments.read_deployment(s, org_id, deployment_id),
        "training jobs": lambda s: training_jobs.list_training_jobs(s, org_id, PageRequest(limit=MAX_LIMIT)),
        "training jobs after": lambda s: training_jobs.list_training_jobs(
            s, org_id, PageRequest(after=job_id)),
        "events": lambda s: engines.engine_events(s, org_id, engine_id, PageRequest(limit=MAX_LIMIT)),
        "events after": lambda s: engines.engine_events(
            s, org_id, engine_id, PageRequest(after=str(event_id))),
        "models": lambda s: deployments.list_models(s, org_id),
    }
    counts = {}
    for name, read in reads.items():
        with database.session() as session, statements(database) as sent:
            read(session)
        counts[name] = len(sent)
    return counts


def test_each_page_takes_a_fixed_number_of_queries(
    database: Database, org_id: str, session: Session, tmp_path: Path
) -> None:
    session.commit()
    seed(database, org_id, tmp_path, engine_count=2, per_engine=1)
    few = queries_per_read(database, org_id)
    seed(database, org_id, tmp_path, engine_count=12, per_engine=6)
    many = queries_per_read(database, org_id)
    assert many == few
    assert many == {
        # the page, then its engines' deployments and replicas (one IN each); +1 for the cursor
        "engines": 3, "engines after": 4, "engines filtered": 3, "engine": 3,
        # +1 to check the engine filtered on
        "deployments": 1, "deployments after": 2, "deployments of an engine": 2, "deployment": 1,
        "training jobs": 2, "training jobs after": 3,
        # the engine (404 if not the caller's), the page; +1 for the cursor
        "events": 2, "events after": 3,
        # the organization's name, the base deployments, the models
        "models": 3,
    }
