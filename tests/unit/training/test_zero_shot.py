"""Zero-shot checkpoints on the real all-MiniLM-L6-v2, served by our classification and regression
runtimes: a decision, a judge and a regression built from descriptions alone behave as the
descriptions say, and a version trained from the decision's head on a few examples beats it."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient

from enginehouse.runtime.classify.runner import RegressionRunner
from enginehouse.runtime.server import create_app
from enginehouse.training.config import mode_labels
from enginehouse.training.report import TrainingReport
from enginehouse.training.zero_shot import JUDGE_THRESHOLD, SCALE
from tests.training_data import CLEAR, NOT_URGENT, URGENT, harder_rows, write_jsonl
from tests.unit.runtime.test_classification import make_runner
from tests.unit.training.conftest import run_job

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engines(minilm_dir: Path) -> Iterator[dict[str, TestClient]]:
    """A classification and a regression engine over MiniLM, as replicas of both task types."""
    with TestClient(create_app(make_runner(minilm_dir))) as classification, \
            TestClient(create_app(make_runner(minilm_dir, RegressionRunner))) as regression:
        yield {"classification": classification, "regression": regression}


def deploy_and_classify(client: TestClient, name: str, checkpoint: Path, texts: list[str],
                        data_format: str = "logits") -> list[dict[str, float]]:
    response = client.put(f"/v1/adapters/{name}", json={"path": str(checkpoint)})
    assert response.status_code == 200, response.text
    response = client.post("/v1/classification", json={"model": name, "input": texts, "data_format": data_format})
    assert response.status_code == 200, response.text
    return [item[data_format] for item in response.json()["data"]]


def runtime_scores(answers: list[dict[str, float]], gold: list[str]) -> dict[str, float]:
    """Accuracy and mean cross-entropy of a replica's logits, as the worker scores its checkpoints."""
    labels = list(answers[0])
    logits = torch.tensor([list(a.values()) for a in answers])
    targets = torch.tensor([labels.index(g) for g in gold])
    accuracy = float((logits.argmax(-1) == targets).float().mean())
    return {"accuracy": accuracy, "eval_loss": float(F.cross_entropy(logits, targets))}


@pytest.fixture(scope="module")
def decision(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainingReport, Path]:
    root = tmp_path_factory.mktemp("decision")
    test = write_jsonl(root / "clear.jsonl", [{"text": t, "label": label} for t, label in CLEAR])
    code, report, output = run_job(root / "job", minilm_dir, "classification", test_path=str(test),
                                   zero_shot={"mode": "decision", "classes": [URGENT, NOT_URGENT]})
    assert (code, report.outcome) == (0, {"status": "Success"}), report
    return report, output


def test_a_zero_shot_decision_sorts_clear_messages_on_a_classification_engine(
    decision: tuple[TrainingReport, Path], engines: dict[str, TestClient]
) -> None:
    report, output = decision
    checkpoint = output / "checkpoint-1"
    [entry] = report.checkpoints
    assert set(entry) == {"checkpoint", "path", "test_results"}
    assert (entry["checkpoint"], entry["path"]) == (1, str(checkpoint))
    # Scored on the clear messages (the values are checked against the replica's answers below).
    assert set(entry["test_results"]) == {"eval_loss", "accuracy", "macro_f1"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in entry["test_results"].values()), entry
    assert sorted(p.name for p in output.iterdir()) == ["checkpoint-1", "checkpoints.jsonl", "outcome.json",
                                                        "progress.json"]
    assert report.progress == {"status": "Running", "step": 1, "total_steps": 1, "epoch": 1.0, "loss": None}
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["id2label"] == {"0": "urgent", "1": "not_urgent"}  # the classes' own order
    assert (config["sentence_pooling"], config["sentence_normalize"]) == ("mean", True)
    adapter_config = json.loads((checkpoint / "adapter_config.json").read_text())
    assert adapter_config["r"] == 1 and adapter_config["task_type"] == "SEQ_CLS"

    texts, gold = [t for t, _ in CLEAR], [label for _, label in CLEAR]
    logits = deploy_and_classify(engines["classification"], "triage", checkpoint, texts)
    assert [max(answer, key=answer.__getitem__) for answer in logits] == gold
    results = report.checkpoints[0]["test_results"]
    assert results["accuracy"] == 1.0 and results["macro_f1"] == 1.0
    # The replica's answers are the worker's own: the same loss over the same rows.
    assert runtime_scores(logits, gold)["eval_loss"] == pytest.approx(results["eval_loss"], abs=1e-5)
    probs = deploy_and_classify(engines["classification"], "triage", checkpoint, texts, "probs")
    assert all(answer[label] > 0.7 for answer, label in zip(probs, gold)), probs


