"""Multi-adapter LoRA shared by the LoRA task types: reading PEFT adapters, the adapter registry
with its host-memory tier, serving slots, and the batched LoRA layers."""
