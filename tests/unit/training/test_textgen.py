"""Text generation: only answer tokens are trained, the loss falls, and the checkpoint is a PEFT
adapter our replicas read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from enginehouse.runtime.lora.layers import describe_target
from enginehouse.runtime.lora.peft_format import CONFIG_FILE, read_lora_adapter
from enginehouse.training.batching import IGNORED
from enginehouse.training.data import ChatExample, CompletionExample, DatasetError
from enginehouse.training.models import LengthLimit
from enginehouse.training.parameters import TrainingParameters
from enginehouse.training.textgen import CausalLMTask, answer_labels, load_textgen
from tests.training_data import answer_rows
from tests.unit.training.conftest import run_in_process, write_config, write_jsonl

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _task(tiny_llama_dir: Path, limit: int = 512, truncation: bool = False) -> CausalLMTask:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    return CausalLMTask(tokenizer, LengthLimit(limit, f"max_seq_length {limit}", truncation), keeps_logits=True)


def test_answer_labels_mask_the_prompt() -> None:
    assert answer_labels([1, 5, 6], [7, 2]) == ([1, 5, 6, 7, 2], [IGNORED, IGNORED, IGNORED, 7, 2])


def test_completion_rows_train_the_completion_and_its_end(tiny_llama_dir: Path) -> None:
    task = _task(tiny_llama_dir)
    tokenizer = task.tokenizer
    [row] = task.encode([CompletionExample(4, "Tell me about the apple.", " It is red.")], "train")
    prompt = tokenizer("Tell me about the apple.")["input_ids"]  # with <s>, as /v1/completions encodes it
    answer = tokenizer(" It is red.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert row.line == 4
    assert row.input_ids == prompt + answer
    assert row.target == [IGNORED] * len(prompt) + answer


def test_chat_rows_train_the_last_reply_only(tiny_llama_dir: Path) -> None:
    task = _task(tiny_llama_dir)
    tokenizer = task.tokenizer
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Fruit?"},
                {"role": "assistant", "content": "Apple."}]
    [row] = task.encode([ChatExample(2, messages)], "train")
    # The prompt as /v1/chat/completions renders it: the template up to the assistant header.
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert row.input_ids[:len(prompt_ids)] == prompt_ids
    assert row.target[:len(prompt_ids)] == [IGNORED] * len(prompt_ids)
    trained = row.target[len(prompt_ids):]
    assert IGNORED not in trained
    assert tokenizer.decode(trained) == "Apple.</s>\n"  # the reply, then its end of turn


def test_fewer_logits_give_the_same_losses(tiny_llama_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    rows = _task(tiny_llama_dir).encode([CompletionExample(1, "A long prompt about the apple and the river", " x"),
                                         CompletionExample(2, "Short", " and a longer answer here")], "train")
    task = _task(tiny_llama_dir)
    batch = task.batch(rows, torch.device("cpu"))
    with torch.inference_mode():
        few = task._token_losses(model, batch)
        task.keeps_logits = False
        every = task._token_losses(model, batch)
    torch.testing.assert_close(few, every)
    assert few.numel() == sum(t != IGNORED for row in rows for t in cast(list[int], row.target))


def test_over_long_rows_are_refused_or_cut(tiny_llama_dir: Path) -> None:
    examples = [CompletionExample(1, "a", " b"), CompletionExample(3, "apple", " river" * 30)]
    with pytest.raises(DatasetError, match=r"^test line 3: \d+ tokens, longer than max_seq_length 16 "
                                           r"\(set truncation: true to cut such rows\)$"):
        _task(tiny_llama_dir, limit=16).encode(examples, "test")
    rows = _task(tiny_llama_dir, limit=16, truncation=True).encode(examples, "test")
    assert [len(r.input_ids) for r in rows] == [len(rows[0].input_ids), 16]
    # A row whose prompt fills the length has nothing left to learn: dropped.
    rows = _task(tiny_llama_dir, limit=16, truncation=True).encode(
        [*examples, CompletionExample(5, "river " * 30, " b")], "test")
    assert [r.line for r in rows] == [1, 3]


def test_fine_tuning_learns_the_answers(tiny_llama_dir: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", answer_rows(96))
    test = write_jsonl(tmp_path / "test.jsonl", answer_rows(24))
    config = write_config(tmp_path, task_type="text-generation", base_model=tiny_llama_dir, train=train, test=test,
                          num_train_epochs=4, learning_rate=2e-2, target_modules=ALL_LINEAR, lora_r=8)
    code, report = run_in_process(config)
    assert (code, report.outcome) == (0, {"status": "Success"})
    losses = [c["test_results"]["eval_loss"] for c in report.checkpoints]
    assert [c["checkpoint"] for c in report.checkpoints] == [1, 2, 3, 4]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 1.0, losses  # from ~8 untrained
    assert report.progress is not None and report.progress["step"] == report.progress["total_steps"] == 48

    path = Path(report.checkpoints[-1]["path"])
    assert json.loads((path / CONFIG_FILE).read_text())["task_type"] == "CAUSAL_LM"
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    targets = {name: describe_target(module) for name, module in base.named_modules() if name}
    weights = read_lora_adapter(path, targets, max_rank=8)
    assert len(weights.modules) == 2 * len(ALL_LINEAR)  # two layers

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    model = PeftModel.from_pretrained(base, str(path)).eval()
    ids = tokenizer("Tell me about the dragon.", return_tensors="pt").input_ids
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    assert str(tokenizer.decode(out[0, ids.shape[1]:])).startswith(" It breathes")


def test_a_split_from_the_training_file_and_default_targets(tiny_llama_dir: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", answer_rows(20))
    config = write_config(tmp_path, task_type="text-generation", base_model=tiny_llama_dir, train=train, ratio=0.25,
                          num_train_epochs=1)
    code, report = run_in_process(config)
    assert (code, report.outcome) == (0, {"status": "Success"})
    assert set(report.checkpoints[0]["test_results"]) == {"eval_loss"}
    adapter = json.loads((Path(report.checkpoints[0]["path"]) / CONFIG_FILE).read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]  # PEFT's default for Llama
    assert report.progress is not None and report.progress["total_steps"] == 2  # 15 rows, batches of 8


def test_parameters_reach_the_adapter(tiny_llama_dir: Path) -> None:
    model, _ = load_textgen(str(tiny_llama_dir), TrainingParameters(lora_r=4, lora_alpha=8, lora_dropout=0.0))
    config: Any = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (4, 8, 0.0, "none")


@pytest.mark.parametrize(("template", "words"), [
    (None, "the base model's tokenizer has no chat template"),
    ("{{ raise_exception('roles must alternate') }}", "chat template refused the conversation: roles must alternate"),
    # A template that shows the reply before the question: the prompt is not where the row starts.
    ("{% for m in messages|reverse %}{{ m['content'] }}{% endfor %}", "cannot be told apart from the prompt"),
])
def test_chat_rows_a_template_cannot_split_are_refused_with_their_line(
    tiny_llama_dir: Path, template: str | None, words: str
) -> None:
    task = _task(tiny_llama_dir)
    task.tokenizer.chat_template = template
    messages = [{"role": "user", "content": "Fruit?"}, {"role": "assistant", "content": "Apple."}]
    with pytest.raises(DatasetError, match=r"^train line 9: ") as caught:
        task.encode([CompletionExample(1, "a", "b"), ChatExample(9, messages)], "train")
    assert words in str(caught.value)
