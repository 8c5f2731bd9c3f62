"""Fixtures for runtime tests: in-process runners over the tiny Llama, and PEFT's own greedy
output to compare with."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.textgen.loading import load_causal_lm
from enginehouse.runtime.textgen.runner import TextGenerationRunner
from tests.reference_models import reference_model
from tests.unit.runtime.support import Harness


@pytest.fixture
def make_harness(tiny_llama_dir: Path) -> Iterator[Callable[..., Harness]]:
    def make(**options: object) -> Harness:
        settings = RuntimeOptions(**options)  # type: ignore[arg-type]
        runner = TextGenerationRunner(base_model=str(tiny_llama_dir), served_name="tiny", options=settings)
        runner.load_from(load_causal_lm(str(tiny_llama_dir)))
        return Harness(runner)

    yield make


@pytest.fixture(scope="session")
def peft_greedy(tiny_llama_dir: Path) -> Callable[[Path | None, str, int], list[int]]:
    """Token ids PEFT's own ``generate(do_sample=False)`` produces (up to and including EOS)."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))

    @lru_cache(maxsize=128)
    def generate(adapter_dir: Path | None, prompt: str, max_new_tokens: int) -> list[int]:
        model = reference_model(tiny_llama_dir, adapter_dir)
        input_ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        return output[0, input_ids.shape[1] :].tolist()

    return generate
