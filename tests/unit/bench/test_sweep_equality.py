"""At every model size the benchmark's sweep serves, the batching engine's greedy output equals
PEFT's token for token: one mixed batch (the base model and two adapters, two prompts each) on
the in-process runtime, a few tokens, against PEFT's ``generate`` one request at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.config import SWEEP_SHAPES
from bench.models import AdapterShape, ModelShape, build_adapters, build_base
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.textgen.loading import load_causal_lm
from enginehouse.runtime.textgen.runner import TextGenerationRunner
from tests.unit.runtime.support import PROMPTS, Harness

TOKENS = 4


def _shape_id(shape: ModelShape) -> str:
    return f"h{shape.hidden_size}-l{shape.num_layers}"


@pytest.fixture(scope="module", params=SWEEP_SHAPES, ids=_shape_id)
def sized(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Path]]]:
    root = tmp_path_factory.mktemp(_shape_id(request.param))
    base = build_base(root / "base", request.param)
    yield base, build_adapters(base, root / "adapters", 2, AdapterShape())


def _peft_greedy(base: Path, adapters: list[Path], jobs: list[tuple[int | None, str]]) -> list[list[int]]:
    """Each (adapter index or None, prompt) through one PEFT model, one request at a time."""
    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    peft = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name="0")
    peft.load_adapter(str(adapters[1]), adapter_name="1")
    peft.eval()
    outputs = []
    for adapter, prompt in jobs:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            if adapter is None:
                with peft.disable_adapter():
                    out = peft.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=TOKENS,
                                        do_sample=False, pad_token_id=tokenizer.pad_token_id)
            else:
                peft.set_adapter(str(adapter))
                out = peft.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=TOKENS,
                                    do_sample=False, pad_token_id=tokenizer.pad_token_id)
        outputs.append(out[0, ids.shape[1]:].tolist())
    return outputs


def test_mixed_batch_equals_peft_at_every_sweep_size(sized: tuple[Path, list[Path]]) -> None:
    base, adapters = sized
    runner = TextGenerationRunner(base_model=str(base), served_name="base", options=RuntimeOptions())
    runner.load_from(load_causal_lm(str(base)))
    harness = Harness(runner)
    for i, path in enumerate(adapters):
        runner.load_adapter(f"ft{i}", str(path))
    jobs: list[tuple[int | None, str]] = [(adapter, prompt) for prompt in PROMPTS[:2] for adapter in (None, 0, 1)]
    requests = [harness.request(prompt, adapter=None if a is None else f"ft{a}", max_tokens=TOKENS, ignore_eos=True)
                for a, prompt in jobs]
    harness.submit(*requests)
    harness.run(*requests)
    served = [harness.collector.tokens(r.request_id) for r in requests]
    expected = _peft_greedy(base, adapters, jobs)
    # PEFT stops at EOS; the served requests ignore it, so compare up to PEFT's length.
    assert [s[: len(e)] for s, e in zip(served, expected)] == expected
    # The adapters change the output: the comparison covers the LoRA path, not the base alone.
    assert len({tuple(tokens) for tokens in expected[:3]}) > 1
