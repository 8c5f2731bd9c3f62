"""Loading a text-embedding model (``AutoModel`` + its recipe) and running one padded batch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedTokenizerBase

from enginehouse.runtime.embedding.recipe import EmbeddingRecipe, embed, output_dimension, read_recipe
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.single import loading
from enginehouse.runtime.single.loading import ModelLoadError
from enginehouse.runtime.tokenizing import TokenizerThreads

log = logging.getLogger(__name__)

# Checkpoints trained for another task: AutoModel would load their encoder and drop the head,
# serving embeddings nobody trained for. (Masked- and causal-LM checkpoints are fine: many
# embedding models are saved that way.)
_FOREIGN_HEADS = ("ForTokenClassification", "ForSequenceClassification", "ForQuestionAnswering",
                  "ForMultipleChoice")
# Weights AutoModel may build that embeddings never use (BERT's pooler on top of [CLS]).
_UNUSED_WEIGHTS = ("pooler.",)


@dataclass(frozen=True)
class BaseTraits:
    """What a fine-tune is checked against or inherits from its base model, kept without the
    base model's weights (which leave memory while a fine-tune is served)."""

    model_type: str
    tokenizer: PreTrainedTokenizerBase
    recipe: EmbeddingRecipe


@dataclass
class EmbeddingModel:
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    recipe: EmbeddingRecipe
    device: torch.device
    max_length: int
    dimensions: int
    model_type: str
    vocab_size: int
    tokenizers: TokenizerThreads[PreTrainedTokenizerBase]

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)  # type: ignore[arg-type]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        output = self.model(input_ids=input_ids, attention_mask=attention_mask)
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        return list(embed(hidden, attention_mask, self.recipe).cpu().unbind(0))

    def describe(self) -> dict[str, Any]:
        return {"max_model_len": self.max_length, "dimensions": self.dimensions, **self.recipe.describe()}

    def traits(self) -> BaseTraits:
        return BaseTraits(self.model_type, self.tokenizer, self.recipe)


def open_embedding_model(
    source: str, options: RuntimeOptions, *, base: BaseTraits | None = None
) -> EmbeddingModel:
    """Load ``source`` as an embedding model; ``base`` is the engine's base model when ``source``
    is a fine-tune of it (checked against it; without recipe files of its own the fine-tune keeps
    the base model's pooling and normalisation, and without a tokenizer the base's tokenizer).

    Raises ``ModelLoadError``.
    """
    loading.check_source(source, fine_tune=base is not None, task="embedding")
    recipe = read_recipe(source)
    if recipe is None:
        recipe = base.recipe if base is not None else EmbeddingRecipe()
    model_dir = f"{source.rstrip('/')}/{recipe.transformer_path}" if recipe.transformer_path else source
    config = loading.load_config(model_dir)
    foreign = [a for a in loading.architectures(config) if a.endswith(_FOREIGN_HEADS)]
    if foreign:
        raise ModelLoadError(
            f"{source} is a {foreign[0]} checkpoint (a model trained for another task); an embedding "
            "engine needs an encoder saved for embeddings (e.g. AutoModel or sentence-transformers)"
        )
    loading.check_model_type(config, base.model_type if base is not None else None, source)
    tokenizer = loading.load_tokenizer(model_dir, fallback=base.tokenizer if base is not None else None)
    model, device = loading.load_weights(AutoModel, model_dir, options.dtype, task="embedding",
                                         optional=_UNUSED_WEIGHTS, pack_linear=True)
    hidden_size = int(getattr(config.get_text_config(), "hidden_size", 0) or 0)
    loaded = EmbeddingModel(
        model=model,
        tokenizer=tokenizer,
        recipe=recipe,
        device=device,
        max_length=loading.resolve_max_length(options.max_model_len, tokenizer, config, recipe.max_seq_length),
        dimensions=output_dimension(hidden_size, recipe),
        model_type=str(config.model_type),
        vocab_size=int(model.get_input_embeddings().num_embeddings),
        tokenizers=TokenizerThreads(tokenizer),
    )
    log.info("loaded embedding model %s on %s (%d dimensions, pooling %s%s)", source, device, loaded.dimensions,
             "+".join(recipe.modes), ", normalised" if recipe.normalize else "")
    return loaded
