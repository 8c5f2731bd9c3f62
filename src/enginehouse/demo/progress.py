"""The demo's progress lines on the console: a training job's status, percentage and epoch, said
again only when something a reader would notice has changed (a new tenth, a new epoch, a new
status), so a one-second poll does not flood the log."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# How coarse the percentage a line repeats is: a line at each tenth of the way.
STEP_PERCENT = 10
# A job's statuses while its worker runs (it tests a checkpoint after each epoch).
ACTIVE = ("Running", "Testing")


def progress_line(what: str, status: str, progress: float, detail: dict[str, Any] | None,
                  epochs: int | None) -> str:
    """``fine-tuning support-tickets 45% (epoch 2/4)``; the status instead of a percentage while
    the job waits or after it ended."""
    if status == "Pending":
        return f"{what}: waiting for a training slot"
    if status not in ACTIVE:
        return f"{what}: {status}"
    if not epochs:  # a build without epochs (a zero-shot version): nothing to count
        return f"{what}: running"
    epoch = _current_epoch(detail, epochs)
    if epoch is None and progress == 0:
        return f"{what}: starting (loading the model)"
    line = f"{what} {int(progress)}%"
    if epoch is not None:
        line += f" (epoch {epoch}/{epochs}{', testing' if status == 'Testing' else ''})"
    elif status == "Testing":
        line += " (testing)"
    return line


def _current_epoch(detail: dict[str, Any] | None, epochs: int | None) -> int | None:
    """The epoch under way: the worker reports how many epochs are done as a fraction (1.35 is
    the second epoch a third through)."""
    done = (detail or {}).get("epoch")
    if not isinstance(done, (int, float)) or not math.isfinite(done):
        return None
    current = max(1, math.ceil(done))
    return min(current, epochs) if epochs else current


@dataclass
class ProgressReporter:
    """Remembers what it last said about one job; ``observe`` answers the next line to print, or
    None when it would repeat itself."""

    what: str
    epochs: int | None = None
    _said: tuple[str, int, int | None] | None = field(default=None, init=False)

    def observe(self, status: str, progress: float, detail: dict[str, Any] | None) -> str | None:
        # Running and Testing alternate at each epoch's end: one phase, not a line each time.
        phase = "active" if status in ACTIVE else status
        if not self.epochs:
            key: tuple[str, int, int | None] = (phase, 0, None)
        else:
            key = (phase, int(progress) // STEP_PERCENT, _current_epoch(detail, self.epochs))
        if key == self._said:
            return None
        self._said = key
        return progress_line(self.what, status, progress, detail, self.epochs)
