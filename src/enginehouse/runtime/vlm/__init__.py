"""Vision-language task types: ``vlm-generation`` (chat with images) and ``vlm-classification``."""