def test_a_zero_shot_judge_passes_what_meets_its_criterion(minilm_dir: Path, engines: dict[str, TestClient],
                                                           tmp_path: Path) -> None:
    meets = ["I baked fresh bread with rosemary this morning", "The recipe calls for two cups of flour and an egg",
             "Let's grill some vegetables for dinner"]
    misses = ["The train leaves at 9 from platform four", "My laptop battery died during the meeting",
              "The stock market fell sharply today"]
    criterion = {"name": "food", "description": "the text is about food or cooking"}
    test = write_jsonl(tmp_path / "judged.jsonl", [{"text": t, "label": "pass"} for t in meets]
                       + [{"text": t, "label": "fail"} for t in misses])
    code, report, output = run_job(tmp_path / "job", minilm_dir, "classification", test_path=str(test),
                                   zero_shot={"mode": "judge", "classes": [criterion]})
    assert (code, report.outcome) == (0, {"status": "Success"}), report
    assert report.checkpoints[0]["test_results"]["accuracy"] == 1.0
    probs = deploy_and_classify(engines["classification"], "food-judge", output / "checkpoint-1", meets + misses,
                                "probs")
    assert [list(p) for p in probs] == [["pass", "fail"]] * 6
    assert [p["pass"] > 0.5 for p in probs] == [True] * 3 + [False] * 3, probs
    # The fail logit is the threshold itself: pass - fail is SCALE x (cos - threshold).
    logits = deploy_and_classify(engines["classification"], "food-judge", output / "checkpoint-1", meets[:1])[0]
    assert logits["fail"] == pytest.approx(SCALE * JUDGE_THRESHOLD, abs=1e-4)


def test_a_zero_shot_regression_scores_towards_the_high_description(minilm_dir: Path, engines: dict[str, TestClient],
                                                                    tmp_path: Path) -> None:
    anger = {"name": "anger", "description": "how angry the text is", "min_value": 0, "max_value": 10,
             "low_description": "a calm, relaxed, peaceful text",
             "high_description": "an angry, furious, aggressive text"}
    texts = ["I am so furious, this is absolutely unacceptable!!", "I'm quite annoyed that it happened again",
             "It's fine, no worries at all", "What a lovely peaceful morning by the lake"]
    test = write_jsonl(tmp_path / "rated.jsonl", [{"text": t, "value": v} for t, v in zip(texts, [10, 7, 3, 0])])
    code, report, output = run_job(tmp_path / "job", minilm_dir, "regression", test_path=str(test),
                                   zero_shot={"mode": "regression", "classes": [anger]})
    assert (code, report.outcome) == (0, {"status": "Success"}), report
    config = json.loads((output / "checkpoint-1" / "config.json").read_text())
    assert (config["problem_type"], config["id2label"]) == ("regression", {"0": "score"})
    answers = deploy_and_classify(engines["regression"], "anger", output / "checkpoint-1", texts)
    # The replica answers under the labels the experiment lists (services/experiments.py labels_of).
    assert [list(a) for a in answers] == [mode_labels("regression", ["anger"])] * len(texts) == [["score"]] * len(texts)
    scores = [a["score"] for a in answers]
    assert scores == sorted(scores, reverse=True) and scores[0] > 5 > scores[-1], scores
    results = report.checkpoints[0]["test_results"]
    assert set(results) == {"eval_loss", "mae"} and results["mae"] < 5


def test_a_version_trained_from_the_zero_shot_head_beats_it_on_held_out_examples(
    minilm_dir: Path, decision: tuple[TrainingReport, Path], engines: dict[str, TestClient], tmp_path: Path
) -> None:
    rows = harder_rows()
    train = write_jsonl(tmp_path / "train.jsonl", rows[:40])
    held_out = rows[200:240]
    test = write_jsonl(tmp_path / "held-out.jsonl", held_out)
    zero_shot = str(decision[1] / "checkpoint-1")
    code, report, output = run_job(
        tmp_path / "job", minilm_dir, "classification", train_path=str(train), test_path=str(test),
        init_checkpoint=zero_shot, baseline_checkpoint=zero_shot,
        parameters={"num_train_epochs": 5, "learning_rate": 3e-3, "lora_r": 8, "lora_alpha": 16, "pooling": "mean"},
    )
    assert (code, report.outcome) == (0, {"status": "Success"}), report
    assert report.baseline is not None and (output / "baseline.json").is_file()
    baseline = report.baseline["test_results"]
    assert set(baseline) == {"eval_loss", "accuracy", "macro_f1"}
    trained = report.checkpoints[-1]["test_results"]
    assert trained["accuracy"] > baseline["accuracy"] and trained["eval_loss"] < baseline["eval_loss"] / 2, (
        baseline, [c["test_results"] for c in report.checkpoints])
    # The trained head keeps the zero-shot labels and their order, and reads the same pooling.
    checkpoint = Path(report.checkpoints[-1]["path"])
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["id2label"] == {"0": "urgent", "1": "not_urgent"}
    assert (config["sentence_pooling"], config["sentence_normalize"]) == ("mean", True)
    texts, gold = [r["text"] for r in held_out], [r["label"] for r in held_out]
    answers = runtime_scores(deploy_and_classify(engines["classification"], "triage-v2", checkpoint, texts), gold)
    assert answers["accuracy"] == pytest.approx(trained["accuracy"])
    assert answers["eval_loss"] == pytest.approx(trained["eval_loss"], abs=1e-5)
