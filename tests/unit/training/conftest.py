"""Fixtures for the fine-tuning tests: a tiny BERT classifier, datasets whose answer hangs on one
keyword (learnable in a few seconds), and the worker run in-process or as its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from enginehouse.demo.tiny_encoders import build_tiny_bert
from enginehouse.training.report import TrainingReport, read_report
from enginehouse.training.worker import run
from tests.training_data import keyword_rows, write_jsonl  # noqa: F401 - re-exported for the tests here

@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random BERT with a two-label head (neg, pos) of its own, as a base model."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), head="sequence-classification",
                           labels=["neg", "pos"])


def write_config(tmp_path: Path, *, task_type: str, base_model: Path, train: Path, test: Path | None = None,
                 ratio: float | None = None, threads: int = 0, **parameters: Any) -> Path:
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    config = {
        "job_id": "tr-test", "task_type": task_type, "base_model": str(base_model), "train_path": str(train),
        "test_path": str(test) if test else None, "train_test_split_ratio": ratio, "parameters": parameters,
        "output_dir": str(output_dir), "threads": threads,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def run_in_process(config_path: Path) -> tuple[int, TrainingReport]:
    code = run(config_path)
    return code, read_report(Path(json.loads(config_path.read_text())["output_dir"]))


def run_job(root: Path, base_model: Path, task_type: str = "classification", **fields: Any
            ) -> tuple[int, TrainingReport, Path]:
    """Run in-process a job of ``fields`` (train_path, zero_shot, parameters...) on one thread, in
    ``root``; its exit status, report and output directory."""
    root.mkdir(parents=True)
    output = root / "out"
    output.mkdir()
    config = {"job_id": "tr-test", "task_type": task_type, "base_model": str(base_model), "output_dir": str(output),
              "threads": 1, **fields}
    (root / "config.json").write_text(json.dumps(config))
    code = run(root / "config.json")
    return code, read_report(output), output


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """For a module of ``run_job``s: their threads=1 sets torch's pool for the whole process, so
    put it back after the module."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def start_worker(src_dir: Path) -> Iterator[Callable[[Path, Path], subprocess.Popen[bytes]]]:
    """``python -m enginehouse.training CONFIG`` in its own process group (as the server starts
    it), its output in ``log``."""
    started: list[subprocess.Popen[bytes]] = []

    def start(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src_dir), os.environ.get("PYTHONPATH", "")])}
        with log.open("wb") as sink:
            process = subprocess.Popen([sys.executable, "-m", "enginehouse.training", str(config_path)],
                                       stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
