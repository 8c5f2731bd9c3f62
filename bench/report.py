"""The targets, and the two files a run leaves: ``latest.json`` (everything) and ``latest.md``
(the tables a reviewer reads). Any part of the benchmark may be missing (``--only``): its tables
and targets are then left out."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.classification_runs import BASE_KEY, MIXED_KEY
from bench.control_runs import CHANGE_STEPS_RATIO_GOAL, GOALS_MS, IDLE_CORE_SHARE_GOAL, ControlResults
from bench.control_runs import as_json as control_json
from bench.embedding_runs import encode_key, gateway_key
from bench.finetune_runs import BASELINE, OURS, THROUGHPUT_GOAL, FinetuneResults
from bench.finetune_runs import as_json as finetune_json
from bench.lifecycle_runs import ADAPTERS_KEY, REACTIVATION_RATIO_GOAL, LifecycleResults
from bench.lifecycle_runs import as_json as lifecycle_json
from bench.runs import RunOutcome
from bench.stats import CallStats, RunStats
from bench.sweep_report import sweep_details, sweep_tables, sweep_targets
from bench.sweep_runs import SweepResults
from bench.sweep_runs import as_json as sweep_json
from bench.targets import Target, ratio
from bench.task_runs import TaskResults, as_json

RUN_ORDER = ("a", "a_direct", "b", "a_after", "g", "h", "c", "d", "e", "f")
CPU_ROLES = ("replica", "server", "transformers serve", "bench")
TASK_CPU_ROLES = ("replica", "server", "bench")
# The goals for the task runs: gateway/encode by embedding batch size (batch 1 is
# reported with no goal: the HTTP cost of one input per request is not amortised), and mixed LoRA
# deployments over the base model alone.
EMBED_GOALS = {32: 0.8}
CLASSIFY_GOAL = 0.85


def label(key: str) -> str:
    return {"a_direct": "(a) direct", "a_after": "(a) after (b)"}.get(key, f"({key})")


def targets(runs: dict[str, RunOutcome], gateway: dict[str, Any], memory: dict[str, Any]) -> list[Target]:
    if not runs:  # the text-generation part did not run
        return []
    return [
        Target("(b)/(a)", "16 adapters vs base model, tok/s", ratio(runs, "b", "a"), 0.85, True),
        Target("(c)/(a)", "128 adapters (max_loras 32) vs base model", ratio(runs, "c", "a"), 0.6, True),
        Target("(b)/(d)", "16 adapters vs PEFT one request at a time", ratio(runs, "b", "d"), 6.0, True),
        Target("(a)/(e)", "base model vs transformers serve --continuous-batching", ratio(runs, "a", "e"),
               1.3, True),
        Target("(a)/(f)", "base model vs static batched generate (ceiling)", ratio(runs, "a", "f"),
               0.85, True),
        Target("gateway", "gateway's added p50 latency, non-streamed request", gateway.get("overhead_p50_ms"),
               2.0, False, " ms"),
        Target("adapter memory", "replica RSS per resident adapter / its safetensors size",
               memory.get("ratio_to_file"), 1.5, False, "×"),
        # What asking more of each token costs (no goal: reported so a change to it shows).
        Target("(g)/(a)", "answers constrained to a JSON schema vs free text, tok/s", ratio(runs, "g", "a"),
               None, True),
        Target("(h)/(a)", "log-probabilities with 5 alternatives per token vs none, tok/s", ratio(runs, "h", "a"),
               None, True),
    ]


def task_targets(tasks: TaskResults | None) -> list[Target]:
    if tasks is None:
        return []
    goals = [Target(f"embedding b{batch}", f"/v1/embeddings vs sentence-transformers encode, batch {batch}, "
                    "inputs/s", ratio(tasks.runs, gateway_key(batch), encode_key(batch)), EMBED_GOALS.get(batch),
                    True) for batch in tasks.embed_batches]
    goals.append(Target("classification LoRA", f"{tasks.adapters} LoRA deployments vs base model, inputs/s",
                        ratio(tasks.runs, MIXED_KEY, BASE_KEY), CLASSIFY_GOAL, True))
    return goals


def control_targets(control: ControlResults | None) -> list[Target]:
    """A p50 goal per kind of management call, on each database (see bench/control_runs.py)."""
    goals: list[Target] = []
    for database, results in (control.databases.items() if control else []):
        for key, run in results.calls.items():
            if key not in GOALS_MS:
                continue
            p50 = run.stats.latency_p50_ms if isinstance(run.stats, CallStats) else None
            goals.append(Target(f"{key} ({database})", _call_what(run), p50, GOALS_MS[key], False, " ms"))
        if results.idle_core_share is not None:
            goals.append(Target(f"idle server ({database})", "share of one core the server uses while "
                                "nobody calls it (the reconciler holding every seeded engine)",
                                round(results.idle_core_share * 100, 2), IDLE_CORE_SHARE_GOAL * 100, False, " %"))
        costs = results.reconciler
        if len(costs) >= 2:
            goals.append(Target(f"one change ({database})", f"engine steps one change causes with {costs[0].engines} "
                                f"engines ÷ with {costs[-1].engines}", results.change_steps_ratio(),
                                CHANGE_STEPS_RATIO_GOAL, False, "×"))
    return goals


def lifecycle_targets(lifecycle: LifecycleResults | None) -> list[Target]:
    if lifecycle is None:
        return []
    adapters = lifecycle.reactivation[ADAPTERS_KEY].deployments - 1
    scale = lifecycle.scale_up
    return [
        Target(f"reactivation {adapters} adapters", f"reactivation with {adapters} adapter deployments vs base "
               "only, to Active with every deployment Deployed, medians", lifecycle.reactivation_ratio,
               REACTIVATION_RATIO_GOAL, False, "×"),
        # No goal yet: reported so that the autoscaler's reaction time shows from its first run on.
        Target("scale-up", "seconds from a step load to a second replica serving", scale.to_serving_s, None,
               False, " s"),
    ]


def finetune_targets(finetune: FinetuneResults | None) -> list[Target]:
    return [Target(key, "fine-tuning job vs plain PEFT + transformers loop, training samples/s, best of each",
                   case.ratio, THROUGHPUT_GOAL, True)
            for key, case in (finetune.cases.items() if finetune else [])]


def _call_what(run: RunOutcome) -> str:
    return run.description.split(": ", 1)[-1]  # without the database's name in front


def write_results(out_dir: Path, summary: dict[str, Any], runs: dict[str, RunOutcome],
                  gateway: dict[str, Any], memory: dict[str, Any],
                  tasks: TaskResults | None = None, control: ControlResults | None = None,
                  lifecycle: LifecycleResults | None = None,
                  finetune: FinetuneResults | None = None,
                  sweep: SweepResults | None = None) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    goals = (targets(runs, gateway, memory) + sweep_targets(sweep) + task_targets(tasks) + control_targets(control)
             + lifecycle_targets(lifecycle) + finetune_targets(finetune))
    document = {
        **summary,
        "runs": {key: runs[key].as_dict() for key in RUN_ORDER if key in runs},
        "gateway": gateway,
        "adapter_memory": memory,
        "tasks": as_json(tasks) if tasks else None,
        "control": control_json(control) if control else None,
        "lifecycle": lifecycle_json(lifecycle) if lifecycle else None,
        "finetune": finetune_json(finetune) if finetune else None,
        "sweep": sweep_json(sweep) if sweep else None,
        "targets": [t.as_dict() for t in goals],
    }
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    # Written next to the final name and renamed: an interrupted run never leaves half a file.
    for path, text in ((json_path, json.dumps(document, indent=2) + "\n"),
                       (md_path, markdown(summary, runs, gateway, memory, goals, tasks, control, lifecycle,
                                          finetune, sweep))):
        partial = path.with_suffix(path.suffix + ".tmp")
        partial.write_text(text)
        partial.replace(path)
    return json_path, md_path


def _cell(value: Any) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _verdict(target: Target) -> str:
    if target.goal is None:
        return "reported"
    return {True: "**pass**", False: "**miss**", None: "n/a"}[target.passed]


def markdown(summary: dict[str, Any], runs: dict[str, RunOutcome], gateway: dict[str, Any],
             memory: dict[str, Any], goals: list[Target], tasks: TaskResults | None = None,
             control: ControlResults | None = None, lifecycle: LifecycleResults | None = None,
             finetune: FinetuneResults | None = None, sweep: SweepResults | None = None) -> str:
    lines = [
        "# Serving benchmark",
        "",
        f"{summary['finished_at']} · {summary['machine']} · total {summary['total_runtime_s']:.0f} s · "
        f"`{summary['command']}`",
        "",
    ]
    if runs:
        lines += [*textgen_table(summary, runs), ""]
    if sweep:
        lines += [*sweep_tables(sweep), ""]
        # The charts lie beside this file (bench/charts.py).
        lines += [*(f"![{name}]({name})" for name in summary.get("charts", [])), ""]
    if tasks:
        lines += [*task_table(tasks), ""]
    if control:
        lines += [*control_table(control), ""]
    if lifecycle:
        lines += [*lifecycle_table(lifecycle), ""]
    if finetune:
        lines += [*finetune_table(finetune), ""]
    lines += ["| target | value | goal | result |", "|---|---:|---:|---|"]
    for t in goals:
        comparison = "≥" if t.at_least else "≤"
        goal = "–" if t.goal is None else f"{comparison} {t.goal:g}{t.unit}"
        lines.append(f"| {t.name}: {t.what} | {_cell(t.value)}{t.unit if t.value is not None else ''} "
                     f"| {goal} | {_verdict(t)} |")
    if runs:
        lines += ["", *cpu_table(runs, RUN_ORDER, label, "output tokens", "the load generator, or the model "
                                 "itself for (d) and (f)")]
    if tasks:
        lines += ["", *cpu_table(tasks.runs, list(tasks.runs), _task_label, "inputs", "the load generator, "
                                 "or sentence-transformers itself for the encode runs", TASK_CPU_ROLES)]
    lines += ["", "Details:", "", *details(runs, gateway, memory)]
    for key, run in (tasks.runs.items() if tasks else []):
        lines += [f"- {_task_label(key)} {note}" for note in run.notes]
    lines += control_details(control) if control else []
    lines += lifecycle_details(lifecycle) if lifecycle else []
    lines += finetune_details(finetune) if finetune else []
    lines += sweep_details(sweep) if sweep else []
    return "\n".join(lines) + "\n"


def textgen_table(summary: dict[str, Any], runs: dict[str, RunOutcome]) -> list[str]:
    lines = [
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
        share = _share(run)
        if not isinstance(s, RunStats):
            lines.append(f"| {label(key)} | {run.description} | not run: {run.error} | | | | | | {share} |")
            continue
        lines.append(
            f"| {label(key)} | {run.description} | {s.tokens_per_s:.1f} | {_cell(s.ttft_p50_ms)} "
            f"| {_cell(s.ttft_p99_ms)} | {_cell(s.itl_p50_ms)} | {_cell(s.tpot_p50_ms)} | {s.requests} "
            f"| {share} |"
        )
    return lines


def _task_label(key: str) -> str:
    return f"`{key}`"


def task_table(tasks: TaskResults) -> list[str]:
    lines = [
        f"Embedding model: {tasks.info['embedding_model']}. Classification model: "
        f"{tasks.info['classification_model']}. Load: {tasks.info['load']}.",
        "",
        "| run | what | requests/s | inputs/s | latency p50 ms | latency p99 ms | requests | others' CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, run in tasks.runs.items():
        s = run.stats
        if not isinstance(s, CallStats):
            lines.append(f"| {_task_label(key)} | {run.description} | not run: {run.error} | | | | | {_share(run)} |")
            continue
        lines.append(f"| {_task_label(key)} | {run.description} | {s.requests_per_s:.1f} | {s.inputs_per_s:.1f} "
                     f"| {_cell(s.latency_p50_ms)} | {_cell(s.latency_p99_ms)} | {s.requests} | {_share(run)} |")
    return lines


def _share(run: RunOutcome) -> str:
    return "–" if run.others_cpu_share is None else f"{run.others_cpu_share:.0%}"


def details(runs: dict[str, RunOutcome], gateway: dict[str, Any], memory: dict[str, Any]) -> list[str]:
    """The text-generation part's footnotes: the gateway's cost, adapter memory, each run's notes."""
    lines: list[str] = []
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
    return lines


