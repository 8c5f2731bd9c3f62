"""Runs (a), (b), (c), (g) and (h) against a real enginehouse server, plus the gateway's cost and
the host memory each resident adapter takes.

One engine at a time: (a) and (b) share an engine (base model first, then its 16 adapters
deployed), which is deleted, replica and all, before (c)'s engine starts, so no two replicas
compete for the cores.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.config import BenchConfig, Workload
from bench.load import LoadResult, StopCheck, run_streaming_load, time_plain_request
from bench.machine import CpuMeter, rss_bytes
from bench.models import adapter_file_bytes
from bench.runs import RunOutcome, measure, progress, wait_for_quiet
from bench.server import (BenchServer, Engine, create_engine, delete_engine, deploy_all, register_job,
                          running_server)
from bench.stats import percentile_ms


@dataclass
class ServerResults:
    runs: dict[str, RunOutcome]
    gateway: dict[str, Any]
    memory: dict[str, Any]


# (g): every answer is a JSON array of at least this many short strings, so it always runs to
# max_tokens like the free-text runs (the same tokens per request, the same number of prefills)
# while every token is chosen under a grammar mask.
CONSTRAINED_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "words", "strict": True, "schema": {
        "type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 128}},
}
# (h): each token's log-probability and its 5 most likely alternatives (OpenAI's legacy shape).
LOGPROBS = 5


def streaming_body(model: str, prompt: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}, **extra,
    }


def _bodies(models: list[str], prompts: list[str], count: int, max_tokens: int,
            **extra: Any) -> list[dict[str, Any]]:
    """``count`` requests, round-robin over ``models`` so each gets an even share."""
    return [streaming_body(models[i % len(models)], prompts[i], max_tokens, **extra) for i in range(count)]


def run_enginehouse(work: Workload, data_dir: Path) -> ServerResults:
    with running_server(data_dir) as server, server.client() as http:
        job_id = register_job(http, "bench-adapters", work.base_dir, work.adapters)
        runs, gateway = _runs_a_b(work, server, http, job_id)
        run_c, memory = _run_c(work, server, http, job_id)
        runs["c"] = run_c
    return ServerResults(runs, gateway, memory)


def drive(work: Workload, url: str, headers: dict[str, str], models: list[str],
           count: int, **extra: Any) -> Callable[[StopCheck | None], LoadResult]:
    """Warm up with one short round, then return the measured load as a callable. ``extra``
    fields go into every request's body."""
    cfg = work.cfg
    warm = _bodies(models, work.warmup_prompts, cfg.concurrency, cfg.warmup_max_tokens, **extra)
    warmed = run_streaming_load(url, warm, cfg.concurrency, headers)
    failed = [r.error for r in warmed.records if r.error]
    if failed:
        raise RuntimeError(f"warm-up failed: {failed[0]}")
    bodies = _bodies(models, work.prompts, count, cfg.max_tokens, **extra)
    return lambda stop: run_streaming_load(url, bodies, cfg.concurrency, headers, stop)


def _runs_a_b(work: Workload, server: BenchServer, http: httpx.Client,
              job_id: str) -> tuple[dict[str, RunOutcome], dict[str, Any]]:
    cfg = work.cfg
    progress("engine for (a) and (b): starting its replica")
    options = {"max_loras": cfg.adapters_b}
    engine = create_engine(server, http, "bench-ab", work.base_dir, options)
    auth = server.auth
    base_only = [engine.name]
    runs = {"a": measure("a", "base model only",
                         drive(work, server.url, auth, base_only, cfg.requests_per_run), cfg.patience)}
    # Not a target: (a) without the gateway, to tell its streaming relay's cost from the replica's.
    # The replica answers only calls with its secret (read with the engine).
    direct = engine.replica
    runs["a_direct"] = measure("a_direct", "(a) sent straight to the replica, no gateway",
                               drive(work, direct.url, direct.headers(), base_only, cfg.requests_per_run),
                               cfg.patience)
    progress("gateway cost: the same non-streamed request, straight to the replica and through the gateway")
    gateway = _gateway_blocks(server, engine, work.warmup_prompts[0], cfg)
    progress(f"gateway adds {gateway['overhead_p50_ms']} ms at p50 "
             f"(direct {gateway['direct_p50_ms']} ms, gateway {gateway['gateway_p50_ms']} ms)")
    names = [f"ab-lora-{i:03d}" for i in range(cfg.adapters_b)]
    progress(f"deploying {len(names)} adapters")
    deploy_all(http, engine, job_id, names)
    runs["b"] = measure("b", f"{cfg.adapters_b} adapters, requests spread evenly",
                        drive(work, server.url, auth, names, cfg.requests_per_run), cfg.patience)
    # (a) again, right after (b): this machine's speed drifts by tens of percent over minutes, and
    # (b)/(a) is taken against the mean of the (a) before and after (b), which cancels a steady drift.
    runs["a_after"] = measure("a_after", "(a) again, after (b), its adapters deployed and idle",
                              drive(work, server.url, auth, base_only, cfg.requests_per_run), cfg.patience)
    # What a request pays for asking more of each token than its choice, against (a)'s plain decoding.
    runs["g"] = measure("g", "(a) with every answer constrained to a JSON schema (response_format)",
                        drive(work, server.url, auth, base_only, cfg.requests_per_run,
                               response_format=CONSTRAINED_FORMAT), cfg.patience)
    runs["h"] = measure("h", f"(a) with log-probabilities and the top {LOGPROBS} alternatives of every token",
                        drive(work, server.url, auth, base_only, cfg.requests_per_run, logprobs=LOGPROBS),
                        cfg.patience)
    delete_engine(http, engine)
    return runs, gateway


