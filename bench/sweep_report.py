"""The model-size sweep in ``latest.md``: one row of rates and ratios per size, each size's
per-step split, and the targets at every size."""

from __future__ import annotations

from bench.runs import RunOutcome
from bench.step_split import StepSplit
from bench.sweep_runs import SizeResult, SweepResults
from bench.targets import Target, rate, ratio
from bench.vllm_runs import BASE_KEY as VLLM_BASE
from bench.vllm_runs import MIXED_KEY as VLLM_MIXED

# Goals at every size: the ceiling and adapters as in the main part; vLLM: enginehouse ahead.
CEILING_GOAL = 0.85
ADAPTERS_GOAL = 0.85
PEFT_GOAL = 6.0
VLLM_GOAL = 1.0
RATE_COLUMNS = (("a", "(a) base"), ("b", "(b) adapters"), ("f", "(f) ceiling"), ("engine", "(engine) alone"),
                ("d", "(d) PEFT"), (VLLM_BASE, "vLLM base"), (VLLM_MIXED, "vLLM mixed"))
# (engine)/(f) and (a)/(engine) split (a)/(f): the engine's own loop against the ceiling, then what the
# serving path (HTTP, gateway, client, all on the same cores) keeps of the engine's rate.
RATIO_COLUMNS = (("a", "f"), ("engine", "f"), ("a", "engine"), ("b", "a"), ("b", "d"), ("f", "d"), ("a", VLLM_BASE),
                 ("b", VLLM_MIXED))
SPLIT_COLUMNS = ("forward", "lora", "sampling", "detokenize", "emit", "other", "encode", "relay")


def ratio_name(top: str, bottom: str) -> str:
    names = {VLLM_BASE: "vLLM", VLLM_MIXED: "vLLM mixed"}
    return f"({top})/{names.get(bottom, f'({bottom})')}"


def sweep_targets(sweep: SweepResults | None) -> list[Target]:
    goals: list[Target] = []
    for size in sweep.sizes if sweep else []:
        runs, at = size.runs, f" at {size.label}"
        ceiling_vs_peft = ratio(runs, "f", "d")
        peft_what = "adapters vs PEFT one request at a time"
        if ceiling_vs_peft is not None and ceiling_vs_peft < PEFT_GOAL:
            peft_what += f" (the ceiling itself is only {ceiling_vs_peft:g}× PEFT at this size)"
        goals += [
            Target(f"(a)/(f){at}", "base model vs static batched generate (ceiling)", ratio(runs, "a", "f"),
                   CEILING_GOAL, True),
            Target(f"(b)/(a){at}", "adapters, requests spread evenly, vs base model", ratio(runs, "b", "a"), ADAPTERS_GOAL, True),
            Target(f"(b)/(d){at}", peft_what, ratio(runs, "b", "d"), PEFT_GOAL, True),
            Target(f"(a)/vLLM{at}", "enginehouse vs vLLM, base model only", ratio(runs, "a", VLLM_BASE),
                   VLLM_GOAL, True),
            Target(f"(b)/vLLM mixed{at}", "enginehouse vs vLLM, the same adapters", ratio(runs, "b", VLLM_MIXED),
                   VLLM_GOAL, True),
        ]
    return goals


def sweep_tables(sweep: SweepResults) -> list[str]:
    lines = [
        f"Model-size sweep: Llama shapes below, float32, random weights, LoRA r=8 on q_proj, v_proj. "
        f"Load per run: {sweep.load}. (a) is the mean of (a) before and after (b).",
        "",
        "| model | " + " | ".join(f"{name} tok/s" for _, name in RATE_COLUMNS) + " | "
        + " | ".join(ratio_name(t, b) for t, b in RATIO_COLUMNS) + " | others' CPU (most) |",
        "|---|" + "---:|" * (len(RATE_COLUMNS) + len(RATIO_COLUMNS) + 1),
    ]
    for size in sweep.sizes:
        rates = [_rate_cell(size.runs, key) for key, _ in RATE_COLUMNS]
        ratios = [_num(ratio(size.runs, top, bottom)) for top, bottom in RATIO_COLUMNS]
        lines.append(f"| {size.label} ({_shape(size)}) | " + " | ".join(rates + ratios)
                     + f" | {_most_disturbed(size.runs)} |")
    lines += ["", "Per decode step, ms, from the replica's own timers (engine thread: forward without LoRA, "
              "LoRA, sampling, detokenize, emit, other = scheduling and KV upkeep, adding up to step; beside "
              "it: encode = the replica's event loop writing stream chunks, relay = the gateway's CPU):", "",
              "| model | run | rows/step | step | " + " | ".join(SPLIT_COLUMNS) + " |",
              "|---|---|" + "---:|" * (len(SPLIT_COLUMNS) + 2)]
    for size in sweep.sizes:
        for key, split in size.splits.items():
            if split is not None:
                lines.append(_split_row(size, key, split))
    return lines


def sweep_details(sweep: SweepResults) -> list[str]:
    lines = [f"- Sweep {size.label}: {size.model}." for size in sweep.sizes]
    for size in sweep.sizes:
        for key, run in size.runs.items():
            if run.error:
                lines.append(f"- Sweep {size.label} {key} not run: {run.error}")
            lines += [f"- Sweep {size.label} {key}: {note}" for note in run.notes]
    return lines


def _split_row(size: SizeResult, key: str, split: StepSplit) -> str:
    cells = [_num(getattr(split, f"{name}_ms")) for name in SPLIT_COLUMNS]
    return (f"| {size.label} | ({key}) | {split.rows_per_step:g} | {split.step_ms:.2f} | "
            + " | ".join(cells) + " |")


def _shape(size: SizeResult) -> str:
    return f"h{size.shape.hidden_size} × {size.shape.num_layers}"


def _rate_cell(runs: dict[str, RunOutcome], key: str) -> str:
    if key in runs and runs[key].error:
        return "not run"
    return _num(rate(runs, key), ".1f")


def _num(value: float | None, spec: str = ".3g") -> str:
    return "–" if value is None else format(value, spec)


def _most_disturbed(runs: dict[str, RunOutcome]) -> str:
    shares = [run.others_cpu_share for run in runs.values() if run.others_cpu_share is not None]
    return f"{max(shares):.0%}" if shares else "–"
