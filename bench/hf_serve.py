"""(e): ``transformers serve --continuous-batching`` on the same base model, as a subprocess.

It is what a user might run instead of enginehouse for one model. It refuses ``ignore_eos``
(422, unexpected field), so its requests carry only ``max_tokens``; a request may stop early at
EOS, and its tokens are counted from the ``usage`` it reports in the last chunk.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.config import Workload
from bench.load import run_streaming_load
from bench.runs import RunOutcome, measure, progress
from bench.serve_process import ServeError, serve_process
from tests.integration.harness import free_port


@contextmanager
def transformers_serve(base_dir: Path, log_path: Path, timeout: float = 180) -> Iterator[str]:
    """Run ``transformers serve`` pinned to ``base_dir``; yields its base URL."""
    executable = Path(sys.executable).parent / "transformers"
    port = free_port()
    command = [
        str(executable), "serve", str(base_dir), "--continuous-batching", "--device", "cpu",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with serve_process(command, env, log_path, port, timeout, "transformers serve") as url:
        yield url


def run_hf_serve(work: Workload, log_path: Path) -> RunOutcome:
    """(e): the same streams, prompts and max_tokens as (a), against transformers serve."""
    cfg = work.cfg
    description = "transformers serve --continuous-batching"
    model = str(work.base_dir)  # a pinned server answers only to the name it was started with

    def body(prompt: str, max_tokens: int) -> dict[str, Any]:
        return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}

    progress(f"(e) starting transformers serve (log: {log_path})")
    try:
        with transformers_serve(work.base_dir, log_path) as url:
            warm = [body(p, cfg.warmup_max_tokens) for p in work.warmup_prompts[: cfg.concurrency]]
            failed = [r.error for r in run_streaming_load(url, warm, cfg.concurrency).records if r.error]
            if failed:
                raise ServeError(f"warm-up failed: {failed[0]}")
            bodies = [body(p, cfg.max_tokens) for p in work.prompts[: cfg.requests_per_run]]
            outcome = measure("e", description,
                              lambda stop: run_streaming_load(url, bodies, cfg.concurrency, stop=stop),
                              cfg.patience)
    except ServeError as exc:
        progress(f"(e) could not run: {exc}")
        return RunOutcome("e", description, error=str(exc))
    outcome.notes.append(_token_note(outcome))
    return outcome


def _token_note(outcome: RunOutcome) -> str:
    stats = outcome.stats
    assert stats is not None
    if stats.counted_from_usage == stats.requests - stats.errors:
        counted = "from the usage it reports"
    else:
        counted = (f"from its usage for {stats.counted_from_usage} requests, "
                   f"as one per streamed text chunk for the rest")
    return (f"transformers serve refuses ignore_eos: tokens counted {counted}; "
            f"{stats.early_stops} of {stats.requests} requests stopped at EOS before max_tokens")
