"""The benchmark's model: a Llama-shaped model of about 30M parameters with random weights, and
as many LoRA adapters over it as a run needs.

Random weights are enough: throughput and latency depend on the shapes, not on what the model
says. The adapters are written by PEFT itself (one PEFT model, re-drawn per seed), so their files
are exactly what a user's training run would hand the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from enginehouse.demo.tiny_models import build_tiny_llama


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int = 512
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int = 4
    intermediate_size: int = 1792
    max_position_embeddings: int = 1024


@dataclass(frozen=True)
class AdapterShape:
    r: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


def build_base(out_dir: Path, shape: ModelShape, seed: int = 1234) -> Path:
    if (out_dir / "config.json").is_file():
        return out_dir
    return build_tiny_llama(
        out_dir,
        hidden_size=shape.hidden_size,
        num_layers=shape.num_layers,
        num_heads=shape.num_heads,
        num_kv_heads=shape.num_kv_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_position_embeddings,
        seed=seed,
    )


def count_parameters(base_dir: Path) -> int:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    return sum(p.numel() for p in model.parameters())


def build_adapters(base_dir: Path, out_root: Path, count: int, shape: AdapterShape,
                   first_seed: int = 1000) -> list[Path]:
    """``count`` adapter directories ``out_root/adapter-NNN``, reusing ones already written.

    One PEFT model is built and its LoRA weights re-drawn per adapter: building a PEFT model per
    adapter would cost a base-model load each, minutes for 128 adapters on two cores.
    """
    paths = [out_root / f"adapter-{i:03d}" for i in range(count)]
    missing = [(i, p) for i, p in enumerate(paths) if not (p / "adapter_model.safetensors").is_file()]
    if not missing:
        return paths
    peft_model = _peft_model(base_dir, shape)
    for index, path in missing:
        _redraw_lora(peft_model, first_seed + index)
        peft_model.save_pretrained(str(path))
    return paths


def _peft_model(base_dir: Path, shape: AdapterShape):  # type: ignore[no-untyped-def]
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(
        r=shape.r,
        lora_alpha=shape.lora_alpha,
        target_modules=list(shape.target_modules),
        lora_dropout=0.0,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, config)


def _redraw_lora(peft_model: torch.nn.Module, seed: int) -> None:
    # Both matrices non-zero (a fresh PEFT adapter has B = 0 and would equal the base model), and
    # B large enough that adapters visibly change the output, as in the demo's adapters.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                bound = 1.0 / param.shape[1] ** 0.5
                scale = 4.0 if "lora_B" in name else 1.0
                values = torch.rand(param.shape, generator=generator) * 2 - 1
                param.copy_(values * bound * scale)


def adapter_file_bytes(path: Path) -> int:
    return (path / "adapter_model.safetensors").stat().st_size
