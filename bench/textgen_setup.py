"""What every text-generation run starts from, and the two runs that need no server.

``prepare`` builds a model of the configured shape, its adapters and the fixed prompts;
``run_in_process`` measures (d), PEFT one request at a time, and (f), the static-batch ceiling.
The main text-generation part and the model-size sweep both use them, each with its own config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench import inprocess
from bench.config import BenchConfig, Workload, fixed_prompts
from bench.models import adapter_file_bytes, build_adapters, build_base, count_parameters
from bench.runs import RunOutcome, measure, progress


def prepare(cfg: BenchConfig, work_dir: Path) -> tuple[Workload, dict[str, Any]]:
    progress(f"building the model and {max(cfg.adapters_b, cfg.adapters_c)} adapters in {work_dir}")
    base = build_base(work_dir / "base", cfg.model)
    adapters = build_adapters(base, work_dir / "adapters", max(cfg.adapters_b, cfg.adapters_c), cfg.adapter)
    params = count_parameters(base)
    progress(f"model: {params:,} parameters")
    prompts = fixed_prompts(base, cfg.concurrency + cfg.requests_c, cfg.prompt_tokens)
    work = Workload(cfg, base, adapters, prompts[: cfg.concurrency], prompts[cfg.concurrency:])
    return work, {"model": describe_model(cfg, params, adapters[0]), "parameters": params}


def describe_model(cfg: BenchConfig, params: int, adapter: Path) -> str:
    shape, lora = cfg.model, cfg.adapter
    return (f"Llama, {params / 1e6:.1f}M parameters (hidden {shape.hidden_size}, {shape.num_layers} layers, "
            f"{shape.num_heads} heads / {shape.num_kv_heads} KV, MLP {shape.intermediate_size}, "
            f"vocab ~1000), float32, random weights; "
            f"adapters r={lora.r} on {', '.join(lora.target_modules)} "
            f"({adapter_file_bytes(adapter) / 1024:.0f} KiB each)")


def run_in_process(work: Workload) -> dict[str, RunOutcome]:
    """(d) and (f), one after the other, torch pinned to the configured threads."""
    cfg = work.cfg
    torch.set_num_threads(cfg.threads)
    names = [f"lora-{i:03d}" for i in range(cfg.adapters_b)]
    mix = [(names[i % len(names)], work.prompts[i]) for i in range(cfg.requests_d)]
    adapters = dict(zip(names, work.adapters))
    progress("(d) loading PEFT with the adapters of (b)")
    sequential = inprocess.peft_sequential(work.base_dir, adapters, mix, cfg.max_tokens,
                                           cfg.warmup_max_tokens)
    run_d = measure("d", "PEFT set_adapter + generate, one request at a time, mix of (b)", sequential,
                    cfg.patience)
    run_d.notes.append(f"{cfg.requests_d} requests (one per adapter of (b)), {cfg.threads} torch threads; "
                       "no queueing: its TTFT is one generate call's, not what waiting clients would see")
    del sequential  # the PEFT model goes before (f) loads its own
    batches = [work.prompts[i * cfg.concurrency:(i + 1) * cfg.concurrency] for i in range(cfg.rounds)]
    static = inprocess.static_batch(work.base_dir, work.warmup_prompts, batches, cfg.max_tokens,
                                    cfg.warmup_max_tokens)
    run_f = measure("f", f"static batched generate, {cfg.concurrency} prompts at once (ceiling)", static,
                    cfg.patience)
    run_f.notes.append(f"{cfg.rounds} batches of {cfg.concurrency}, {cfg.threads} torch threads; "
                       "TTFT is the batch's prefill, every row alike")
    return {"d": run_d, "f": run_f}


def describe_load(cfg: BenchConfig) -> str:
    return (f"{cfg.concurrency} concurrent streams, {cfg.prompt_tokens}-token prompts, "
            f"{cfg.max_tokens} output tokens (ignore_eos), greedy; {cfg.requests_per_run} requests per run, "
            f"(c) {cfg.requests_c}, (d) {cfg.requests_d}, each run after a warm-up round")
