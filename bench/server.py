"""A real enginehouse server for the benchmark, and the management calls the runs need.

The server process itself is the integration tests' ``ServerProcess`` (one way to start
``enginehouse up``, not two), with the replicas left on their production defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.machine import pid_with_argument
from bench.runs import progress
from enginehouse.replicaauth import ReplicaAddress
from tests.integration.harness import ServerProcess, replica_pids, wait_deployments, wait_engine, wait_for


class BenchServer(ServerProcess):
    @property
    def auth(self) -> dict[str, str]:
        """The headers of an inference call through the gateway."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def env(self) -> dict[str, str]:
        env = super().env()
        # The tests pin replicas to one thread and reconcile fast to finish sooner; a benchmark
        # measures what a user gets, so both go back to the product's defaults.
        for name in ("ENGINEHOUSE_REPLICA_THREADS", "ENGINEHOUSE_RECONCILE_INTERVAL_S"):
            if name not in self.settings:  # unless a run sets it itself
                env.pop(name, None)
        return env


BENCH_API_KEY = "eh-bench-key"


@contextmanager
def running_server(data_dir: Path, database_url: str = "") -> Iterator[BenchServer]:
    """``enginehouse up`` for the runs inside the block; stopped, replicas and all, after it.
    Its database is SQLite in ``data_dir`` unless ``database_url`` names another."""
    server = BenchServer(data_dir, api_key=BENCH_API_KEY, database_url=database_url)
    progress(f"starting enginehouse (log: {server.log_path})")
    server.start()
    try:
        yield server
    finally:
        progress("stopping enginehouse")
        server.stop()


@dataclass(frozen=True)
class Engine:
    id: str
    name: str
    replica_id: str
    # Where its replica answers, with the secret the gateway sends too: read from the server's
    # database once, when the engine is set up (the API never shows the secret).
    replica: ReplicaAddress

    @property
    def replica_pid(self) -> int:
        pid = pid_with_argument(self.replica_id)
        if pid is None:
            raise RuntimeError(f"no process for replica {self.replica_id}")
        return pid


def _ok(response: httpx.Response, status: int) -> dict[str, Any]:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.request.url}: "
                           f"{response.status_code} {response.text[:500]}")
    return response.json()


def register_job(http: httpx.Client, name: str, base_dir: Path, adapters: list[Path],
                 task_type: str = "text-generation") -> str:
    body = {
        "name": name, "task_type": task_type, "base_model": str(base_dir),
        "checkpoints": [{"checkpoint": i + 1, "path": str(p)} for i, p in enumerate(adapters)],
    }
    return str(_ok(http.post("/v1/training-jobs", json=body), 201)["id"])


def create_engine(server: BenchServer, http: httpx.Client, name: str, base_dir: Path,
                  runtime_options: dict[str, Any], timeout: float = 300, task_type: str = "text-generation",
                  autoscaling: dict[str, Any] | None = None) -> Engine:
    """Create an engine and wait until it is Active with its base deployment Deployed; a cluster
    engine (``autoscaling``) must start with one replica, its ``min_replicas``."""
    body = {"name": name, "base_model": str(base_dir), "task_type": task_type,
            "runtime_options": runtime_options, "autoscaling": autoscaling}
    engine_id = str(_ok(http.post("/v1/engines", json=body), 201)["id"])
    engine = wait_engine(http, engine_id, "Active", timeout=timeout)
    engine = wait_deployments(http, engine_id, timeout=timeout)  # the base deployment
    replica_id = str(_one_ready_replica(engine)["id"])
    return Engine(engine_id, name, replica_id, server.replica_address(replica_id))


def _one_ready_replica(engine: dict[str, Any]) -> dict[str, Any]:
    replicas = [r for r in engine["replicas"] if r.get("url")]
    if len(replicas) != 1:
        raise RuntimeError(f"expected one replica, engine has {engine['replicas']}")
    return replicas[0]


def deploy_all(http: httpx.Client, engine: Engine, job_id: str, names: list[str],
               timeout: float = 600) -> None:
    """Deploy checkpoint i+1 of the job as ``names[i]`` and wait until all are Deployed."""
    for checkpoint, name in enumerate(names, start=1):
        body = {"name": name, "training_id": job_id, "checkpoint": checkpoint}
        _ok(http.post(f"/v1/engines/{engine.id}/deploy", json=body), 201)
    wait_deployments(http, engine.id, timeout=timeout)


def delete_engine(http: httpx.Client, engine: Engine, timeout: float = 120) -> None:
    """Delete and wait until the engine is gone and its replica process has exited, so the next
    run has the cores to itself."""
    _ok(http.delete(f"/v1/engines/{engine.id}"), 202)
    wait_for(lambda: http.get(f"/v1/engines/{engine.id}").status_code == 404, timeout,
             what=f"engine {engine.name} to be deleted")
    wait_for(lambda: pid_with_argument(engine.replica_id) is None, timeout,
             what=f"replica {engine.replica_id} to exit")


def deactivate(http: httpx.Client, engine_id: str, timeout: float = 120) -> None:
    """Deactivate an Active engine and wait until it is Inactive (every replica stopped)."""
    _ok(http.post(f"/v1/engines/{engine_id}/deactivate"), 202)
    wait_engine(http, engine_id, "Inactive", timeout=timeout)


def reactivate(http: httpx.Client, engine_id: str) -> None:
    """Ask for an Inactive engine back; returns at once, the caller waits as it needs."""
    _ok(http.post(f"/v1/engines/{engine_id}/reactivate"), 202)


def delete_every_engine(server: BenchServer, http: httpx.Client, timeout: float = 120) -> None:
    """Delete every engine of the server and wait until none is left and no replica process of
    it runs: what a part does last, also after an error, so the next part has the cores."""
    ids = [str(e["id"]) for e in _ok(http.get("/v1/engines?limit=1000"), 200)["data"]]
    for engine_id in ids:
        response = http.delete(f"/v1/engines/{engine_id}")
        if response.status_code not in (202, 404):
            raise RuntimeError(f"DELETE engine {engine_id}: {response.status_code} {response.text[:300]}")
    for engine_id in ids:
        wait_for(lambda: http.get(f"/v1/engines/{engine_id}").status_code == 404, timeout,
                 what=f"engine {engine_id} to be deleted")
    wait_for(lambda: not replica_pids(server.data_dir), timeout, what="every replica to exit")
