"""Put LoRA on a base model the way our replicas can serve it.

A replica reads plain LoRA on linear layers (``runtime.lora.peft_format``), plus, for
classification and regression, the head saved in full through ``modules_to_save``. So LoRA goes
on linear layers of the backbone only, never on the head, with no trained biases.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn

from enginehouse.training.errors import TrainingError
from enginehouse.training.parameters import TrainingParameters

# Attention projections by the names architectures give them, for a model PEFT has no default
# for: Llama and kin, BERT and kin, DistilBERT, GPT-2, Falcon/BLOOM, Phi-3, MPT.
_ATTENTION_PROJECTIONS = (
    "q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value", "q_lin", "k_lin", "v_lin",
    "out_lin", "c_attn", "query_key_value", "qkv_proj", "Wqkv",
)


def attach_lora(
    model: nn.Module, parameters: TrainingParameters, *, peft_task: str, head_modules: Sequence[str] = ()
) -> PeftModel:
    """``model`` wrapped by PEFT with fresh LoRA weights (seeded by the caller); ``head_modules``
    are trained in full and saved with the adapter."""
    targets = parameters.target_modules or _default_targets(model, head_modules)
    config = LoraConfig(
        r=parameters.lora_r,
        lora_alpha=_number(parameters.lora_alpha),
        lora_dropout=parameters.lora_dropout,
        target_modules=targets,
        # A user's module name may also occur inside the head (RoBERTa's ``classifier.dense``);
        # the head is trained in full instead, and a replica refuses LoRA on it.
        exclude_modules=_under(head_modules) if head_modules else None,
        modules_to_save=list(head_modules) or None,
        bias="none",
        task_type=peft_task,
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:  # PEFT's "Target modules {...} not found in the base model"
        raise TrainingError(f"LoRA cannot be applied with target_modules {targets}: {exc}") from None
    _check_targets(peft_model)
    return peft_model


def _number(value: float) -> Any:
    """A whole number as an int: PEFT types ``lora_alpha`` as one, and adapter_config.json then
    reads ``32`` as users wrote it rather than ``32.0``."""
    return int(value) if float(value).is_integer() else value


def _default_targets(model: nn.Module, head_modules: Sequence[str]) -> list[str] | None:
    """None when PEFT knows the architecture (it then picks its own defaults, the attention
    projections); otherwise the attention projections found by name."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        return None
    heads = _under(head_modules) if head_modules else None
    found = sorted({
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in _ATTENTION_PROJECTIONS and _is_linear(module)
        and not (heads and re.fullmatch(heads, name))
    })
    if not found:
        raise TrainingError(
            f"no attention projections found in the base model (model_type {model_type!r}) to put LoRA "
            "on; set parameters.target_modules to the names of its linear layers"
        )
    return found


def _under(modules: Sequence[str]) -> str:
    """A PEFT ``exclude_modules`` pattern (matched against whole module names) for ``modules``
    and everything inside them."""
    return rf"({'|'.join(re.escape(m) for m in modules)})(\..*)?"


def _is_linear(module: nn.Module) -> bool:
    # GPT-2 style models use transformers' Conv1D, a linear layer with its weight transposed.
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _check_targets(peft_model: PeftModel) -> None:
    """Refuse now what a replica would refuse at deploy time: LoRA on anything but a linear layer."""
    others = sorted(
        name.removeprefix("base_model.model.")
        for name, module in peft_model.named_modules()
        if isinstance(module, LoraLayer) and not _is_linear(module.get_base_layer())
    )
    if others:
        raise TrainingError(
            f"target_modules selects {', '.join(others[:5])}, which {'is' if len(others) == 1 else 'are'} "
            "not linear layers; LoRA can only be served on linear layers"
        )
