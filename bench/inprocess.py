"""The baselines that need no server, run in this process with a pinned thread count.

(d) naive: one PEFT model holding every adapter; per request ``set_adapter`` then ``generate``,
    one request at a time — what serving adapters looks like without a batching engine.
(f) ceiling: the base model's own batched ``generate`` over as many prompts as the servers have
    streams, all at once: no server, no HTTP, no scheduling. A server of this model in eager
    PyTorch should not beat it by much.
(engine) alone: enginehouse's own text-generation engine, loaded as a replica loads it and
    stepped on this thread under the servers' closed loop of streams: the engine's scheduling,
    sampling and detokenizing without HTTP, the gateway or a client. Between it and (a) lies
    only the serving path and the CPU it takes from the model.

Both force the output length with ``min_new_tokens`` (the in-process twin of ``ignore_eos``) and
time tokens with a streamer, so their records read like the HTTP runs'.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers.generation.streamers import BaseStreamer

from bench.load import LoadResult, RequestRecord, StopCheck, one_at_a_time

if TYPE_CHECKING:
    from enginehouse.runtime.textgen.scheduler import TextGenerationEngine
    from enginehouse.runtime.textgen.sequence import GenerationEvent


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
    """The model as (d) and (f) run it: float32, its linear layers packed as a replica packs
    them (``runtime/packed_linear.py``), so that the ratios against them measure batching and
    serving, not one matrix kernel against another."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from enginehouse.runtime.packed_linear import pack_linear_layers

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()
    pack_linear_layers(model)
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


def engine_alone(base_dir: Path, options: dict[str, Any], warmup: list[str], prompts: list[str],
                 concurrency: int, count: int, max_tokens: int,
                 warmup_tokens: int) -> Callable[[StopCheck | None], LoadResult]:
    """(engine): load the engine with the served engine's runtime options and warm it up, then return
    the measured part: ``count`` greedy requests (``prompts`` in turn) of ``max_tokens`` tokens
    each, ``concurrency`` at a time, each finished one replaced by the next at once."""
    from enginehouse.runtime.options import parse_runtime_options
    from enginehouse.runtime.textgen.runner import TextGenerationRunner

    runner = TextGenerationRunner(base_model=str(base_dir), served_name="engine-alone",
                                  options=parse_runtime_options(json.dumps(options)))
    runner.load()
    engine, encode = runner.engine, runner.serving.tokenizer.encode
    _closed_loop(engine, [encode(p) for p in warmup], len(warmup), len(warmup), warmup_tokens, None)
    token_prompts = [encode(prompt) for prompt in prompts]

    def run(stop: StopCheck | None) -> LoadResult:
        started = time.perf_counter()
        records = _closed_loop(engine, token_prompts, concurrency, count, max_tokens, stop)
        return LoadResult(records, time.perf_counter() - started, abandoned=len(records) < count)

    return run


def _closed_loop(engine: TextGenerationEngine, prompts: list[list[int]], concurrency: int, count: int,
                 max_tokens: int, stop: StopCheck | None) -> list[RequestRecord]:
    """Step ``engine`` on this thread until ``count`` requests have finished (or ``stop`` says
    so before a new one would start), keeping ``concurrency`` of them in flight."""
    from enginehouse.protocol.sampling import SamplingParams
    from enginehouse.runtime.textgen.sequence import GenerationRequest

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    records: list[RequestRecord] = []
    finished: list[RequestRecord] = []

    def submit() -> None:
        record = RequestRecord(sent=time.perf_counter())
        index = len(records)
        records.append(record)

        def emit(event: GenerationEvent) -> None:  # on this thread: the engine is stepped here
            now = time.perf_counter()
            if event.token_id is not None:
                record.chunk_times.append(now)
                record.completion_tokens = event.completion_tokens
            if event.finish_reason or event.error:
                record.finish_reason, record.error, record.done = event.finish_reason, event.error, now
                finished.append(record)

        engine.submit(GenerationRequest(f"alone-{index}", prompts[index % len(prompts)], params, emit))

    for _ in range(min(concurrency, count)):
        submit()
    while len(finished) < len(records):
        done_before = len(finished)
        engine.step()
        for _ in range(len(finished) - done_before):
            if len(records) < count and not (stop and stop()):
                submit()
    return records
