"""The dashboard's training jobs, experiments and API keys pages over HTTP, with the training
supervisor stopped (jobs stay Pending): what the forms create, what they refuse and in which
words, and that a refused form leaves nothing behind. Real jobs run from the browser in
tests/integration/test_dashboard.py."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from enginehouse.db.models import ExperimentExampleModel
from tests.unit.control.conftest import fake_lora_checkpoint
from tests.unit.dashboard.conftest import KEY, errors_in, sign_in

API = {"X-API-Key": KEY}
ROWS = [{"text": f"message {i}", "label": "yes" if i % 2 else "no"} for i in range(20)]


def jsonl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def start(client: TestClient, csrf: str, content: bytes, **fields: str) -> httpx.Response:
    data = {"csrf_token": csrf, "name": "tickets", "task_type": "classification", "base_model": "/models/bert",
            "train_test_split_ratio": "0.2", **fields}
    return client.post("/training-jobs/new", data=data, files={"file": ("tickets.jsonl", content)},
                       follow_redirects=False)


def field_error(page: httpx.Response, field: str) -> str:
    found = re.search(rf'id="{field}-error"[^>]*>([^<]+)<', page.text)
    assert found, (field, errors_in(page))
    return html.unescape(found.group(1))


def test_a_fine_tune_starts_from_an_uploaded_file_and_can_be_cancelled(client: TestClient) -> None:
    csrf = sign_in(client)
    started = start(client, csrf, jsonl(ROWS), num_train_epochs="2")
    assert started.status_code == 303, errors_in(started)
    job_path = started.headers["location"]
    job = client.get(f"/v1/training-jobs/{job_path.rsplit('/', 1)[1]}", headers=API).json()
    assert (job["status"], job["parameters"]["num_train_epochs"], job["train_test_split_ratio"]) == ("Pending", 2, 0.2)
    page = client.get(job_path)
    assert page.status_code == 200 and "Cancel the job" in page.text and 'data-live-html' in page.text
    assert "Pending" in client.get(f"{job_path}/live.json").json()["html"]
    assert "tickets" in client.get("/training-jobs").text
    cancelled = client.post(f"{job_path}/cancel", data={"csrf_token": csrf}, follow_redirects=False)
    assert cancelled.status_code == 303
    assert client.get(f"/v1/training-jobs/{job['id']}", headers=API).json()["status"] == "Cancelled"


@pytest.mark.parametrize(("content", "fields", "field", "words"), [
    (jsonl(ROWS[:3] + [{"text": "no label"}]), {}, "file", "line 4"),
    (b"", {}, "file", "no rows"),
    (jsonl(ROWS), {"num_train_epochs": "0"}, "num_train_epochs", "num_train_epochs"),
    (jsonl(ROWS), {"train_test_split_ratio": "1.5"}, "train_test_split_ratio", "train_test_split_ratio"),
    (jsonl(ROWS), {"task_type": "embedding"}, "task_type", "register existing checkpoints"),
])
def test_a_refused_fine_tune_keeps_nothing(client: TestClient, tmp_path: Path, content: bytes,
                                           fields: dict[str, str], field: str, words: str) -> None:
    csrf = sign_in(client)
    refused = start(client, csrf, content, **fields)
    assert refused.status_code in (400, 422), refused.status_code
    assert words in field_error(refused, field)
    assert client.get("/v1/training-jobs", headers=API).json()["data"] == []
    assert client.get("/v1/datasets", headers=API).json()["data"] == []
    assert not list((tmp_path / "data" / "datasets").glob("*.jsonl"))


def _new_experiment(client: TestClient, csrf: str, **fields: str) -> str:
    """Create an experiment through the form; its page's path."""
    made = client.post("/experiments/new", data={"csrf_token": csrf, "base_model": "/models/minilm", **fields},
                       follow_redirects=False)
    assert made.status_code == 303, errors_in(made)
    return str(made.headers["location"])


def test_an_experiment_from_descriptions_takes_examples_in_the_apis_words(client: TestClient) -> None:
    csrf = sign_in(client)
    path = _new_experiment(client, csrf, name="urgency", mode="decision",
                           classes="urgent: needs action now\nroutine: can wait")
    page = client.get(path)
    assert "needs action now" in page.text and "zero-shot" in client.get(f"{path}/live.json").json()["html"]
    added = client.post(f"{path}/examples", data={"csrf_token": csrf, "examples": "urgent: the site is down\n"
                                                  "routine: thanks for lunch"}, follow_redirects=False)
    assert added.status_code == 303
    assert "2 examples" in client.get(f"{path}/live.json").json()["html"]
    wrong = client.post(f"{path}/examples", data={"csrf_token": csrf, "examples": "later: next week is fine"})
    assert wrong.status_code == 400 and "later" in field_error(wrong, "examples")
    early = client.post(f"{path}/train", data={"csrf_token": csrf})
    assert early.status_code == 409 and "version 1" in field_error(early, "train")
    assert [e["examples"] for e in client.get("/v1/experiments", headers=API).json()["data"]] == [2]


