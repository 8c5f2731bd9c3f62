"""``GET /v1/engines/{id}/replicas/{replica_id}/logs`` with the local provider: the end of a
replica's own log file, only for a replica the caller's engine has, and ``?tail=`` checked as
every log's is. The reconciler is stopped, so the replica is a row and a log file, no process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from enginehouse.replicaauth import ReplicaAddress
from enginehouse.services import orgs
from enginehouse.services import replicas as replica_service
from tests.app_clients import app_client
from tests.databases import BACKENDS

KEY = "eh-test-replica-logs"
AUTH = {"Authorization": f"Bearer {KEY}"}
LINES = [f"line {i}" for i in range(1, 6)]


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    with app_client(request.param, tmp_path, KEY, quiet=("training", "reconciler")) as client:
        yield client


def _engine_with_replica(client: TestClient, name: str, replica_id: str) -> dict[str, Any]:
    created = client.post("/v1/engines", headers=AUTH, json={"name": name, "base_model": "/models/llama",
                                                             "task_type": "text-generation"})
    assert created.status_code == 201, created.text
    engine = created.json()
    state = client.app.state  # type: ignore[attr-defined]
    with state.database.session() as session:
        org_id = orgs.authenticate(session, KEY)
        replica_service.add_replica(session, org_id, engine["id"], replica_id,
                                    ReplicaAddress("http://127.0.0.1:1", "secret"))
    logs = state.settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{replica_id}.log").write_text("".join(f"{line}\n" for line in LINES))
    return engine


def _logs(client: TestClient, engine_id: str, replica_id: str, headers: dict[str, str] = AUTH,
          **params: str) -> httpx.Response:
    return client.get(f"/v1/engines/{engine_id}/replicas/{replica_id}/logs", headers=headers, params=params)


def test_the_end_of_a_replicas_log(client: TestClient) -> None:
    engine = _engine_with_replica(client, "logged", "replica-00000000000000a1")
    answer = _logs(client, engine["id"], "replica-00000000000000a1", tail="2")
    assert answer.status_code == 200 and answer.json() == {"object": "list", "data": LINES[-2:]}
    assert _logs(client, engine["id"], "replica-00000000000000a1").json()["data"] == LINES  # 1000 by default


def test_only_a_replica_the_callers_engine_has(client: TestClient) -> None:
    first = _engine_with_replica(client, "first", "replica-00000000000000b1")
    second = _engine_with_replica(client, "second", "replica-00000000000000b2")
    for engine_id, replica_id in ((first["id"], "replica-00000000000000b2"), (second["id"], "replica-00000000000000b1"),
                                  (first["id"], "replica-0000000000000000"), (first["id"], "..%2F..%2Fadmin.key")):
        missing = _logs(client, engine_id, replica_id)
        assert missing.status_code == 404, (replica_id, missing.text)
    assert _logs(client, first["id"], "replica-0000000000000000").json()["error"]["code"] == "replica_not_found"
    with client.app.state.database.session() as session:  # type: ignore[attr-defined]
        orgs.create_organization(session, "other")
        other = {"Authorization": f"Bearer {orgs.create_api_key(session, 'other').key}"}
    assert _logs(client, first["id"], "replica-00000000000000b1", headers=other).status_code == 404


@pytest.mark.parametrize("tail", ["0", "10001", "x", "-3", "1.5", "9" * 5000, "\u0663"])
def test_tail_must_be_a_count_from_1_to_10000(client: TestClient, tail: str) -> None:
    engine = _engine_with_replica(client, "tails", "replica-00000000000000c1")
    for path in (f"/v1/engines/{engine['id']}/replicas/replica-00000000000000c1/logs", "/v1/training-jobs/tr-x/logs"):
        refused = client.get(path, headers=AUTH, params={"tail": tail})
        assert refused.status_code == 400, (path, tail[:10], refused.text)
        assert refused.json()["error"]["param"] == "tail"
