"""The text-generation task type: causal LMs with many LoRA adapters and continuous batching."""
