"""The files a fine-tuning worker leaves in its output directory, and their reader.

The server learns everything about a running job from these files (it never talks to the
worker), so each is written so that a reader at any moment sees a whole value:

- ``progress.json``: the latest ``{status, step, total_steps, epoch, loss}``, replaced atomically;
- ``checkpoint-<epoch>/``: renamed into place only once complete;
- ``checkpoints.jsonl``: one line per checkpoint, appended after its directory exists; a trained
  epoch's line also says how long its training steps took and over how many rows
  (``train_seconds``, ``train_samples``);
- ``baseline.json``: ``{"test_results": {...}}`` of the checkpoint a training is compared with,
  scored on the same test split before training starts (only when the job names one);
- ``outcome.json``: ``{"status": "Success" | "Failed" | "Cancelled", "reason"?}``, written last.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PROGRESS_FILE = "progress.json"
CHECKPOINTS_FILE = "checkpoints.jsonl"
OUTCOME_FILE = "outcome.json"
BASELINE_FILE = "baseline.json"

ProgressStatus = Literal["Running", "Testing"]
OutcomeStatus = Literal["Success", "Failed", "Cancelled"]


@dataclass(frozen=True)
class TrainingReport:
    progress: dict[str, Any] | None = None
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    outcome: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None  # {"test_results": {...}}


@dataclass(frozen=True)
class EpochTraining:
    """The wall time of one epoch's training steps (batching, forward, backward, optimizer, the
    progress file) and the rows they trained on. Scoring the test split and writing the checkpoint
    are left out, as are loading and tokenising before: this is the training's own throughput,
    which a benchmark compares with another training loop's."""

    seconds: float
    samples: int


def checkpoint_dir(output_dir: Path, epoch: int) -> Path:
    return output_dir / f"checkpoint-{epoch}"


def partial_checkpoint_dir(output_dir: Path, epoch: int) -> Path:
    """Where a checkpoint is written before it is renamed to ``checkpoint_dir``; hidden, so a
    listing of the output directory never shows a half-written checkpoint."""
    return output_dir / f".checkpoint-{epoch}.partial"


def write_progress(
    output_dir: Path, *, status: ProgressStatus, step: int, total_steps: int, epoch: float, loss: float | None
) -> None:
    progress = {"status": status, "step": step, "total_steps": total_steps, "epoch": round(epoch, 4),
                "loss": None if loss is None else round(loss, 6)}
    _replace_json(output_dir / PROGRESS_FILE, progress)


def append_checkpoint(output_dir: Path, epoch: int, path: Path, test_results: dict[str, float],
                      training: EpochTraining | None = None) -> None:
    record: dict[str, Any] = {"checkpoint": epoch, "path": str(path), "test_results": test_results}
    if training is not None:  # a zero-shot checkpoint trains nothing
        record.update(train_seconds=round(training.seconds, 4), train_samples=training.samples)
    # One write of one whole line on an O_APPEND descriptor: a reader sees the line entirely or
    # (if it reads mid-write) a partial last line, which ``read_report`` skips.
    line = (json.dumps(record) + "\n").encode("utf-8")
    descriptor = os.open(output_dir / CHECKPOINTS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(descriptor, line)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_baseline(output_dir: Path, test_results: dict[str, float]) -> None:
    _replace_json(output_dir / BASELINE_FILE, {"test_results": test_results})


def write_outcome(output_dir: Path, status: OutcomeStatus, reason: str | None = None) -> None:
    outcome: dict[str, Any] = {"status": status}
    if reason is not None:
        outcome["reason"] = reason
    _replace_json(output_dir / OUTCOME_FILE, outcome, durable=True)


def output_dir_of(config_path: Path) -> Path | None:
    """The existing output directory a worker's config file names, read without checking the
    rest of the file, so that a worker can report even a config it cannot run (or a cancel
    that came before it could read one); None when there is no usable one."""
    try:
        value = json.loads(config_path.read_text(encoding="utf-8")).get("output_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(value) if isinstance(value, str) and value and Path(value).is_dir() else None


def read_report(output_dir: Path) -> TrainingReport:
    """What the worker has reported so far; files not written yet read as None or []."""
    return TrainingReport(
        progress=_read_object(output_dir / PROGRESS_FILE),
        checkpoints=_read_checkpoints(output_dir / CHECKPOINTS_FILE),
        outcome=_read_object(output_dir / OUTCOME_FILE),
        baseline=_read_object(output_dir / BASELINE_FILE),
    )


def _replace_json(path: Path, value: dict[str, Any], *, durable: bool = False) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(value, handle)
        if durable:  # the outcome must survive a machine crash right after the worker exits
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temporary, path)


def _read_object(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _read_checkpoints(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line still being written
        if isinstance(record, dict):
            records.append(record)
    return records
