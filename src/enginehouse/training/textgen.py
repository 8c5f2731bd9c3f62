"""Text generation: a LoRA adapter for a causal LM, trained on the answers only.

A row is a prompt and an answer. The prompt is tokenised as a replica tokenises a request
(``/v1/completions``: the text with the tokenizer's special tokens; ``/v1/chat/completions``: the
chat template with the generation prompt, without extra special tokens), and the answer as what
the model should generate after it, up to its end-of-sequence token. Only answer tokens carry a
loss: the model is not taught to write prompts.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from enginehouse.training.batching import IGNORED, Encoded, evaluation_batches, per_token_batch
from enginehouse.training.cancel import Cancellation
from enginehouse.training.data import ChatExample, CompletionExample, DatasetError, Example
from enginehouse.training.errors import TrainingError
from enginehouse.training.lora import attach_lora
from enginehouse.training.models import LengthLimit, length_limit, load_model, load_tokenizer
from enginehouse.training.parameters import TrainingParameters

log = logging.getLogger(__name__)
Batch = dict[str, torch.Tensor]


def answer_labels(prompt_ids: Sequence[int], answer_ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """The row's input ids and labels: the prompt's tokens are IGNORED, the answer's are their own
    ids (the model shifts them: position t learns token t + 1)."""
    return [*prompt_ids, *answer_ids], [IGNORED] * len(prompt_ids) + list(answer_ids)


class CausalLMTask:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, limit: LengthLimit, *, keeps_logits: bool) -> None:
        if tokenizer.eos_token_id is None:
            raise TrainingError("the base model's tokenizer has no end-of-sequence token, so answers cannot be "
                                "taught to end")
        self.tokenizer = tokenizer
        self.limit = limit
        self.pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        # Whether the model can compute logits for the last positions only (recent transformers'
        # ``logits_to_keep``): a prompt's positions need none, and a large vocabulary's logits are
        # most of a step's memory.
        self.keeps_logits = keeps_logits

    def encode(self, examples: Sequence[Example], split_name: str) -> list[Encoded]:
        pairs = [self._prompt_and_answer(e, split_name) for e in examples]
        prompts = self._tokenize([p for p, _ in pairs], with_special=_completion_rows(examples))
        answers = self._tokenize([a for _, a in pairs])
        rows = []
        for example, prompt, answer in zip(examples, prompts, answers, strict=True):
            if isinstance(example, CompletionExample):
                answer = [*answer, self.tokenizer.eos_token_id]
            rows.append((example.line, *answer_labels(prompt, answer)))
        return [Encoded(line, ids, labels) for line, ids, labels in self._fit(rows, split_name)]

    def batch(self, rows: Sequence[Encoded], device: torch.device) -> Batch:
        return per_token_batch(rows, self.pad_id, device)

    def loss(self, model: PeftModel, batch: Batch) -> torch.Tensor:
        """The mean loss over the batch's answer tokens."""
        losses = self._token_losses(model, batch)
        return losses.mean()

    def evaluate(self, model: PeftModel, rows: Sequence[Encoded], batch_size: int, device: torch.device,
                 cancel: Cancellation) -> dict[str, float]:
        total, count = 0.0, 0
        for indices in evaluation_batches([len(r.input_ids) for r in rows], batch_size):
            cancel.check()
            losses = self._token_losses(model, self.batch([rows[i] for i in indices], device))
            total += float(losses.sum())
            count += losses.numel()
        return {"eval_loss": total / max(count, 1)}

    def save(self, model: PeftModel, directory: Path) -> None:
        model.save_pretrained(str(directory))

    def _token_losses(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        labels = batch["labels"]
        width = labels.shape[1]
        extra: dict[str, Any] = {}
        if self.keeps_logits:
            # Logits from the position before the earliest answer token of any row onwards.
            first_answer = int((labels != IGNORED).int().argmax(dim=1).min())
            extra["logits_to_keep"] = width - max(first_answer - 1, 0)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra).logits
        start = width - logits.shape[1]
        targets = labels[:, start + 1:]
        trained = targets != IGNORED
        return F.cross_entropy(logits[:, :-1][trained].float(), targets[trained], reduction="none")

    def _prompt_and_answer(self, example: Example, split_name: str) -> tuple[str, str]:
        if isinstance(example, CompletionExample):
            return example.prompt, example.completion
        assert isinstance(example, ChatExample)
        return self._render_chat(example, split_name)

    def _render_chat(self, example: ChatExample, split_name: str) -> tuple[str, str]:
        where = f"{split_name} line {example.line}"
        if not getattr(self.tokenizer, "chat_template", None):
            raise DatasetError(f"{where}: the base model's tokenizer has no chat template, so \"messages\" rows "
                               "cannot be rendered; use {\"prompt\", \"completion\"} rows")
        try:
            prompt = self.tokenizer.apply_chat_template(example.messages[:-1], tokenize=False,
                                                        add_generation_prompt=True)
            full = self.tokenizer.apply_chat_template(example.messages, tokenize=False)
        except Exception as exc:  # jinja2's errors, and the templates' own raise_exception
            raise DatasetError(f"{where}: the base model's chat template refused the conversation: {exc}") from None
        if not isinstance(prompt, str) or not isinstance(full, str) or not full.startswith(prompt):
            raise DatasetError(f"{where}: the base model's chat template does not render the conversation "
                               "before the reply as the start of the whole conversation, so the reply "
                               "cannot be told apart from the prompt; use {\"prompt\", \"completion\"} rows")
        return prompt, full[len(prompt):]

    def _tokenize(self, texts: list[str], with_special: set[int] | None = None) -> list[list[int]]:
        """Tokenise in batches (fast tokenizers work in parallel); the rows in ``with_special``
        get the tokenizer's special tokens (a chat row's template already holds its own)."""
        chosen = with_special or set()
        ids: list[list[int]] = [[] for _ in texts]
        for special in (True, False):
            indices = [i for i in range(len(texts)) if (i in chosen) == special]
            if indices:
                encoded = self.tokenizer([texts[i] for i in indices], add_special_tokens=special)["input_ids"]
                for i, row in zip(indices, encoded, strict=True):
                    ids[i] = list(row)
        return ids

    def _fit(self, rows: list[tuple[int, list[int], list[int]]], split_name: str
             ) -> list[tuple[int, list[int], list[int]]]:
        """``(line, input_ids, labels)`` rows within the length limit: refused, or cut (the end of
        the answer goes)."""
        over = self.limit.check(split_name, [(line, len(ids)) for line, ids, _ in rows])
        if not over:
            return rows
        keep = self.limit.tokens
        fitted = list(rows)
        for i in over:
            line, ids, labels = rows[i]
            fitted[i] = (line, ids[:keep], labels[:keep])
        # A prompt that fills the whole length leaves nothing to learn from its row.
        usable = [row for row in fitted if any(label != IGNORED for label in row[2])]
        log.info("%s: cut %d row(s) to %d tokens; %d of them dropped (the prompt alone fills the length)",
                 split_name, len(over), keep, len(fitted) - len(usable))
        if not usable:
            raise DatasetError(f"every {split_name} row's prompt is at least {keep} tokens long, so no answer "
                               "token is left to train on; raise max_seq_length or shorten the prompts")
        return usable


def load_textgen(base_model: str, parameters: TrainingParameters) -> tuple[PeftModel, CausalLMTask]:
    tokenizer = load_tokenizer(base_model)
    model = load_model(AutoModelForCausalLM.from_pretrained, base_model, "a causal language model")
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    task = CausalLMTask(tokenizer, length_limit(parameters, model, tokenizer), keeps_logits=keeps_logits)
    return attach_lora(model, parameters, peft_task="CAUSAL_LM"), task


def _completion_rows(examples: Sequence[Example]) -> set[int]:
    return {i for i, e in enumerate(examples) if isinstance(e, CompletionExample)}
