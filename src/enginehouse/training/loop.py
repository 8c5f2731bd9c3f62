"""The training loop: AdamW with a linear decay, one checkpoint per epoch, scored on the test split.

A plain loop rather than a framework's trainer: it is all a LoRA fine-tune needs, and it lets a
cancel stop it between any two steps and the progress file say exactly where it is.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from peft import PeftModel

from enginehouse.training import report
from enginehouse.training.batching import Encoded, training_batches
from enginehouse.training.cancel import Cancellation
from enginehouse.training.data import Example
from enginehouse.training.errors import TrainingError
from enginehouse.training.parameters import TrainingParameters

log = logging.getLogger(__name__)

# The progress file is rewritten at most this often (and at every phase change).
_PROGRESS_EVERY_S = 1.0
# A loss line is logged at least this often, however slow the steps.
_LOG_EVERY_S = 30.0
_MAX_GRAD_NORM = 1.0  # as Hugging Face's Trainer clips by default


class Task(Protocol):
    """What training needs of a task type (``textgen``, ``sequence_classification``)."""

    def encode(self, examples: Sequence[Example], split_name: str) -> list[Encoded]: ...

    def batch(self, rows: Sequence[Encoded], device: torch.device) -> dict[str, torch.Tensor]: ...

    def loss(self, model: PeftModel, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def evaluate(self, model: PeftModel, rows: Sequence[Encoded], batch_size: int, device: torch.device,
                 cancel: Cancellation) -> dict[str, float]: ...

    def save(self, model: PeftModel, directory: Path) -> None: ...


class Progress:
    """Where training is, written to ``progress.json`` and logged as it moves."""

    def __init__(self, output_dir: Path, total_steps: int, steps_per_epoch: int) -> None:
        self.output_dir = output_dir
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.step = 0
        self.loss: float | None = None
        self.log_every = max(1, min(50, steps_per_epoch // 5))
        self._window: list[float] = []  # the step losses since the last log line
        self._written_at = self._logged_at = time.monotonic()

    @property
    def epoch(self) -> float:
        return self.step / self.steps_per_epoch

    def advance(self, loss: float, cancel: Cancellation) -> None:
        self.step += 1
        self._window.append(loss)
        now = time.monotonic()
        if self.step % self.log_every == 0 or now - self._logged_at >= _LOG_EVERY_S:
            self.loss = sum(self._window) / len(self._window)  # smoother than one step's loss
            self._window.clear()
            self._logged_at = now
            log.info("step %d/%d (epoch %.2f): loss %.4f", self.step, self.total_steps, self.epoch, self.loss)
        elif self.loss is None:
            self.loss = loss
        if now - self._written_at >= _PROGRESS_EVERY_S:
            self.write("Running", cancel)

    def write(self, status: report.ProgressStatus, cancel: Cancellation) -> None:
        with cancel.protected():
            report.write_progress(self.output_dir, status=status, step=self.step, total_steps=self.total_steps,
                                  epoch=self.epoch, loss=self.loss)
        self._written_at = time.monotonic()


def train(model: PeftModel, task: Task, train_rows: Sequence[Encoded], test_rows: Sequence[Encoded],
          parameters: TrainingParameters, output_dir: Path, device: torch.device, cancel: Cancellation) -> None:
    """Train for ``parameters.num_train_epochs``; after each epoch score the test rows (if any)
    and leave a checkpoint with its line in ``checkpoints.jsonl``, which also holds how long the
    epoch's steps took (timed apart from the scoring and the checkpoint, which would blur it)."""
    steps_per_epoch = math.ceil(len(train_rows) / parameters.per_device_train_batch_size)
    progress = Progress(output_dir, steps_per_epoch * parameters.num_train_epochs, steps_per_epoch)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=parameters.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / progress.total_steps))
    rng = random.Random(parameters.seed)
    lengths = [len(row.input_ids) for row in train_rows]
    log.info("training %d parameter tensors (%d values) for %d steps", len(trainable),
             sum(p.numel() for p in trainable), progress.total_steps)
    progress.write("Running", cancel)
    for epoch in range(1, parameters.num_train_epochs + 1):
        model.train()
        started, samples = time.perf_counter(), 0
        for indices in training_batches(lengths, parameters.per_device_train_batch_size, rng):
            cancel.check()
            samples += len(indices)
            loss = task.loss(model, task.batch([train_rows[i] for i in indices], device))
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(f"the loss became {value} at step {progress.step + 1}; lower the learning_rate")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, _MAX_GRAD_NORM)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            progress.advance(value, cancel)
        training = report.EpochTraining(time.perf_counter() - started, samples)
        results = _test(model, task, test_rows, parameters, device, progress, cancel)
        write_checkpoint(model, task, output_dir, epoch, results, cancel, training)
        progress.write("Running", cancel)


def _test(model: PeftModel, task: Task, rows: Sequence[Encoded], parameters: TrainingParameters,
          device: torch.device, progress: Progress, cancel: Cancellation) -> dict[str, float]:
    if not rows:
        return {}
    progress.write("Testing", cancel)
    results = score(model, task, rows, parameters.per_device_eval_batch_size, device, cancel)
    log.info("epoch %d test results: %s", round(progress.epoch), ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return results


def score(model: PeftModel, task: Task, rows: Sequence[Encoded], batch_size: int, device: torch.device,
          cancel: Cancellation) -> dict[str, float]:
    """The test results of ``model`` on ``rows`` ({} without rows), as a checkpoint reports them."""
    if not rows:
        return {}
    model.eval()
    with torch.inference_mode():
        results = task.evaluate(model, rows, batch_size, device, cancel)
    return {key: round(value, 6) for key, value in results.items()}


def write_checkpoint(model: PeftModel, task: Task, output_dir: Path, epoch: int, results: dict[str, float],
                     cancel: Cancellation, training: report.EpochTraining | None = None) -> None:
    """Written aside and renamed into place, then announced: the server never sees a partial
    checkpoint, and a cancel arriving meanwhile waits until it is done (it is quick)."""
    partial = report.partial_checkpoint_dir(output_dir, epoch)
    final = report.checkpoint_dir(output_dir, epoch)
    with cancel.protected():
        shutil.rmtree(partial, ignore_errors=True)
        task.save(model, partial)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        report.append_checkpoint(output_dir, epoch, final.resolve(), results, training)
    log.info("epoch %d: checkpoint saved to %s", epoch, final)
