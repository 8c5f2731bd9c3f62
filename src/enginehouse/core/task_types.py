"""Task types (SPEC §3): how fine-tunes are served and which endpoints fit each."""

from __future__ import annotations

from enum import Enum


class TaskType(str, Enum):
    TEXT_GENERATION = "text-generation"
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    EMBEDDING = "embedding"
    NER = "ner"
    CLIP_EMBEDDING = "clip-embedding"
    CLIP_CLASSIFICATION = "clip-classification"
    IMAGE_DETECTION = "image-detection"
    VLM_GENERATION = "vlm-generation"
    VLM_CLASSIFICATION = "vlm-classification"

    @property
    def serves_lora(self) -> bool:
        """LoRA task types host many adapters over one base model; the others one model at a time."""
        return self in _LORA_TASK_TYPES


_LORA_TASK_TYPES = {TaskType.TEXT_GENERATION, TaskType.CLASSIFICATION, TaskType.REGRESSION}

# The inference endpoints (paths under /v1) that fit each task type.
ENDPOINTS: dict[TaskType, tuple[str, ...]] = {
    TaskType.TEXT_GENERATION: ("/v1/chat/completions", "/v1/completions"),
    TaskType.CLASSIFICATION: ("/v1/classification",),
    TaskType.REGRESSION: ("/v1/classification",),
    TaskType.EMBEDDING: ("/v1/embeddings",),
    TaskType.NER: ("/v1/ner",),
    TaskType.CLIP_EMBEDDING: ("/v1/embeddings", "/v1/image-embeddings"),
    TaskType.CLIP_CLASSIFICATION: ("/v1/image-classification",),
    TaskType.IMAGE_DETECTION: ("/v1/detections",),
    TaskType.VLM_GENERATION: ("/v1/chat/completions",),
    TaskType.VLM_CLASSIFICATION: ("/v1/classification",),
}

# Task types this installation can serve today; engines of the others are refused with a 422
# that says so rather than accepted and left to fail.
# (One entry a line: each task type joins here when its replica runner lands.)
SERVABLE_TASK_TYPES: frozenset[TaskType] = frozenset(
    {
        TaskType.TEXT_GENERATION,
        TaskType.CLASSIFICATION,
        TaskType.REGRESSION,
        TaskType.EMBEDDING,
        TaskType.NER,
        TaskType.CLIP_EMBEDDING,
        TaskType.CLIP_CLASSIFICATION,
        TaskType.IMAGE_DETECTION,
        TaskType.VLM_GENERATION,
        TaskType.VLM_CLASSIFICATION,
    }
)
