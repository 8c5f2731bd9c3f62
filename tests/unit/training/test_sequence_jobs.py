"""Classification and regression jobs end to end: the worker as the server runs it (its own
process, cancelled by SIGTERM to its process group), checkpoints our replicas load, and the
dataset problems found only with the tokenizer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from enginehouse.core.task_types import TaskType
from enginehouse.runtime.classify.adapters import ClassifierAdapter, ClassifierAdapterReader
from enginehouse.runtime.classify.heads import discover_heads
from enginehouse.runtime.classify.loading import load_sequence_classifier
from enginehouse.runtime.lora.layers import MultiLoRAModel
from enginehouse.services.checkpoints import checkpoint_metadata, checkpoint_problem
from enginehouse.training.cancel import EXIT_CANCELLED
from enginehouse.training.report import read_report
from tests.unit.training.conftest import keyword_rows, run_in_process, write_config, write_jsonl

StartWorker = Callable[[Path, Path], subprocess.Popen[bytes]]


def read_as_replica(base_model: Path, checkpoint: Path, task_type: str) -> ClassifierAdapter:
    """The checkpoint through the reader a classification replica of ``base_model`` uses."""
    loaded = load_sequence_classifier(str(base_model))
    lora = MultiLoRAModel(loaded.model, num_slots=2, max_rank=16)
    probe = torch.tensor([loaded.tokenizer("hello")["input_ids"]])
    reader = ClassifierAdapterReader(
        targets=lora.targets, layout=discover_heads(loaded.model, probe), task_type=task_type,
        model_type=loaded.config.get("model_type"), max_rank=16, dtype=torch.float32,
    )
    return reader(str(checkpoint))


def _wait(process: subprocess.Popen[bytes], timeout: float, log: Path) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not exit within {timeout} s:\n{log.read_text()}")


@pytest.mark.integration
def test_a_classification_job_learns_and_leaves_servable_checkpoints(
    tiny_bert_dir: Path, tmp_path: Path, start_worker: StartWorker
) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", keyword_rows(300, seed=1))
    test = write_jsonl(tmp_path / "test.jsonl", keyword_rows(60, seed=2))
    # Settings that learn the keyword whatever vocabulary the tiny tokenizer drew this session.
    config = write_config(tmp_path, task_type="classification", base_model=tiny_bert_dir, train=train, test=test,
                          threads=1, num_train_epochs=4, learning_rate=5e-3, per_device_train_batch_size=4)
    log = tmp_path / "worker.log"
    process = start_worker(config, log)
    assert _wait(process, 120, log) == 0, log.read_text()
    output = tmp_path / "out"
    report = read_report(output)
    epochs = [1, 2, 3, 4]
    assert report.outcome == {"status": "Success"}
    assert [c["checkpoint"] for c in report.checkpoints] == epochs
    assert [c["path"] for c in report.checkpoints] == [str(output / f"checkpoint-{e}") for e in epochs]
    assert sorted(p.name for p in output.iterdir()) == [
        *(f"checkpoint-{e}" for e in epochs), "checkpoints.jsonl", "outcome.json", "progress.json",
    ]
    for checkpoint in report.checkpoints:
        assert set(checkpoint["test_results"]) == {"eval_loss", "accuracy", "macro_f1"}
    best = max(c["test_results"]["accuracy"] for c in report.checkpoints)
    assert best >= 0.9, report.checkpoints  # chance is 0.5; the keyword decides every label
    assert report.progress is not None
    assert report.progress == {"status": "Running", "step": 300, "total_steps": 300, "epoch": 4.0,
                               "loss": report.progress["loss"]}
    text = log.read_text()
    assert "300 training rows, 60 test rows" in text and "step 300/300" in text and "epoch 4 test results" in text

    path = Path(report.checkpoints[-1]["path"])
    adapter = read_as_replica(tiny_bert_dir, path, "classification")
    assert adapter.spec.labels == ("no", "yes") and adapter.rank == 16
    assert checkpoint_problem(TaskType.CLASSIFICATION, path) is None
    assert checkpoint_metadata(TaskType.CLASSIFICATION, path) == {"labels": ["no", "yes"]}
    # Different weights each epoch: distinct checkpoints, not one saved again and again.
    weights = {(output / f"checkpoint-{e}" / "adapter_model.safetensors").read_bytes() for e in epochs}
    assert len(weights) == len(epochs)


@pytest.mark.integration
def test_sigterm_cancels_promptly_keeping_finished_checkpoints(
    tiny_bert_dir: Path, tmp_path: Path, start_worker: StartWorker
) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", keyword_rows(800, seed=3))
    config = write_config(tmp_path, task_type="classification", base_model=tiny_bert_dir, train=train, ratio=0.05,
                          threads=1, num_train_epochs=6, per_device_train_batch_size=2)
    log = tmp_path / "worker.log"
    output = tmp_path / "out"
    process = start_worker(config, log)
    deadline = time.monotonic() + 120
    while not read_report(output).checkpoints:
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no first checkpoint:\n{log.read_text()}")
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGTERM)  # the server's cancel
    sent = time.monotonic()
    assert _wait(process, 10, log) == EXIT_CANCELLED
    assert time.monotonic() - sent < 3, log.read_text()
    report = read_report(output)
    assert report.outcome == {"status": "Cancelled"}
    finished = [c["checkpoint"] for c in report.checkpoints]
    assert finished and finished[-1] < 6
    # Only whole checkpoints remain, each announced; nothing half-written is left behind.
    assert sorted(p.name for p in output.iterdir()) == sorted(
        [f"checkpoint-{e}" for e in finished] + ["checkpoints.jsonl", "outcome.json", "progress.json"])
    assert read_as_replica(tiny_bert_dir, output / "checkpoint-1", "classification").spec.labels == ("no", "yes")


@pytest.mark.integration
def test_a_job_cancelled_while_it_starts_ends_at_once(tiny_bert_dir: Path, tmp_path: Path,
                                                       start_worker: StartWorker) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", keyword_rows(10, seed=3))
    config = write_config(tmp_path, task_type="classification", base_model=tiny_bert_dir, train=train)
    log = tmp_path / "worker.log"
    process = start_worker(config, log)
    time.sleep(0.5)  # importing torch, most likely
    os.killpg(process.pid, signal.SIGTERM)
    sent = time.monotonic()
    assert _wait(process, 10, log) == EXIT_CANCELLED, log.read_text()
    assert time.monotonic() - sent < 3, log.read_text()
    assert read_report(tmp_path / "out").outcome == {"status": "Cancelled"}


def test_a_regression_job_reports_mae_and_loads_on_a_regression_engine(tiny_bert_dir: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", keyword_rows(120, seed=4, regression=True))
    config = write_config(tmp_path, task_type="regression", base_model=tiny_bert_dir, train=train, ratio=0.25,
                          num_train_epochs=2, learning_rate=1e-2, per_device_train_batch_size=4)
    code, report = run_in_process(config)
    assert (code, report.outcome) == (0, {"status": "Success"})
    results = [c["test_results"] for c in report.checkpoints]
    assert [set(r) for r in results] == [{"eval_loss", "mae"}] * 2
    # Each epoch trained on the 90 rows left after the test split, in measured (nonzero) time.
    assert [c["train_samples"] for c in report.checkpoints] == [90, 90]
    assert all(c["train_seconds"] > 0 for c in report.checkpoints), report.checkpoints
    assert all(0 <= r["mae"] < 5 for r in results), results  # values are 0 or 1
    path = Path(report.checkpoints[-1]["path"])
    config_json = json.loads((path / "config.json").read_text())
    assert config_json["problem_type"] == "regression" and config_json["id2label"] == {"0": "score"}
    assert read_as_replica(tiny_bert_dir, path, "regression").spec.labels == ("score",)
    assert checkpoint_problem(TaskType.REGRESSION, path) is None


def test_an_over_long_row_fails_the_job_naming_its_line_unless_cut(tiny_bert_dir: Path, tmp_path: Path) -> None:
    rows = keyword_rows(12, seed=5)
    rows[6]["text"] = " ".join(["river"] * 40)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    (tmp_path / "refused").mkdir()
    (tmp_path / "cut").mkdir()
    refused = write_config(tmp_path / "refused", task_type="classification", base_model=tiny_bert_dir, train=train,
                           max_seq_length=16)
    code, report = run_in_process(refused)
    assert code == 1
    assert report.outcome == {"status": "Failed", "reason": "train line 7: 42 tokens, longer than max_seq_length 16 "
                                                            "(set truncation: true to cut such rows)"}
    assert report.checkpoints == []
    cut = write_config(tmp_path / "cut", task_type="classification", base_model=tiny_bert_dir, train=train,
                       max_seq_length=16, truncation=True, num_train_epochs=1)
    code, report = run_in_process(cut)
    assert (code, report.outcome) == (0, {"status": "Success"})
    assert report.checkpoints[0]["test_results"] == {}  # no test split asked for


def test_failures_are_reported_in_words(tiny_bert_dir: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", keyword_rows(10, seed=6))
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "a river", "label": "maybe"}])
    cases = {
        "unseen": ({"train": train, "test": test}, "test line 1: label 'maybe' does not appear in the training data"),
        "no model": ({"train": train, "base_model": tmp_path / "absent"}, "could not load the tokenizer of base model"),
        "bad row": ({"train": write_jsonl(tmp_path / "bad.jsonl", [{"text": "x", "label": "a"}, {"text": "y"}])},
                    "train line 2: missing field 'label'"),
    }
    for name, (files, reason) in cases.items():
        (tmp_path / name).mkdir()
        arguments: dict[str, Any] = {"base_model": tiny_bert_dir, **files}
        code, report = run_in_process(write_config(tmp_path / name, task_type="classification", **arguments))
        assert code == 1 and report.outcome is not None
        assert report.outcome["status"] == "Failed" and report.outcome["reason"].startswith(reason), report.outcome


def test_an_invalid_config_is_reported_in_its_output_dir(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"job_id": "tr-1", "task_type": "embedding", "base_model": "m", "train_path": "t",
                                  "output_dir": str(tmp_path)}))
    code, report = run_in_process(config)
    assert code == 1 and report.outcome is not None
    assert report.outcome["reason"].startswith("the job configuration is invalid: task_type:")
