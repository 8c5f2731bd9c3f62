"""The management API's lists over HTTP (SQLite, and PostgreSQL when given): the envelope,
``limit`` and ``after`` and their refusals, and ``GET /v1/models`` whole. Rows are seeded through
the services into the app's own database; engines ask for a GPU shape this machine cannot
provide, so no replica process starts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update

from enginehouse.core.ids import new_id
from enginehouse.core.specs import EngineSpec, TrainingJobSource
from enginehouse.core.status import EngineStatus
from enginehouse.db.models import DeploymentModel
from enginehouse.db.session import Database
from enginehouse.services import deployments, engines, orgs, training_jobs
from enginehouse.services.status import switch_engine_status
from tests.app_clients import app_client
from tests.databases import BACKENDS
from tests.unit.control.conftest import fake_lora_checkpoint

KEY = "eh-lists-admin"
OTHER_KEY = "eh-lists-other"
AUTH = {"Authorization": f"Bearer {KEY}"}
PARKED = "gpu-h100-80gb"  # an option this installation cannot provide: no replica is started
LISTS = ["/v1/engines", "/v1/deployments", "/v1/training-jobs"]


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    with app_client(request.param, tmp_path, KEY, quiet=(), reconcile_interval_s=0.1) as client:
        yield client


class Seed:
    """Rows written through the services into the running app's database, one commit each call."""

    def __init__(self, database: Database, tmp_path: Path) -> None:
        self.database = database
        self.checkpoint = str(fake_lora_checkpoint(tmp_path / "adapter"))
        with database.session() as session:
            self.org_id = orgs.authenticate(session, KEY)

    def engine(self, name: str, org_id: str | None = None) -> str:
        spec = EngineSpec(name=name, base_model="/models/base", task_type="text-generation",
                          deployment_option=PARKED)
        with self.database.session() as session:
            return engines.create_engine(session, org_id or self.org_id, spec).id

    def jobs(self, count: int, org_id: str | None = None) -> list[str]:
        with self.database.session() as session:
            return [self._job(session, org_id or self.org_id) for _ in range(count)]

    def _job(self, session: Any, org_id: str) -> str:
        spec = training_jobs.TrainingJobSpec(
            name=new_id("job"), task_type="text-generation", base_model="/models/base",
            checkpoints=[training_jobs.CheckpointSpec(checkpoint=1, path=self.checkpoint)])
        return training_jobs.register_training_job(session, org_id, spec).id

    def deployments(self, engine_id: str, names: list[str], same_instant: bool = False) -> list[str]:
        with self.database.session() as session:
            job = self._job(session, self.org_id)
            source = TrainingJobSource(type="training_job", training_id=job, checkpoint=1)
            ids = [deployments.deploy(session, self.org_id, engine_id, n, source).id for n in names]
            if same_instant:  # as if all were created in one instant
                when = session.get(DeploymentModel, ids[0]).created_at  # type: ignore[union-attr]
                session.execute(update(DeploymentModel).where(DeploymentModel.id.in_(ids))
                                .values(created_at=when))
        return ids

    def other_org(self) -> str:
        with self.database.session() as session:
            orgs.create_organization(session, "other")
            return orgs.create_api_key(session, "other", OTHER_KEY).organization_id


@pytest.fixture()
def seed(client: TestClient, tmp_path: Path) -> Seed:
    return Seed(client.app.state.database, tmp_path)  # type: ignore[attr-defined]


def get(client: TestClient, path: str, **params: Any) -> dict[str, Any]:
    response = client.get(path, params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_a_list_is_a_page_with_a_cursor(client: TestClient, seed: Seed) -> None:
    ids = seed.jobs(101)
    first = get(client, "/v1/training-jobs")
    assert set(first) == {"object", "data", "has_more", "first_id", "last_id"}
    assert first["object"] == "list" and len(first["data"]) == 100 and first["has_more"] is True
    listed = [job["id"] for job in first["data"]]
    assert first["first_id"] == listed[0] and first["last_id"] == listed[-1]
    rest = get(client, "/v1/training-jobs", after=first["last_id"])
    assert len(rest["data"]) == 1 and rest["has_more"] is False
    assert sorted(listed + [rest["first_id"]]) == sorted(ids)
    assert rest["first_id"] == rest["last_id"] == rest["data"][0]["id"]
    # newest first: registered one after another, the last one leads
    assert listed[0] == ids[-1]

    everything = get(client, "/v1/training-jobs", limit=1000)
    assert len(everything["data"]) == 101 and everything["has_more"] is False


def test_an_empty_list(client: TestClient) -> None:
    for path in LISTS:
        assert get(client, path) == {"object": "list", "data": [], "has_more": False,
                                     "first_id": None, "last_id": None}


def test_pages_over_http_with_equal_timestamps(client: TestClient, seed: Seed) -> None:
    engine = seed.engine("eng")
    ids = seed.deployments(engine, [f"d{i}" for i in range(7)], same_instant=True)
    seen: list[str] = []
    after: str | None = None
    while True:
        page = get(client, "/v1/deployments", limit=3, **({"after": after} if after else {}))
        seen += [d["id"] for d in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == sorted(ids, reverse=True)  # equal times: by id, descending
    nested = get(client, f"/v1/engines/{engine}")["deployments"]
    assert [d["id"] for d in nested] == sorted(ids)  # an engine's own set: oldest (base) first


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "abc", "1.5", "", "9" * 5000])
def test_a_limit_out_of_range_is_400(client: TestClient, limit: str) -> None:
    for path in LISTS:
        error = error_of(client.get(path, params={"limit": limit}, headers=AUTH), 400)
        assert error["param"] == "limit" and error["code"] == "invalid_limit"
        assert "from 1 to 1000" in error["message"]


