"""Loading a CLIP checkpoint and running its two towers.

Text goes through the ``BatchWorker`` like an embedding model's (``ClipModel`` has the fields
``EmbeddingServing`` reads), so ``/v1/embeddings`` on a CLIP engine answers exactly as on an
embedding engine. Images run one request at a time on the image thread (``executor``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import nn
from transformers import AutoModel, PreTrainedTokenizerBase

from enginehouse.runtime.embedding.recipe import EmbeddingRecipe
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.single import loading
from enginehouse.runtime.single.loading import ModelLoadError
from enginehouse.runtime.tokenizing import TokenizerThreads
from enginehouse.runtime.vision.processors import checkpoint_labels, load_image_processor

log = logging.getLogger(__name__)

# CLIP's text embedding is the projected state at the end token, not a pooling over tokens, and
# is not normalised (as ``get_text_features`` returns it); the recipe only tells EmbeddingServing so.
_CLIP_RECIPE = EmbeddingRecipe(modes=("lasttoken",), normalize=False)


@dataclass(frozen=True)
class BaseTraits:
    """What a fine-tune is checked against or inherits from its base model."""

    tokenizer: PreTrainedTokenizerBase
    image_processor: Any


@dataclass
class ClipModel:
    model: nn.Module  # a transformers CLIPModel
    tokenizer: PreTrainedTokenizerBase
    image_processor: Any
    device: torch.device
    max_length: int
    dimensions: int
    vocab_size: int
    labels: list[str]  # the checkpoint's own (id2label); [] when it has none
    tokenizers: TokenizerThreads[PreTrainedTokenizerBase]
    recipe: EmbeddingRecipe = field(default=_CLIP_RECIPE)

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)  # type: ignore[arg-type]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Projected text embeddings of right-padded rows (the ``BatchWorker`` contract)."""
        return list(self.text_embeddings(input_ids, attention_mask).float().cpu().unbind(0))

    def text_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.model.text_projection(pooled)

    def pixels(self, image: Image.Image) -> torch.Tensor:
        pixel_values = self.image_processor(images=image, return_tensors="pt")["pixel_values"]
        return pixel_values.to(self.device, dtype=self.model.dtype)

    def image_embedding(self, image: Image.Image, *, patch_wise: bool) -> torch.Tensor:
        """(dimensions,) pooled and projected; or (patches, hidden_size): the vision encoder's last
        hidden states without the class token."""
        output = self.model.vision_model(pixel_values=self.pixels(image))
        if patch_wise:
            return output.last_hidden_state[0, 1:].float().cpu()
        return self.model.visual_projection(output.pooler_output)[0].float().cpu()

    def zero_shot(self, image: Image.Image, labels: list[str]) -> tuple[list[float], int]:
        """Softmax over ``labels`` of the image-text similarities (CLIP's ``logits_per_image``),
        and the number of label tokens."""
        encoded = self.tokenizer(labels, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        output = self.model(input_ids=encoded["input_ids"].to(self.device),
                            attention_mask=encoded["attention_mask"].to(self.device),
                            pixel_values=self.pixels(image))
        scores = output.logits_per_image[0].float().softmax(-1).cpu().tolist()
        return scores, int(encoded["attention_mask"].sum())

    def describe(self) -> dict[str, Any]:
        return {"max_model_len": self.max_length, "dimensions": self.dimensions, "labels": self.labels}

    def traits(self) -> BaseTraits:
        return BaseTraits(self.tokenizer, self.image_processor)


def open_clip_model(source: str, options: RuntimeOptions, *, task: str, base: BaseTraits | None = None) -> ClipModel:
    """Load ``source`` as a CLIP model; ``base`` is the engine's base model when ``source`` is a
    fine-tune of it (saved without tokenizer or image processor, it uses the base's).

    Raises ``ModelLoadError``.
    """
    loading.check_source(source, fine_tune=base is not None, task=task)
    config = loading.load_config(source)
    if config.model_type != "clip":
        raise ModelLoadError(
            f"{source} is a {config.model_type} model; {task} engines serve CLIP checkpoints "
            "(model_type 'clip', saved as CLIPModel with both the text and the vision tower)")
    tokenizer = loading.load_tokenizer(source, fallback=base.tokenizer if base is not None else None)
    image_processor = load_image_processor(source, fallback=base.image_processor if base is not None else None)
    model, device = loading.load_weights(AutoModel, source, options.dtype, task=task)
    loaded = ClipModel(
        model=model,
        tokenizer=tokenizer,
        image_processor=image_processor,
        device=device,
        max_length=loading.resolve_max_length(options.max_model_len, tokenizer, config.text_config,
                                              _text_positions(tokenizer, config.text_config)),
        dimensions=int(config.projection_dim),
        vocab_size=int(model.text_model.embeddings.token_embedding.num_embeddings),
        labels=checkpoint_labels(config),
        tokenizers=TokenizerThreads(tokenizer),
    )
    log.info("loaded CLIP model %s on %s (%d dimensions, %d labels)", source, device, loaded.dimensions,
             len(loaded.labels))
    return loaded


def _text_positions(tokenizer: PreTrainedTokenizerBase, text_config: Any) -> int:
    """The longest text the text tower takes: its position table, or the tokenizer's limit when
    lower (a tokenizer saved for a longer model would otherwise let inputs overrun the table)."""
    positions = int(text_config.max_position_embeddings)
    declared = int(tokenizer.model_max_length or 0)
    return min(positions, declared) if 0 < declared < 1_000_000 else positions
