"""Organizations stay apart; a killed server converges from its database when started again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.integration.harness import ServerProcess, replica_pids, wait_deployments, wait_for
from tests.integration.reference import greedy_completion
from tests.integration.test_textgen import create_engine, deploy, register_job


def cli(server: ServerProcess, *args: str) -> str:
    command = [str(Path(sys.executable).parent / "enginehouse"), *args]
    done = subprocess.run(command, env=server.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def served(start_server, tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]):  # type: ignore[no-untyped-def]
    server = start_server()
    http = server.client()
    job = register_job(http, tiny_llama_dir, tiny_adapter_dirs[:1])
    engine = create_engine(http, "home", tiny_llama_dir)
    deploy(http, engine["id"], "home-ft", job["id"], 1)
    return server, wait_deployments(http, engine["id"]), job


def test_two_organizations_cannot_see_or_call_each_other(served, tiny_llama_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server, engine, job = served
    cli(server, "orgs", "create", "other")
    issued = json.loads(cli(server, "keys", "create", "--org", "other", "--json"))
    assert issued["organization"] == "other" and issued["key"]
    other = server.client(issued["key"])
    assert other.get("/v1/engines").json()["data"] == []
    assert other.get("/v1/deployments").json()["data"] == []
    assert other.get("/v1/training-jobs").json()["data"] == []
    assert other.get("/v1/models").json()["data"] == []
    for path in (f"/v1/engines/{engine['id']}", f"/v1/engines/{engine['id']}/events",
                 f"/v1/training-jobs/{job['id']}", f"/v1/deployments/{engine['deployments'][0]['id']}"):
        assert other.get(path).status_code == 404, path
    assert other.delete(f"/v1/engines/{engine['id']}").status_code == 404
    assert other.post(f"/v1/engines/{engine['id']}/deactivate").status_code == 404
    deploy_into = other.post(f"/v1/engines/{engine['id']}/deploy",
                             json={"name": "intruder", "training_id": job["id"], "checkpoint": 1})
    assert deploy_into.status_code == 404
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=issued["key"], max_retries=0)
    for model in ("home", "home-ft"):
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model=model, prompt="x", max_tokens=2)
    # the owner still sees everything unchanged
    assert server.client().get(f"/v1/engines/{engine['id']}").json()["status"] == "Active"


def test_revoked_key_is_refused(served) -> None:  # type: ignore[no-untyped-def]
    server, _engine, _job = served
    issued = json.loads(cli(server, "keys", "create", "--org", "default", "--json"))
    assert server.client(issued["key"]).get("/v1/engines").status_code == 200
    cli(server, "keys", "revoke", issued["key"])
    # the server trusts a key it has just seen for up to two seconds
    wait_for(lambda: server.client(issued["key"]).get("/v1/engines").status_code == 401, timeout=10,
             what="the revoked key to be refused")


def test_killed_server_converges_on_restart(served, start_server, tiny_llama_dir: Path,  # type: ignore[no-untyped-def]
                                            tiny_adapter_dirs: list[Path]) -> None:
    server, engine, _job = served
    pids_before = replica_pids(server.data_dir)
    assert len(pids_before) == 1
    server.kill()
    restarted = start_server(data_dir=server.data_dir, api_key=server.api_key)
    http = restarted.client()
    back = wait_deployments(http, engine["id"])
    assert back["status"] == "Active"
    assert sorted(d["name"] for d in back["deployments"]) == ["home", "home-ft"]
    wait_for(lambda: len(replica_pids(server.data_dir)) == 1, timeout=30, what="exactly one replica")
    assert len(back["replicas"]) == 1
    assert replica_pids(server.data_dir) == pids_before  # adopted from its record, not replaced
    client = openai.OpenAI(base_url=f"{restarted.url}/v1", api_key=server.api_key, max_retries=0)
    reply = client.completions.create(model="home-ft", prompt="the cat sat on the", max_tokens=8, temperature=0)
    assert reply.choices[0].text == greedy_completion(tiny_llama_dir, tiny_adapter_dirs[0], "the cat sat on the", 8)
    # A clean shutdown ends the replicas too, adopted ones included.
    restarted.shutdown()
    wait_for(lambda: replica_pids(server.data_dir) == [], timeout=10, what="no replica left")
