"""The fine-tune benchmark compares like with like: its PEFT baseline trains on the rows, batches
and loss of a fine-tuning job, and its report says what a ratio means."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from bench import finetune_baseline as baseline
from bench.finetune_data import answer_rows, keyword_rows, write_jsonl
from bench.finetune_runs import BASELINE, OURS, FinetuneCase, FinetuneResults, LoopSeries, Training
from bench.report import finetune_table, finetune_targets
from bench.task_models import minilm_dir
from enginehouse.training.batching import training_batches
from enginehouse.training.data import label_names, read_examples
from enginehouse.training.parameters import TrainingParameters
from enginehouse.training.sequence_classification import load_sequence_task
from enginehouse.training.textgen import load_textgen

CPU = torch.device("cpu")


def _parameters(targets: list[str]) -> dict[str, object]:
    # No dropout: the two losses are then the same numbers, not the same distribution.
    return {"num_train_epochs": 1, "learning_rate": 2e-4, "per_device_train_batch_size": 4, "lora_r": 4,
            "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": targets, "max_seq_length": 256, "seed": 0}


@pytest.mark.parametrize("task_type", ["text-generation", "classification"])
def test_the_baseline_trains_the_jobs_rows_batches_and_loss(task_type: str, tiny_llama_dir: Path,
                                                             tmp_path: Path) -> None:
    textgen = task_type == "text-generation"
    base = str(tiny_llama_dir if textgen else minilm_dir())
    raw = answer_rows(12) if textgen else keyword_rows(12)
    examples = read_examples(task_type, write_jsonl(tmp_path / "train.jsonl", raw))
    params = _parameters(["q_proj", "v_proj"] if textgen else ["query", "value"])
    torch.manual_seed(0)
    if textgen:
        model, task = load_textgen(base, TrainingParameters.model_validate(params))
    else:
        model, task = load_sequence_task(task_type, base, TrainingParameters.model_validate(params),
                                         label_names(examples))
    ours = task.encode(examples, "train")
    tokenizer = baseline.AutoTokenizer.from_pretrained(base)
    labels = sorted({row["label"] for row in raw}) if not textgen else []
    theirs = [baseline.encode_answer(tokenizer, row) if textgen else baseline.encode_text(tokenizer, row, labels)
              for row in raw]
    assert [row.input_ids for row in ours] == [row["input_ids"] for row in theirs]
    assert [row.target for row in ours] == [row["labels"] for row in theirs]

    [indices, *_] = training_batches([len(row.input_ids) for row in ours], 4, random.Random(0))
    our_batch = task.batch([ours[i] for i in indices], CPU)
    their_batch = baseline.collator(tokenizer, textgen)([theirs[i] for i in indices])
    assert torch.equal(our_batch["input_ids"], their_batch["input_ids"])
    assert torch.equal(our_batch["attention_mask"], their_batch["attention_mask"])
    torch.manual_seed(0)
    their_model = baseline.load_model(base, labels, params)
    with torch.no_grad():
        torch.testing.assert_close(task.loss(model, our_batch), their_model(**their_batch).loss)


def test_the_baseline_writes_each_epochs_training_time(tiny_llama_dir: Path, tmp_path: Path) -> None:
    spec = {"task_type": "text-generation", "base_model": str(tiny_llama_dir),
            "train_path": str(write_jsonl(tmp_path / "train.jsonl", answer_rows(10))),
            "parameters": {**_parameters(["q_proj", "v_proj"]), "num_train_epochs": 2}, "threads": 1,
            "output_dir": str(tmp_path)}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert baseline.main([str(tmp_path / "spec.json")]) == 0
    epochs = json.loads((tmp_path / baseline.RESULT_FILE).read_text())["epochs"]
    assert [e["train_samples"] for e in epochs] == [10, 10]
    assert all(e["train_seconds"] > 0 for e in epochs)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def _training(samples_per_s: float, others: float = 0.0) -> Training:
    return Training([50 / samples_per_s, 50 / samples_per_s], 100, 30.0, others)


def test_the_report_compares_each_loops_best_training() -> None:
    case = FinetuneCase("text generation", {
        OURS: LoopSeries("job", [_training(9.0), _training(10.0)]),
        BASELINE: LoopSeries("peft", [_training(11.0), _training(12.5, others=0.05)]),
    })
    results = FinetuneResults({"finetune_textgen": case}, {"load": "the load"})
    [target] = finetune_targets(results)
    assert (target.name, target.value, target.goal, target.passed) == ("finetune_textgen", 0.8, 0.9, False)
    table = finetune_table(results)
    assert "| `finetune_textgen` | enginehouse: job | 10.0 | 10.0 | 30.0 | 100 | 0% | 9.0 @ 0%, 10.0 @ 0% |" in table
    assert "| `finetune_textgen` | peft: peft | 12.5 | 8.0 | 30.0 | 100 | 5% | 11.0 @ 0%, 12.5 @ 5% |" in table
    assert finetune_targets(None) == []
