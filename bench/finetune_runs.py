"""Fine-tuning (``--only finetune``): the training throughput of a fine-tuning job against a plain
PEFT + transformers loop (``bench/finetune_baseline.py``) on the same data, in the same run.

Two cases: text generation (LoRA on a Llama-shaped model built on the spot, chat and
prompt/completion rows) and classification (LoRA and a new head on the real all-MiniLM-L6-v2,
labelled sentences). A job runs exactly as the server runs one: the local provider writes its
config and starts ``python -m enginehouse.training`` in a process of its own. The baseline runs in
a process of its own too, so both pay the same start-up and neither inherits the other's warm
state.

Throughput is training rows over the wall time of the training steps, which both loops time per
epoch themselves (the job in ``checkpoints.jsonl``): loading the model, tokenising, testing and
writing checkpoints are left out on both sides; the first steps' warm-up is in both alike. The
loops take turns (ours, baseline, baseline, ours, ...), so a drift of the machine's speed weighs
on both, and each loop's best training counts. As the other parts do, a training that other
processes disturbed is done again while patience allows, and the least disturbed one is kept.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.config import BenchConfig, FinetuneConfig
from bench.finetune_baseline import RESULT_FILE
from bench.finetune_data import KEYWORDS, answer_rows, keyword_rows, write_jsonl
from bench.machine import CpuMeter
from bench.models import ModelShape, build_base
from bench.runs import least_disturbed, progress, wait_for_quiet
from bench.task_models import minilm_dir, saved_parameters
from enginehouse.providers.base import TrainingLaunch
from enginehouse.providers.local_training import LOG_FILE, LocalTrainer
from enginehouse.training.report import read_report

# Our samples/s over the baseline's, best trainings: at least this.
THROUGHPUT_GOAL = 0.9
OURS, BASELINE = "enginehouse", "peft"
TEXTGEN_KEY, CLASSIFY_KEY = "finetune_textgen", "finetune_classify"
JOB_ID = "bench-finetune"
# A training (either loop) that has not ended after this long fails the part.
TRAINING_TIMEOUT_S = 1800.0
_POLL_S = 1.0  # rarely: the bench process shares the cores with the job it waits on
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    """One thing to fine-tune: the job a user would post, which the baseline reads as well."""

    key: str
    description: str
    task_type: str
    base_model: Path
    train_path: Path
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Training:
    """One training by one loop."""

    epoch_seconds: list[float]  # the training steps' wall time, per epoch
    samples: int  # rows trained, every epoch counted
    process_s: float  # the whole process, start to exit: loading and checkpoints included
    others_cpu_share: float
    # Trainings done for this sample: more than one when others disturbed the first.
    attempts: int = 1

    @property
    def train_seconds(self) -> float:
        return sum(self.epoch_seconds)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0


@dataclass
class LoopSeries:
    description: str
    trainings: list[Training] = field(default_factory=list)

    @property
    def best(self) -> Training | None:
        return max(self.trainings, key=lambda t: t.samples_per_s, default=None)

    def as_dict(self) -> dict[str, Any]:
        best = self.best
        return {"description": self.description,
                "samples_per_s_best": round(best.samples_per_s, 2) if best else None,
                "trainings": [{**vars(t), "samples_per_s": round(t.samples_per_s, 2)} for t in self.trainings]}


@dataclass
class FinetuneCase:
    description: str
    loops: dict[str, LoopSeries]

    @property
    def ratio(self) -> float | None:
        """Our best samples/s over the baseline's."""
        ours, baseline = self.loops[OURS].best, self.loops[BASELINE].best
        if ours is None or baseline is None or not baseline.samples_per_s:
            return None
        return round(ours.samples_per_s / baseline.samples_per_s, 3)


@dataclass
class FinetuneResults:
    cases: dict[str, FinetuneCase]
    info: dict[str, str]


def run_finetune(cfg: BenchConfig, work_dir: Path) -> FinetuneResults:
    root = work_dir / "finetune"
    cases = [textgen_case(cfg.finetune, root), classification_case(cfg.finetune, root)]
    results = {case.key: measure_case(cfg, case, root / case.key) for case in cases}
    return FinetuneResults(results, describe(cfg))


def textgen_case(ft: FinetuneConfig, root: Path) -> Case:
    shape = ft.textgen_model
    progress(f"finetune: building a Llama of hidden {shape.hidden_size}, {shape.num_layers} layers in {root}")
    base = build_base(root / _shape_name(shape), shape)
    train = write_jsonl(root / "textgen.jsonl", answer_rows(ft.textgen_rows))
    what = (f"text generation: Llama, {saved_parameters(base) / 1e6:.1f}M parameters ({_describe(shape)}), "
            f"random weights; {ft.textgen_rows} rows, chat and prompt/completion in turn, loss on the answers")
    return Case(TEXTGEN_KEY, what, "text-generation", base, train, ft.parameters(ft.textgen_targets))


def classification_case(ft: FinetuneConfig, root: Path) -> Case:
    base = minilm_dir()
    train = write_jsonl(root / "classify.jsonl", keyword_rows(ft.classify_rows))
    what = (f"classification: all-MiniLM-L6-v2 ({saved_parameters(base) / 1e6:.1f}M parameters) with a new "
            f"head of {len(KEYWORDS) + 1} labels; {ft.classify_rows} sentences of 6 to 24 words")
    return Case(CLASSIFY_KEY, what, "classification", base, train, ft.parameters(ft.classify_targets))


def _shape_name(shape: ModelShape) -> str:
    # Named by its shape, so a kept --work-dir never trains a model of another size.
    return f"base-h{shape.hidden_size}-l{shape.num_layers}-i{shape.intermediate_size}"


