"""What a checkpoint directory must hold for each task type, checked when it is registered."""

from __future__ import annotations

import json
from pathlib import Path

from enginehouse.core.task_types import TaskType


def resolve_local_path(text: str) -> Path:
    """``text`` as an absolute path on this machine (``~`` expanded); ``ValueError`` with a
    sentence for the user when it cannot be one (``~user`` of an unknown user, a NUL byte)."""
    try:
        return Path(text).expanduser().resolve()
    except RuntimeError as exc:  # "Could not determine home directory"
        raise ValueError(f"path {text!r} cannot be resolved: {exc}") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"path {text!r} is not a usable path on this machine: {exc}") from None


def checkpoint_problem(task_type: TaskType, path: Path) -> str | None:
    """A sentence saying what is wrong with ``path`` as a checkpoint, or None when it looks right.

    Registration checks only what is cheap and certain (files, adapter type); whether the weights
    fit the engine's base model is found out when a replica loads them.
    """
    try:
        return _files_problem(task_type, path)
    except OSError as exc:  # a name too long, no permission, ...
        return f"{path} cannot be read: {exc.strerror or exc}"


def _files_problem(task_type: TaskType, path: Path) -> str | None:
    if not path.is_dir():
        return f"directory {path} does not exist"
    if task_type.serves_lora:
        return _lora_adapter_problem(path)
    if not (path / "config.json").is_file():
        return f"{path} has no config.json (expected a full model directory from save_pretrained)"
    return None


def _lora_adapter_problem(path: Path) -> str | None:
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        return f"{path} has no adapter_config.json (expected a PEFT LoRA adapter directory)"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        return f"{config_path} is not valid JSON: {exc}"
    if not isinstance(config, dict):
        return f"{config_path} is not a JSON object"
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        return f"adapter type is {peft_type or 'missing'}, only LoRA adapters are served"
    if not any((path / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        return f"{path} has no adapter_model.safetensors"
    return None


def checkpoint_metadata(task_type: TaskType, path: Path) -> dict[str, object]:
    """What a deployment shows of its checkpoint: for classification its labels (``id2label`` of
    the ``config.json`` beside the adapter, or of the model), for regression the one ``score``."""
    if task_type is TaskType.REGRESSION:
        return {"labels": ["score"]}
    if task_type not in (TaskType.CLASSIFICATION, TaskType.VLM_CLASSIFICATION, TaskType.NER,
                         TaskType.CLIP_CLASSIFICATION, TaskType.IMAGE_DETECTION):
        return {}
    try:
        config = json.loads((path / "config.json").read_text())
        id2label = config.get("id2label") or {}
        labels = [id2label[key] for key in sorted(id2label, key=lambda k: int(k))]
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}
    return {"labels": labels} if labels else {}
