"""Embedding: all-MiniLM-L6-v2 through the gateway's ``/v1/embeddings`` against
sentence-transformers' ``encode`` on the same model and sentences, in this process.

Each request carries ``batch`` sentences (1 or 32); the gateway gets them from a few clients in a
closed loop, ``encode`` gets the same requests' sentences one call after another with
``batch_size=batch``: what a user does in one process with the batches they have. At batch 32 one
call is one forward either way and the HTTP cost is spread over 32 inputs; at batch 1 the
gateway's per-request cost shows (and the replica may batch the clients' rows together).

Answers are asked for as base64, as the official OpenAI client does: a list of 384 floats per
input as JSON text would cost the replica, the gateway and the client more than the model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.config import BenchConfig
from bench.load import RequestRecord, one_at_a_time, prepared_call_load
from bench.runs import RunOutcome, measure, progress
from bench.server import BenchServer, create_engine, delete_engine
from bench.stats import summarize_calls


def requests_of(sentences: list[str], batch: int, count: int) -> list[list[str]]:
    """``count`` requests of ``batch`` sentences each, taking the sentences in order, cycling."""
    return [[sentences[(i * batch + j) % len(sentences)] for j in range(batch)] for i in range(count)]


def gateway_key(batch: int) -> str:
    return f"embed_{batch}"


def encode_key(batch: int) -> str:
    return f"embed_{batch}_encode"


def run_encode(cfg: BenchConfig, model_dir: Path, sentences: list[str]) -> dict[str, RunOutcome]:
    """The baseline, with no replica running: ``SentenceTransformer.encode`` per request."""
    from sentence_transformers import SentenceTransformer

    tasks = cfg.tasks
    torch.set_num_threads(cfg.threads)
    progress("embedding baseline: loading sentence-transformers")
    model = SentenceTransformer(str(model_dir), device="cpu")
    runs: dict[str, RunOutcome] = {}
    for batch, count in zip(tasks.embed_batches, tasks.embed_requests):
        calls = requests_of(sentences, batch, count)

        def encode(texts: list[str], batch: int = batch) -> list[RequestRecord]:
            record = RequestRecord(sent=time.perf_counter(), inputs=len(texts))
            model.encode(texts, batch_size=batch, show_progress_bar=False)
            record.done = time.perf_counter()
            return [record]

        one_at_a_time(calls[: tasks.embed_warmup], encode)(None)  # the gateway's warm-up, alike
        key = encode_key(batch)
        runs[key] = measure(key, f"sentence-transformers encode, batch {batch}, in this process",
                            one_at_a_time(calls, encode), cfg.patience, summarize_calls)
        runs[key].notes.append(f"{count} calls of encode(texts, batch_size={batch}), {cfg.threads} torch threads")
    return runs


def run_gateway(cfg: BenchConfig, server: BenchServer, http: httpx.Client, model_dir: Path,
                sentences: list[str]) -> dict[str, RunOutcome]:
    """An ``embedding`` engine on the model, each batch size in turn; deleted at the end."""
    progress("embedding engine: starting its replica")
    engine = create_engine(server, http, "bench-embed", model_dir, {}, task_type="embedding")
    tasks = cfg.tasks
    runs: dict[str, RunOutcome] = {}
    for batch, count in zip(tasks.embed_batches, tasks.embed_requests):
        bodies = [_body(engine.name, texts) for texts in requests_of(sentences, batch, count)]
        load = prepared_call_load(server.url, "/v1/embeddings", bodies[: tasks.embed_warmup], bodies,
                                  tasks.embed_concurrency, server.auth)
        key = gateway_key(batch)
        runs[key] = measure(key, f"/v1/embeddings through the gateway, batch {batch}", load, cfg.patience,
                            summarize_calls)
        runs[key].notes.append(f"{count} requests of {batch} {'sentence' if batch == 1 else 'sentences'} "
                               f"from {tasks.embed_concurrency} clients, base64 answers")
    delete_engine(http, engine)
    return runs


def _body(model: str, texts: list[str]) -> dict[str, Any]:
    return {"model": model, "input": texts, "encoding_format": "base64"}
