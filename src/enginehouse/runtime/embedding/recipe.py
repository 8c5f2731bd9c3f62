"""How a model turns token states into one embedding: what its sentence-transformers files say.

A sentence-transformers model directory lists its modules in ``modules.json``: a ``Transformer``
(the Hugging Face model, in the root or a subfolder), a ``Pooling`` (``<dir>/config.json`` with
the modes, in either the current ``{"pooling_mode": "mean" | [...]}`` form or the older
``pooling_mode_*_token(s)`` flags), optionally ``Dense`` projections and a ``Normalize``.
``sentence_bert_config.json`` may give ``max_seq_length`` and ``do_lower_case``.

Without ``modules.json`` the default recipe is mean pooling over the non-pad tokens, no
projection and no normalisation. Prompts from ``config_sentence_transformers.json`` are not
applied: a client that wants one puts it in the input text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.nn import functional as F
from transformers.utils import cached_file

from enginehouse.runtime.single.loading import ModelLoadError, short

PoolingMode = Literal["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
POOLING_MODES: tuple[PoolingMode, ...] = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# The older Pooling config: one boolean per mode; several true ones are concatenated in this order.
_LEGACY_FLAGS: dict[str, PoolingMode] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Identity": lambda x: x,
    "Tanh": torch.tanh,
    "ReLU": F.relu,
    "GELU": F.gelu,
    "Sigmoid": torch.sigmoid,
    "SiLU": F.silu,
}


@dataclass(frozen=True)
class DenseLayer:
    weight: torch.Tensor  # (out_features, in_features), float32
    bias: torch.Tensor | None
    activation: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _ACTIVATIONS[self.activation](F.linear(x, self.weight.to(x.device), _on(self.bias, x.device)))


@dataclass(frozen=True)
class EmbeddingRecipe:
    modes: tuple[PoolingMode, ...] = ("mean",)
    dense: tuple[DenseLayer, ...] = field(default=())
    normalize: bool = False
    transformer_path: str = ""  # the Hugging Face model's subfolder ("" = the directory itself)
    max_seq_length: int | None = None
    do_lower_case: bool = False
    from_config: bool = False  # False: the default recipe (no sentence-transformers files)

    def describe(self) -> dict[str, Any]:
        return {"pooling": list(self.modes), "normalize": self.normalize, "dense_layers": len(self.dense),
                "recipe": "sentence-transformers config" if self.from_config else "default (mean pooling)"}


def read_recipe(source: str) -> EmbeddingRecipe | None:
    """The recipe of a local directory or Hub id, or None when it has no ``modules.json``."""
    modules = _read_json(source, "modules.json")
    if modules is None:
        return None
    if not isinstance(modules, list):
        raise ModelLoadError(f"modules.json of {source} is not a list of modules")
    recipe: dict[str, Any] = {"modes": None, "dense": [], "normalize": False, "from_config": True}
    for module in sorted(modules, key=lambda m: int(m.get("idx", 0))):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        folder = str(module.get("path", "") or "")
        if kind == "Transformer":
            recipe["transformer_path"] = folder
            bert = _read_json(source, _join(folder, "sentence_bert_config.json")) or {}
            recipe["max_seq_length"] = bert.get("max_seq_length")
            recipe["do_lower_case"] = bool(bert.get("do_lower_case", False))
        elif kind == "Pooling":
            recipe["modes"] = _pooling_modes(_read_json(source, _join(folder, "config.json")) or {}, source)
        elif kind == "Dense":
            recipe["dense"].append(_read_dense(source, folder))
        elif kind == "Normalize":
            recipe["normalize"] = True
        else:
            raise ModelLoadError(
                f"{source} uses the sentence-transformers module {kind!r}, which this engine does not "
                "run (supported: Transformer, Pooling, Dense, Normalize)"
            )
    recipe["modes"] = recipe["modes"] or ("mean",)
    recipe["dense"] = tuple(recipe["dense"])
    return EmbeddingRecipe(**recipe)


def embed(hidden: torch.Tensor, attention_mask: torch.Tensor, recipe: EmbeddingRecipe) -> torch.Tensor:
    """Token states (rows right-padded) → one float32 embedding per row."""
    hidden = hidden.float()
    pooled = torch.cat([pool(hidden, attention_mask, mode) for mode in recipe.modes], dim=-1)
    for layer in recipe.dense:
        pooled = layer(pooled)
    return F.normalize(pooled, p=2, dim=-1) if recipe.normalize else pooled


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: PoolingMode) -> torch.Tensor:
    """One pooling mode over the non-pad positions of right-padded rows."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    if mode == "lasttoken":
        last = attention_mask.sum(dim=1).clamp(min=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if mode == "weightedmean":
        # Later tokens weigh more: position i (from 1) has weight i.
        positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)
        mask = mask * positions.view(1, -1, 1)
    total = (hidden * mask).sum(dim=1)
    count = mask.sum(dim=1).clamp(min=1e-9)
    return total / (count.sqrt() if mode == "mean_sqrt_len_tokens" else count)


def output_dimension(hidden_size: int, recipe: EmbeddingRecipe) -> int:
    if recipe.dense:
        return int(recipe.dense[-1].weight.shape[0])
    return hidden_size * len(recipe.modes)


def _pooling_modes(config: dict[str, Any], source: str) -> tuple[PoolingMode, ...]:
    raw = config.get("pooling_mode")
    if raw is None:
        modes = [mode for flag, mode in _LEGACY_FLAGS.items() if config.get(flag)]
    else:
        modes = [raw] if isinstance(raw, str) else list(raw)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise ModelLoadError(f"{source}: unknown pooling mode {unknown[0]!r} (known: {', '.join(POOLING_MODES)})")
    return tuple(modes) or ("mean",)


def _read_dense(source: str, folder: str) -> DenseLayer:
    config = _read_json(source, _join(folder, "config.json")) or {}
    activation = str(config.get("activation_function") or "Identity").rsplit(".", 1)[-1]
    if activation not in _ACTIVATIONS:
        raise ModelLoadError(f"{source}: Dense activation {activation!r} is not supported "
                             f"(supported: {', '.join(_ACTIVATIONS)})")
    state = _read_tensors(source, folder)
    if "linear.weight" not in state:
        raise ModelLoadError(f"{source}: the Dense module in {folder!r} has no linear.weight")
    bias = state.get("linear.bias")
    return DenseLayer(state["linear.weight"].float(), None if bias is None else bias.float(), activation)


def _read_tensors(source: str, folder: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    for name, reader in (("model.safetensors", load_file),
                         ("pytorch_model.bin", lambda p: torch.load(p, map_location="cpu", weights_only=True))):
        path = _locate(source, _join(folder, name))
        if path is not None:
            try:
                return dict(reader(path))
            except Exception as exc:
                raise ModelLoadError(f"could not read {path}: {short(exc)}") from None
    raise ModelLoadError(f"{source}: the Dense module in {folder!r} has no weights file")


def _read_json(source: str, filename: str) -> Any:
    path = _locate(source, filename)
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not read {path}: {short(exc)}") from None


def _locate(source: str, filename: str) -> str | None:
    """A file of a local directory or (through the Hugging Face cache) a Hub repository; None
    when it has no such file."""
    local = Path(source).expanduser()
    if local.is_dir():
        path = local / filename
        return str(path) if path.is_file() else None
    try:
        return cached_file(source, filename, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except Exception:
        return None


def _join(folder: str, name: str) -> str:
    return f"{folder.strip('/')}/{name}" if folder else name


def _on(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)
