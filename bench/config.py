"""What one benchmark run does: sizes, request counts and the fixed prompts and sentences."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.models import AdapterShape, ModelShape
from bench.runs import Patience
from bench.task_models import EncoderShape


@dataclass(frozen=True)
class TaskConfig:
    """The embedding and classification runs (``bench/task_runs.py``)."""

    # Distinct sentences (6 to 20 words); every run sends them in order, cycling.
    sentences: int = 256
    # Embedding: inputs per request, and requests measured at each (a similar wall time for both).
    embed_batches: tuple[int, ...] = (1, 32)
    embed_requests: tuple[int, ...] = (600, 64)
    embed_concurrency: int = 4
    # Classification: one text per request from this many clients, first to the base model, then
    # spread evenly over the LoRA deployments (each with its own head and labels).
    classify_requests: int = 960
    classify_concurrency: int = 16
    classify_adapters: int = 16
    classifier: EncoderShape = field(default_factory=EncoderShape)
    classify_adapter: AdapterShape = field(default_factory=lambda: AdapterShape(target_modules=("query", "value")))

    @property
    def embed_warmup(self) -> int:
        """Requests sent before each embedding run (the gateway's and the baseline's alike)."""
        return 2 * self.embed_concurrency


@dataclass(frozen=True)
class ControlConfig:
    """The control-plane runs (``bench/control_runs.py``), on each database."""

    # Seeded before the server starts: engines (Inactive, so no replica runs), each with its base
    # deployment and fine-tuned ones, this many in all per engine.
    engines: int = 100
    deployments_per_engine: int = 100
    # Calls timed per kind of call, one at a time, after this many not timed.
    samples: int = 40
    warmup: int = 5
    # Seconds the server is left alone, after the calls, to measure what it costs idle.
    idle_s: float = 10.0
    # What one change costs the reconciler (a deploy onto one engine; its steps and the server's
    # CPU) is measured on the seeded database and on one seeded with this many engines, to show
    # it does not grow with the engines a server holds.
    changes: int = 5
    fewer_engines: int = 10


@dataclass(frozen=True)
class LifecycleConfig:
    """The engine-lifecycle runs (``bench/lifecycle_runs.py``)."""

    # Reactivation: an engine holding this many adapter deployments against a base-only one,
    # both with the same runtime options (max_cpu_loras ≥ adapters, so every adapter stays in
    # host memory and none is re-read from disk while serving).
    adapters: int = 50
    max_loras: int = 8
    max_cpu_loras: int = 64
    # Reactivations of each engine, alternating between the two; the medians are compared.
    repeats: int = 3
    # Seconds between two reads of the engine while timing; the resolution of every time here.
    poll_s: float = 0.05
    # Scale-up: this many streaming clients in a closed loop against a cluster engine of at most
    # two replicas whose target is ``scale_target`` calls in flight per replica.
    scale_concurrency: int = 8
    scale_target: int = 2
    scale_max_tokens: int = 16
    # Seconds the load may run without a second replica before the run counts as not run.
    scale_bound_s: float = 120.0


@dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tune runs (``bench/finetune_runs.py``): enginehouse's worker against a plain PEFT +
    transformers loop, with the same LoRA, optimiser, batches and threads."""

    # Text generation: a Llama-shaped model with random weights, built on the spot (~10M
    # parameters: a training takes under a minute on two cores), on chat and prompt/completion
    # rows in turn (21 to 75 tokens).
    textgen_model: ModelShape = field(default_factory=lambda: ModelShape(
        hidden_size=384, num_layers=6, num_heads=8, num_kv_heads=4, intermediate_size=1024))
    textgen_rows: int = 512
    textgen_targets: tuple[str, ...] = ("q_proj", "v_proj")
    # Classification: the real all-MiniLM-L6-v2 with a new head, on labelled sentences (9 to 27
    # tokens).
    classify_rows: int = 2048
    classify_targets: tuple[str, ...] = ("query", "value")
    epochs: int = 2
    batch_size: int = 8
    learning_rate: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    max_seq_length: int = 256
    # Trainings of each loop per case, taking turns (ours first, then the baseline twice, ...);
    # each loop's best counts.
    repeats: int = 2

    def parameters(self, targets: tuple[str, ...]) -> dict[str, Any]:
        """The job's ``parameters`` (as a user would post them), which the baseline reads too."""
        return {"num_train_epochs": self.epochs, "learning_rate": self.learning_rate,
                "per_device_train_batch_size": self.batch_size, "lora_r": self.lora_r,
                "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout,
                "target_modules": list(targets), "max_seq_length": self.max_seq_length, "seed": 0}


# The model-size sweep's Llama shapes, ~5M to ~113M parameters (vocab ~1000), every one with
# 64-wide attention heads (vLLM's CPU attention takes that width) and grouped-query attention.
SWEEP_SHAPES = (
    ModelShape(hidden_size=256, num_layers=6, num_heads=4, num_kv_heads=2, intermediate_size=768),
    ModelShape(hidden_size=384, num_layers=8, num_heads=6, num_kv_heads=2, intermediate_size=1024),
    ModelShape(hidden_size=768, num_layers=10, num_heads=12, num_kv_heads=4, intermediate_size=2048),
    ModelShape(hidden_size=1024, num_layers=10, num_heads=16, num_kv_heads=4, intermediate_size=2816),
)