def cpu_table(runs: dict[str, RunOutcome], keys: Sequence[str], name: Callable[[str], str], counted: str,
              bench_role: str, roles: Sequence[str] = CPU_ROLES) -> list[str]:
    """CPU seconds per 1,000 of what the runs count (output tokens, inputs), by process: where
    each run's time went."""
    lines = [
        f"CPU seconds per 1,000 {counted}, by process (bench: {bench_role}):",
        "",
        "| run | " + " | ".join(roles) + " |",
        "|---|" + "---:|" * len(roles),
    ]
    for key in keys:
        run = runs.get(key)
        if run is None or run.stats is None or not run.stats.counted:
            continue
        per_k = 1000 / run.stats.counted
        cells = [f"{run.cpu_s[role] * per_k:.2f}" if role in run.cpu_s else "–" for role in roles]
        lines.append(f"| {name(key)} | " + " | ".join(cells) + " |")
    return lines


def control_table(control: ControlResults) -> list[str]:
    lines = [
        f"Control plane: {control.info['load']}.",
        "",
        "| database | call | p50 ms | p99 ms | answer | calls | others' CPU | server CPU ms per call |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for database, results in control.databases.items():
        for key, run in results.calls.items():
            s = run.stats
            if not isinstance(s, CallStats):
                lines.append(f"| {database} | {_call_what(run)} | not run: {run.error} | | | | {_share(run)} | |")
                continue
            server = run.cpu_s.get("server")
            per_call = "–" if server is None or not s.requests else f"{server * 1000 / s.requests:.1f}"
            lines.append(f"| {database} | {_call_what(run)} | {_cell(s.latency_p50_ms)} | {_cell(s.latency_p99_ms)} "
                         f"| {_size(results.answer_bytes.get(key))} | {s.requests} | {_share(run)} | {per_call} |")
    lines += ["", "The reconciler, idle and for one change (a deploy onto one engine, left to settle):", "",
              "| database | engines | idle server, % of a core | changes | engine steps per change "
              "| server CPU ms per change |", "|---|---:|---:|---:|---:|---:|"]
    for database, results in control.databases.items():
        for cost in results.reconciler:
            lines.append(f"| {database} | {cost.engines} | {cost.idle_core_share * 100:.2f} | {cost.changes} "
                         f"| {cost.steps_per_change} | {cost.server_cpu_ms_per_change} |")
    return lines


def _size(size: int | None) -> str:
    if size is None:
        return "–"
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.1f} KiB"


