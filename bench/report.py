"""The targets, and the two files a run leaves: ``latest.json`` (everything) and ``latest.md``
(the table a reviewer reads)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.runs import RunOutcome

RUN_ORDER = ("a", "a_direct", "b", "c", "d", "e", "f")
CPU_ROLES = ("replica", "server", "transformers serve", "bench")


def label(key: str) -> str:
    return "(a) direct" if key == "a_direct" else f"({key})"


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    value: float | None
    goal: float
    at_least: bool  # True: value ≥ goal passes; False: value ≤ goal passes
    unit: str = ""

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.goal if self.at_least else self.value <= self.goal

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "what": self.what, "value": self.value, "goal": self.goal,
                "comparison": ">=" if self.at_least else "<=", "passed": self.passed}


def _ratio(runs: dict[str, RunOutcome], top: str, bottom: str) -> float | None:
    if top not in runs or bottom not in runs:
        return None
    a, b = runs[top].tokens_per_s, runs[bottom].tokens_per_s
    return round(a / b, 3) if a is not None and b else None


def targets(runs: dict[str, RunOutcome], gateway: dict[str, Any], memory: dict[str, Any]) -> list[Target]:
    return [
        Target("(b)/(a)", "16 adapters vs base model, tok/s", _ratio(runs, "b", "a"), 0.85, True),
        Target("(c)/(a)", "128 adapters (max_loras 32) vs base model", _ratio(runs, "c", "a"), 0.6, True),
        Target("(b)/(d)", "16 adapters vs PEFT one request at a time", _ratio(runs, "b", "d"), 6.0, True),
        Target("(a)/(e)", "base model vs transformers serve --continuous-batching", _ratio(runs, "a", "e"),
               1.3, True),
        Target("(a)/(f)", "base model vs static batched generate (ceiling)", _ratio(runs, "a", "f"),
               0.85, True),
        Target("gateway", "gateway's added p50 latency, non-streamed request", gateway.get("overhead_p50_ms"),
               2.0, False, " ms"),
        Target("adapter memory", "replica RSS per resident adapter / its safetensors size",
               memory.get("ratio_to_file"), 1.5, False, "×"),
    ]


def write_results(out_dir: Path, summary: dict[str, Any], runs: dict[str, RunOutcome],
                  gateway: dict[str, Any], memory: dict[str, Any]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    goals = targets(runs, gateway, memory)
    document = {
        **summary,
        "runs": {key: runs[key].as_dict() for key in RUN_ORDER if key in runs},
        "gateway": gateway,
        "adapter_memory": memory,
        "targets": [t.as_dict() for t in goals],
    }
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    # Written next to the final name and renamed: an interrupted run never leaves half a file.
    for path, text in ((json_path, json.dumps(document, indent=2) + "\n"),
                       (md_path, markdown(summary, runs, gateway, memory, goals))):
        partial = path.with_suffix(path.suffix + ".tmp")
        partial.write_text(text)
        partial.replace(path)
    return json_path, md_path


def _cell(value: Any) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _verdict(target: Target) -> str:
    return {True: "**pass**", False: "**miss**", None: "n/a"}[target.passed]


def markdown(summary: dict[str, Any], runs: dict[str, RunOutcome], gateway: dict[str, Any],
             memory: dict[str, Any], goals: list[Target]) -> str:
    lines = [
        "# Serving benchmark",
        "",
        f"{summary['finished_at']} · {summary['machine']} · total {summary['total_runtime_s']:.0f} s · "
        f"`{summary['command']}`",
        "",
        f"Model: {summary['model']}. Load: {summary['load']}.",
        "",
        "| run | what | output tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | TPOT p50 ms | requests "
        "| others' CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in RUN_ORDER:
        run = runs.get(key)
        if run is None:
            continue
        s = run.stats
        share = "–" if run.others_cpu_share is None else f"{run.others_cpu_share:.0%}"
        if s is None:
            lines.append(f"| {label(key)} | {run.description} | not run: {run.error} | | | | | | {share} |")
            continue
        lines.append(
            f"| {label(key)} | {run.description} | {s.tokens_per_s:.1f} | {_cell(s.ttft_p50_ms)} "
            f"| {_cell(s.ttft_p99_ms)} | {_cell(s.itl_p50_ms)} | {_cell(s.tpot_p50_ms)} | {s.requests} "
            f"| {share} |"
        )
    lines += ["", "| target | value | goal | result |", "|---|---:|---:|---|"]
    for t in goals:
        comparison = "≥" if t.at_least else "≤"
        lines.append(f"| {t.name}: {t.what} | {_cell(t.value)}{t.unit if t.value is not None else ''} "
                     f"| {comparison} {t.goal:g}{t.unit} | {_verdict(t)} |")
    lines += ["", *cpu_table(runs), "", "Details:", ""]
    if gateway:
        blocks = ", ".join(f"{b['overhead_p50_ms']}" for b in gateway["blocks"])
        p10s = ", ".join(f"{b['overhead_p10_ms']}" for b in gateway["blocks"])
        lines.append(f"- Gateway: {len(gateway['blocks'])} blocks of {gateway['samples']} pairs of a "
                     f"one-token non-streamed completion, straight to the replica and through the "
                     f"gateway; added p50 per block {blocks} ms; median block: direct "
                     f"{gateway['direct_p50_ms']} ms, gateway {gateway['gateway_p50_ms']} ms (median of "
                     f"paired differences {gateway['paired_overhead_p50_ms']} ms; others' CPU "
                     f"{gateway['others_cpu_share']:.0%}). Added p10 per block: {p10s} ms.")
    if memory:
        lines.append(f"- Adapter memory: replica RSS {memory['rss_before_bytes'] / 2**20:.1f} → "
                     f"{memory['rss_after_bytes'] / 2**20:.1f} MiB for {memory['adapters']} adapters: "
                     f"{memory['per_adapter_bytes'] / 1024:.0f} KiB each "
                     f"vs {memory['file_bytes'] / 1024:.0f} KiB files.")
    for key in RUN_ORDER:
        for note in runs[key].notes if key in runs else []:
            lines.append(f"- {label(key)} {note}")
    return "\n".join(lines) + "\n"


def cpu_table(runs: dict[str, RunOutcome]) -> list[str]:
    """CPU seconds per 1,000 output tokens, by process: where each run's time went."""
    lines = [
        "CPU seconds per 1,000 output tokens, by process (bench: the load generator, or the model "
        "itself for (d) and (f)):",
        "",
        "| run | " + " | ".join(CPU_ROLES) + " |",
        "|---|" + "---:|" * len(CPU_ROLES),
    ]
    for key in RUN_ORDER:
        run = runs.get(key)
        if run is None or run.stats is None or not run.stats.output_tokens:
            continue
        per_k = 1000 / run.stats.output_tokens
        cells = [f"{run.cpu_s[role] * per_k:.2f}" if role in run.cpu_s else "–" for role in CPU_ROLES]
        lines.append(f"| {label(key)} | " + " | ".join(cells) + " |")
    return lines
