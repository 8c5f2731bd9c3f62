"""Read a PEFT LoRA adapter directory and check it fits this base model and engine.

Everything a user can get wrong with an adapter is found here, before the adapter goes anywhere
near the serving path, and reported as an ``AdapterLoadError`` whose message says what to do.
We read the files ourselves (``adapter_config.json`` and ``adapter_model.safetensors``) rather
than through PEFT's model wrapping, which would mutate the serving model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from enginehouse.core.json_files import JsonFileError, read_json_object
from enginehouse.runtime.lora.layers import ModuleLoRA, TargetInfo

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"

# LoraConfig fields that switch on a LoRA variant whose forward is not plain ``B @ A``.
_VARIANT_FIELDS = {
    "use_dora": "DoRA (use_dora=true)",
    "use_qalora": "QALoRA (use_qalora=true)",
    "use_bdlora": "BD-LoRA (use_bdlora)",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "arrow_config": "Arrow routing (arrow_config)",
    "velora_config": "VeLoRA (velora_config)",
    "monteclora_config": "MonteCLoRA (monteclora_config)",
    "kasa_config": "KaSA (kasa_config)",
    "layer_replication": "layer replication (layer_replication)",
    "target_parameters": "LoRA on raw parameters (target_parameters)",
    "trainable_token_indices": "trainable token embeddings (trainable_token_indices)",
}

# ``base_model.model.<module>.lora_A.weight``; older or hand-made files may keep the adapter name
# (``lora_A.default.weight``) or lack the PEFT prefix.
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>A|B)(?:\.[^.]+)?\.weight$")
# A whole-module copy (``modules_to_save``): PEFT writes ``base_model.model.classifier.weight``;
# a file written from the wrapped model's own state dict keeps ``modules_to_save.<adapter>``.
_SAVED_WRAPPER = re.compile(r"\.modules_to_save\.[^.]+")


class AdapterLoadError(Exception):
    """A permanent problem with an adapter; the message is meant for the user."""


@dataclass(frozen=True)
class LoRAWeights:
    """One adapter read from disk and checked: per base-module A/B and scaling, on the host."""

    path: str
    rank: int
    modules: dict[str, ModuleLoRA]
    # Full tensors of ``modules_to_save`` (e.g. a classification head) by parameter name
    # (``classifier.weight``); only read when the caller asks for them (``keep_saved_modules``).
    saved: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        lora = sum(m.lora_a.nbytes + m.lora_b.nbytes for m in self.modules.values())
        return lora + sum(t.nbytes for t in self.saved.values())


def read_lora_adapter(
    path: str | Path,
    targets: Mapping[str, TargetInfo],
    *,
    max_rank: int,
    dtype: torch.dtype = torch.float32,
    keep_saved_modules: bool = False,
) -> LoRAWeights:
    """``keep_saved_modules``: accept ``modules_to_save`` and return those tensors unchecked in
    ``saved`` (the caller knows what they must fit); otherwise such an adapter is refused."""
    directory = Path(path)
    config = _read_config(directory)
    _check_config(config, allow_saved_modules=keep_saved_modules)
    tensors = _read_tensors(directory)
    saved = _take_saved_tensors(tensors, dtype) if keep_saved_modules else {}
    pairs = _pair_tensors(tensors)
    modules: dict[str, ModuleLoRA] = {}
    for module, (lora_a, lora_b) in sorted(pairs.items()):
        _check_module(module, lora_a, lora_b, targets.get(module), max_rank)
        rank = int(lora_a.shape[0])
        scaling = _scaling(config, module, rank)
        modules[module] = ModuleLoRA(lora_a.to(dtype).contiguous(), lora_b.to(dtype).contiguous(), scaling)
    rank = max(m.rank for m in modules.values())
    return LoRAWeights(path=str(directory), rank=rank, modules=modules, saved=saved)


def _read_config(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise AdapterLoadError(f"adapter directory {directory} does not exist")
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise AdapterLoadError(
            f"{directory} has no {CONFIG_FILE}; expected a PEFT adapter directory as "
            "save_pretrained() writes it"
        )
    try:
        return read_json_object(config_path)
    except JsonFileError as exc:
        raise AdapterLoadError(str(exc)) from None


def _check_config(config: dict[str, Any], *, allow_saved_modules: bool = False) -> None:
    peft_type = str(config.get("peft_type") or "").upper()
    if peft_type != "LORA":
        raise AdapterLoadError(
            f"adapter type {config.get('peft_type')!r} is not supported; only LoRA adapters "
            "(peft_type LORA) can be served"
        )
    for key, label in _VARIANT_FIELDS.items():
        if config.get(key):
            raise AdapterLoadError(
                f"{label} adapters are not supported; train a plain LoRA adapter or merge this "
                "one into a full model"
            )
    if str(config.get("init_lora_weights")).lower() == "mica":
        raise AdapterLoadError("MiCA adapters are not supported; train a plain LoRA adapter")
    if config.get("bias", "none") not in (None, "none") or config.get("lora_bias"):
        raise AdapterLoadError(
            "adapters with trained biases (bias or lora_bias) are not supported; retrain with "
            "bias='none' and lora_bias=False"
        )
    if config.get("modules_to_save") and not allow_saved_modules:
        raise AdapterLoadError(
            f"modules_to_save ({', '.join(map(str, config['modules_to_save']))}) is not supported "
            "for text-generation adapters: only LoRA weights can be served; retrain without "
            "modules_to_save"
        )
    if config.get("use_rslora") and (config.get("rank_pattern") or config.get("alpha_pattern")):
        # PEFT itself refuses this combination, so such a file was not made by PEFT.
        raise AdapterLoadError("use_rslora cannot be combined with rank_pattern or alpha_pattern")


def _read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        if (directory / "adapter_model.bin").is_file():
            raise AdapterLoadError(
                f"{directory} holds adapter_model.bin; only {WEIGHTS_FILE} is loaded (pickle "
                "files can run code). Re-save the adapter with safe_serialization=True"
            )
        raise AdapterLoadError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise AdapterLoadError(f"{weights_path} is unreadable or corrupt: {exc}") from None


def _take_saved_tensors(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Remove the tensors that are not LoRA weights from ``tensors`` and return them by their
    parameter name in the base model."""
    saved: dict[str, torch.Tensor] = {}
    for key in [k for k in tensors if ".lora_" not in k]:
        name = _SAVED_WRAPPER.sub("", key.removeprefix("base_model.model."))
        tensor = tensors.pop(key)
        saved[name] = (tensor.to(dtype) if tensor.is_floating_point() else tensor).contiguous()
    return saved


