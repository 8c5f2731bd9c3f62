"""The ``ner`` task type: ``POST /v1/ner`` over a token-classification model."""