def control_details(control: ControlResults) -> list[str]:
    lines = [f"- Control plane on {name}: {db.version}; seeded {len(db.seeded.engine_ids)} engines, "
             f"{db.seeded.deployments:,} deployments and {db.seeded.events:,} events through the services "
             f"in {db.seeded.seconds:.0f} s." for name, db in control.databases.items()]
    lines += [f"- Control plane on {name}: not run, {why}." for name, why in control.skipped.items()]
    for db in control.databases.values():
        for run in db.calls.values():
            lines += [f"- {run.key} {note}" for note in run.notes]
    return lines


def lifecycle_table(lifecycle: LifecycleResults) -> list[str]:
    lines = [
        f"Engine lifecycle: {lifecycle.info['load']}.",
        "",
        "| run | what | serving after s (median) | Active after s (median) | samples: serving after s "
        "| others' CPU (most) |",
        "|---|---|---:|---:|---|---:|",
    ]
    for key, series in lifecycle.reactivation.items():
        samples = ", ".join(f"{s.to_deployed_s:.2f}" for s in series.samples)
        share = "–" if series.others_cpu_share is None else f"{series.others_cpu_share:.0%}"
        lines.append(f"| `{key}` | reactivation, {series.description} | {_secs(series.median('to_deployed_s'))} "
                     f"| {_secs(series.median('to_active_s'))} | {samples} | {share} |")
    scale = lifecycle.scale_up
    share = "–" if scale.others_cpu_share is None else f"{scale.others_cpu_share:.0%}"
    if scale.error:
        lines.append(f"| `scale_up` | {scale.description} | not run: {scale.error} | | | {share} |")
    else:
        lines.append(f"| `scale_up` | {scale.description} | {_secs(scale.to_serving_s)} | "
                     f"2 ready after {_secs(scale.to_ready_s)} | | {share} |")
    return lines


