"""The image task types: ``clip-embedding``, ``clip-classification`` and ``image-detection``."""