@dataclass(frozen=True)
class SweepConfig:
    """The model-size sweep (``bench/sweep_runs.py``): per shape, (a), (b), (d), (f) and vLLM under
    one load, shorter than the main part's so that the largest model's PEFT loop stays within a
    minute or so."""

    shapes: tuple[ModelShape, ...] = SWEEP_SHAPES
    concurrency: int = 16
    rounds: int = 2
    max_tokens: int = 64
    warmup_max_tokens: int = 8
    adapters: int = 16
    # (d): one request per adapter, one at a time.
    requests_d: int = 16
    # vLLM's runs (g); off with --no-vllm.
    vllm: bool = True

    def for_shape(self, cfg: BenchConfig, shape: ModelShape) -> BenchConfig:
        """The config of one size's runs: the sweep's load over ``cfg``'s threads and patience."""
        return replace(cfg, model=shape, concurrency=self.concurrency, rounds=self.rounds,
                       max_tokens=self.max_tokens, warmup_max_tokens=self.warmup_max_tokens,
                       adapters_b=self.adapters, adapters_c=self.adapters, requests_d=self.requests_d)


@dataclass(frozen=True)
class BenchConfig:
    concurrency: int = 16
    # Measured requests per run = concurrency × rounds (after one warm-up round).
    rounds: int = 4
    max_tokens: int = 128
    prompt_tokens: int = 32
    warmup_max_tokens: int = 16
    adapters_b: int = 16
    adapters_c: int = 128
    max_loras_c: int = 32
    # (c) sends at least one request per adapter, so every adapter goes through a slot.
    # Requests for the sequential PEFT baseline (d): one per adapter of (b), the same mix at a
    # smaller count, because one at a time it is ~10× slower.
    requests_d: int = 16
    # The gateway's cost: this many blocks of this many request pairs; the median block counts.
    gateway_samples: int = 40
    gateway_blocks: int = 5
    # torch threads for the in-process baselines (d) and (f); the replica and transformers serve
    # use torch's default, which is every core.
    threads: int = 0
    model: ModelShape = field(default_factory=ModelShape)
    adapter: AdapterShape = field(default_factory=AdapterShape)
    patience: Patience = field(default_factory=Patience)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    @property
    def requests_per_run(self) -> int:
        return self.concurrency * self.rounds

    @property
    def requests_c(self) -> int:
        return max(self.requests_per_run, self.adapters_c)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Workload:
    """A config made concrete: the model on disk, its adapters and the prompts every run sends."""

    cfg: BenchConfig
    base_dir: Path
    adapters: list[Path]
    warmup_prompts: list[str]
    prompts: list[str]


# A smoke run of every code path in a minute or two; its numbers mean nothing.
QUICK = BenchConfig(
    concurrency=4, rounds=1, max_tokens=16, warmup_max_tokens=4, adapters_b=4, adapters_c=12,
    max_loras_c=4, requests_d=4, gateway_samples=6, gateway_blocks=1,
    patience=Patience(max_wait_s=0, retries=0),
    tasks=TaskConfig(sentences=16, embed_requests=(8, 2), embed_concurrency=2, classify_requests=8,
                     classify_concurrency=4, classify_adapters=4,
                     classifier=EncoderShape(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)),
    control=ControlConfig(engines=3, deployments_per_engine=4, samples=4, warmup=1, idle_s=1.0, changes=2,
                          fewer_engines=2),
    lifecycle=LifecycleConfig(adapters=8, repeats=1, scale_bound_s=30.0),
    finetune=FinetuneConfig(textgen_model=ModelShape(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                                     intermediate_size=128),
                            textgen_rows=16, classify_rows=16, epochs=1, repeats=1),
    sweep=SweepConfig(shapes=(ModelShape(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1,
                                         intermediate_size=256),
                              ModelShape(hidden_size=256, num_layers=2, num_heads=4, num_kv_heads=2,
                                         intermediate_size=512)),
                      concurrency=4, rounds=1, max_tokens=8, warmup_max_tokens=4, adapters=4, requests_d=4),
)

_WORDS = (
    "apple river mountain quiet bright engine garden window silver paper ocean forest music "
    "yellow planet thunder candle market winter summer doctor teacher pencil bottle rocket "
    "library kitchen science history morning evening journey bridge castle dragon coffee"
).split()


def fixed_prompts(base_dir: Path, count: int, tokens: int, seed: int = 0) -> list[str]:
    """``count`` distinct word-salad prompts of ``tokens`` tokens each (BOS included) for this
    model's tokenizer; every server gets text, since transformers serve takes no token ids."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    rng = random.Random(seed)
    prompts: list[str] = []
    while len(prompts) < count:
        words: list[str] = []
        while len(tokenizer(" ".join(words)).input_ids) < tokens:
            words.append(rng.choice(_WORDS))
        text = " ".join(words)
        if len(tokenizer(text).input_ids) == tokens:  # a last word may overshoot: draw again
            prompts.append(text)
    return prompts


def fixed_sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct word-salad sentences of 6 to 20 words, for the embedding and
    classification runs (about 15 tokens each for all-MiniLM-L6-v2)."""
    rng = random.Random(seed)
    sentences: list[str] = []
    while len(sentences) < count:
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 20))).capitalize() + "."
        if text not in sentences:
            sentences.append(text)
    return sentences
