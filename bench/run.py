"""``make bench`` (``python -m bench.run``): every run, one after another, then the report.

Text generation (``--only textgen``):
    (a) base model only          (b) 16 adapters          (c) 128 adapters, max_loras 32
    (d) PEFT, one request at a time, the mix of (b)
    (e) transformers serve --continuous-batching           (f) static batched generate
Tasks (``--only tasks``):
    embeddings at batch 1 and 32 through the gateway vs sentence-transformers' encode
    classification with 16 LoRA deployments vs the base model alone
Control plane (``--only control``):
    management calls against 100 engines × 100 deployments, on SQLite and PostgreSQL
Engine lifecycle (``--only lifecycle``):
    reactivation with 50 adapter deployments vs the base model alone; a step load to a second replica
Fine-tuning (``--only finetune``):
    a fine-tuning job's training samples/s vs a plain PEFT + transformers loop, text generation
    and classification

(a)–(c), (e) and the task runs' gateways are served over HTTP to concurrent clients; (d), (f) and
encode run in this process. Ratios between them are only meaningful within one run, on one machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import transformers

from bench import inprocess
from bench.config import QUICK, BenchConfig, Workload, fixed_prompts
from bench.control_runs import ControlResults, run_control
from bench.enginehouse_runs import ServerResults, run_enginehouse
from bench.finetune_runs import FinetuneResults, run_finetune
from bench.hf_serve import run_hf_serve
from bench.lifecycle_runs import LifecycleResults, run_lifecycle
from bench.models import adapter_file_bytes, build_adapters, build_base, count_parameters
from bench.report import write_results
from bench.runs import RunOutcome, measure, progress, start_part
from bench.task_runs import run_tasks

RESULTS_DIR = Path(__file__).parent / "results"
PARTS = ("textgen", "tasks", "control", "lifecycle", "finetune")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a tiny smoke run of every path (its numbers mean nothing); "
                             "writes into a temporary directory unless --out-dir is given")
    parser.add_argument("--only", choices=PARTS, help="run one part: text generation, the task runs "
                        "(embeddings, classification), the control plane, the engine lifecycle "
                        "(reactivation, scale-up) or fine-tuning; default: all. A partial run "
                        "writes into a temporary directory unless --out-dir is given")
    parser.add_argument("--postgres-url", default=os.environ.get("ENGINEHOUSE_TEST_DATABASE_URL") or None,
                        help="a PostgreSQL database for the control plane's PostgreSQL runs (a schema of "
                             "its own is made and dropped); default ENGINEHOUSE_TEST_DATABASE_URL; "
                             "without one those runs are skipped")
    parser.add_argument("--rounds", type=int, help="measured requests per run = concurrency × rounds")
    parser.add_argument("--concurrency", type=int, help="concurrent streams (and static batch size)")
    parser.add_argument("--max-tokens", type=int, help="output tokens per request")
    parser.add_argument("--work-dir", type=Path, help="where models, adapters and logs go "
                        "(kept, and reused by a later run); default: a temporary directory, "
                        "removed at the end unless the run fails")
    parser.add_argument("--out-dir", type=Path, help=f"where latest.json/.md go (default {RESULTS_DIR})")
    return parser.parse_args(argv)


def make_config(args: argparse.Namespace) -> BenchConfig:
    cfg = QUICK if args.quick else BenchConfig()
    overrides = {k: v for k, v in (("rounds", args.rounds), ("concurrency", args.concurrency),
                                   ("max_tokens", args.max_tokens)) if v is not None}
    cfg = replace(cfg, **overrides)
    return replace(cfg, threads=cfg.threads or os.cpu_count() or 1)


def prepare(cfg: BenchConfig, work_dir: Path) -> tuple[Workload, dict[str, Any]]:
    progress(f"building the model and {max(cfg.adapters_b, cfg.adapters_c)} adapters in {work_dir}")
    base = build_base(work_dir / "base", cfg.model)
    adapters = build_adapters(base, work_dir / "adapters", max(cfg.adapters_b, cfg.adapters_c), cfg.adapter)
    params = count_parameters(base)
    shape, lora = cfg.model, cfg.adapter
    model = (f"Llama, {params / 1e6:.1f}M parameters (hidden {shape.hidden_size}, {shape.num_layers} layers, "
             f"{shape.num_heads} heads / {shape.num_kv_heads} KV, MLP {shape.intermediate_size}, "
             f"vocab ~1000), float32, random weights; "
             f"adapters r={lora.r} on {', '.join(lora.target_modules)} "
             f"({adapter_file_bytes(adapters[0]) / 1024:.0f} KiB each)")
    progress(f"model: {params:,} parameters")
    prompts = fixed_prompts(base, cfg.concurrency + cfg.requests_c, cfg.prompt_tokens)
    work = Workload(cfg, base, adapters, prompts[: cfg.concurrency], prompts[cfg.concurrency:])
    return work, {"model": model, "parameters": params}


def run_in_process(work: Workload) -> dict[str, RunOutcome]:
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = make_config(args)
    temporary = args.work_dir is None
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="enginehouse-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    # A smoke run's numbers mean nothing, and a partial run lacks half the results: neither
    # replaces the committed ones.
    out_dir = args.out_dir or RESULTS_DIR
    if args.out_dir is None and (args.quick or args.only is not None):
        out_dir = Path(tempfile.mkdtemp(prefix="enginehouse-bench-results-"))
    command = " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])])
    run_all(cfg, work_dir, out_dir, command, (args.only,) if args.only else PARTS, args.postgres_url)
    if temporary:
        # Models and logs are worth keeping only when a run failed, and then this is not reached.
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


def run_textgen(cfg: BenchConfig, work_dir: Path) -> tuple[ServerResults, dict[str, Any]]:
    """(a)–(f), the gateway's cost and adapter memory; and the model and load, in words."""
    work, model_info = prepare(cfg, work_dir)
    served = run_enginehouse(work, work_dir / "server")
    served.runs["e"] = run_hf_serve(work, work_dir / "transformers-serve.log")
    served.runs.update(run_in_process(work))
    return served, {"load": describe_load(cfg), **model_info}


