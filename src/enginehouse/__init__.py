"""enginehouse: self-hosted serving of fine-tuned models."""

__version__ = "0.1.0"
