"""The training supervisor: starts queued fine-tuning jobs through the provider and records what
their workers report, in a thread of its own.

Each pass, with the provider's view of every job it has (``ProviderTraining``):

- a Running or Testing job takes its worker's progress, and each checkpoint the worker finished;
  once the worker has ended, its outcome (Success, or Failed with the worker's reason, or the
  exit code when it gave none) and the provider forgets it;
- a job that is no longer active (cancelled, deleted) but whose worker the provider still has:
  the worker is stopped, the checkpoints it finished before are kept, and the provider forgets it;
- Pending jobs start, oldest first, while fewer than ``max_running`` run.

A job the server thinks runs but the provider has never heard of (its worker lost with a crashed
server) is Failed with that reason; one whose worker outlived a crashed server is followed on.
A clean shutdown stops the workers and fails their jobs, saying why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from enginehouse.core.ids import utcnow
from enginehouse.db.models import CheckpointModel, DatasetModel, ExperimentModel, TrainingJobModel
from enginehouse.db.session import Database
from enginehouse.providers.base import LaunchError, ProviderTraining, ReplicaProvider, TrainingLaunch
from enginehouse.services.datasets import ACTIVE_JOB_STATES
from enginehouse.services.experiments import best_checkpoint, version_job

log = logging.getLogger(__name__)

# Seconds between passes while some job is active, and while none is (a new job pokes it).
ACTIVE_INTERVAL_S = 1.0
IDLE_INTERVAL_S = 5.0
_LOGS_HINT = "see GET /v1/training-jobs/{id}/logs"


class TrainingSupervisor:
    def __init__(self, database: Database, provider: ReplicaProvider, max_running: int = 1) -> None:
        self.database = database
        self.provider = provider
        self.max_running = max_running
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="training-supervisor", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Run a pass now (a job was created or cancelled). Jobs created through another server
        are found anyway: every pass reads the jobs table, at least every ``IDLE_INTERVAL_S``."""
        self._wake.set()

    def stop(self, stop_workers: bool = True) -> None:
        """Stop the loop, then (``stop_workers``) every worker, failing their jobs with the
        reason. Without it the workers run on, for the server that takes over to follow."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if not stop_workers:
            return
        try:
            self._stop_workers()
        except Exception:
            log.exception("stopping the training workers failed")

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                active = self.step()
            except Exception:
                log.exception("training supervisor pass failed")
                active = True
            self._wake.wait(ACTIVE_INTERVAL_S if active else IDLE_INTERVAL_S)
            self._wake.clear()

    def step(self) -> bool:
        """One pass; True while some job is active (the next pass comes sooner)."""
        trainings = {t.job_id: t for t in self.provider.list_trainings()}
        with self.database.session(announce=False) as session:
            jobs = list(session.scalars(
                select(TrainingJobModel).where(TrainingJobModel.status.in_(ACTIVE_JOB_STATES))
                .order_by(TrainingJobModel.created_at, TrainingJobModel.id)
            ))
            for job in jobs:
                if job.status != "Pending":
                    self._follow(job, trainings.get(job.id))
            self._start_pending(session, jobs)
        active_ids = {job.id for job in jobs}
        for job_id in set(trainings) - active_ids:
            self._end_inactive(job_id)
        return bool(jobs)

    # -- a job that runs ------------------------------------------------------------------------

    def _follow(self, job: TrainingJobModel, training: ProviderTraining | None) -> None:
        if training is None:
            _finish(job, "Failed", "the training process was lost (the server stopped while it ran and no "
                                   "trace of the process was left); checkpoints written before stay usable")
            return
        _record_checkpoints(job, training.checkpoints)
        if training.baseline is not None and job.baseline_results is None:
            results = training.baseline.get("test_results")
            job.baseline_results = results if isinstance(results, dict) else None
        if training.progress is not None:
            _record_progress(job, training.progress)
        if training.running:
            return
        outcome = training.outcome or {}
        status = outcome.get("status")
        if status == "Success":
            job.progress = 100.0
            _finish(job, "Success", f"trained {len(job.checkpoints)} checkpoint(s)")
        elif status == "Cancelled":
            _finish(job, "Cancelled", "the training process was stopped")
        else:
            reason = outcome.get("reason") or f"{training.exit.reason if training.exit else 'it ended'}; {_LOGS_HINT}"
            _finish(job, "Failed", str(reason))
        self.provider.release_training(job.id)
        log.info("training job %s: %s", job.id, job.status)

    def _end_inactive(self, job_id: str) -> None:
        """A worker whose job is no longer active: stop it, keep what it finished, forget it."""
        self.provider.stop_training(job_id)
        final = next((t for t in self.provider.list_trainings() if t.job_id == job_id), None)
        with self.database.session(announce=False) as session:
            job = session.get(TrainingJobModel, job_id)
            if job is not None and final is not None:
                _record_checkpoints(job, final.checkpoints)
        self.provider.release_training(job_id)

    # -- queued jobs ----------------------------------------------------------------------------

    def _start_pending(self, session: Session, jobs: list[TrainingJobModel]) -> None:
        running = sum(1 for job in jobs if job.status in ("Running", "Testing"))
        for job in jobs:
            if running >= self.max_running:
                break
            if job.status != "Pending":
                continue
            try:
                self.provider.launch_training(_launch_of(session, job))
            except LaunchError as exc:
                _finish(job, "Failed", f"the training process could not start: {exc.reason}")
                continue
            job.status = "Running"
            job.status_reason = "training"
            job.started_at = utcnow()
            running += 1
            # Committed at once: a job whose worker runs must be seen Running even if a later
            # launch in this pass fails the transaction.
            session.commit()

    def _stop_workers(self) -> None:
        trainings = [t for t in self.provider.list_trainings() if t.running]
        for training in trainings:
            self.provider.stop_training(training.job_id)
        final = {t.job_id: t for t in self.provider.list_trainings()}
        with self.database.session(announce=False) as session:
            for training in trainings:
                job = session.get(TrainingJobModel, training.job_id)
                if job is None:
                    continue
                _record_checkpoints(job, final.get(job.id, training).checkpoints)
                if job.status in ACTIVE_JOB_STATES:
                    _finish(job, "Failed", "the server stopped while it ran; checkpoints written before stay "
                                           "usable, and a new job can train again")
        for training in trainings:
            self.provider.release_training(training.job_id)


def _launch_of(session: Session, job: TrainingJobModel) -> TrainingLaunch:
    def path_of(dataset_id: str | None) -> str | None:
        dataset = session.get(DatasetModel, dataset_id) if dataset_id else None
        return dataset.path if dataset else None

    launch = TrainingLaunch(
        job_id=job.id, task_type=job.task_type, base_model=job.base_model, train_path=path_of(job.train_dataset_id),
        test_path=path_of(job.test_dataset_id), train_test_split_ratio=job.train_test_split_ratio,
        parameters=dict(job.parameters or {}),
    )
    if job.experiment_id is not None:
        launch = _experiment_launch(session, job, launch)
    if launch.train_path is None and launch.zero_shot is None:
        raise LaunchError("its training dataset is gone", permanent=True)
    return launch


def _experiment_launch(session: Session, job: TrainingJobModel, launch: TrainingLaunch) -> TrainingLaunch:
    """Version 1 of an experiment is built from its class descriptions; a later one starts from
    version 1's head and is tested beside it."""
    experiment = session.get(ExperimentModel, job.experiment_id)
    if experiment is None:
        raise LaunchError("its experiment is gone", permanent=True)
    if job.experiment_version == 1:
        return replace(launch, zero_shot={"mode": experiment.mode, "classes": experiment.classes})
    first = version_job(session, experiment.id, 1)
    start = best_checkpoint(first) if first is not None else None
    if start is None:
        raise LaunchError("version 1 of its experiment has no checkpoint to start from", permanent=True)
    return replace(launch, init_checkpoint=start.path, baseline_checkpoint=start.path)


