"""NER fine-tunes and zero-shot builds in the worker: what they learn, score and save, and that
an NER replica serves the whole-model checkpoints they write, on a base encoder without a
token-classification head of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from enginehouse.demo.tiny_encoders import build_tiny_bert
from enginehouse.runtime.ner.runner import NerRunner
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.server import create_app
from tests.training_data import BEAST, KEYWORD, entity_rows, write_jsonl
from tests.unit.training.conftest import run_job

pytestmark = pytest.mark.usefixtures("one_thread")

PARAMETERS = {"num_train_epochs": 4, "learning_rate": 1e-2, "per_device_train_batch_size": 4, "lora_r": 8, "lora_alpha": 16}


@pytest.fixture(scope="module")
def bare_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random BERT without any head: the base an NER engine and its fine-tunes start from."""
    return build_tiny_bert(tmp_path_factory.mktemp("bare-bert"), head="none")


@pytest.fixture(scope="module")
def ner_engine(bare_bert: Path) -> TestClient:
    runner = NerRunner(base_model=str(bare_bert), served_name="base", options=RuntimeOptions())
    runner.load()
    with TestClient(create_app(runner)) as client:
        yield client


def _ner(client: TestClient, model: str, texts: list[str]) -> list[list[dict[str, object]]]:
    answer = client.post("/v1/ner", json={"model": model, "input": texts})
    assert answer.status_code == 200, answer.text
    return [row["entities"] for row in answer.json()["data"]]


def test_a_base_without_a_token_classification_head_refuses_calls_but_serves_its_fine_tunes(
        ner_engine: TestClient) -> None:
    answer = ner_engine.post("/v1/ner", json={"model": "base", "input": "a dragon"})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "no_token_classification_head"
    assert "deploy an ner fine-tune" in answer.json()["error"]["message"]
    assert ner_engine.get("/health").json()["labels"] == []


def test_an_ner_job_learns_its_entities_and_each_epoch_is_a_whole_servable_model(
        bare_bert: Path, tmp_path: Path, ner_engine: TestClient) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", entity_rows(96, seed=1))
    test = write_jsonl(tmp_path / "test.jsonl", entity_rows(32, seed=2))
    code, report, _ = run_job(tmp_path / "job", bare_bert, "ner", train_path=str(train), test_path=str(test),
                              parameters=PARAMETERS)
    assert (code, report.outcome) == (0, {"status": "Success"})
    assert [c["checkpoint"] for c in report.checkpoints] == [1, 2, 3, 4]
    first, *_, last = report.checkpoints
    assert set(last["test_results"]) == {"eval_loss", "accuracy", "precision", "recall", "f1"}
    assert last["test_results"]["f1"] >= 0.9, report.checkpoints
    assert last["test_results"]["eval_loss"] < first["test_results"]["eval_loss"]
    weights = [(Path(c["path"]) / "model.safetensors").read_bytes() for c in report.checkpoints]
    assert len(set(weights)) == 4  # every epoch its own model

    # Served as a whole model in the base model's place, answering as scored.
    deployed = ner_engine.put("/v1/adapters/beasts", json={"path": last["path"]})
    assert deployed.status_code == 200, deployed.text
    try:
        text = f"quiet {KEYWORD} river"
        [found, none] = _ner(ner_engine, "beasts", [text, "quiet river garden"])
        assert [(e["text"], e["label"], e["start"]) for e in found] == [(KEYWORD, BEAST, text.index(KEYWORD))]
        assert none == []
        assert ner_engine.get("/health").json()["labels"] == ["O", BEAST]
    finally:
        assert ner_engine.delete("/v1/adapters/beasts").status_code == 200


def test_a_zero_shot_build_and_a_version_trained_from_it(bare_bert: Path, tmp_path: Path) -> None:
    """Version 1 from descriptions (on a random encoder it knows nothing, but it is a servable
    checkpoint with the types as labels); version 2 starts from its head, is scored beside it
    on the same rows, and beats it."""
    test = write_jsonl(tmp_path / "test.jsonl", entity_rows(32, seed=2))
    classes = [{"name": BEAST, "description": f"a creature such as a {KEYWORD}"},
               {"name": "place", "description": "a place such as a garden or a market"}]
    code, report, _ = run_job(tmp_path / "v1", bare_bert, "ner", test_path=str(test),
                              zero_shot={"mode": "ner", "classes": classes})
    assert code == 0, report.outcome
    [v1] = report.checkpoints
    assert set(v1["test_results"]) >= {"f1", "eval_loss"}
    config = (Path(v1["path"]) / "config.json").read_text()
    assert '"BertForTokenClassification"' in config and '"O"' in config and f'"{BEAST}"' in config

    train = write_jsonl(tmp_path / "train.jsonl", entity_rows(96, seed=1))
    code, report, output = run_job(tmp_path / "v2", bare_bert, "ner", train_path=str(train), test_path=str(test),
                                   init_checkpoint=v1["path"], baseline_checkpoint=v1["path"], parameters=PARAMETERS)
    assert code == 0, report.outcome
    assert report.baseline == {"test_results": v1["test_results"]}  # the same checkpoint on the same rows
    assert report.checkpoints[-1]["test_results"]["f1"] > v1["test_results"]["f1"]
    # The trained model keeps version 1's labels, the type no row marks included.
    assert '"place"' in (Path(report.checkpoints[-1]["path"]) / "config.json").read_text()


def test_an_ner_job_refuses_a_test_type_it_never_trained_on(bare_bert: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", entity_rows(16, seed=1))
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "in Oslo", "entities": [
        {"start": 3, "end": 7, "label": "city"}]}])
    code, report, _ = run_job(tmp_path / "job", bare_bert, "ner", train_path=str(train), test_path=str(test))
    assert (code, report.outcome) == (1, {"status": "Failed",
                                          "reason": "test line 1: label 'city' does not appear in the training data"})
