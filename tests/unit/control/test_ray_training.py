"""The pure parts of fine-tuning on Ray: what a job's actor asks the cluster for, how its config's
paths become its node's, and how a checkpoint is brought back (checked, whole, or not at all).
The Ray side itself runs for real in tests/integration/test_ray_provider.py."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from enginehouse import artifacts
from enginehouse.providers.base import LaunchError
from enginehouse.providers.checkpoint_copy import ATTEMPTS, CheckpointCopyError, copy_checkpoint
from enginehouse.providers.ray_training import training_resources
from enginehouse.providers.ray_training_actor import TrainingProcess, fetched_paths, localize_config


def _node(cpus: float, gpus: float = 0, alive: bool = True) -> dict[str, Any]:
    return {"Alive": alive, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


def test_a_job_asks_for_its_cpus_and_a_gpu_when_the_cluster_has_one() -> None:
    assert training_resources([_node(8)], 2, "auto") == {"num_cpus": 2, "num_gpus": 0}
    assert training_resources([_node(8), _node(4, gpus=1)], 2, "auto") == {"num_cpus": 2, "num_gpus": 1}
    assert training_resources([_node(8), _node(4, gpus=2)], 1, 0) == {"num_cpus": 1, "num_gpus": 0}
    assert training_resources([_node(4, gpus=2)], 1, 2) == {"num_cpus": 1, "num_gpus": 2}
    # A dead node's GPU is no reason to ask for one.
    assert training_resources([_node(8), _node(4, gpus=1, alive=False)], 1, "auto")["num_gpus"] == 0


def test_a_job_no_node_could_ever_hold_fails_at_once_saying_why() -> None:
    for nodes, cpus, gpus in [([_node(2), _node(2)], 4, 0), ([_node(8)], 1, 1), ([_node(2, gpus=1), _node(8)], 4, 1),
                              ([], 1, "auto")]:
        with pytest.raises(LaunchError) as caught:
            training_resources(nodes, cpus, gpus)  # type: ignore[arg-type]
        assert caught.value.permanent and "ENGINEHOUSE_RAY_TRAINING_CPUS" in caught.value.reason


class _Node:
    """Where a path is read on a node: its own copy of the server's (``ArtifactFetcher``'s job)."""

    def resolve(self, source: str) -> str:
        return source if not source.startswith("/") else f"/node/trees{source}"

    def resolve_file(self, source: str) -> str:
        return f"/node/files{source}"


CONFIG = {"job_id": "tr-1", "task_type": "classification", "base_model": "/srv/models/bert",
          "train_path": "/srv/data/datasets/ds-1.jsonl", "test_path": None, "output_dir": "",
          "init_checkpoint": "/srv/data/training/tr-0/checkpoint-1", "baseline_checkpoint": None, "threads": 1}


def test_the_config_names_the_nodes_copies_and_its_output_there() -> None:
    local = localize_config(CONFIG, _Node(), "/node/jobs/tr-1")
    assert local == {**CONFIG, "base_model": "/node/trees/srv/models/bert",
                     "train_path": "/node/files/srv/data/datasets/ds-1.jsonl",
                     "init_checkpoint": "/node/trees/srv/data/training/tr-0/checkpoint-1", "output_dir": "/node/jobs/tr-1"}
    # A Hub id is the node's to download; without a fetcher the server's paths are used as they are.
    assert localize_config({**CONFIG, "base_model": "org/model"}, _Node(), "/o")["base_model"] == "org/model"
    assert localize_config(CONFIG, None, "/o") == {**CONFIG, "output_dir": "/o"}


def test_a_job_may_fetch_exactly_the_server_paths_its_config_names() -> None:
    assert sorted(fetched_paths(CONFIG)) == ["/srv/data/datasets/ds-1.jsonl", "/srv/data/training/tr-0/checkpoint-1",
                                             "/srv/models/bert"]
    assert fetched_paths({**CONFIG, "base_model": "org/model"}) == [
        "/srv/data/training/tr-0/checkpoint-1", "/srv/data/datasets/ds-1.jsonl"]


FILES = {"adapter_config.json": b'{"peft_type": "LORA"}', "adapter_model.safetensors": bytes(range(256)) * 300,
         "head/labels.json": b'["no", "yes"]'}


def _manifest(files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [{"name": name, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
            for name, content in files.items()]


def test_a_checkpoint_comes_back_whole_in_chunks(tmp_path: Path) -> None:
    reads: list[tuple[str, int, int]] = []

    def read(name: str, offset: int, length: int) -> bytes:
        reads.append((name, offset, length))
        return FILES[name][offset:offset + length]

    target = copy_checkpoint(_manifest(FILES), read, tmp_path / "checkpoint-1", chunk_bytes=10000)
    assert {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()} == FILES
    assert sum(1 for name, _, _ in reads if name == "adapter_model.safetensors") == 8  # 76,800 bytes by 10,000
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-1"]  # no partial copy left beside it


def test_a_transfer_that_does_not_match_is_retried_then_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    attempts = {"count": 0}

    def flaky(name: str, offset: int, length: int) -> bytes:
        chunk = FILES[name][offset:offset + length]
        if name == "adapter_model.safetensors" and offset == 0:
            attempts["count"] += 1
            if attempts["count"] == 1:
                return bytes([chunk[0] ^ 1]) + chunk[1:]  # the first transfer is corrupt
        return chunk

    copy_checkpoint(_manifest(FILES), flaky, tmp_path / "checkpoint-1")
    assert attempts["count"] == 2

    def truncated(name: str, offset: int, length: int) -> bytes:
        return FILES[name][offset:offset + length][: max(0, length - 1)] if offset == 0 else b""

    with pytest.raises(CheckpointCopyError, match=f"refused after {ATTEMPTS} attempts"):
        copy_checkpoint(_manifest(FILES), truncated, tmp_path / "checkpoint-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1"]


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", ""])
def test_a_manifest_naming_a_file_outside_the_checkpoint_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(CheckpointCopyError, match="manifest names"):
        copy_checkpoint([{"name": name, "size": 1, "sha256": "0" * 64}], lambda *_: b"x", tmp_path / "checkpoint-1")
    assert not list(tmp_path.iterdir())


def test_a_jobs_actor_reads_each_checkpoint_for_its_digests_once(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    read = artifacts.file_digest
    reads: Counter[str] = Counter()

    def counting(path: Path, progress=None) -> str:  # type: ignore[no-untyped-def]
        reads[str(path)] += 1
        return read(path, progress)

    monkeypatch.setattr(artifacts, "file_digest", counting)
    # A fetch it cannot use: the job ends before any worker starts, which leaves its actor to ask.
    actor = TrainingProcess("job-digests", {}, {}, str(tmp_path))
    deadline = time.monotonic() + 30
    while actor.poll()["exit"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    checkpoint = actor.job_dir / "checkpoint-1"
    checkpoint.mkdir()
    for name, content in FILES.items():
        (checkpoint / name).parent.mkdir(parents=True, exist_ok=True)
        (checkpoint / name).write_bytes(content)
    first = actor.manifest("checkpoint-1")
    assert {entry["name"]: entry["sha256"] for entry in first} == {
        name: hashlib.sha256(content).hexdigest() for name, content in FILES.items()}
    assert actor.manifest("checkpoint-1") == first  # the server asks again on its next pass
    assert reads == {str(checkpoint / name): 1 for name in FILES}