def _run_c(work: Workload, server: BenchServer, http: httpx.Client,
           job_id: str) -> tuple[RunOutcome, dict[str, Any]]:
    cfg = work.cfg
    progress(f"engine for (c): max_loras {cfg.max_loras_c}, host tier for {cfg.adapters_c} adapters")
    options = {"max_loras": cfg.max_loras_c, "max_cpu_loras": cfg.adapters_c}
    engine = create_engine(server, http, "bench-c", work.base_dir, options)
    names = [f"c-lora-{i:03d}" for i in range(cfg.adapters_c)]
    memory = adapter_memory(http, engine, job_id, names, work.adapters[: cfg.adapters_c])
    progress(f"host memory per adapter: {memory['per_adapter_bytes'] / 1024:.0f} KiB "
             f"= {memory['ratio_to_file']}× its safetensors file")
    description = f"{cfg.adapters_c} adapters, max_loras {cfg.max_loras_c}, requests spread evenly"
    auth = server.auth
    run = measure("c", description, drive(work, server.url, auth, names, cfg.requests_c), cfg.patience)
    delete_engine(http, engine)
    return run, memory


def adapter_memory(http: httpx.Client, engine: Engine, job_id: str, names: list[str],
                   paths: list[Path]) -> dict[str, Any]:
    """The replica's RSS growth per adapter when ``names`` are deployed onto it, before any
    request has touched them (so serving slots and KV caches are not in the figure)."""
    pid = engine.replica_pid
    time.sleep(1.0)  # let the replica finish settling after its health checks
    before = rss_bytes(pid)
    progress(f"deploying {len(names)} adapters (replica pid {pid}, RSS {before / 2**20:.1f} MiB)")
    deploy_all(http, engine, job_id, names)
    time.sleep(1.0)
    after = rss_bytes(pid)
    file_bytes = statistics.mean(adapter_file_bytes(p) for p in paths)
    per_adapter = (after - before) / len(names)
    return {
        "adapters": len(names),
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "per_adapter_bytes": round(per_adapter),
        "file_bytes": round(file_bytes),
        "ratio_to_file": round(per_adapter / file_bytes, 3),
    }


def _gateway_blocks(server: BenchServer, engine: Engine, prompt: str,
                    cfg: BenchConfig) -> dict[str, Any]:
    """The gateway's cost measured in a few blocks, keeping the median block: on a small VM one
    block's p50s can move by tens of milliseconds when the machine's timing shifts."""
    wait_for_quiet(cfg.patience)
    meter = CpuMeter().start()
    # The gateway keeps a pool of connections to the replica, one per stream of the runs before;
    # after a pause each of them is renewed on its first use, which costs that one request ~30 ms
    # here. Warming up with more pairs than there were streams measures the steady state.
    warmup = cfg.concurrency + 4
    blocks = [gateway_overhead(server, engine, prompt, cfg.gateway_samples, warmup if i == 0 else 3)
              for i in range(cfg.gateway_blocks)]
    median = sorted(blocks, key=lambda b: b["overhead_p50_ms"])[len(blocks) // 2]
    return {
        **median,
        "blocks": [{k: b[k] for k in ("direct_p50_ms", "gateway_p50_ms", "overhead_p50_ms",
                                      "overhead_p10_ms")} for b in blocks],
        "others_cpu_share": meter.finish().others_share,
    }


def gateway_overhead(server: BenchServer, engine: Engine, prompt: str, samples: int,
                     warmup: int = 3) -> dict[str, Any]:
    """p50 of the same non-streamed one-token completion sent straight to the replica and through
    the gateway, alternating so drift in the machine's load hits both alike. Steady state: the
    ``warmup`` pairs before are not counted."""
    body = {"model": engine.name, "prompt": prompt, "max_tokens": 1, "temperature": 0}
    headers = server.auth
    direct: list[float] = []
    gateway: list[float] = []
    replica = engine.replica  # with the secret the gateway sends too
    with httpx.Client(base_url=replica.url, headers=replica.headers(), timeout=60) as to_replica, \
            httpx.Client(base_url=server.url, headers=headers, timeout=60) as to_gateway:
        for _ in range(warmup):
            time_plain_request(to_replica, body)
            time_plain_request(to_gateway, body)
        for i in range(samples):
            pair = [(to_replica, direct), (to_gateway, gateway)]
            for client, times in pair if i % 2 == 0 else reversed(pair):
                times.append(time_plain_request(client, body))
    direct_ms = statistics.median(direct) * 1000
    gateway_ms = statistics.median(gateway) * 1000
    # The fast end of each path: when some answers are held up by a timer (here: ~40 ms for a
    # delayed TCP ACK), the p50s move by whole timer periods and the p10s still compare.
    direct_p10, gateway_p10 = percentile_ms(direct, 10), percentile_ms(gateway, 10)
    return {
        "samples": samples,
        "max_tokens": 1,
        "direct_p50_ms": round(direct_ms, 2),
        "gateway_p50_ms": round(gateway_ms, 2),
        "overhead_p50_ms": round(gateway_ms - direct_ms, 2),
        "direct_p10_ms": direct_p10,
        "gateway_p10_ms": gateway_p10,
        "overhead_p10_ms": round((gateway_p10 or 0.0) - (direct_p10 or 0.0), 2),
        # The median of each pair's difference: less moved by drift than the p50s' difference.
        "paired_overhead_p50_ms": round(statistics.median(g - d for g, d in zip(gateway, direct)) * 1000, 2),
    }
