"""``python -m bench.contention``: what other processes' CPU costs the model on this machine.

The ceiling (f) and the engine alone run with the machine to themselves; a served run shares
it with the replica's event loop, the gateway and the benchmark's own client. This measures the
engine alone (stepped in this process, no HTTP) at the sweep's smallest shape, by itself and then
beside busy processes that each take a fixed share of one core in short bursts (a few ms, as the
serving path's per-step work comes), and prints each rate against the ceiling's. Comparing the
shares with the serving path's measured CPU per token says how much of (a)/(f) any serving path
on these cores can keep.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import inprocess
from bench.config import BenchConfig
from bench.load import LoadResult
from bench.runs import Load
from bench.textgen_setup import prepare

# The busy process's share of one core in each run.
SHARES = (0.0, 0.05, 0.1, 0.2, 0.3)
# Requests per run: (a)'s count times this, so that each run lasts a few seconds at ~5M.
LONGER = 4


def tokens_per_s(result: LoadResult) -> float:
    return sum(record.completion_tokens for record in result.records) / result.wall_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contention", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved; medians are shown")
    args = parser.parse_args(argv)
    base_cfg = BenchConfig()
    cfg = base_cfg.sweep.for_shape(base_cfg, base_cfg.sweep.shapes[0])
    threads = cfg.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="eh-contention-") as scratch:
        work, info = prepare(cfg, Path(scratch))
        alone = inprocess.engine_alone(work.base_dir, {"max_loras": cfg.adapters_b}, work.warmup_prompts, work.prompts,
                                       cfg.concurrency, LONGER * cfg.requests_per_run, cfg.max_tokens,
                                       cfg.warmup_max_tokens)
        rounds = [work.prompts[i * cfg.concurrency:(i + 1) * cfg.concurrency] for i in range(cfg.rounds)]
        static = inprocess.static_batch(work.base_dir, work.warmup_prompts, rounds * LONGER, cfg.max_tokens,
                                        cfg.warmup_max_tokens)
        ceilings: list[float] = []
        rates: dict[float, list[float]] = {share: [] for share in SHARES}
        for _ in range(args.repeats):  # interleaved, so that the machine's drift touches all alike
            ceilings.append(tokens_per_s(static(None)))
            for share in SHARES:
                rates[share].append(_beside_burner(alone, share))
        ceiling = statistics.median(ceilings)
    print(f"{info['model']}; {threads} torch threads; {cfg.concurrency} streams × {cfg.max_tokens} tokens")
    print(f"(f) ceiling: {ceiling:.0f} tok/s")
    print("| beside it (share of one core) | engine alone tok/s | ÷ (f) |")
    print("|---:|---:|---:|")
    for share, values in rates.items():
        median = statistics.median(values)
        print(f"| {share:.2f} | {median:.0f} | {median / ceiling:.2f} |")
    return 0


def _beside_burner(load: Load, share: float) -> float:
    burner = None
    if share > 0:
        # A module that imports nothing heavy: busy at once, not after seconds of importing torch.
        burner = subprocess.Popen([sys.executable, "-m", "bench.burner", str(share)])
        time.sleep(0.5)
    try:
        return tokens_per_s(load(None))
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()


if __name__ == "__main__":
    sys.exit(main())
