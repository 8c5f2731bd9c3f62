"""The ``embedding`` task type: ``POST /v1/embeddings`` over a text encoder."""
