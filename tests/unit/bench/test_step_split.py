"""The sweep's per-step split: phases per decode step from two timer readings, the rest of the
step as "other", and the gateway's CPU turned into a relay time per step."""

from __future__ import annotations

import pytest

from bench.load import RequestRecord
from bench.runs import RunOutcome
from bench.stats import summarize
from bench.step_split import step_split


def _run(tokens: int, server_cpu_s: float) -> RunOutcome:
    record = RequestRecord(sent=0.0, chunk_times=[0.1, 0.2], completion_tokens=tokens, tokens_from_usage=True,
                           done=0.3)
    return RunOutcome("a", "base", summarize([record], 1.0), cpu_s={"server": server_cpu_s})


def test_split_per_decode_step() -> None:
    timers = {"decode_steps": 10, "decode_rows": 40, "step": 1.0, "forward": 0.6, "lora": 0.2, "sampling": 0.05,
              "detokenize": 0.05, "emit": 0.02, "encode": 0.03}
    split = step_split(timers, _run(tokens=40, server_cpu_s=0.08))
    assert split is not None
    assert (split.decode_steps, split.rows_per_step, split.step_ms) == (10, 4.0, 100.0)
    assert (split.forward_ms, split.lora_ms, split.encode_ms) == (60.0, 20.0, 3.0)
    assert split.other_ms == pytest.approx(8.0)
    # 2 ms of the gateway's CPU per token, 4 tokens per step.
    assert split.relay_ms == pytest.approx(8.0)


def test_no_split_without_decode_steps() -> None:
    assert step_split({"steps": 1, "step": 0.1}, _run(tokens=1, server_cpu_s=0.0)) is None
