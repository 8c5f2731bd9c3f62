"""Loading what turns an image into pixel tensors, and the labels a checkpoint carries."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from transformers import AutoImageProcessor, PretrainedConfig

from enginehouse.runtime.single.loading import ModelLoadError, short

# transformers fills id2label with LABEL_0, LABEL_1, ... when a config names no labels.
_PLACEHOLDER_LABEL = re.compile(r"LABEL_\d+")


def load_image_processor(source: str, *, fallback: Any | None = None) -> Any:
    """The image processor saved with the model. A fine-tune saved without one (weights only)
    uses ``fallback``, its base model's."""
    if fallback is not None and not (Path(source) / "preprocessor_config.json").is_file():
        return fallback
    try:
        return AutoImageProcessor.from_pretrained(source)
    except Exception as exc:
        raise ModelLoadError(
            f"could not load the image processor of {source}: {short(exc)}; save the model's image "
            "processor with it (preprocessor_config.json)") from None


def checkpoint_labels(config: PretrainedConfig) -> list[str]:
    """The labels of ``config.id2label`` in id order; [] when it names none of its own."""
    id2label = getattr(config, "id2label", None) or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if all(_PLACEHOLDER_LABEL.fullmatch(label) for label in labels):
        return []
    return labels
