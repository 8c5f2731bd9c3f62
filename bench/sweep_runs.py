"""The model-size sweep (``--only sweep``): the main text-generation comparisons again at several
model sizes, to show how the ratios move as the model's own work grows against the engine's.

Per shape, one after another, so nothing else holds the cores:
  (a) base model only through the gateway, (b) the 16 adapters of (b), (a) again after (b)
      (the drift correction of the main part), on one engine, deleted afterwards;
  (g) vLLM's OpenAI server on the same model and adapters, base only and mixed;
  (d) the PEFT loop, (f) the static-batch ceiling and the engine alone (``engine``), in this process.
The replica's step timers are read around (a) and (b) for each size's per-step split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import inprocess
from bench.config import BenchConfig, Workload
from bench.enginehouse_runs import drive
from bench.models import ModelShape
from bench.runs import RunOutcome, measure, progress
from bench.server import BenchServer, create_engine, delete_engine, deploy_all, register_job, running_server
from bench.step_split import StepSplit, TimerWindows, step_split
from bench.textgen_setup import describe_load, prepare, run_in_process
from bench.vllm_runs import run_vllm


@dataclass
class SizeResult:
    shape: ModelShape
    parameters: int
    model: str
    runs: dict[str, RunOutcome]
    # Per decode step, from the replica's timers: "a" (base only, both (a) runs) and "b" (mixed).
    splits: dict[str, StepSplit | None]

    @property
    def label(self) -> str:
        millions = self.parameters / 1e6
        return f"{millions:.1f}M" if millions < 10 else f"{millions:.0f}M"


@dataclass
class SweepResults:
    sizes: list[SizeResult]
    load: str


def run_sweep(cfg: BenchConfig, work_dir: Path) -> SweepResults:
    sweep = cfg.sweep
    sizes: list[SizeResult] = []
    with running_server(work_dir / "sweep-server") as server, server.client() as http:
        for shape in sweep.shapes:
            size_cfg = sweep.for_shape(cfg, shape)
            size_dir = work_dir / f"sweep-h{shape.hidden_size}-l{shape.num_layers}"
            progress(f"sweep: hidden {shape.hidden_size}, {shape.num_layers} layers")
            sizes.append(_one_size(size_cfg, size_dir, server, http))
    return SweepResults(sizes, describe_load(sweep.for_shape(cfg, sweep.shapes[0])))


def _one_size(cfg: BenchConfig, size_dir: Path, server: BenchServer, http: httpx.Client) -> SizeResult:
    work, info = prepare(cfg, size_dir)
    runs, splits = _served(work, server, http, size_dir.name)
    if cfg.sweep.vllm:
        runs.update(run_vllm(work, size_dir / "vllm.log"))
    runs.update(run_in_process(work))
    runs["engine"] = _engine_alone(work)
    return SizeResult(cfg.model, info["parameters"], info["model"], runs, splits)


def _served(work: Workload, server: BenchServer, http: httpx.Client,
            name: str) -> tuple[dict[str, RunOutcome], dict[str, StepSplit | None]]:
    """(a), (b) and (a) after (b) on one engine, with the replica's timers read around each."""
    cfg = work.cfg
    job_id = register_job(http, name, work.base_dir, work.adapters)
    progress(f"engine {name}: starting its replica")
    engine = create_engine(server, http, name, work.base_dir, {"max_loras": cfg.adapters_b})
    base_timers, mixed_timers = TimerWindows(engine.replica), TimerWindows(engine.replica)
    auth, base_only = server.auth, [engine.name]

    def run(key: str, description: str, models: list[str], timers: TimerWindows) -> RunOutcome:
        load = drive(work, server.url, auth, models, cfg.requests_per_run)
        return measure(key, description, timers.around(load), cfg.patience)

    runs = {"a": run("a", "base model only", base_only, base_timers)}
    names = [f"{name}-lora-{i:03d}" for i in range(cfg.adapters_b)]
    progress(f"deploying {len(names)} adapters")
    deploy_all(http, engine, job_id, names)
    runs["b"] = run("b", f"{cfg.adapters_b} adapters, requests spread evenly", names, mixed_timers)
    runs["a_after"] = run("a_after", "(a) again, after (b)", base_only, base_timers)
    delete_engine(http, engine)
    splits = {"a": step_split(base_timers.total, runs["a"]), "b": step_split(mixed_timers.total, runs["b"])}
    return runs, splits


def _engine_alone(work: Workload) -> RunOutcome:
    """(engine): the served engine's own loop without the serving path, under (a)'s load."""
    cfg = work.cfg
    progress("(engine) loading the engine alone in this process")
    load = inprocess.engine_alone(work.base_dir, {"max_loras": cfg.adapters_b}, work.warmup_prompts, work.prompts,
                                  cfg.concurrency, cfg.requests_per_run, cfg.max_tokens, cfg.warmup_max_tokens)
    run = measure("engine", "the engine alone: stepped in this process, no HTTP, gateway or client", load,
                  cfg.patience)
    run.notes.append(f"(a)'s load ({cfg.concurrency} streams, {cfg.requests_per_run} requests), the same runtime "
                     f"options, {cfg.threads} torch threads; (a)/(engine) is what the serving path keeps of it")
    return run


def as_json(sweep: SweepResults) -> dict[str, Any]:
    return {
        "load": sweep.load,
        "sizes": [{
            "label": size.label,
            "parameters": size.parameters,
            "model": size.model,
            "shape": asdict(size.shape),
            "runs": {key: run.as_dict() for key, run in size.runs.items()},
            "step_split": {key: split.as_dict() if split else None for key, split in size.splits.items()},
        } for size in sweep.sizes],
    }
