"""What the served answers are compared with: the same model run directly with transformers and
PEFT, in the test process."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer

from tests.reference_models import reference_model


def greedy_completion(base_dir: Path, adapter_dir: Path | None, prompt: str, max_tokens: int) -> str:
    """The text a greedy ``/v1/completions`` call should return for ``prompt``."""
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    return _greedy_text(base_dir, adapter_dir, tokenizer, input_ids, max_tokens)


def greedy_chat(base_dir: Path, adapter_dir: Path | None, messages: list[dict[str, str]],
                max_tokens: int) -> str:
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    input_ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    return _greedy_text(base_dir, adapter_dir, tokenizer, input_ids, max_tokens)


def _greedy_text(base_dir: Path, adapter_dir: Path | None, tokenizer, input_ids, max_tokens: int) -> str:  # type: ignore[no-untyped-def]
    model = reference_model(base_dir, adapter_dir)
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_tokens,
            do_sample=False, pad_token_id=tokenizer.pad_token_id,
        )
    new_tokens = output[0, input_ids.shape[1]:].tolist()
    if tokenizer.eos_token_id in new_tokens:
        new_tokens = new_tokens[: new_tokens.index(tokenizer.eos_token_id)]
    return tokenizer.decode(new_tokens, skip_special_tokens=True)
