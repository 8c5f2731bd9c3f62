"""The fine-tuning half of a provider, behind one small interface: where a job's worker runs
(``LocalTrainer``: a process of this machine; ``RayTrainer``: an actor on a cluster node) is the
trainer's business, and a provider hands the ``ReplicaProvider`` training calls to its own."""

from __future__ import annotations

from typing import Any, Protocol

from enginehouse.providers.base import ProviderTraining, TrainingLaunch


class Trainer(Protocol):
    def launch(self, launch: TrainingLaunch) -> None: ...

    def list(self) -> list[ProviderTraining]: ...

    def stop(self, job_id: str) -> None: ...

    def release(self, job_id: str) -> None: ...

    def log_tail(self, job_id: str, max_lines: int) -> list[str] | None: ...


def worker_config(launch: TrainingLaunch, output_dir: str, threads: int) -> dict[str, Any]:
    """The config file a ``python -m enginehouse.training`` worker is started with, its paths
    as the server knows them (a trainer on another machine translates them for its node)."""
    return {
        "job_id": launch.job_id, "task_type": launch.task_type, "base_model": launch.base_model,
        "train_path": launch.train_path, "test_path": launch.test_path,
        "train_test_split_ratio": launch.train_test_split_ratio, "parameters": launch.parameters,
        "output_dir": output_dir, "threads": threads, "zero_shot": launch.zero_shot,
        "init_checkpoint": launch.init_checkpoint, "baseline_checkpoint": launch.baseline_checkpoint,
    }


class DelegatesTraining:
    """A provider whose fine-tuning jobs are its ``self.trainer``'s."""

    trainer: Trainer

    def launch_training(self, launch: TrainingLaunch) -> None:
        self.trainer.launch(launch)

    def list_trainings(self) -> list[ProviderTraining]:
        return self.trainer.list()

    def stop_training(self, job_id: str) -> None:
        self.trainer.stop(job_id)

    def release_training(self, job_id: str) -> None:
        self.trainer.release(job_id)

    def training_log(self, job_id: str, max_lines: int) -> list[str] | None:
        return self.trainer.log_tail(job_id, max_lines)