def _pair_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        _refuse_unsupported_key(key)
        match = _KEY.match(key)
        if match is None:
            raise AdapterLoadError(f"unexpected tensor {key!r} in {WEIGHTS_FILE}; not a LoRA weight")
        found.setdefault(match["module"], {})[match["which"]] = tensor
    if not found:
        raise AdapterLoadError(f"{WEIGHTS_FILE} holds no LoRA weights")
    pairs = {}
    for module, parts in found.items():
        if set(parts) != {"A", "B"}:
            raise AdapterLoadError(f"module {module} has lora_{''.join(parts)} but not both A and B")
        pairs[module] = (parts["A"], parts["B"])
    return pairs


def _refuse_unsupported_key(key: str) -> None:
    if "lora_embedding_" in key:
        raise AdapterLoadError("LoRA on embedding layers is not supported; target linear layers only")
    if "lora_magnitude_vector" in key:
        raise AdapterLoadError("DoRA adapters are not supported; train a plain LoRA adapter")
    if "modules_to_save" in key:
        raise AdapterLoadError("modules_to_save weights are not supported for text-generation adapters")
    if re.search(r"\.lora_[AB](\.[^.]+)?\.bias$", key):
        raise AdapterLoadError("adapters with trained LoRA biases (lora_bias) are not supported")


def _check_module(
    module: str,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    target: TargetInfo | None,
    max_rank: int,
) -> None:
    different_base = "the adapter was trained for a different base model"
    if target is None:
        raise AdapterLoadError(f"{different_base}: it adapts {module}, which this base model does not have")
    if target.kind == "embedding":
        raise AdapterLoadError(f"LoRA on embedding layers ({module}) is not supported")
    if target.kind != "linear":
        raise AdapterLoadError(f"{module} is not a linear layer; LoRA can only be served on linear layers")
    if lora_a.ndim != 2 or lora_b.ndim != 2 or lora_a.shape[0] != lora_b.shape[1]:
        raise AdapterLoadError(f"LoRA weights of {module} have inconsistent shapes")
    rank = int(lora_a.shape[0])
    if lora_a.shape[1] != target.in_features or lora_b.shape[0] != target.out_features:
        raise AdapterLoadError(
            f"{different_base}: {module} is {target.in_features}->{target.out_features} in this "
            f"base model but {lora_a.shape[1]}->{lora_b.shape[0]} in the adapter"
        )
    if rank > max_rank:
        raise AdapterLoadError(
            f"LoRA rank {rank} exceeds the engine's max_lora_rank {max_rank}; raise "
            "runtime_options.max_lora_rank or retrain with a smaller rank"
        )
    if not (torch.isfinite(lora_a).all() and torch.isfinite(lora_b).all()):
        raise AdapterLoadError(f"LoRA weights of {module} contain NaN or infinite values")


def _scaling(config: dict[str, Any], module: str, rank: int) -> float:
    """PEFT's scaling: alpha / r, or alpha / sqrt(r) with rsLoRA; alpha may vary per module."""
    alpha = float(config.get("lora_alpha", 8))
    pattern = _match_pattern(config.get("alpha_pattern") or {}, module)
    if pattern is not None:
        alpha = float(config["alpha_pattern"][pattern])
    if rank == 0:
        return 0.0
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _match_pattern(patterns: Mapping[str, Any], module: str) -> str | None:
    # PEFT's rule: a pattern matches when it matches a dotted suffix of the module name.
    for pattern in patterns:
        try:
            if re.match(rf"(.*\.)?({pattern})$", module):
                return pattern
        except re.error:
            raise AdapterLoadError(f"alpha_pattern key {pattern!r} is not a valid regular expression") from None
    return None
