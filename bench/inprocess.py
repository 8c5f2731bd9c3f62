"""The two baselines that need no server, run in this process with a pinned thread count.

(d) naive: one PEFT model holding every adapter; per request ``set_adapter`` then ``generate``,
    one request at a time — what serving adapters looks like without a batching engine.
(f) ceiling: the base model's own batched ``generate`` over as many prompts as the servers have
    streams, all at once: no server, no HTTP, no scheduling. A server of this model in eager
    PyTorch should not beat it by much.

Both force the output length with ``min_new_tokens`` (the in-process twin of ``ignore_eos``) and
time tokens with a streamer, so their records read like the HTTP runs'.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers.generation.streamers import BaseStreamer

from bench.load import LoadResult, RequestRecord, StopCheck, one_at_a_time


class _TokenClock(BaseStreamer):
    """Notes when each generation step's tokens come out (the first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen:
            self.times.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        pass


def _load(base_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()
    return model, tokenizer


def _generate(model, tokenizer, prompts: list[str],  # type: ignore[no-untyped-def]
              max_tokens: int) -> list[RequestRecord]:
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    clock = _TokenClock()
    sent = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            **inputs, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False,
            pad_token_id=tokenizer.pad_token_id, streamer=clock,
        )
    done = time.perf_counter()
    produced = int(output.shape[1] - inputs["input_ids"].shape[1])
    return [
        RequestRecord(sent=sent, chunk_times=list(clock.times), completion_tokens=produced,
                      tokens_from_usage=True, finish_reason="length", done=done)
        for _ in prompts
    ]


def static_batch(base_dir: Path, warmup: list[str], batches: list[list[str]], max_tokens: int,
                 warmup_tokens: int) -> Callable[[StopCheck | None], LoadResult]:
    """(f): load and warm up, then return the measured part: ``generate`` over each batch of
    prompts at once, batches one after another."""
    model, tokenizer = _load(base_dir)
    _generate(model, tokenizer, warmup, warmup_tokens)
    return one_at_a_time(batches, lambda batch: _generate(model, tokenizer, batch, max_tokens))


def peft_sequential(base_dir: Path, adapters: dict[str, Path], requests: list[tuple[str, str]],
                    max_tokens: int, warmup_tokens: int) -> Callable[[StopCheck | None], LoadResult]:
    """(d): load and warm up, then return the measured part: ``requests`` (adapter name, prompt)
    served one at a time."""
    from peft import PeftModel

    model, tokenizer = _load(base_dir)
    names = list(adapters)
    peft_model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(str(adapters[name]), adapter_name=name)
    peft_model.eval()
    for name in names:  # each adapter's first use out of the way, as the servers' warm-up does
        peft_model.set_adapter(name)
        _generate(peft_model, tokenizer, [requests[0][1]], 1)
    _generate(peft_model, tokenizer, [requests[0][1]], warmup_tokens)

    def serve(request: tuple[str, str]) -> list[RequestRecord]:
        name, prompt = request
        peft_model.set_adapter(name)
        return _generate(peft_model, tokenizer, [prompt], max_tokens)

    return one_at_a_time(requests, serve)