def _secs(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def lifecycle_details(lifecycle: LifecycleResults) -> list[str]:
    scale = lifecycle.scale_up
    lines = ["- Reactivation: timed from the reactivate call to the first read of the engine showing it Active "
             "(to Active) and Active with every deployment Deployed (to serving); each time includes up to one "
             "read's delay."]
    for key, series in lifecycle.reactivation.items():
        redone = [f"round {i} of {s.attempts}" for i, s in enumerate(series.samples, start=1) if s.attempts > 1]
        if redone:
            lines.append(f"- {key}: other processes disturbed some reactivations, done again and the least "
                         f"disturbed kept ({', '.join(redone)} reactivations).")
    decided = (f"the autoscaler's decision for two replicas after {_secs(scale.to_decision_s)} s "
               f"({scale.decision_reason}), " if scale.to_decision_s is not None else "no decision for two "
               "replicas seen, ")
    lines.append(f"- scale_up: timed from the load's start to the first read of the engine showing each step: "
                 f"{decided}two ready replicas after {_secs(scale.to_ready_s)} s, a call in flight on the new "
                 f"one (to serving) after {_secs(scale.to_serving_s)} s; {scale.requests} requests during the "
                 f"run, {scale.failed} failed"
                 + (f", first: {scale.first_error}" if scale.first_error else "") + ".")
    return lines


def finetune_table(finetune: FinetuneResults) -> list[str]:
    lines = [
        f"Fine-tuning: {finetune.info['load']}.",
        "",
        "| case | loop | samples/s (best) | training s | process s | samples | others' CPU "
        "| every training: samples/s @ others' CPU |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for key, case in finetune.cases.items():
        for name in (OURS, BASELINE):
            series = case.loops[name]
            best = series.best
            if best is None:
                continue
            each = ", ".join(f"{t.samples_per_s:.1f} @ {t.others_cpu_share:.0%}" for t in series.trainings)
            lines.append(f"| `{key}` | {name}: {series.description} | {best.samples_per_s:.1f} "
                         f"| {best.train_seconds:.1f} | {best.process_s:.1f} | {best.samples} "
                         f"| {best.others_cpu_share:.0%} | {each} |")
    return lines


def finetune_details(finetune: FinetuneResults) -> list[str]:
    lines = [f"- `{key}`: {case.description}." for key, case in finetune.cases.items()]
    lines.append("- Fine-tuning: samples/s is rows trained (every epoch) over the training steps' wall time, "
                 "as each loop times it per epoch; the process time adds start-up, loading, tokenising and "
                 "writing checkpoints.")
    for key, case in finetune.cases.items():
        for name, series in case.loops.items():
            redone = [f"training {i} of {t.attempts}" for i, t in enumerate(series.trainings, start=1)
                      if t.attempts > 1]
            if redone:
                lines.append(f"- `{key}` {name}: other processes disturbed some trainings, done again and the "
                             f"least disturbed kept ({', '.join(redone)} trainings).")
    return lines
