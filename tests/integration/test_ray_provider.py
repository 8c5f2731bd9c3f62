"""Replicas on a real Ray cluster: a head and a worker node started on this machine with
``ray start`` (two CPUs each), and a real server with ``ENGINEHOUSE_PROVIDER=ray``. An engine of
two replicas gets one Ray actor per replica, one on each node, answering on the node's address;
calls go through the gateway; a replica called without its secret refuses; each replica's log is
read on its node through the API and the command line. A killed actor is seen
through Ray and replaced; a server killed and started again adopts the actors alive instead of
starting duplicates; deleting the engine ends its actors.

A fine-tuning job runs on the cluster too, in a Ray actor of its own: its base model and dataset
travel to its node, its checkpoints come back into the server's data directory, checked, and one
deploys onto a Ray engine and answers as PEFT does with that checkpoint; a cancelled job stops."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from openai import OpenAI

from enginehouse.providers.ray_cluster import ray_namespace
from enginehouse.replicaauth import SECRET_HEADER
from tests.integration.harness import (
    ServerProcess, engine_status, free_port, wait_deployments, wait_engine, wait_for,
)
from tests.integration.ray_cluster import RAY_ENV, RayCluster, local_ray_cluster
from tests.integration.reference import greedy_completion
from tests.integration.test_orgs_and_restart import cli
from tests.integration.test_fine_tuning import ENDED, job_of, start_job, upload, wait_job
from tests.integration.test_textgen import create_engine, deploy, register_job
from tests.training_data import answer_rows

pytestmark = pytest.mark.integration
pytest.importorskip("ray")

AUTOSCALING = {"min_replicas": 2, "max_replicas": 2}
PROMPT = "the cat sat on the"
MAX_TOKENS = 6


@pytest.fixture(scope="module")
def database_url() -> str:
    """SQLite only: what this shows is placement, liveness and healing on Ray, not the database."""
    return ""


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    with local_ray_cluster() as cluster:
        yield cluster


class TamperingProxy:
    """The network between the replicas and the server: forwards their artifact calls, and while
    ``tamper`` is set flips a byte of every file it carries (a man in the middle, or a bad link)."""

    def __init__(self) -> None:
        self.target = ""  # the server's URL, once it has one
        self.tamper = False
        self.files_carried = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
                headers = {k: v for k, v in self.headers.items() if k.lower() == SECRET_HEADER.lower()}
                answer = httpx.get(proxy.target + self.path, headers=headers, timeout=60)
                body = answer.content
                if "/files/" in self.path and answer.status_code == 200:
                    proxy.files_carried += 1
                    if proxy.tamper:
                        body = bytes([body[0] ^ 1]) + body[1:]
                self.send_response(answer.status_code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("0.0.0.0", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://0.0.0.0:{self.server.server_port}"  # the provider puts this machine's address


@pytest.fixture(scope="module")
def proxy() -> Iterator[TamperingProxy]:
    carrier = TamperingProxy()
    yield carrier
    carrier.server.shutdown()
    carrier.server.server_close()


@pytest.fixture(scope="module")
def ray_settings(ray_cluster: RayCluster, proxy: TamperingProxy) -> dict[str, str]:
    # Every model and checkpoint path is fetched, as on nodes with no shared filesystem.
    return {"ENGINEHOUSE_PROVIDER": "ray", "ENGINEHOUSE_RAY_ADDRESS": ray_cluster.address,
            "ENGINEHOUSE_RAY_FETCH_ARTIFACTS": "always", "ENGINEHOUSE_CLUSTER_URL": proxy.url, **RAY_ENV}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ready(engine: dict[str, Any] | None) -> dict[str, str]:
    return {r["id"]: r["url"] for r in (engine or {}).get("replicas", []) if r["status"] == "ready"}


def _answers_as_peft(server: ServerProcess, expected: dict[str, str]) -> None:
    """Each deployment's greedy completion through the gateway is PEFT's (``expected``)."""
    client = OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
    for model, text in expected.items():
        reply = client.completions.create(model=model, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0)
        assert reply.choices[0].text == text, model


def _training_actors(cluster: RayCluster) -> list[str]:
    return list(cluster.driver("print(json.dumps([a['name'] for a in ray.util.list_named_actors(all_namespaces=True)"
                               " if a['name'].startswith('training-')]))"))


@pytest.mark.timeout(600)
def test_a_fine_tune_runs_on_the_cluster_and_its_checkpoints_come_back(  # type: ignore[no-untyped-def]
    start_server, ray_cluster: RayCluster, ray_settings: dict[str, str], proxy: TamperingProxy,
    tiny_llama_dir: Path,
) -> None:
    server: ServerProcess = start_server(settings={**ray_settings, "ENGINEHOUSE_TRAINING_THREADS": "1"})
    proxy.target = server.url
    http = server.client()
    carried = proxy.files_carried
    rows = answer_rows(24)
    train = upload(http, "answers", rows)
    job = start_job(http, name="on-ray", task_type="text-generation", base_model=str(tiny_llama_dir),
                    train_dataset_id=train, train_test_split_ratio=0.25,
                    parameters={"num_train_epochs": 2, "learning_rate": 1e-2, "lora_r": 4})
    job = wait_job(http, job["id"])
    # Trained on a node of the cluster, from files that travelled there (every path is fetched
    # here): the base model's and the dataset's, each kept in the node's cache under its digest.
    lines = http.get(f"/v1/training-jobs/{job['id']}/logs", params={"tail": "1000"}).json()["data"]
    nodes = ray_cluster.driver("print(json.dumps([n['NodeID'] for n in ray.nodes()]))")
    assert any(f"to node {node}" in line for line in lines for node in nodes), lines[:5]
    blobs = {p.name for p in (ray_cluster.artifacts / "blobs").iterdir()}
    dataset = next(server.data_dir.glob(f"datasets/{train}*"))
    assert {_sha256(p) for p in [dataset, *tiny_llama_dir.rglob("*")] if p.is_file()} <= blobs
    assert proxy.files_carried > carried
    # Its checkpoints are the server's now, whole; the job's actor is gone once it ended.
    checkpoints = job["checkpoints"]
    assert [c["checkpoint"] for c in checkpoints] == [1, 2]
    for checkpoint in checkpoints:
        path = Path(checkpoint["path"])
        assert path.parent == server.data_dir / "training" / job["id"] and (path / "adapter_config.json").is_file()
        assert set(checkpoint["test_results"]) >= {"eval_loss"}
    assert _training_actors(ray_cluster) == []
    # Its log stays readable, through the API and the command line.
    printed = cli(server, "jobs", "logs", job["id"], "--tail", "10000", "--url", server.url, "--api-key", server.api_key)
    assert "to node" in printed

    # One deploys onto an engine on the cluster and answers as PEFT does with it.
    engine = create_engine(http, "trained-on-ray", tiny_llama_dir)
    deploy(http, engine["id"], "trained-on-ray-ft", job["id"], 2)
    wait_deployments(http, engine["id"])
    expected = greedy_completion(tiny_llama_dir, Path(checkpoints[1]["path"]), PROMPT, MAX_TOKENS)
    _answers_as_peft(server, {"trained-on-ray-ft": expected})

    # A job cancelled while it trains stops, and its actor ends; the checkpoints it had brought
    # back stay, and deploy.
    long = start_job(http, name="long", task_type="text-generation", base_model=str(tiny_llama_dir),
                     train_dataset_id=train, parameters={"num_train_epochs": 100, "lora_r": 4})
    wait_for(lambda: job_of(http, long["id"])["checkpoints"], timeout=180, what="the long job's first checkpoint")
    # A server killed while it trains: the next one adopts the job's actor and follows it on.
    server.kill()
    server.start()
    http = server.client()
    seen = len(job_of(http, long["id"])["checkpoints"])
    wait_for(lambda: len(job_of(http, long["id"])["checkpoints"]) > seen, timeout=120,
             what="a checkpoint of the adopted job")
    assert job_of(http, long["id"])["status"] in ("Running", "Testing")
    assert http.post(f"/v1/training-jobs/{long['id']}/cancel").status_code == 202
    cancelled = wait_for(lambda: (j := job_of(http, long["id"]))["status"] in ENDED and j, timeout=60,
                         what="the cancelled job to end")
    assert cancelled["status"] == "Cancelled", cancelled
    wait_for(lambda: _training_actors(ray_cluster) == [], timeout=30, what="the cancelled job's actor to end")
    first = cancelled["checkpoints"][0]
    deploy(http, engine["id"], "cancelled-ft", long["id"], first["checkpoint"])
    wait_deployments(http, engine["id"])
    _answers_as_peft(server, {"cancelled-ft": greedy_completion(tiny_llama_dir, Path(first["path"]), PROMPT,
                                                                MAX_TOKENS)})

    # A job whose actor is lost fails, saying so.
    lost = start_job(http, name="lost", task_type="text-generation", base_model=str(tiny_llama_dir),
                     train_dataset_id=train, parameters={"num_train_epochs": 100, "lora_r": 4})
    [name] = wait_for(lambda: _training_actors(ray_cluster), timeout=60, what="the job's actor")
    ray_cluster.driver(f"[a] = [a for a in ray.util.list_named_actors(all_namespaces=True) if a['name'] == {name!r}]\n"
                       "ray.kill(ray.get_actor(a['name'], namespace=a['namespace']))\nprint('null')")
    failed = wait_for(lambda: (j := job_of(http, lost["id"]))["status"] in ENDED and j, timeout=60,
                      what="the lost job to end")
    assert failed["status"] == "Failed" and "Ray actor is gone" in failed["status_reason"], failed

    # Tidy up for the next test on this cluster: no replica of this server's stays.
    assert http.delete(f"/v1/engines/{engine['id']}").status_code == 202
    wait_for(lambda: ray_cluster.replica_actors() == {}, timeout=60, what="the replica actors to end")
    server.stop()


def test_replicas_run_in_ray_actors_across_nodes_heal_and_are_adopted(  # type: ignore[no-untyped-def]
    start_server, ray_cluster: RayCluster, ray_settings: dict[str, str], proxy: TamperingProxy,
    tiny_llama_dir: Path, tiny_adapter_dirs: list[Path], tmp_path: Path,
) -> None:
    server: ServerProcess = start_server(settings=ray_settings)
    proxy.target = server.url
    http = server.client()
    # What the cluster can give: its CPU nodes, as Ray counts them.
    offered = {o["name"]: o for o in http.get("/v1/deployment-options").json()["data"] if o["available"]}
    assert set(offered) == {"cpu"} and offered["cpu"]["cpus"] == 2

    engine = create_engine(http, "on-ray", tiny_llama_dir, autoscaling=AUTOSCALING)
    job = register_job(http, tiny_llama_dir, tiny_adapter_dirs[:1])
    deploy(http, engine["id"], "on-ray-ft", job["id"], 1)
    wait_for(lambda: len(_ready(engine_status(http, engine["id"]))) == 2, timeout=180, what="two ready replicas")
    engine = wait_deployments(http, engine["id"])
    expected = {"on-ray": greedy_completion(tiny_llama_dir, None, PROMPT, MAX_TOKENS),
                "on-ray-ft": greedy_completion(tiny_llama_dir, tiny_adapter_dirs[0], PROMPT, MAX_TOKENS)}
    replicas = _ready(engine)
    actors = ray_cluster.replica_actors()
    assert set(actors) == set(replicas)
    # In the namespace of this control plane, which no other installation on the cluster shares.
    namespace = ray_namespace(f"sqlite:///{server.data_dir / 'enginehouse.db'}")
    assert {a["namespace"] for a in actors.values()} == {namespace}
    # One actor per replica, one per node (spread), each answering on its node's address.
    assert len({actors[r]["node_id"] for r in replicas}) == 2
    for replica_id, url in replicas.items():
        assert actors[replica_id]["url"] == url and urlparse(url).hostname not in ("127.0.0.1", "localhost")
        refused = httpx.post(f"{url}/v1/completions", json={"model": "on-ray", "prompt": "hi", "max_tokens": 1})
        assert refused.status_code == 401  # no secret, no answer
    _answers_as_peft(server, expected)
    # The replicas loaded the server's files fetched through the network, checked, from their
    # nodes' cache: every file of the base model and the adapter is there under its digest.
    wanted = {_sha256(p) for p in [*tiny_llama_dir.rglob("*"), *tiny_adapter_dirs[0].rglob("*")] if p.is_file()}
    assert wanted <= {p.name for p in (ray_cluster.artifacts / "blobs").iterdir()}
    assert proxy.files_carried >= len(wanted)

    # A file changed on its way is refused: the deployment fails saying so, nothing is kept.
    spare = shutil.copytree(tiny_adapter_dirs[1], tmp_path / "spare")
    spare_job = register_job(http, tiny_llama_dir, [spare], name="spare")
    proxy.tamper = True
    deploy(http, engine["id"], "on-ray-tampered", spare_job["id"], 1)
    failed = wait_for(lambda: next((d for d in engine_status(http, engine["id"])["deployments"]
                                    if d["name"] == "on-ray-tampered" and d["status"] == "Failed"), None),
                      timeout=120, what="the tampered deployment to fail")
    assert "refused after 3 attempts" in failed["status_reason"], failed
    proxy.tamper = False
    kept = {p.name for p in (ray_cluster.artifacts / "blobs").iterdir()}
    assert not {_sha256(p) for p in spare.rglob("*") if p.is_file()} <= kept
    assert not [p for p in (ray_cluster.artifacts / "blobs").iterdir() if p.name.endswith(".partial")]
    assert http.post(f"/v1/engines/{engine['id']}/undeploy",
                     json={"deployment_name": "on-ray-tampered"}).status_code == 202
    _answers_as_peft(server, expected)  # the engine's other deployments are untouched

    # Each replica's log is read on its node, through the API and the command line.
    some = sorted(replicas)[0]
    logs = http.get(f"/v1/engines/{engine['id']}/replicas/{some}/logs", params={"tail": "500"})
    lines = logs.json()["data"]
    assert any("Application startup complete" in line for line in lines), lines[-20:]
    # Loaded once: the replica reports the adapter by the server's path it was given, not its
    # fetched copy's, so the reconciler sees it loaded and leaves it be.
    assert sum('"PUT /v1/adapters/on-ray-ft HTTP/1.1" 200' in line for line in lines) == 1, lines[-30:]
    printed = cli(server, "engines", "logs", "on-ray", "--tail", "500", "--url", server.url,
                  "--api-key", server.api_key)
    assert all(f"==> {r} <==" in printed for r in replicas) and printed.count("Application startup complete") == 2
    missing = http.get(f"/v1/engines/{engine['id']}/replicas/replica-0000000000000000/logs")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "replica_not_found"

    # An actor killed behind the server's back is seen through Ray and replaced.
    killed, kept = sorted(replicas)
    ray_cluster.kill_actor(killed)
    wait_for(lambda: (ready := _ready(engine_status(http, engine["id"]))) and killed not in ready
             and kept in ready and len(ready) == 2, timeout=180, what="the killed replica to be replaced")
    events = http.get(f"/v1/engines/{engine['id']}/events", params={"limit": 1000}).json()["data"]
    assert any("Ray actor is gone" in (e.get("reason") or "") for e in events), events
    wait_deployments(http, engine["id"])
    _answers_as_peft(server, expected)

    # A server killed outright and started again adopts the live actors: no duplicate starts.
    before = ray_cluster.replica_actors()
    server.kill()
    server.start()
    http = server.client()
    engine = wait_engine(http, engine["id"], "Active")
    assert set(_ready(engine)) == set(before) == set(ray_cluster.replica_actors())
    _answers_as_peft(server, expected)

    # A node lost with a replica on it: the replica is replaced on the node left, and every
    # deployment is Deployed again.
    worker = ray_cluster.worker_node_id()
    [lost] = [r for r, actor in before.items() if actor["node_id"] == worker]
    ray_cluster.lose_worker_node()
    wait_for(lambda: (ready := _ready(engine_status(http, engine["id"]))) and lost not in ready and len(ready) == 2,
             timeout=240, what="the lost node's replica to be replaced")
    wait_deployments(http, engine["id"])
    assert all(actor["node_id"] != worker for actor in ray_cluster.replica_actors().values())
    _answers_as_peft(server, expected)

    # Deleting the engine ends its actors.
    assert http.delete(f"/v1/engines/{engine['id']}").status_code == 202
    wait_for(lambda: http.get(f"/v1/engines/{engine['id']}").status_code == 404, timeout=60, what="the engine gone")
    wait_for(lambda: ray_cluster.replica_actors() == {}, timeout=30, what="the replica actors to end")