def test_an_unknown_after_is_400(client: TestClient, seed: Seed) -> None:
    other = seed.other_org()
    theirs = seed.engine("theirs", org_id=other)
    for path in LISTS:
        for after in ("engine-0000000000000000", theirs):
            error = error_of(client.get(path, params={"after": after}, headers=AUTH), 400)
            assert error["param"] == "after" and error["code"] == "invalid_cursor"
            assert after in error["message"] and "first page" in error["message"]


def test_filters(client: TestClient, seed: Seed) -> None:
    first, second = seed.engine("first"), seed.engine("second")
    on_first = seed.deployments(first, ["a", "b"])
    seed.deployments(second, ["c"])
    listed = get(client, "/v1/deployments", engine_id=first)
    assert [d["id"] for d in listed["data"]] == on_first[::-1]
    error = error_of(client.get("/v1/deployments", params={"engine_id": "engine-nope"}, headers=AUTH), 404)
    assert error["param"] == "engine_id"
    assert [e["id"] for e in get(client, "/v1/engines", task_type="text-generation")["data"]] == [second, first]
    assert get(client, "/v1/engines", task_type="classification")["data"] == []
    assert get(client, "/v1/engines", base_model="/models/other")["data"] == []


def test_other_organizations_rows_are_not_listed(client: TestClient, seed: Seed) -> None:
    other = seed.other_org()
    seed.engine("theirs", org_id=other)
    seed.jobs(2, org_id=other)
    mine = seed.engine("mine")
    assert [e["id"] for e in get(client, "/v1/engines")["data"]] == [mine]
    assert get(client, "/v1/training-jobs")["data"] == []
    theirs = client.get("/v1/engines", headers={"Authorization": f"Bearer {OTHER_KEY}"}).json()
    assert [e["name"] for e in theirs["data"]] == ["theirs"]


def test_events_page_oldest_first(client: TestClient, seed: Seed) -> None:
    engine = seed.engine("eng")
    seed.deployments(engine, ["a", "b", "c"])
    path = f"/v1/engines/{engine}/events"
    everything = get(client, path)
    assert [e["name"] for e in everything["data"]] == ["eng", "a", "b", "c"]
    assert everything["has_more"] is False
    first = get(client, path, limit=2)
    assert [e["name"] for e in first["data"]] == ["eng", "a"] and first["has_more"] is True
    rest = get(client, path, limit=2, after=first["last_id"])
    assert [e["name"] for e in rest["data"]] == ["b", "c"] and rest["has_more"] is False
    error = error_of(client.get(path, params={"after": "999999"}, headers=AUTH), 400)
    assert error["code"] == "invalid_cursor"
    error_of(client.get(path, params={"limit": "0"}, headers=AUTH), 400)


def test_models_answer_every_callable_deployment_at_once(client: TestClient, seed: Seed) -> None:
    engine = seed.engine("eng")
    with seed.database.session() as session:
        row = engines.get_engine(session, seed.org_id, engine)
        # Active for the base deployment to appear, then Inactive so that nothing starts.
        switch_engine_status(session, row, EngineStatus.ACTIVE)
        deployments.create_base_deployment(session, row)
        switch_engine_status(session, row, EngineStatus.DEACTIVATING)
        switch_engine_status(session, row, EngineStatus.INACTIVE)
    names = [f"ft-{i:03d}" for i in range(150)]
    seed.deployments(engine, names)
    models = get(client, "/v1/models")
    assert set(models) == {"object", "data"}
    assert [m["id"] for m in models["data"]] == ["eng", *names]
    adapter = models["data"][1]
    assert adapter["parent"] == "eng" and adapter["owned_by"] == "default"
    assert adapter["status"] == "Deactivated" and isinstance(adapter["created"], int)
    assert models["data"][0]["parent"] is None


def test_timestamps_are_utc_with_z(client: TestClient, seed: Seed) -> None:
    engine = seed.engine("eng")
    seed.deployments(engine, ["a"])
    listed = get(client, "/v1/engines")["data"][0]
    shown = get(client, f"/v1/engines/{engine}")
    # A list names each deployment in short; the engine itself shows them whole.
    assert {k: v for k, v in listed.items() if k != "deployments"} == {
        k: v for k, v in shown.items() if k != "deployments"}
    assert listed["deployments"] == [{k: d[k] for k in ("id", "object", "name", "kind", "status", "status_reason")}
                                     for d in shown["deployments"]]
    for moment in (shown["created_at"], shown["deployments"][0]["updated_at"]):
        assert moment.endswith("Z") and moment[10] == "T"
    event = get(client, f"/v1/engines/{engine}/events")["data"][0]
    assert event["at"].endswith("Z")


def test_an_engine_page_costs_the_same_queries_for_many_engines(client: TestClient, seed: Seed) -> None:
    """Per request, counted in the request's own worker thread (the reconciler runs beside it)."""
    database: Database = client.app.state.database  # type: ignore[attr-defined]
    get(client, "/v1/engines")  # the key is looked up once, then remembered

    def statements_of(path: str) -> int:
        sent: list[str] = []

        def record(*_args: Any) -> None:
            if threading.current_thread().name == "AnyIO worker thread":
                sent.append(_args[2])

        event.listen(database.engine, "before_cursor_execute", record)
        try:
            get(client, path)
        finally:
            event.remove(database.engine, "before_cursor_execute", record)
        return len(sent)

    first = seed.engine("first")
    seed.deployments(first, ["a"])
    few = statements_of("/v1/engines")
    for i in range(10):
        seed.deployments(seed.engine(f"e{i}"), [f"e{i}-a", f"e{i}-b", f"e{i}-c"])
    assert statements_of("/v1/engines") == few == 3
    assert statements_of("/v1/deployments") == 1
    assert statements_of("/v1/models") == 3
