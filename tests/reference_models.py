"""The tiny causal LM as transformers (and PEFT, for an adapter) run it directly: what the served
answers are compared with. Loaded once per (base, adapter) pair and kept."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM


def reference_model(base_dir: Path | str, adapter_dir: Path | str | None = None) -> torch.nn.Module:
    return _load(str(base_dir), str(adapter_dir) if adapter_dir else None)


@lru_cache(maxsize=8)
def _load(base_dir: str, adapter_dir: str | None) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.eval()