def _record_progress(job: TrainingJobModel, progress: dict[str, Any]) -> None:
    if progress.get("status") in ("Running", "Testing"):
        job.status = progress["status"]
        job.status_reason = "training" if job.status == "Running" else "testing a checkpoint"
    step, total = progress.get("step"), progress.get("total_steps")
    if isinstance(step, int) and isinstance(total, int) and total > 0:
        job.progress = min(100.0, 100.0 * step / total)
    detail = {key: progress.get(key) for key in ("step", "total_steps", "epoch", "loss")}
    if detail != job.progress_detail:
        job.progress_detail = detail


def _record_checkpoints(job: TrainingJobModel, reported: Iterable[dict[str, Any]]) -> None:
    known = {checkpoint.checkpoint for checkpoint in job.checkpoints}
    for entry in reported:
        number = entry.get("checkpoint")
        if not isinstance(number, int) or number in known or not isinstance(entry.get("path"), str):
            continue
        results = entry.get("test_results")
        job.checkpoints.append(CheckpointModel(checkpoint=number, path=entry["path"],
                                               test_results=results if isinstance(results, dict) else None))
        known.add(number)


def _finish(job: TrainingJobModel, status: str, reason: str) -> None:
    job.status = status
    job.status_reason = reason.replace("{id}", job.id)
    job.finished_at = utcnow()
