"""Classification: one engine on a random BERT, the base model alone, then 16 LoRA deployments
(each with its own head and labels) with the same requests spread evenly over them.

The requests are the same texts in the same order from the same clients; only the ``model`` of
each changes. The replica puts the rows of every deployment in one forward (``max_loras`` 16), so
the difference is what LoRA and per-row heads cost, not separate passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from bench.config import BenchConfig
from bench.load import prepared_call_load
from bench.runs import RunOutcome, measure, progress
from bench.server import BenchServer, create_engine, delete_engine, deploy_all, register_job
from bench.stats import summarize_calls

BASE_KEY, MIXED_KEY = "classify_base", "classify_mixed"


def _bodies(models: list[str], sentences: list[str], count: int) -> list[dict[str, Any]]:
    """One text per request; request i goes to ``models[i % len(models)]``."""
    return [{"model": models[i % len(models)], "input": sentences[i % len(sentences)]} for i in range(count)]


def run_classification(cfg: BenchConfig, server: BenchServer, http: httpx.Client, base_dir: Path,
                       adapters: list[Path], sentences: list[str]) -> dict[str, RunOutcome]:
    tasks = cfg.tasks
    job_id = register_job(http, "bench-classify", base_dir, adapters, task_type="classification")
    progress(f"classification engine: max_loras {len(adapters)}, starting its replica")
    engine = create_engine(server, http, "bench-classify", base_dir, {"max_loras": len(adapters)},
                           task_type="classification")
    runs = {BASE_KEY: _measure(cfg, server, [engine.name], sentences, BASE_KEY, "classification, base model only")}
    names = [f"classify-lora-{i:02d}" for i in range(len(adapters))]
    progress(f"deploying {len(names)} classification adapters")
    deploy_all(http, engine, job_id, names)
    runs[MIXED_KEY] = _measure(cfg, server, names, sentences, MIXED_KEY,
                               f"classification, {len(names)} LoRA deployments, requests spread evenly")
    delete_engine(http, engine)
    for run in runs.values():
        run.notes.append(f"{tasks.classify_requests} requests of one text from {tasks.classify_concurrency} clients")
    return runs


def _measure(cfg: BenchConfig, server: BenchServer, models: list[str], sentences: list[str], key: str,
             description: str) -> RunOutcome:
    tasks = cfg.tasks
    bodies = _bodies(models, sentences, tasks.classify_requests)
    # Two rounds, and every deployment has had a request (its slot and head written) before the
    # measured part.
    warmup = bodies[: max(2 * tasks.classify_concurrency, len(models))]
    load = prepared_call_load(server.url, "/v1/classification", warmup, bodies, tasks.classify_concurrency,
                              server.auth)
    return measure(key, description, load, cfg.patience, summarize_calls)
