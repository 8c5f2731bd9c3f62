"""A fine-tuning job's parameters (SPEC §5.1): every field optional, each with its default.

The API validates a user's ``parameters`` with this model before a job starts, and the worker
reads them back from its config with the same model, so both agree on every default and bound.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from enginehouse.core.specs import StrictModel

# A module name as PEFT matches it: the name itself or a dotted suffix of one (``q_proj``,
# ``self_attn.q_proj``).
ModuleName = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class TrainingParameters(StrictModel):
    num_train_epochs: int = Field(default=3, ge=1, le=100, description="passes over the training data; "
                                  "each finished one becomes a checkpoint")
    learning_rate: float = Field(default=2e-4, gt=0, le=1, description="AdamW's peak learning rate, "
                                 "decayed linearly to 0")
    per_device_train_batch_size: int = Field(default=8, ge=1, le=1024)
    per_device_eval_batch_size: int = Field(default=8, ge=1, le=1024)
    lora_r: int = Field(default=16, ge=1, le=256, description="LoRA rank")
    lora_alpha: float = Field(default=32, gt=0, le=100_000, description="LoRA scaling: alpha / r")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[ModuleName] | None = Field(
        default=None, min_length=1, max_length=64,
        description="modules LoRA adapts; by default the base model's attention projections",
    )
    max_seq_length: int = Field(default=512, ge=8, le=32768, description="the longest row, in tokens")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="for the initial weights, the shuffling "
                      "and the train/test split")
    truncation: bool = Field(default=False, description="cut rows longer than max_seq_length instead of "
                             "refusing the dataset")
    pooling: Literal["model", "mean"] = Field(
        default="model", description="what a classification or regression head reads: the model's own pooled "
        "output, or the attention-masked mean of the last hidden state, L2-normalised (the sentence embedding "
        "of a sentence-transformers encoder)",
    )


# The task types whose head reads a pooled sentence vector.
_POOLING_TASK_TYPES = ("classification", "regression")


def check_parameters_for_task(task_type: str, parameters: TrainingParameters) -> str | None:
    """What in ``parameters`` a job of ``task_type`` cannot use, in words for its user; None when
    all of it fits. The parameters alone do not know the task type, so this is checked apart."""
    if parameters.pooling != "model" and task_type not in _POOLING_TASK_TYPES:
        return (f"parameters.pooling {parameters.pooling!r} applies to classification and regression only; a "
                f"{task_type} job has no head to pool for, so leave pooling at 'model'")
    return None
