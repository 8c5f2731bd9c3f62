"""Playground experiments over HTTP, before anything is built: the shapes each mode takes and
refuses, examples and their labels, and what cannot happen before version 1 is built; then, with
version 1 marked built by hand, what ``train`` queues and the launch the supervisor would make of
it. The training supervisor is stopped, so versions stay Pending; building and training them with
real workers is tested in tests/integration/test_experiments.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from enginehouse.db.models import CheckpointModel, DatasetModel, TrainingJobModel
from enginehouse.reconciler.training import _launch_of
from enginehouse.runtime.classify.labels import REGRESSION_LABEL as REPLICA_REGRESSION_LABEL
from enginehouse.services import experiments as experiment_service
from enginehouse.services import orgs
from enginehouse.services import training_jobs as job_service
from enginehouse.services.pages import PageRequest
from enginehouse.training.parameters import TrainingParameters
from tests.app_clients import app_client
from tests.databases import BACKENDS

KEY = "eh-experiments-admin"
AUTH = {"Authorization": f"Bearer {KEY}"}
URGENCY = [{"name": "urgent", "description": "needs action now"},
           {"name": "routine", "description": "can wait"}]
SCORE = [{"name": "quality", "description": "how good the answer is", "min_value": 0, "max_value": 10,
          "low_description": "useless", "high_description": "perfect"}]


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    with app_client(request.param, tmp_path, KEY) as client:
        yield client


def _create(client: TestClient, **fields: Any) -> httpx.Response:
    body = {"name": "urgency", "mode": "decision", "base_model": "/models/minilm", "classes": URGENCY, **fields}
    return client.post("/v1/experiments", headers=AUTH, json=body)


def _error(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    return dict(answer.json()["error"])


def test_an_experiment_starts_with_a_zero_shot_version(client: TestClient) -> None:
    answer = _create(client)
    assert answer.status_code == 201, answer.text
    experiment = answer.json()
    assert experiment["id"].startswith("ex-") and experiment["task_type"] == "classification"
    assert experiment["labels"] == ["urgent", "routine"] and experiment["examples"] == 0
    assert experiment["latest_version"] == 1
    [version] = experiment["versions"]
    assert (version["version"], version["kind"], version["status"]) == (1, "zero-shot", "Pending")
    job = client.get(f"/v1/training-jobs/{version['training_id']}", headers=AUTH).json()
    assert (job["experiment_id"], job["experiment_version"]) == (experiment["id"], 1)
    assert client.get(f"/v1/experiments/{experiment['id']}", headers=AUTH).json() == experiment
    assert [e["id"] for e in client.get("/v1/experiments", headers=AUTH).json()["data"]] == [experiment["id"]]


def test_judges_and_regressions_have_their_own_shapes(client: TestClient) -> None:
    judge = _create(client, name="polite", mode="judge",
                    classes=[{"name": "polite", "description": "the reply is polite"}])
    assert judge.status_code == 201 and judge.json()["labels"] == ["pass", "fail"]
    score = _create(client, name="quality", mode="regression", classes=SCORE)
    assert score.status_code == 201 and score.json()["task_type"] == "regression"
    # What its checkpoints answer under: a replica serves a regression head's output as "score".
    assert score.json()["labels"] == ["score"] == [REPLICA_REGRESSION_LABEL]


@pytest.mark.parametrize(("fields", "words"), [
    ({"mode": "judge"}, "exactly one class"),
    ({"classes": URGENCY[:1]}, "at least two classes"),
    ({"classes": [URGENCY[0], URGENCY[0]]}, "a name of its own"),
    ({"mode": "regression", "classes": [{"name": "q", "description": "x"}]}, "needs min_value"),
    ({"mode": "regression", "classes": [{**SCORE[0], "min_value": 10}]}, "less than max_value"),
    ({"classes": [{**URGENCY[0], "min_value": 1}, URGENCY[1]]}, "belong to a regression"),
    ({"mode": "sentiment"}, "mode"),
    ({"classes": []}, "classes"),
])
def test_a_body_that_does_not_fit_its_mode_is_422(client: TestClient, fields: dict[str, Any], words: str) -> None:
    assert words in _error(_create(client, **fields), 422)["message"]
    assert client.get("/v1/experiments", headers=AUTH).json()["data"] == []


PLACES = [{"name": "city", "description": "a city, such as Paris or Tokyo"}]


def test_an_ner_experiment_finds_the_entity_types_it_describes(client: TestClient) -> None:
    answer = _create(client, name="places", mode="ner", classes=PLACES)
    assert answer.status_code == 201, answer.text  # one entity type is enough
    experiment = answer.json()
    assert (experiment["task_type"], experiment["labels"]) == ("ner", ["city"])
    for name, words in (("O", "outside"), ("B-city", "tag")):
        classes = [*PLACES, {"name": name, "description": "x"}]
        assert words in _error(_create(client, name="bad", mode="ner", classes=classes), 422)["message"]


def test_ner_examples_carry_entities_that_fit_their_text(client: TestClient) -> None:
    experiment = _create(client, name="places", mode="ner", classes=PLACES).json()
    path = f"/v1/experiments/{experiment['id']}/examples"
    rows = [{"text": "I flew to Paris.", "entities": [{"start": 10, "end": 15, "label": "city"}]},
            {"text": "Nothing here.", "entities": []}]
    added = client.post(path, headers=AUTH, json={"examples": rows})
    assert added.status_code == 200 and added.json()["count"] == 2, added.text
    for bad, words in (
        ({"text": "Paris", "entities": [{"start": 0, "end": 9, "label": "city"}]}, "5 characters"),
        ({"text": "Paris", "entities": [{"start": 3, "end": 3, "label": "city"}]}, "start must be less"),
        ({"text": "Paris Rome", "entities": [{"start": 0, "end": 7, "label": "city"},
                                             {"start": 6, "end": 10, "label": "city"}]}, "overlap"),
        ({"text": "Paris", "entities": [{"start": 0, "end": 5, "label": "person"}]}, "'person'"),
        ({"text": "Paris", "label": "city"}, "'entities'"),
        ({"text": "Paris"}, "'entities'"),
    ):
        error = _error(client.post(path, headers=AUTH, json={"examples": [rows[0], bad]}), 400)
        assert error["param"] == "examples[1]" and words in error["message"], (bad, error)
    assert _error(client.post(path, headers=AUTH, json={"examples": [
        {"text": "Paris", "entities": [{"start": -1, "end": 5, "label": "city"}]}]}), 422)
    assert client.get(f"/v1/experiments/{experiment['id']}", headers=AUTH).json()["examples"] == 2
    # Entities belong to ner examples only.
    other = _create(client).json()
    error = _error(client.post(f"/v1/experiments/{other['id']}/examples", headers=AUTH, json={"examples": [
        {"text": "down", "label": "urgent", "entities": []}]}), 400)
    assert "ner" in error["message"]


def test_an_ner_version_trains_on_the_examples_as_a_dataset(client: TestClient) -> None:
    experiment = _create(client, name="places", mode="ner", classes=PLACES).json()
    _built(client, experiment["id"], {"zero-shot": {"f1": 0.4}})
    path = f"/v1/experiments/{experiment['id']}/examples"
    plain = [{"text": f"message {i}", "entities": []} for i in range(8)]
    assert client.post(path, headers=AUTH, json={"examples": plain}).status_code == 200
    # No example marks an entity: nothing to learn.
    assert _error(client.post(f"{path.removesuffix('/examples')}/train", headers=AUTH), 409)["code"] == \
        "not_enough_examples"
    marked = [{"text": f"to Oslo {i}", "entities": [{"start": 3, "end": 7, "label": "city"}]} for i in range(4)]
    assert client.post(path, headers=AUTH, json={"examples": marked}).status_code == 200
    pooled = client.post(f"/v1/experiments/{experiment['id']}/train", headers=AUTH,
                         json={"parameters": {"pooling": "mean"}})
    assert _error(pooled, 400)["param"] == "parameters.pooling"
    answer = client.post(f"/v1/experiments/{experiment['id']}/train", headers=AUTH)
    assert answer.status_code == 202, answer.text
    view = client.get(f"/v1/experiments/{experiment['id']}", headers=AUTH).json()
    with client.app.state.database.session() as session:  # type: ignore[attr-defined]
        job = session.get(TrainingJobModel, view["versions"][1]["training_id"])
        assert job is not None
        launch = _launch_of(session, job)
        assert job.parameters == {**TrainingParameters().model_dump(),
                                  **experiment_service.TRAINED_NER_VERSION_PARAMETERS}
    assert launch.init_checkpoint == launch.baseline_checkpoint == "/checkpoints/zero-shot"
    assert launch.train_path is not None
    rows = [json.loads(line) for line in Path(launch.train_path).read_text().splitlines()]
    assert rows[0] == plain[0] and rows[-1] == marked[-1]


def test_examples_must_carry_the_experiments_labels(client: TestClient) -> None:
    experiment = _create(client).json()
    path = f"/v1/experiments/{experiment['id']}/examples"
    added = client.post(path, headers=AUTH, json={"examples": [{"text": "server down", "label": "urgent"},
                                                              {"text": "thanks!", "label": "routine"}]})
    assert added.status_code == 200 and added.json()["count"] == 2
    error = _error(client.post(path, headers=AUTH, json={"examples": [{"text": "a", "label": "urgent"},
                                                                      {"text": "b", "label": "later"}]}), 400)
    assert error["param"] == "examples[1]" and "later" in error["message"]
    assert _error(client.post(path, headers=AUTH, json={"examples": [{"text": "a", "value": 1}]}), 400)
    assert client.get(f"/v1/experiments/{experiment['id']}", headers=AUTH).json()["examples"] == 2

    score = _create(client, name="quality", mode="regression", classes=SCORE).json()
    scored = client.post(f"/v1/experiments/{score['id']}/examples", headers=AUTH,
                         json={"examples": [{"text": "great", "value": 9.5}]})
    assert scored.status_code == 200 and scored.json()["count"] == 1
    assert _error(client.post(f"/v1/experiments/{score['id']}/examples", headers=AUTH,
                              json={"examples": [{"text": "great", "label": "quality"}]}), 400)


def test_nothing_trains_or_deploys_before_version_1_is_built(client: TestClient) -> None:
    experiment = _create(client).json()
    assert _error(client.post(f"/v1/experiments/{experiment['id']}/train", headers=AUTH), 409)["code"] == \
        "version_not_ready"
    engine = client.post("/v1/engines", headers=AUTH, json={
        "name": "cls", "base_model": "/models/minilm", "task_type": "classification",
        "deployment_option": "gpu-h100-80gb"}).json()
    deploy = client.post(f"/v1/engines/{engine['id']}/deploy", headers=AUTH,
                         json={"name": "urgency-v1", "experiment_id": experiment["id"], "version": 1})
    assert _error(deploy, 409)["code"] == "version_not_ready"
    missing = client.post(f"/v1/engines/{engine['id']}/deploy", headers=AUTH,
                          json={"name": "urgency-v3", "experiment_id": experiment["id"], "version": 3})
    assert _error(missing, 404)["code"] == "version_not_found"


def test_another_organizations_experiment_is_not_found(client: TestClient) -> None:
    experiment = _create(client).json()
    with client.app.state.database.session() as session:  # type: ignore[attr-defined]
        orgs.create_organization(session, "other")
        other = {"Authorization": f"Bearer {orgs.create_api_key(session, 'other').key}"}
    assert client.get(f"/v1/experiments/{experiment['id']}", headers=other).status_code == 404
    assert client.post(f"/v1/experiments/{experiment['id']}/examples", headers=other,
                       json={"examples": [{"text": "a", "label": "urgent"}]}).status_code == 404
    assert client.get("/v1/experiments", headers=other).json()["data"] == []


def _built(client: TestClient, experiment_id: str, results: dict[str, dict[str, float]]) -> None:
    """Mark version 1 built, as the supervisor would, with a checkpoint per entry of ``results``
    (directory name: test results)."""
    with client.app.state.database.session() as session:  # type: ignore[attr-defined]
        job = experiment_service.version_job(session, experiment_id, 1)
        assert job is not None
        job.status, job.progress = "Success", 100.0
        job.checkpoints = [CheckpointModel(checkpoint=number, path=f"/checkpoints/{name}", test_results=scores)
                           for number, (name, scores) in enumerate(results.items(), 1)]


def _add_examples(client: TestClient, experiment_id: str, count: int = 10) -> None:
    rows = [{"text": f"message {i}", "label": "urgent" if i % 2 else "routine"} for i in range(count)]
    added = client.post(f"/v1/experiments/{experiment_id}/examples", headers=AUTH, json={"examples": rows})
    assert added.status_code == 200, added.text


def test_train_queues_version_2_which_starts_from_and_is_scored_beside_version_1s_best(client: TestClient) -> None:
    experiment = _create(client).json()
    _built(client, experiment["id"], {"worse": {"accuracy": 0.5}, "best": {"accuracy": 0.75}})
    _add_examples(client, experiment["id"])
    answer = client.post(f"/v1/experiments/{experiment['id']}/train", headers=AUTH)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"object": "experiment.version", "experiment_id": experiment["id"], "version": 2}

    view = client.get(f"/v1/experiments/{experiment['id']}", headers=AUTH).json()
    assert view["latest_version"] == 2 and view["examples"] == 10
    first, second = view["versions"]
    assert (first["status"], first["test_results"]) == ("Success", {"accuracy": 0.75})
    assert (second["version"], second["kind"], second["status"], second["test_results"]) == (
        2, "trained", "Pending", None)
    with client.app.state.database.session() as session:  # type: ignore[attr-defined]
        job = session.get(TrainingJobModel, second["training_id"])
        assert job is not None and (job.experiment_id, job.experiment_version) == (experiment["id"], 2)
        launch = _launch_of(session, job)
        dataset = session.get(DatasetModel, job.train_dataset_id)
        assert dataset is not None and dataset.rows == 10
    assert launch.init_checkpoint == launch.baseline_checkpoint == "/checkpoints/best"
    assert launch.zero_shot is None and launch.train_path == dataset.path
    assert launch.train_test_split_ratio == experiment_service.HELD_OUT_RATIO
    assert launch.parameters == {**job.parameters, **experiment_service.TRAINED_VERSION_PARAMETERS}
    # The next one is version 3.
    again = client.post(f"/v1/experiments/{experiment['id']}/train", headers=AUTH)
    assert again.status_code == 202 and again.json()["version"] == 3


def test_a_trained_version_cannot_read_the_models_pooled_output(client: TestClient) -> None:
    experiment = _create(client).json()
    _built(client, experiment["id"], {"zero-shot": {}})
    _add_examples(client, experiment["id"])
    answer = client.post(f"/v1/experiments/{experiment['id']}/train", headers=AUTH,
                         json={"parameters": {"pooling": "model"}})
    error = _error(answer, 400)
    assert (error["code"], error["param"]) == ("invalid_parameters", "parameters.pooling")
    assert "'model'" in error["message"] and "mean" in error["message"]
    assert [v["version"] for v in client.get(f"/v1/experiments/{experiment['id']}", headers=AUTH).json()[
        "versions"]] == [1]


def test_a_list_shows_each_experiment_as_its_own_view_does(client: TestClient) -> None:
    made = [_create(client, name="urgency").json(), _create(client, name="quality", mode="regression",
                                                            classes=SCORE).json(), _create(client, name="u2").json()]
    _built(client, made[0]["id"], {"a": {"accuracy": 0.5}})
    _add_examples(client, made[0]["id"])
    assert client.post(f"/v1/experiments/{made[0]['id']}/train", headers=AUTH).status_code == 202
    listed = client.get("/v1/experiments", headers=AUTH).json()
    assert listed["data"] == [client.get(f"/v1/experiments/{e['id']}", headers=AUTH).json()
                              for e in reversed(made)]
    assert [len(e["versions"]) for e in listed["data"]] == [1, 1, 2]
    assert [e["examples"] for e in listed["data"]] == [0, 0, 10]
    page = client.get("/v1/experiments", headers=AUTH, params={"limit": 2}).json()
    assert [e["id"] for e in page["data"]] == [made[2]["id"], made[1]["id"]] and page["has_more"]


def test_experiments_and_training_jobs_are_listed_by_task_type_and_base_model(client: TestClient) -> None:
    decision = _create(client).json()
    score = _create(client, name="quality", mode="regression", classes=SCORE, base_model="/models/other").json()
    with client.app.state.database.session() as session:  # type: ignore[attr-defined]
        org_id = orgs.get_organization_by_name(session, orgs.DEFAULT_ORGANIZATION).id
        page = PageRequest()

        def experiments(**filters: str) -> list[str]:
            return [e.id for e in experiment_service.list_experiments(session, org_id, page, **filters).items]

        def jobs(**filters: str) -> list[str | None]:
            return [r.job.experiment_id for r in job_service.list_training_jobs(session, org_id, page, **filters).items]

        assert experiments() == [score["id"], decision["id"]] and jobs() == [score["id"], decision["id"]]
        for found in (experiments, jobs):
            assert found(task_type="regression") == [score["id"]]
            assert found(task_type="classification") == [decision["id"]]
            assert found(base_model="/models/minilm") == [decision["id"]]
            assert found(task_type="regression", base_model="/models/minilm") == []
            assert found(task_type="ner") == []
