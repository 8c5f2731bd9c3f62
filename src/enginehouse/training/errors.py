"""Why a fine-tuning job fails, in words for the user who started it."""

from __future__ import annotations


class TrainingError(Exception):
    """A job that cannot go on (a base model that does not load, LoRA that does not fit it); the
    message becomes the job's failure reason as it is."""
