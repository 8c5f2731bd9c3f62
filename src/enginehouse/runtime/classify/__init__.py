"""The classification and regression runtime: one shared backbone with per-row LoRA slots, a
classification head and label set per deployment, and a request batcher (``/v1/classification``)."""
