"""Jobs whose head reads the mean-pooled sentence embedding, that start from another checkpoint's
head or are scored beside a baseline, and the zero-shot head's arithmetic, on the tiny BERT; and
every way such a job is refused, in words."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from enginehouse.runtime.server import create_app
from enginehouse.training.checkpoints import read_checkpoint_head
from enginehouse.training.config import ZeroShotSpec
from enginehouse.training.parameters import TrainingParameters
from enginehouse.training.report import TrainingReport
from enginehouse.training.sequence_classification import load_sequence_task
from enginehouse.training.zero_shot import JUDGE_THRESHOLD, SCALE, zero_shot_head
from tests.unit.runtime.test_classification import make_runner
from tests.unit.training.conftest import keyword_rows, run_job, write_jsonl

FAST = {"num_train_epochs": 1, "learning_rate": 1e-2, "per_device_train_batch_size": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def failure(report: TrainingReport) -> str:
    assert report.outcome is not None and report.outcome["status"] == "Failed", report
    return str(report.outcome["reason"])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keyword-data")
    return {"train": write_jsonl(root / "train.jsonl", keyword_rows(40, seed=1)),
            "test": write_jsonl(root / "test.jsonl", keyword_rows(16, seed=2))}


@pytest.fixture(scope="module")
def zero_shot_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zero-shot checkpoint over the tiny BERT whose labels are the keyword data's, out of order."""
    classes = [{"name": "yes", "description": "a dragon among other words"},
               {"name": "no", "description": "a river, a garden and a window"}]
    code, report, output = run_job(tmp_path_factory.mktemp("zero-shot") / "job", tiny_bert_dir,
                                   zero_shot={"mode": "decision", "classes": classes})
    assert (code, report.outcome) == (0, {"status": "Success"}), report
    return output / "checkpoint-1"


def test_a_mean_pooled_job_is_served_as_the_worker_scored_it_and_scores_again_as_a_baseline(
    tiny_bert_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    code, report, output = run_job(tmp_path / "mean", tiny_bert_dir, train_path=str(data["train"]),
                                   test_path=str(data["test"]), parameters={**FAST, "pooling": "mean"})
    assert (code, report.outcome, report.baseline) == (0, {"status": "Success"}, None)
    checkpoint = output / "checkpoint-1"
    config = json.loads((checkpoint / "config.json").read_text())
    assert (config["sentence_pooling"], config["sentence_normalize"]) == ("mean", True)
    results = report.checkpoints[0]["test_results"]
    rows = [json.loads(line) for line in data["test"].read_text().splitlines()]
    with TestClient(create_app(make_runner(tiny_bert_dir))) as client:
        assert client.put("/v1/adapters/mean", json={"path": str(checkpoint)}).status_code == 200
        body = client.post("/v1/classification", json={"model": "mean", "input": [r["text"] for r in rows]}).json()
    logits = torch.tensor([list(item["logits"].values()) for item in body["data"]])
    targets = torch.tensor([["no", "yes"].index(r["label"]) for r in rows])
    assert float(F.cross_entropy(logits, targets)) == pytest.approx(results["eval_loss"], abs=1e-5)
    assert float((logits.argmax(-1) == targets).float().mean()) == pytest.approx(results["accuracy"])

    # Scored as another job's baseline, on the same rows: the same results.
    code, again, output = run_job(tmp_path / "next", tiny_bert_dir, train_path=str(data["train"]),
                                  test_path=str(data["test"]), baseline_checkpoint=str(checkpoint), parameters=FAST)
    assert code == 0 and again.baseline == {"test_results": results}
    assert json.loads((output / "baseline.json").read_text()) == {"test_results": results}


def test_an_init_checkpoint_starts_the_head_with_its_labels_in_its_order(tiny_bert_dir: Path, zero_shot_dir: Path,
                                                                         data: dict[str, Path], tmp_path: Path) -> None:
    head = read_checkpoint_head(str(zero_shot_dir), "classification", "init_checkpoint")
    assert head.labels == ("yes", "no") and head.pooling is not None and head.pooling.normalize
    parameters = TrainingParameters(pooling="mean", lora_r=2)
    model, task = load_sequence_task("classification", str(tiny_bert_dir), parameters, head.labels,
                                     init_head=head.initialize)
    assert task.label_ids == {"yes": 0, "no": 1}
    saved = load_file(str(zero_shot_dir / "adapter_model.safetensors"))
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad and "classifier" in name}
    assert {name.rsplit(".", 1)[-1] for name in trainable} == {"weight", "bias"}
    for name, param in trainable.items():
        torch.testing.assert_close(param.detach(), saved[f"base_model.model.classifier.{name.rsplit('.', 1)[-1]}"])

    code, report, output = run_job(tmp_path / "job", tiny_bert_dir, train_path=str(data["train"]),
                                   init_checkpoint=str(zero_shot_dir), parameters={**FAST, "pooling": "mean"})
    assert (code, report.outcome) == (0, {"status": "Success"}), report
    assert json.loads((output / "checkpoint-1" / "config.json").read_text())["id2label"] == {"0": "yes", "1": "no"}