def describe_machine(parts: tuple[str, ...]) -> str:
    libraries = f"torch {torch.__version__}, transformers {transformers.__version__}"
    if "tasks" in parts:
        import sentence_transformers

        libraries += f", sentence-transformers {sentence_transformers.__version__}"
    if "finetune" in parts:
        import peft

        libraries += f", peft {peft.__version__}"
    return (f"{os.cpu_count()} CPUs, no GPU, Python {platform.python_version()}, {libraries}, "
            f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}")


def run_all(cfg: BenchConfig, work_dir: Path, out_dir: Path, command: str, parts: tuple[str, ...],
            postgres_url: str | None = None) -> None:
    started = time.monotonic()
    served, textgen_info = run_textgen(cfg, work_dir) if "textgen" in parts else (ServerResults({}, {}, {}), {})
    start_part()
    tasks = run_tasks(cfg, work_dir) if "tasks" in parts else None
    start_part()
    control: ControlResults | None = run_control(cfg, work_dir, postgres_url) if "control" in parts else None
    start_part()
    lifecycle: LifecycleResults | None = run_lifecycle(cfg, work_dir) if "lifecycle" in parts else None
    start_part()
    finetune: FinetuneResults | None = run_finetune(cfg, work_dir) if "finetune" in parts else None
    summary = {
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "total_runtime_s": round(time.monotonic() - started, 1),
        "command": command,
        "parts": list(parts),
        "machine": describe_machine(parts),
        **textgen_info,
        "config": cfg.as_dict(),
    }
    json_path, md_path = write_results(out_dir, summary, served.runs, served.gateway, served.memory, tasks,
                                       control, lifecycle, finetune)
    print()
    print(md_path.read_text())
    progress(f"wrote {json_path} and {md_path}; total {summary['total_runtime_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
