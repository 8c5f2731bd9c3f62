"""``make bench`` (``python -m bench.run``): every run, one after another, then the report.

Text generation (``--only textgen``):
    (a) base model only          (b) 16 adapters          (c) 128 adapters, max_loras 32
    (d) PEFT, one request at a time, the mix of (b)
    (e) transformers serve --continuous-batching           (f) static batched generate
Model-size sweep (``--only sweep``):
    four Llama shapes, ~5M to ~113M parameters: (a), (b), (d), (f), the engine alone (stepped in
    this process, no HTTP) and vLLM's OpenAI server (base and 16 adapters) at each, with the
    replica's per-step time split
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

from bench.config import QUICK, BenchConfig
from bench.control_runs import ControlResults, run_control
from bench.enginehouse_runs import ServerResults, run_enginehouse
from bench.charts import write_charts
from bench.finetune_runs import FinetuneResults, run_finetune
from bench.hf_serve import run_hf_serve
from bench.lifecycle_runs import LifecycleResults, run_lifecycle
from bench.report import write_results
from bench.runs import progress, start_part
from bench.sweep_runs import SweepResults, run_sweep
from bench.task_runs import run_tasks
from bench.textgen_setup import describe_load, prepare, run_in_process

RESULTS_DIR = Path(__file__).parent / "results"
PARTS = ("textgen", "sweep", "tasks", "control", "lifecycle", "finetune")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a tiny smoke run of every path (its numbers mean nothing); "
                             "writes into a temporary directory unless --out-dir is given")
    parser.add_argument("--only", choices=PARTS, help="run one part: text generation, the model-size sweep, "
                        "the task runs "
                        "(embeddings, classification), the control plane, the engine lifecycle "
                        "(reactivation, scale-up) or fine-tuning; default: all. A partial run "
                        "writes into a temporary directory unless --out-dir is given")
    parser.add_argument("--postgres-url", default=os.environ.get("ENGINEHOUSE_TEST_DATABASE_URL") or None,
                        help="a PostgreSQL database for the control plane's PostgreSQL runs (a schema of "
                             "its own is made and dropped); default ENGINEHOUSE_TEST_DATABASE_URL; "
                             "without one those runs are skipped")
    parser.add_argument("--no-vllm", action="store_true", help="leave vLLM out of the model-size sweep "
                        "(it is installed into .venv-vllm on first use, a few minutes)")
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
    if args.no_vllm:
        cfg = replace(cfg, sweep=replace(cfg.sweep, vllm=False))
    return replace(cfg, threads=cfg.threads or os.cpu_count() or 1)


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
    sweep: SweepResults | None = run_sweep(cfg, work_dir) if "sweep" in parts else None
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
    if sweep is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        summary["charts"] = [path.name for path in write_charts(out_dir, sweep)]
    json_path, md_path = write_results(out_dir, summary, served.runs, served.gateway, served.memory, tasks,
                                       control, lifecycle, finetune, sweep)
    print()
    print(md_path.read_text())
    progress(f"wrote {json_path} and {md_path}; total {summary['total_runtime_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
