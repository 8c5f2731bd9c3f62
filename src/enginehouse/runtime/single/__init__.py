"""Shared runtime of single-model task types (embedding, NER): one model at a time per replica,
a fine-tune loaded in place of the base model (SPEC §4.3), requests batched into padded forwards."""
