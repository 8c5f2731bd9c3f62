"""Replicas on a real Ray cluster: a head and a worker node started on this machine with
``ray start`` (two CPUs each), and a real server with ``ENGINEHOUSE_PROVIDER=ray``. An engine of
two replicas gets one Ray actor per replica, one on each node, answering on the node's address;
calls go through the gateway; a replica called without its secret refuses; each replica's log is
read on its node through the API and the command line. A killed actor is seen
through Ray and replaced; a server killed and started again adopts the actors alive instead of
starting duplicates; deleting the engine ends its actors."""

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
from tests.integration.test_textgen import create_engine, deploy, register_job

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