def _describe(shape: ModelShape) -> str:
    return (f"hidden {shape.hidden_size}, {shape.num_layers} layers, {shape.num_heads} heads / "
            f"{shape.num_kv_heads} KV, MLP {shape.intermediate_size}")


def measure_case(cfg: BenchConfig, case: Case, run_dir: Path) -> FinetuneCase:
    loops = {OURS: LoopSeries("fine-tuning job: the local provider's worker process"),
             BASELINE: LoopSeries("plain PEFT + transformers loop, its own process")}
    for round_ in range(cfg.finetune.repeats):
        # ABBA: whichever loop ran second in one round runs first in the next.
        for loop in (OURS, BASELINE) if round_ % 2 == 0 else (BASELINE, OURS):
            progress(f"({case.key}) {loop}, round {round_ + 1}")
            loops[loop].trainings.append(sample(cfg, case, loop, run_dir / f"{loop}-{round_ + 1}"))
    return FinetuneCase(case.description, loops)


def sample(cfg: BenchConfig, case: Case, loop: str, run_dir: Path) -> Training:
    """One training, done again (while patience allows) when other processes disturbed it; the
    least disturbed is kept."""
    def attempt(number: int) -> Training:
        wait_for_quiet(cfg.patience)
        training = train_once(case, loop, run_dir / f"attempt-{number}", cfg.threads)
        progress(f"({case.key}) {loop}: {training.samples} rows in {training.train_seconds:.1f} s of training "
                 f"({training.samples_per_s:.1f} rows/s; process {training.process_s:.1f} s), "
                 f"others' CPU {training.others_cpu_share:.0%}")
        return training

    best, attempts = least_disturbed(attempt, cfg.patience, f"({case.key}) disturbed by other processes, "
                                                            "training again")
    return replace(best, attempts=attempts)


def train_once(case: Case, loop: str, run_dir: Path, threads: int) -> Training:
    # A kept --work-dir holds an earlier run's job here, whose checkpoint lines would add up.
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    meter = CpuMeter().start()
    started = time.monotonic()
    epochs, samples = run_job(case, run_dir, threads) if loop == OURS else run_baseline(case, run_dir, threads)
    process_s = time.monotonic() - started
    return Training([round(s, 4) for s in epochs], samples, round(process_s, 2), round(meter.finish().others_share, 4))


def run_job(case: Case, data_dir: Path, threads: int) -> tuple[list[float], int]:
    """The job through the local provider, as the server launches it; each epoch's training time
    and the rows trained, from its checkpoint lines."""
    trainer = LocalTrainer(data_dir, threads=threads)
    trainer.launch(TrainingLaunch(JOB_ID, case.task_type, str(case.base_model), str(case.train_path), None, None,
                                  case.parameters))
    job_dir = trainer.job_dir(JOB_ID)
    try:
        deadline = time.monotonic() + TRAINING_TIMEOUT_S
        while not any(t.exit for t in trainer.list() if t.job_id == JOB_ID):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fine-tuning job did not end within {TRAINING_TIMEOUT_S:.0f} s; "
                                   f"see {job_dir / LOG_FILE}")
            time.sleep(_POLL_S)
    finally:
        trainer.release(JOB_ID)  # stops it first if it still runs
    report = read_report(job_dir)
    if (report.outcome or {}).get("status") != "Success":
        raise RuntimeError(f"the fine-tuning job ended {report.outcome}; see {job_dir / LOG_FILE}")
    epochs = report.checkpoints
    return [float(c["train_seconds"]) for c in epochs], sum(int(c["train_samples"]) for c in epochs)


def run_baseline(case: Case, run_dir: Path, threads: int) -> tuple[list[float], int]:
    spec = {"task_type": case.task_type, "base_model": str(case.base_model), "train_path": str(case.train_path),
            "parameters": case.parameters, "threads": threads, "output_dir": str(run_dir)}
    spec_path = run_dir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    log = run_dir / "baseline.log"
    # The environment the provider gives a worker.
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "bench.finetune_baseline", str(spec_path)], cwd=REPO_ROOT,
                                   stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True)
    try:
        code = process.wait(timeout=TRAINING_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the baseline did not end within {TRAINING_TIMEOUT_S:.0f} s; see {log}") from None
    finally:  # also when the benchmark itself is interrupted
        if process.poll() is None:
            process.kill()
            process.wait()
    if code != 0:
        raise RuntimeError(f"the baseline exited with code {code}; see {log}")
    epochs = json.loads((run_dir / RESULT_FILE).read_text(encoding="utf-8"))["epochs"]
    return [float(e["train_seconds"]) for e in epochs], sum(int(e["train_samples"]) for e in epochs)


def describe(cfg: BenchConfig) -> dict[str, str]:
    ft = cfg.finetune
    return {
        "load": f"LoRA r={ft.lora_r}, alpha {ft.lora_alpha}, dropout {ft.lora_dropout}; AdamW lr {ft.learning_rate:g} "
                f"decayed linearly, gradients clipped at 1.0; batch {ft.batch_size} padded to its longest row, "
                f"the same batches in the same order in both loops; {_count(ft.epochs, 'epoch')}; {cfg.threads} "
                f"torch threads; {_count(ft.repeats, 'training')} of each loop, taking turns, the best of each "
                "compared",
    }


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def as_json(results: FinetuneResults) -> dict[str, Any]:
    return {
        **results.info,
        "cases": {key: {"description": case.description, "ratio": case.ratio,
                        "loops": {name: series.as_dict() for name, series in case.loops.items()}}
                  for key, case in results.cases.items()},
    }