def test_a_training_with_fewer_labels_than_its_init_checkpoint_keeps_them_all(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    classes = [{"name": n, "description": f"something {n}"} for n in ("red", "green", "blue")]
    code, report, output = run_job(tmp_path / "zero", tiny_bert_dir, zero_shot={"mode": "routing", "classes": classes})
    assert code == 0, report
    train = write_jsonl(tmp_path / "two.jsonl", [{"text": "apple river", "label": "red"},
                                                  {"text": "quiet window", "label": "blue"}] * 4)
    code, report, output = run_job(tmp_path / "job", tiny_bert_dir, train_path=str(train),
                                   init_checkpoint=str(output / "checkpoint-1"), parameters={**FAST, "pooling": "mean"})
    assert code == 0, report
    labels = json.loads((output / "checkpoint-1" / "config.json").read_text())["id2label"]
    assert labels == {"0": "red", "1": "green", "2": "blue"}


def test_init_and_baseline_checkpoints_that_do_not_fit_fail_the_job_in_words(
    tiny_bert_dir: Path, zero_shot_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    other = write_jsonl(tmp_path / "other.jsonl", [{"text": "apple", "label": "yes"},
                                                    {"text": "river", "label": "maybe"}])
    values = write_jsonl(tmp_path / "values.jsonl", keyword_rows(8, seed=3, regression=True))
    mean = {**FAST, "pooling": "mean"}
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "unknown label": ({"train_path": str(other), "init_checkpoint": str(zero_shot_dir), "parameters": mean},
                          f"init_checkpoint {zero_shot_dir} answers yes, no, but the training data has the label(s) "
                          "maybe"),
        "pooling differs": ({"train_path": str(data["train"]), "init_checkpoint": str(zero_shot_dir),
                             "parameters": FAST},
                            "reads the normalised mean of the last hidden state, but this job's head reads the "
                            "model's pooled output (parameters.pooling 'model'); set parameters.pooling to 'mean'"),
        "not a checkpoint": ({"train_path": str(data["train"]), "init_checkpoint": str(tmp_path),
                              "parameters": mean}, f"init_checkpoint {tmp_path} is not a classification checkpoint"),
        "regression from a classifier": ({"task_type": "regression", "train_path": str(values),
                                          "init_checkpoint": str(zero_shot_dir), "parameters": mean},
                                         "does not fit a regression job: it is a 2-label classifier"),
        "baseline with an unknown label": ({"train_path": str(other), "test_path": str(other),
                                            "baseline_checkpoint": str(zero_shot_dir), "parameters": FAST},
                                           "answers yes, no, but the test data has the label(s) maybe"),
        "baseline of another task": ({"task_type": "regression", "train_path": str(values),
                                      "baseline_checkpoint": str(zero_shot_dir), "parameters": FAST},
                                     f"baseline_checkpoint {zero_shot_dir} does not fit a regression job: it is a "
                                     "2-label classifier"),
    }
    for name, (fields, reason) in cases.items():
        task_type = fields.pop("task_type", "classification")
        code, report, _ = run_job(tmp_path / name, tiny_bert_dir, task_type, **fields)
        assert code == 1 and reason in failure(report), (name, report.outcome)


def test_configs_a_job_cannot_run_fail_it_in_words(tiny_bert_dir: Path, tiny_llama_dir: Path,
                                                   data: dict[str, Path], tmp_path: Path) -> None:
    judge = {"mode": "judge", "classes": [{"name": "a", "description": "x"}, {"name": "b", "description": "y"}]}
    regression = {"mode": "regression", "classes": [{"name": "r", "description": "d", "min_value": 0,
                                                     "max_value": 1, "low_description": "low"}]}
    decision = {"mode": "decision", "classes": [{"name": "a", "description": "x"}, {"name": "b", "description": "y"}]}
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": "hi", "completion": "there"}])
    cases: dict[str, tuple[str, Path, dict[str, Any], str]] = {
        "mean on text generation": ("text-generation", tiny_llama_dir, {"train_path": str(chat),
                                    "parameters": {"pooling": "mean"}},
                                    "parameters.pooling 'mean' applies to classification and regression only"),
        "judge of two": ("classification", tiny_bert_dir, {"zero_shot": judge},
                         "zero_shot: classes: a judge experiment has exactly one class (its criterion), got 2"),
        "regression without its high end": ("regression", tiny_bert_dir, {"zero_shot": regression},
                                            "zero_shot: classes[0]: a regression class needs high_description"),
        "classes of another kind": ("classification", tiny_bert_dir, {"zero_shot": {"mode": "routing",
                                    "classes": "a, b"}}, "zero_shot.classes"),
        "decision on a regression job": ("regression", tiny_bert_dir, {"zero_shot": decision},
                                         "a zero-shot decision builds a classification checkpoint, not regression"),
        "no training data": ("classification", tiny_bert_dir, {}, "train_path is required"),
        "init for text generation": ("text-generation", tiny_llama_dir, {"train_path": str(chat),
                                     "init_checkpoint": "/x"}, "a text-generation job takes neither"),
        "zero-shot on a decoder": ("classification", tiny_llama_dir, {"zero_shot": decision},
                                   "a zero-shot checkpoint reads sentence embeddings: LlamaForSequenceClassification "
                                   "has no pooler"),
        "mean pooling on a decoder": ("classification", tiny_llama_dir, {"train_path": str(data["train"]),
                                      "parameters": {**FAST, "pooling": "mean"}}, "pooling 'mean' cannot be used"),
    }
    for name, (task_type, base_model, fields, reason) in cases.items():
        code, report, output = run_job(tmp_path / name, base_model, task_type, **fields)
        assert code == 1 and reason in failure(report), (name, report.outcome)
        assert not list(output.glob("checkpoint-*")), name


def test_the_zero_shot_heads_arithmetic() -> None:
    vectors = {"first": torch.tensor([1.0, 0.0]), "second": torch.tensor([0.0, 1.0]),
               "low": torch.tensor([0.6, 0.8]), "high": torch.tensor([0.8, 0.6])}

    def embed(texts: list[str]) -> torch.Tensor:
        return torch.stack([vectors[t] for t in texts])

    decision = zero_shot_head(ZeroShotSpec.model_validate({"mode": "routing", "classes": [
        {"name": "a", "description": "first"}, {"name": "b", "description": "second"}]}), embed)
    torch.testing.assert_close(decision.weight, SCALE * torch.eye(2))
    torch.testing.assert_close(decision.bias, torch.zeros(2))
    judge = zero_shot_head(ZeroShotSpec.model_validate({"mode": "judge", "classes": [
        {"name": "c", "description": "second"}]}), embed)
    x = torch.tensor([0.6, 0.8])  # cos(x, criterion) = 0.8
    torch.testing.assert_close(judge.weight @ x + judge.bias, torch.tensor([SCALE * 0.8, SCALE * JUDGE_THRESHOLD]))
    regression = zero_shot_head(ZeroShotSpec.model_validate({"mode": "regression", "classes": [
        {"name": "r", "description": "d", "min_value": -1, "max_value": 3, "low_description": "low",
         "high_description": "high"}]}), embed)
    # mid + (max - min) x (cos(x, high) - cos(x, low)) = 1 + 4 x (0.96 - 1.0)
    torch.testing.assert_close(regression.weight @ x + regression.bias, torch.tensor([1 + 4 * (0.96 - 1.0)]))
