"""(g): vLLM's OpenAI server on the same model and adapters, with the same client and load as
enginehouse's (a) and (b): base model only, then the adapters of (b), requests spread evenly.

vLLM runs from its own environment (``bench/vllm_env.py``), as a subprocess of its own session,
in float32 like the replica (its CPU build would pick bfloat16 by itself), with LoRA on, as many
adapter slots as (b) has adapters and the adapters' rank. Where it cannot be installed or does not
start, both runs are reported as not run, with why, and the benchmark goes on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.config import Workload
from bench.enginehouse_runs import drive
from bench.runs import RunOutcome, measure, progress
from bench.serve_process import serve_process
from bench.vllm_env import ensure_vllm, versions
from tests.integration.harness import free_port

BASE_KEY = "vllm_a"
MIXED_KEY = "vllm_b"
# Host memory vLLM's CPU backend sets aside for its KV cache, GiB: ample for 16 streams of a few
# hundred tokens; its default (most of the machine's memory) fails to start next to the others.
KV_CACHE_GIB = 2
START_TIMEOUT_S = 900.0


def adapter_names(count: int) -> list[str]:
    return [f"lora-{i:03d}" for i in range(count)]


@contextmanager
def vllm_serve(python: Path, work: Workload, log_path: Path) -> Iterator[str]:
    """vLLM's OpenAI server on ``work``'s model with (b)'s adapters; yields its base URL."""
    cfg = work.cfg
    port = free_port()
    modules = [f"{name}={path}" for name, path in zip(adapter_names(cfg.adapters_b), work.adapters)]
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(work.base_dir),
        "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(cfg.model.max_position_embeddings),
        "--enable-lora", "--max-loras", str(cfg.adapters_b), "--max-lora-rank", str(cfg.adapter.r),
        "--lora-modules", *modules,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB)}
    with serve_process(command, env, log_path, port, START_TIMEOUT_S, "vLLM") as url:
        yield url


def run_vllm(work: Workload, log_path: Path) -> dict[str, RunOutcome]:
    """(g) base and mixed; a run that could not happen carries its reason instead of numbers."""
    cfg = work.cfg
    descriptions = {BASE_KEY: "vLLM, base model only",
                    MIXED_KEY: f"vLLM, {cfg.adapters_b} adapters, requests spread evenly"}
    runs: dict[str, RunOutcome] = {}
    try:
        python = ensure_vllm()
        progress(f"(g) starting vLLM (log: {log_path})")
        with vllm_serve(python, work, log_path) as url:
            for key, models in ((BASE_KEY, [str(work.base_dir)]), (MIXED_KEY, adapter_names(cfg.adapters_b))):
                load = drive(work, url, {}, models, cfg.requests_per_run)
                runs[key] = measure(key, descriptions[key], load, cfg.patience)
        runs[BASE_KEY].notes.append(f"{versions(python)}, float32, max-loras {cfg.adapters_b}, "
                                    f"max-lora-rank {cfg.adapter.r}, KV cache {KV_CACHE_GIB} GiB")
    except Exception as exc:  # noqa: BLE001 - whatever vLLM does, the rest of the benchmark goes on
        reason = f"{type(exc).__name__}: {exc}"
        progress(f"(g) vLLM could not run: {reason[:500]}")
        for key, description in descriptions.items():
            runs.setdefault(key, RunOutcome(key, description, error=reason[:1000]))
    return runs