def test_an_ner_experiments_examples_mark_their_entities_in_place(client: TestClient) -> None:
    csrf = sign_in(client)
    path = _new_experiment(client, csrf, name="places", mode="ner",
                           classes="city: a city such as Paris\nperson: a person's name")
    assert "[Oslo](city)" in client.get(path).text  # the form says how
    added = client.post(f"{path}/examples", data={"csrf_token": csrf, "examples": (
        "  [Ada Lovelace](person) flew to [Oslo](city).\nNothing to see here.\n")}, follow_redirects=False)
    assert added.status_code == 303, errors_in(added)
    experiment_id = path.rsplit("/", 1)[-1]
    with client.app.state.database.session() as session:  # type: ignore[attr-defined]
        rows = session.scalars(select(ExperimentExampleModel).where(
            ExperimentExampleModel.experiment_id == experiment_id).order_by(ExperimentExampleModel.id)).all()
        assert [(r.text, r.entities) for r in rows] == [
            ("Ada Lovelace flew to Oslo.", [{"start": 0, "end": 12, "label": "person"},
                                            {"start": 21, "end": 25, "label": "city"}]),
            ("Nothing to see here.", []),
        ]
    wrong = client.post(f"{path}/examples", data={"csrf_token": csrf, "examples": "to [Rome](town)"})
    assert wrong.status_code == 400 and "'town'" in field_error(wrong, "examples")
    assert [e["examples"] for e in client.get("/v1/experiments", headers=API).json()["data"]] == [2]


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"classes": "just one: a single class"}, "classes", "at least two classes"),
    ({"classes": "no colon here"}, "classes", "line 1"),
    ({"mode": "guessing"}, "mode", "mode"),
])
def test_a_refused_experiment_is_shown_beside_its_field(client: TestClient, fields: dict[str, str], field: str,
                                                        words: str) -> None:
    csrf = sign_in(client)
    data = {"csrf_token": csrf, "name": "urgency", "mode": "decision", "base_model": "/models/minilm",
            "classes": "urgent: now\nroutine: later", **fields}
    refused = client.post("/experiments/new", data=data)
    assert refused.status_code in (400, 422) and words in field_error(refused, field)
    assert client.get("/v1/experiments", headers=API).json()["data"] == []


def test_a_new_key_is_shown_once_and_a_revoked_one_stops_working(client: TestClient) -> None:
    csrf = sign_in(client)
    created = client.post("/api-keys", data={"csrf_token": csrf})
    key = re.search(r'id="new-key">([^<]+)<', created.text)
    assert created.status_code == 200 and key
    new_key = key.group(1)
    assert client.get("/v1/engines", headers={"X-API-Key": new_key}).status_code == 200
    listing = client.get("/api-keys")
    assert new_key not in listing.text and new_key[:10] in listing.text
    key_id = re.search(rf'href="/api-keys/([^/]+)/revoke" aria-label="Revoke {re.escape(new_key[:10])}"',
                       listing.text).group(1)  # type: ignore[union-attr]
    assert "cannot be undone" in client.get(f"/api-keys/{key_id}/revoke").text
    assert client.post(f"/api-keys/{key_id}/revoke", data={"csrf_token": csrf},
                       follow_redirects=False).status_code == 303
    client.app.state.key_cache.clear()  # type: ignore[attr-defined]
    assert client.get("/v1/engines", headers={"X-API-Key": new_key}).status_code == 401
    assert client.post(f"/api-keys/{key_id}/revoke", data={"csrf_token": csrf}).status_code == 409
    assert client.get("/api-keys/key-missing/revoke").status_code == 404


def test_a_job_offers_its_checkpoints_to_the_engines_that_fit_it(client: TestClient, tmp_path: Path) -> None:
    csrf = sign_in(client)
    job = client.post("/v1/training-jobs", headers=API, json={
        "name": "job", "task_type": "text-generation", "base_model": "/models/x",
        "checkpoints": [{"checkpoint": n, "path": str(fake_lora_checkpoint(tmp_path / f"a{n}"))} for n in (1, 2)]}).json()
    engines = {}
    for name, task_type, base in [("fits", "text-generation", "/models/x"), ("other-base", "text-generation", "/models/y"),
                                  ("other-task", "classification", "/models/x")]:
        engines[name] = client.post("/v1/engines", headers=API, json={
            "name": name, "base_model": base, "task_type": task_type, "deployment_option": "gpu-h100-80gb"}).json()["id"]
    page = client.get(f"/training-jobs/{job['id']}")
    offered = re.findall(r'<option value="(engine-[^"]+)"', page.text)
    assert offered == [engines["fits"]] and "checkpoint 2" in page.text
    refused = client.post(f"/training-jobs/{job['id']}/deploy", data={
        "csrf_token": csrf, "engine_id": engines["other-task"], "checkpoint": "2", "name": "mixed"})
    assert refused.status_code == 409 and "task type" in errors_in(refused)[0]
    done = client.post(f"/training-jobs/{job['id']}/deploy", data={
        "csrf_token": csrf, "engine_id": engines["fits"], "checkpoint": "2", "name": "from-job"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/engines/{engines['fits']}"
    deployment = [d for d in client.get(f"/v1/engines/{engines['fits']}", headers=API).json()["deployments"]
                  if d["name"] == "from-job"]
    assert deployment and deployment[0]["source"] == {"type": "training_job", "training_id": job["id"], "checkpoint": 2}
