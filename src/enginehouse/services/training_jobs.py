"""Training jobs: registration of checkpoints that already exist on disk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field
from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from enginehouse.core.ids import new_id, utcnow
from enginehouse.core.specs import Epoch, LocalPath, LooseEnum, ModelSource, Name, StrictModel
from enginehouse.core.task_types import TaskType
from enginehouse.db.models import CheckpointModel, TrainingJobModel
from enginehouse.errors import NotFoundError, ValidationFailedError
from enginehouse.services.checkpoints import checkpoint_problem, resolve_local_path
from enginehouse.services.pages import Page, PageRequest, newest_first
from enginehouse.services.reads import grouped, read, read_columns

# Checkpoints registered in one call (one per epoch).
MAX_CHECKPOINTS = 1000


class CheckpointSpec(StrictModel):
    checkpoint: Epoch
    path: LocalPath
    test_results: dict[str, Any] | None = None


class TrainingJobSpec(StrictModel):
    name: Name
    task_type: LooseEnum[TaskType]
    base_model: ModelSource
    checkpoints: list[CheckpointSpec] = Field(min_length=1, max_length=MAX_CHECKPOINTS)


def register_training_job(session: Session, org_id: str, spec: TrainingJobSpec) -> TrainingJobModel:
    _check_checkpoints(spec)
    job = TrainingJobModel(
        id=new_id("tr"),
        organization_id=org_id,
        name=spec.name,
        task_type=spec.task_type.value,
        base_model=spec.base_model,
        status="Completed",
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
    for index, checkpoint in enumerate(spec.checkpoints):
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
JOB_FIELDS = ("id", "name", "task_type", "base_model", "status", "created_at")
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


def list_training_jobs(session: Session, org_id: str, page: PageRequest) -> Page[TrainingJobRead]:
    """A page of training jobs, newest first; their checkpoints in one more query."""
    query = select(*read_columns(session, TrainingJobModel, JOB_FIELDS)).where(
        TrainingJobModel.organization_id == org_id
    )
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
