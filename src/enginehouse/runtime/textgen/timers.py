"""Where a text-generation replica's time goes, phase by phase, for whoever asks (``GET /metrics``).

Each phase is a plain float that ``time.perf_counter()`` differences are added to: a few
microseconds a step (two clock reads per adapted layer, three per row, a few more) against
milliseconds of model work, and nothing kept current for readers (a
scrape builds its series from a snapshot). A reader subtracts two snapshots to get a window and
divides by the window's decode steps for a per-step split.

The engine thread alone writes the engine's phases; the event loop alone writes ``encode``; so no
lock is needed. On a GPU these are host times (kernels run asynchronously): there they tell where
the CPU goes, not the device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Seconds summed over the engine thread's steps, which they divide without overlap, plus the
# event loop's encoding, which runs beside them (another thread).
ENGINE_PHASES = ("forward", "lora", "sampling", "detokenize", "emit")


@dataclass
class StepTimers:
    # Engine steps that did work, and of those, the decode steps and the prefills they held.
    steps: int = 0
    decode_steps: int = 0
    prefills: int = 0
    # Rows summed over the decode steps (the mean batch is decode_rows / decode_steps).
    decode_rows: int = 0
    # Wall time of those steps; what the phases below leave of it is scheduling and KV upkeep.
    step: float = 0.0
    # The model's forward passes (prefills and decodes), without the LoRA terms inside them.
    forward: float = 0.0
    # The LoRA terms of every adapted layer (gathering the rows' matrices and the two products).
    lora: float = 0.0
    # Logits to tokens: penalties, grammar masks, sampling, log-probabilities.
    sampling: float = 0.0
    # Appending each token to its sequence: incremental detokenizing and stop checks.
    detokenize: float = 0.0
    # Handing each event to its request's event loop.
    emit: float = 0.0
    # Event loop: turning a completion stream's events into server-sent-event chunks.
    encode: float = 0.0

    def snapshot(self) -> dict[str, float]:
        return asdict(self)
