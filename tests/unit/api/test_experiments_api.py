"""Playground experiments over HTTP, before anything is built: the shapes each mode takes and
refuses, examples and their labels, and what cannot happen before version 1 is built. The
training supervisor is stopped, so versions stay Pending; building and training them with real
workers is tested in tests/integration/test_experiments.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from enginehouse.services import orgs
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


def test_ner_experiments_are_refused_for_now(client: TestClient) -> None:
    assert _error(_create(client, mode="ner"), 400)["code"] == "mode_not_available"


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
