"""The model-size sweep as pictures (PNG, beside ``latest.md``): tokens/s and the ratios against
model size, and each size's per-step split as stacked bars. Needs matplotlib (the ``bench``
extra); without it the charts are skipped and the run says so."""

from __future__ import annotations

from pathlib import Path

from bench.runs import progress
from bench.step_split import ENGINE_PHASES
from bench.sweep_report import ADAPTERS_GOAL, CEILING_GOAL, PEFT_GOAL, VLLM_GOAL, ratio_name
from bench.sweep_runs import SweepResults
from bench.targets import rate, ratio
from bench.vllm_runs import BASE_KEY as VLLM_BASE
from bench.vllm_runs import MIXED_KEY as VLLM_MIXED

THROUGHPUT_SERIES = (("a", "enginehouse, base", "C0", "-"), ("b", "enginehouse, adapters", "C0", "--"),
                     (VLLM_BASE, "vLLM, base", "C1", "-"), (VLLM_MIXED, "vLLM, adapters", "C1", "--"),
                     ("f", "static batch (ceiling)", "C2", ":"), ("engine", "engine alone (no HTTP)", "C4", ":"),
                     ("d", "PEFT, one at a time", "C3", ":"))
NEAR_ONE = (("a", "f"), ("engine", "f"), ("b", "a"), ("a", VLLM_BASE), ("b", VLLM_MIXED))
OVER_PEFT = (("b", "d"), ("f", "d"))
BESIDE = (("encode", "encode (replica's event loop)"), ("relay", "relay (gateway's CPU)"))


def write_charts(out_dir: Path, sweep: SweepResults) -> list[Path]:
    """The three charts' paths; none when matplotlib is missing or no size has numbers."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt  # noqa: F401 - imported for the figures below
    except ImportError:
        progress("matplotlib is not installed (pip install -e '.[bench]'): no charts")
        return []
    if not sweep.sizes:
        return []
    paths = [out_dir / "sweep-throughput.png", out_dir / "sweep-ratios.png", out_dir / "sweep-steps.png"]
    _throughput(sweep, paths[0])
    _ratios(sweep, paths[1])
    _steps(sweep, paths[2])
    return paths


def _params(sweep: SweepResults) -> list[float]:
    return [size.parameters / 1e6 for size in sweep.sizes]


def _throughput(sweep: SweepResults, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, name, color, style in THROUGHPUT_SERIES:
        ax.plot(_params(sweep), [rate(size.runs, key) for size in sweep.sizes], marker="o", color=color,
                linestyle=style, label=name)
    _size_axis(ax, sweep)
    ax.set_yscale("log")
    ax.set_ylabel("output tokens/s")
    ax.set_title("Throughput against model size")
    ax.legend(fontsize=8)
    _save(fig, path)


def _ratios(sweep: SweepResults, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (near, over) = plt.subplots(1, 2, figsize=(11, 4.5))
    for top, bottom in NEAR_ONE:
        near.plot(_params(sweep), [ratio(size.runs, top, bottom) for size in sweep.sizes], marker="o",
                  label=ratio_name(top, bottom))
    goals: dict[float, list[str]] = {}
    for goal, name in ((CEILING_GOAL, "(a)/(f)"), (ADAPTERS_GOAL, "(b)/(a)")):
        goals.setdefault(goal, []).append(name)
    for goal, names in goals.items():
        near.axhline(goal, color="grey", linestyle=":", label=f"goal {goal:g} ({', '.join(names)})")
    near.axhline(VLLM_GOAL, color="black", linestyle=":", label=f"goal {VLLM_GOAL:g} (vs vLLM)")
    near.set_title("Against the ceiling, the base model and vLLM")
    for top, bottom in OVER_PEFT:
        over.plot(_params(sweep), [ratio(size.runs, top, bottom) for size in sweep.sizes], marker="o",
                  label=ratio_name(top, bottom))
    over.axhline(PEFT_GOAL, color="grey", linestyle=":", label=f"goal {PEFT_GOAL:g} ((b)/(d))")
    over.set_title("Against PEFT one request at a time")
    for ax in (near, over):
        _size_axis(ax, sweep)
        ax.set_ylabel("ratio of tokens/s")
        ax.legend(fontsize=8)
    _save(fig, path)


def _steps(sweep: SweepResults, path: Path) -> None:
    """Each size's (a) and (b) step as shares of the engine thread's step time, stacked; what
    runs beside it (the event loop, the gateway) stacked above, hatched: it overlaps the step."""
    import matplotlib.pyplot as plt

    bars = [(f"{size.label}\n({key})", split) for size in sweep.sizes for key, split in size.splits.items()
            if split is not None]
    if not bars:
        return
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(bars) + 2), 4.8))
    x = list(range(len(bars)))
    bottom = [0.0] * len(bars)
    for index, phase in enumerate((*ENGINE_PHASES, "other")):
        shares = [100 * getattr(split, f"{phase}_ms") / split.step_ms for _, split in bars]
        ax.bar(x, shares, bottom=bottom, color=f"C{index}", label=phase)
        bottom = [b + s for b, s in zip(bottom, shares)]
    for offset, (phase, name) in enumerate(BESIDE):
        shares = [100 * (getattr(split, f"{phase}_ms") or 0.0) / split.step_ms for _, split in bars]
        ax.bar(x, shares, bottom=bottom, color=f"C{6 + offset}", hatch="//", alpha=0.6, label=name)
        bottom = [b + s for b, s in zip(bottom, shares)]
    for position, (_, split) in enumerate(bars):
        ax.annotate(f"{split.step_ms:.1f} ms", (position, bottom[position]), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [name for name, _ in bars], fontsize=8)
    ax.set_ylabel("% of the engine's step time")
    ax.set_title("One decode step, by phase (hatched: beside the engine thread)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


def _size_axis(ax, sweep: SweepResults) -> None:  # type: ignore[no-untyped-def]
    ax.set_xscale("log")
    ax.set_xticks(_params(sweep), [size.label for size in sweep.sizes])
    ax.minorticks_off()
    ax.set_xlabel("model parameters")
    ax.grid(alpha=0.3)


def _save(fig, path: Path) -> None:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    fig.tight_layout()
    partial = path.with_suffix(".tmp.png")  # renamed when whole, as the other results are
    fig.savefig(partial, dpi=110, bbox_inches="tight")  # the legend outside the axes too
    plt.close(fig)
    partial.replace(path)
