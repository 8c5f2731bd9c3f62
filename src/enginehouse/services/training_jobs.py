"""Training jobs: fine-tunes of a base model on uploaded datasets, run by the training
supervisor (``reconciler/training.py``) through the provider, and registrations of checkpoints
that already exist on disk.

A fine-tune's datasets are checked here, before the job is accepted: every row must fit the task
type (a 400 names the first line that does not), a test split's labels must all appear in
training. What needs the model's tokenizer (a row longer than ``max_seq_length``) is checked by
the worker before it trains, and fails the job naming the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pathlib import Path

from pydantic import Field, model_validator
from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from enginehouse.core.ids import new_id, utcnow
from enginehouse.core.specs import Epoch, LocalPath, LooseEnum, ModelSource, Name, StrictModel
from enginehouse.core.task_types import TaskType
from enginehouse.db.models import CheckpointModel, TrainingJobModel
from enginehouse.errors import BadRequestError, ConflictError, NotFoundError, ValidationFailedError
from enginehouse.services.checkpoints import checkpoint_problem, resolve_local_path
from enginehouse.services.datasets import get_dataset
from enginehouse.training.data import DatasetError, check_test_labels, read_examples, split_examples
from enginehouse.training.parameters import TrainingParameters, check_parameters_for_task
from enginehouse.services.pages import Page, PageRequest, newest_first, of_task_and_base
from enginehouse.services.reads import grouped, read, read_columns

# Checkpoints registered in one call (one per epoch).
MAX_CHECKPOINTS = 1000


class CheckpointSpec(StrictModel):
    checkpoint: Epoch
    path: LocalPath
    test_results: dict[str, Any] | None = None


# The task types a fine-tune trains; the others' checkpoints can be registered.
TRAINABLE = (TaskType.TEXT_GENERATION, TaskType.CLASSIFICATION, TaskType.REGRESSION, TaskType.NER)
# The share of the training rows held out for testing when the job names no test split.
DEFAULT_SPLIT_RATIO = 0.1
FINISHED_STATES = ("Success", "Failed", "Cancelled")
DatasetId = Field(default=None, min_length=1, max_length=64)


class TrainingJobSpec(StrictModel):
    """``POST /v1/training-jobs``: a fine-tune (``train_dataset_id``) or a registration of
    existing checkpoints (``checkpoints``), never both."""

    name: Name
    task_type: LooseEnum[TaskType]
    base_model: ModelSource
    checkpoints: list[CheckpointSpec] | None = Field(default=None, min_length=1, max_length=MAX_CHECKPOINTS)
    train_dataset_id: str | None = DatasetId
    test_dataset_id: str | None = DatasetId
    train_test_split_ratio: float | None = Field(default=None, gt=0, lt=1)
    parameters: TrainingParameters | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TrainingJobSpec:
        if (self.checkpoints is None) == (self.train_dataset_id is None):
            raise ValueError("give either train_dataset_id (to fine-tune) or checkpoints (to register "
                             "existing ones), not both or neither")
        if self.checkpoints is not None:
            extra = [name for name in ("test_dataset_id", "train_test_split_ratio", "parameters")
                     if getattr(self, name) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)} apply to a fine-tune (train_dataset_id), not to "
                                 "registered checkpoints")
        if self.test_dataset_id is not None and self.train_test_split_ratio is not None:
            raise ValueError("give test_dataset_id or train_test_split_ratio, not both")
        return self


def create_training_job(
    session: Session, org_id: str, spec: TrainingJobSpec
) -> TrainingJobModel:
    if spec.checkpoints is not None:
        return register_training_job(session, org_id, spec)
    return start_fine_tune(session, org_id, spec)


def start_fine_tune(session: Session, org_id: str, spec: TrainingJobSpec) -> TrainingJobModel:
    """Check the job and its datasets and queue it (Pending); the supervisor starts it."""
    if spec.task_type not in TRAINABLE:
        raise BadRequestError(
            f"fine-tuning trains {', '.join(t.value for t in TRAINABLE)}; for {spec.task_type.value}, "
            "register existing checkpoints with 'checkpoints'", code="task_type_not_trainable", param="task_type")
    assert spec.train_dataset_id is not None
    train = get_dataset(session, org_id, spec.train_dataset_id, param="train_dataset_id")
    test = (get_dataset(session, org_id, spec.test_dataset_id, param="test_dataset_id")
            if spec.test_dataset_id is not None else None)
    parameters = spec.parameters or TrainingParameters()
    unusable = check_parameters_for_task(spec.task_type, parameters)
    if unusable is not None:
        raise BadRequestError(unusable, code="invalid_parameters", param="parameters.pooling")
    ratio = spec.train_test_split_ratio
    if test is None and ratio is None:
        ratio = DEFAULT_SPLIT_RATIO
    _check_datasets(spec.task_type, Path(train.path), Path(test.path) if test else None, ratio, parameters.seed)
    return queue_job(
        session, org_id, name=spec.name, task_type=spec.task_type.value, base_model=spec.base_model,
        status_reason="waiting for a free training slot", parameters=parameters, train_dataset_id=train.id,
        test_dataset_id=test.id if test else None, train_test_split_ratio=ratio,
    )


def queue_job(
    session: Session, org_id: str, *, name: str, task_type: str, base_model: str, status_reason: str,
    parameters: TrainingParameters, train_dataset_id: str | None, test_dataset_id: str | None = None,
    train_test_split_ratio: float | None = None, experiment_id: str | None = None,
    experiment_version: int | None = None,
) -> TrainingJobModel:
    """A job already checked, queued (Pending) for the supervisor: a fine-tune, or a version of an
    experiment (``services/experiments.py``)."""
    job = TrainingJobModel(
        id=new_id("tr"), organization_id=org_id, name=name, task_type=task_type, base_model=base_model,
        status="Pending", status_reason=status_reason, created_at=utcnow(), train_dataset_id=train_dataset_id,
        test_dataset_id=test_dataset_id, train_test_split_ratio=train_test_split_ratio,
        parameters=parameters.model_dump(), progress=0.0, experiment_id=experiment_id,
        experiment_version=experiment_version,
    )
    session.add(job)
    session.flush()
    return job


def _check_datasets(task_type: TaskType, train: Path, test: Path | None, ratio: float | None, seed: int) -> None:
    param = "train_dataset_id"
    try:
        examples = read_examples(task_type.value, train, split_name="train")
        if test is not None:
            param = "test_dataset_id"
            check_test_labels(examples, read_examples(task_type.value, test, split_name="test"))
        elif ratio is not None:
            param = "train_test_split_ratio"
            split_examples(examples, ratio, seed)
    except DatasetError as exc:
        raise BadRequestError(str(exc), code="invalid_dataset", param=param) from None
    except OSError as exc:
        raise ConflictError(f"the dataset file cannot be read: {exc.strerror or exc}", code="dataset_unreadable",
                            param=param) from None


def cancel_training_job(session: Session, org_id: str, job_id: str) -> TrainingJobModel:
    """Mark the job Cancelled; the supervisor stops its worker. Checkpoints it wrote stay."""
    job = get_training_job(session, org_id, job_id)
    if job.status in FINISHED_STATES:
        raise ConflictError(f"training job {job_id} has already ended ({job.status})", code="job_ended",
                            param="training_id")
    job.status = "Cancelled"
    job.status_reason = "cancelled by request"
    job.finished_at = utcnow()
    session.flush()
    return job


def register_training_job(session: Session, org_id: str, spec: TrainingJobSpec) -> TrainingJobModel:
    _check_checkpoints(spec)
    assert spec.checkpoints is not None
    job = TrainingJobModel(
        id=new_id("tr"),
        organization_id=org_id,
        name=spec.name,
        task_type=spec.task_type.value,
        base_model=spec.base_model,
        status="Success",
        status_reason="checkpoints registered",
        progress=100.0,
        created_at=utcnow(),
    )
    job.checkpoints = [
        CheckpointModel(
            checkpoint=c.checkpoint,
            path=str(resolve_local_path(c.path)),
            test_results=c.test_results,
        )
        for c in spec.checkpoints
    ]
    session.add(job)
    session.flush()
    return job


def _check_checkpoints(spec: TrainingJobSpec) -> None:
    seen: set[int] = set()
    for index, checkpoint in enumerate(spec.checkpoints or []):
        param = f"checkpoints[{index}]"
        if checkpoint.checkpoint in seen:
            raise ValidationFailedError(
                f"checkpoint {checkpoint.checkpoint} is listed twice", param=f"{param}.checkpoint"
            )
        seen.add(checkpoint.checkpoint)
        try:
            path = resolve_local_path(checkpoint.path)
        except ValueError as exc:
            raise ValidationFailedError(
                f"checkpoint {checkpoint.checkpoint}: {exc}", param=f"{param}.path"
            ) from None
        problem = checkpoint_problem(spec.task_type, path)
        if problem:
            raise ValidationFailedError(
                f"checkpoint {checkpoint.checkpoint}: {problem}", param=f"{param}.path"
            )


# The fields of each kind of row, in order: the views unpack them by position.
JOB_FIELDS = ("id", "name", "task_type", "base_model", "status", "status_reason", "progress",
              "progress_detail", "train_dataset_id", "test_dataset_id", "train_test_split_ratio", "parameters",
              "created_at", "started_at", "finished_at", "experiment_id", "experiment_version")
CHECKPOINT_FIELDS = ("training_job_id", "checkpoint", "path", "test_results")


@dataclass(frozen=True)
class TrainingJobRead:
    job: Row[Any]
    checkpoints: list[Row[Any]]


def read_training_job(session: Session, org_id: str, job_id: str) -> TrainingJobRead:
    query = select(*read_columns(session, TrainingJobModel, JOB_FIELDS)).where(
        TrainingJobModel.id == job_id, TrainingJobModel.organization_id == org_id
    )
    job = read(session, query).first()
    if job is None:
        raise NotFoundError(f"training job {job_id!r} not found", param="training_id")
    return _with_checkpoints(session, [job])[0]


def list_training_jobs(
    session: Session, org_id: str, page: PageRequest, task_type: str | None = None, base_model: str | None = None
) -> Page[TrainingJobRead]:
    """A page of training jobs, newest first; their checkpoints in one more query."""
    query = select(*read_columns(session, TrainingJobModel, JOB_FIELDS)).where(
        TrainingJobModel.organization_id == org_id
    )
    query = of_task_and_base(query, TrainingJobModel, task_type, base_model)
    jobs = newest_first(session, query, TrainingJobModel, org_id, page, "training job")
    return Page(_with_checkpoints(session, jobs.items), jobs.has_more)


def _with_checkpoints(session: Session, jobs: list[Row[Any]]) -> list[TrainingJobRead]:
    if not jobs:
        return []
    query = (
        select(*read_columns(session, CheckpointModel, CHECKPOINT_FIELDS))
        .where(CheckpointModel.training_job_id.in_([job[0] for job in jobs]))
        .order_by(CheckpointModel.training_job_id, CheckpointModel.checkpoint)
    )
    checkpoints = grouped(read(session, query).all(), CHECKPOINT_FIELDS.index("training_job_id"))
    return [TrainingJobRead(job, checkpoints.get(job[0], [])) for job in jobs]


def get_training_job(session: Session, org_id: str, job_id: str) -> TrainingJobModel:
    job = session.get(TrainingJobModel, job_id)
    if job is None or job.organization_id != org_id:
        raise NotFoundError(f"training job {job_id!r} not found", param="training_id")
    return job


def get_checkpoint(session: Session, org_id: str, job_id: str, epoch: int) -> CheckpointModel:
    job = get_training_job(session, org_id, job_id)
    for checkpoint in job.checkpoints:
        if checkpoint.checkpoint == epoch:
            return checkpoint
    available = ", ".join(str(c.checkpoint) for c in job.checkpoints)
    raise NotFoundError(
        f"training job {job_id} has no checkpoint {epoch} (it has: {available})",
        code="checkpoint_not_found",
        param="checkpoint",
    )
