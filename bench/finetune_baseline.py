"""The fine-tune benchmark's baseline: a plain PEFT + transformers training loop, the one a user
would write instead of running a job (``python -m bench.finetune_baseline SPEC_JSON``).

It reads the same kind of file the worker is started with (task type, base model, training rows,
parameters, threads, output directory) and trains the same LoRA the same way: ``get_peft_model``
with the same rank, alpha, dropout and target modules; ``torch.optim.AdamW`` at the same learning
rate with transformers' linear schedule; gradients clipped at 1.0 (as Hugging Face's Trainer
does); the same batch size, epochs, threads and seed. The answer-only loss of text generation is
the usual prompt masking (labels -100) and the model's own ``labels=`` loss. Batches hold the same
rows in the same order as the worker's (its length-grouped shuffle, drawn from the same seed),
padded to their longest row by transformers' collators, so both loops pad exactly alike and only
the loops differ.

It runs in a process of its own, as the worker does, so both pay the same one-time costs. Each
epoch's training steps are timed alone (not loading, tokenising or saving) and written, with the
epoch's mean loss, to ``result.json`` in the output directory; the adapter is saved beside it.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from torch.utils.data import DataLoader
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from enginehouse.training.batching import training_batches

RESULT_FILE = "result.json"
IGNORED = -100
Row = dict[str, Any]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.finetune_baseline SPEC_JSON", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    result = train(spec)
    (Path(spec["output_dir"]) / RESULT_FILE).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


def train(spec: dict[str, Any]) -> dict[str, Any]:
    params = spec["parameters"]
    torch.set_num_threads(spec["threads"])
    tokenizer = AutoTokenizer.from_pretrained(spec["base_model"])
    lines = Path(spec["train_path"]).read_text(encoding="utf-8").splitlines()
    raw = [json.loads(line) for line in lines if line.strip()]
    textgen = spec["task_type"] == "text-generation"
    labels = sorted({row["label"] for row in raw}) if not textgen else []
    rows = ([encode_answer(tokenizer, row) for row in raw] if textgen
            else [encode_text(tokenizer, row, labels) for row in raw])
    too_long = [len(row["input_ids"]) for row in rows if len(row["input_ids"]) > params["max_seq_length"]]
    if too_long:
        raise ValueError(f"{len(too_long)} row(s) longer than max_seq_length {params['max_seq_length']}")
    torch.manual_seed(params["seed"])
    model = load_model(spec["base_model"], labels, params)
    epochs = run_epochs(model, rows, collator(tokenizer, textgen), params)
    model.save_pretrained(str(Path(spec["output_dir"]) / "adapter"))
    return {"epochs": epochs}


def encode_answer(tokenizer: PreTrainedTokenizerBase, row: Row) -> Row:
    """A prompt/completion or chat row as input ids and labels, the prompt masked: the prompt as a
    server tokenises a request (a completion's with special tokens; a chat's through the template
    with the generation prompt), then the answer up to its end."""
    if "messages" in row:
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    else:
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        answer_ids = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + answer_ids, "attention_mask": [1] * (len(prompt_ids) + len(answer_ids)),
            "labels": [IGNORED] * len(prompt_ids) + answer_ids}


def encode_text(tokenizer: PreTrainedTokenizerBase, row: Row, labels: list[str]) -> Row:
    encoded = tokenizer(row["text"])
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
            "labels": labels.index(row["label"])}


def collator(tokenizer: PreTrainedTokenizerBase, textgen: bool) -> Any:
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if textgen:
        return DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORED, return_tensors="pt")
    return DataCollatorWithPadding(tokenizer, padding="longest", return_tensors="pt")


def load_model(base_model: str, labels: list[str], params: dict[str, Any]) -> torch.nn.Module:
    if labels:
        model = AutoModelForSequenceClassification.from_pretrained(
            base_model, dtype=torch.float32, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)})
        task_type = "SEQ_CLS"  # PEFT then trains the new head in full
    else:
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
        task_type = "CAUSAL_LM"
    config = LoraConfig(r=params["lora_r"], lora_alpha=params["lora_alpha"], lora_dropout=params["lora_dropout"],
                        target_modules=params["target_modules"], bias="none", task_type=task_type)
    return get_peft_model(model, config)


def run_epochs(model: torch.nn.Module, rows: list[Row], collate: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    batch_size, epochs = params["per_device_train_batch_size"], params["num_train_epochs"]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params["learning_rate"], weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, math.ceil(len(rows) / batch_size) * epochs)
    order = random.Random(params["seed"])
    lengths = [len(row["input_ids"]) for row in rows]
    model.train()
    results = []
    for _ in range(epochs):
        loader = DataLoader(rows, batch_sampler=training_batches(lengths, batch_size, order), collate_fn=collate)
        losses: list[float] = []
        samples = 0
        started = time.perf_counter()
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            samples += len(batch["input_ids"])
        results.append({"train_seconds": round(time.perf_counter() - started, 4), "train_samples": samples,
                        "mean_loss": round(sum(losses) / len(losses), 6)})
    return results


if __name__ == "__main__":
    sys.exit(main())
