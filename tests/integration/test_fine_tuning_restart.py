"""A running fine-tune outlives a server killed with SIGKILL: the restarted server finds its
worker and follows it on (no second worker); cancelling it then stops the process, and the
checkpoint it finished stays deployable.

A module of its own: with PostgreSQL, the servers of one module share a database, and one
database has one server.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.integration.harness import ServerProcess, wait_deployments, wait_for
from tests.integration.test_fine_tuning import (  # noqa: F401 - tiny_bert_dir is a fixture
    job_of, keyword_rows, start_job, tiny_bert_dir, upload,
)
from tests.integration.test_textgen import deploy

pytestmark = pytest.mark.integration


def _worker_pid(data_dir: Path, job_id: str) -> int | None:
    record = data_dir / "training" / job_id / "worker.json"
    return int(json.loads(record.read_text())["pid"]) if record.exists() else None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_running_job_outlives_a_killed_server_and_cancelling_keeps_its_checkpoints(
    start_server, tiny_bert_dir: Path  # type: ignore[no-untyped-def]
) -> None:
    server: ServerProcess = start_server(settings={"ENGINEHOUSE_TRAINING_THREADS": "1"})
    http = server.client()
    train = upload(http, "long", keyword_rows(64, seed=3))
    job = start_job(http, name="long", task_type="classification", base_model=str(tiny_bert_dir),
                    train_dataset_id=train, train_test_split_ratio=0.25,
                    parameters={"num_train_epochs": 100, "per_device_train_batch_size": 4})
    wait_for(lambda: job_of(http, job["id"])["checkpoints"] or None, 180, interval=0.5,
             what="the first checkpoint")
    pid = _worker_pid(server.data_dir, job["id"])
    assert pid is not None and _alive(pid)

    try:
        _restart_then_cancel(start_server, server, job["id"], pid, tiny_bert_dir)
    finally:
        if _alive(pid):  # whatever failed, no worker outlives the test
            os.killpg(pid, signal.SIGKILL)


def _restart_then_cancel(start_server, server: ServerProcess, job_id: str, pid: int,  # type: ignore[no-untyped-def]
                         tiny_bert_dir: Path) -> None:
    job = {"id": job_id}
    server.kill()
    assert _alive(pid)  # the worker has its own process group
    restarted = start_server(data_dir=server.data_dir, api_key=server.api_key,
                             settings={"ENGINEHOUSE_TRAINING_THREADS": "1"})
    http = restarted.client()
    before = job_of(http, job["id"])
    assert before["status"] in ("Running", "Testing"), before
    wait_for(lambda: job_of(http, job["id"])["progress"] > before["progress"] or None, 120, interval=0.5,
             what="progress after the restart")
    assert _worker_pid(server.data_dir, job["id"]) == pid  # followed on, not started again

    cancelled = http.post(f"/v1/training-jobs/{job['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "Cancelled"
    wait_for(lambda: not _alive(pid) or None, 30, what="the worker to stop")
    wait_for(lambda: _worker_pid(server.data_dir, job["id"]) is None or None, 30, what="the job to be released")
    final = job_of(http, job["id"])
    assert final["status"] == "Cancelled" and final["checkpoints"], final
    assert http.post(f"/v1/training-jobs/{job['id']}/cancel").status_code == 409

    engine = http.post("/v1/engines", json={"name": "long-cls", "base_model": str(tiny_bert_dir),
                                            "task_type": "classification"}).json()
    deploy(http, engine["id"], "long-ft", job["id"], final["checkpoints"][-1]["checkpoint"])
    wait_deployments(http, engine["id"])
    answer = http.post("/v1/classification", json={"model": "long-ft", "input": "apple dragon river"})
    assert answer.status_code == 200 and set(answer.json()["data"][0]["logits"]) == {"yes", "no"}
    logs = http.get(f"/v1/training-jobs/{job['id']}/logs").json()["data"]
    assert logs, "the job's log is empty"
