"""Playground experiments (SPEC §5.1): classes described in words, labelled examples, versions.

Each version is a training job of the experiment, run by the training supervisor like any
fine-tune: version 1 is zero-shot, a checkpoint built from the class descriptions alone (the
worker embeds them with the base encoder); ``train`` makes the next version, a fine-tune on the
examples (a fifth held out) that starts from version 1's head and is tested, beside version 1,
on the same held-out examples. Any version that succeeded deploys like a checkpoint.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from enginehouse.core.ids import iso, new_id, utcnow
from enginehouse.core.specs import LooseEnum, ModelSource, Name, StrictModel, check_plain_text
from enginehouse.core.task_types import TaskType
from enginehouse.db.models import (
    CheckpointModel, ExperimentExampleModel, ExperimentModel, TrainingJobModel,
)
from enginehouse.errors import BadRequestError, ConflictError, NotFoundError
from enginehouse.services.datasets import store_dataset
from enginehouse.services.pages import Page, PageRequest, newest_first, of_task_and_base
from enginehouse.services.training_jobs import queue_job
from enginehouse.training.config import classes_problem, mode_labels, mode_task_type
from enginehouse.training.data import entity_spans
from enginehouse.training.parameters import TrainingParameters, check_parameters_for_task


class Mode(str, Enum):
    DECISION = "decision"
    ROUTING = "routing"
    JUDGE = "judge"
    TOOL_CALLING = "tool_calling"
    REGRESSION = "regression"
    NER = "ner"

    @property
    def task_type(self) -> TaskType:
        return TaskType(mode_task_type(self.value))


MAX_CLASSES = 100
MAX_EXAMPLES_PER_CALL = 10_000
# Fewer examples than this cannot be split into training and held-out rows worth the name.
MIN_EXAMPLES_TO_TRAIN = 8
HELD_OUT_RATIO = 0.2
# How a version is trained from a few examples: the head starts from version 1's (so a few
# examples refine what the descriptions said) and reads the sentence embedding, as version 1's
# does; more epochs and a smaller step than a fine-tune on a big dataset.
TRAINED_VERSION_PARAMETERS = {"num_train_epochs": 10, "learning_rate": 1e-3, "per_device_train_batch_size": 8,
                              "lora_r": 8, "lora_alpha": 16, "pooling": "mean"}
# An ner version's head reads each token's hidden state: there is no sentence to pool.
TRAINED_NER_VERSION_PARAMETERS = {k: v for k, v in TRAINED_VERSION_PARAMETERS.items() if k != "pooling"}

Text = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(check_plain_text)]
ClassName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(check_plain_text)]


class ExperimentClass(StrictModel):
    name: ClassName
    description: Text
    # A regression's one class: the range its answers fall in, and what each end means.
    min_value: float | None = Field(default=None, allow_inf_nan=False)
    max_value: float | None = Field(default=None, allow_inf_nan=False)
    low_description: Text | None = None
    high_description: Text | None = None


class ExperimentSpec(StrictModel):
    """``POST /v1/experiments``."""

    name: Name
    mode: LooseEnum[Mode]
    classes: list[ExperimentClass] = Field(min_length=1, max_length=MAX_CLASSES)
    base_model: ModelSource

    @model_validator(mode="after")
    def _classes_fit_the_mode(self) -> ExperimentSpec:
        problem = classes_problem(self.mode.value, self.classes)
        if problem is not None:
            raise ValueError(problem)
        return self


class ExampleEntity(StrictModel):
    """An entity in an ner example: characters ``text[start:end]``, of type ``label``."""

    start: int = Field(ge=0)
    end: int = Field(ge=0)
    label: ClassName


class Example(StrictModel):
    text: Text
    label: ClassName | None = None
    value: float | None = Field(default=None, allow_inf_nan=False)
    # An ner example's entities ([] for a text with none).
    entities: list[ExampleEntity] | None = Field(default=None, max_length=1000)


class ExamplesSpec(StrictModel):
    """``POST /v1/experiments/{id}/examples``."""

    examples: list[Example] = Field(min_length=1, max_length=MAX_EXAMPLES_PER_CALL)


class TrainSpec(StrictModel):
    """``POST /v1/experiments/{id}/train``: the body is optional; parameters override the
    defaults of a trained version."""

    parameters: dict[str, Any] | None = None


def labels_of(experiment: ExperimentModel) -> list[str]:
    """The labels the experiment's checkpoints answer with (a regression's: ``score``)."""
    return mode_labels(experiment.mode, [c["name"] for c in experiment.classes])


def create_experiment(session: Session, org_id: str, spec: ExperimentSpec) -> ExperimentModel:
    experiment = ExperimentModel(
        id=new_id("ex"), organization_id=org_id, name=spec.name, mode=spec.mode.value,
        task_type=spec.mode.task_type.value, base_model=spec.base_model,
        classes=[c.model_dump(exclude_none=True) for c in spec.classes], created_at=utcnow(),
    )
    session.add(experiment)
    session.flush()
    _add_version(session, experiment, 1, train_dataset_id=None, parameters=TrainingParameters())
    return experiment


def _add_version(session: Session, experiment: ExperimentModel, version: int, *, train_dataset_id: str | None,
                 parameters: TrainingParameters) -> TrainingJobModel:
    kind = "zero-shot" if version == 1 else "trained"
    return queue_job(
        session, experiment.organization_id, name=f"{experiment.name[:90]}-v{version}",
        task_type=experiment.task_type, base_model=experiment.base_model,
        status_reason=f"waiting to build {kind} version {version} of experiment {experiment.name}",
        parameters=parameters, train_dataset_id=train_dataset_id,
        train_test_split_ratio=HELD_OUT_RATIO if train_dataset_id else None,
        experiment_id=experiment.id, experiment_version=version,
    )


def get_experiment(session: Session, org_id: str, experiment_id: str) -> ExperimentModel:
    experiment = session.get(ExperimentModel, experiment_id)
    if experiment is None or experiment.organization_id != org_id:
        raise NotFoundError(f"experiment {experiment_id!r} not found", code="experiment_not_found",
                            param="experiment_id")
    return experiment


def add_examples(session: Session, org_id: str, experiment_id: str, spec: ExamplesSpec) -> int:
    """Store the examples; the experiment's count of examples after them."""
    experiment = get_experiment(session, org_id, experiment_id)
    regression = experiment.mode == Mode.REGRESSION.value
    labels = labels_of(experiment)
    rows = []
    for index, example in enumerate(spec.examples):
        where = f"examples[{index}]"
        if experiment.mode == Mode.NER.value:
            rows.append(_ner_example(experiment, example, where, labels))
            continue
        if example.entities is not None:
            raise BadRequestError(f"{where}: 'entities' belong to an ner experiment's examples",
                                  code="invalid_example", param=where)
        if regression:
            if example.value is None or example.label is not None:
                raise BadRequestError(f"{where}: a regression example has a number 'value' and no 'label'",
                                      code="invalid_example", param=where)
        elif example.label is None or example.value is not None:
            raise BadRequestError(f"{where}: an example of this experiment has a 'label' (one of "
                                  f"{', '.join(labels)}) and no 'value'", code="invalid_example", param=where)
        elif example.label not in labels:
            raise BadRequestError(f"{where}: label {example.label!r} is not one of this experiment's: "
                                  f"{', '.join(labels)}", code="invalid_example", param=where)
        rows.append(ExperimentExampleModel(experiment_id=experiment.id, text=example.text, label=example.label,
                                           value=example.value))
    session.add_all(rows)
    session.flush()
    return _example_count(session, experiment.id)


def _ner_example(experiment: ExperimentModel, example: Example, where: str,
                 labels: list[str]) -> ExperimentExampleModel:
    """An ner example, its entities checked as a dataset row's are."""
    if example.entities is None or example.label is not None or example.value is not None:
        raise BadRequestError(f"{where}: an example of an ner experiment has 'text' and 'entities' (a list of "
                              "{start, end, label}; [] for none), no 'label' or 'value'",
                              code="invalid_example", param=where)
    entities = [e.model_dump() for e in example.entities]
    try:
        entity_spans(example.text, entities)
    except ValueError as exc:
        raise BadRequestError(f"{where}: {exc}", code="invalid_example", param=where) from None
    unknown = sorted({e["label"] for e in entities} - set(labels))
    if unknown:
        raise BadRequestError(f"{where}: entity type(s) {', '.join(map(repr, unknown))} are not among this "
                              f"experiment's: {', '.join(labels)}", code="invalid_example", param=where)
    return ExperimentExampleModel(experiment_id=experiment.id, text=example.text, entities=entities)


def _example_count(session: Session, experiment_id: str) -> int:
    return _example_counts(session, [experiment_id]).get(experiment_id, 0)


def _example_counts(session: Session, experiment_ids: list[str]) -> dict[str, int]:
    """Each experiment's count of examples, in one grouped query (none: absent)."""
    example = ExperimentExampleModel
    rows = session.execute(select(example.experiment_id, func.count()).where(example.experiment_id.in_(experiment_ids))
                           .group_by(example.experiment_id))
    return {experiment_id: int(count) for experiment_id, count in rows}


def train_next_version(session: Session, org_id: str, experiment_id: str, spec: TrainSpec,
                       datasets_dir: Path, max_dataset_bytes: int) -> int:
    """Queue the next version, a fine-tune on the examples; its number."""
    experiment = get_experiment(session, org_id, experiment_id)
    first = version_job(session, experiment.id, 1)
    status = first.status if first is not None else "missing"
    if status != "Success":
        raise ConflictError(f"version 1 of experiment {experiment.name} is {status}; a trained "
                            "version starts from it, so wait for it to succeed", code="version_not_ready")
    examples = list(session.scalars(select(ExperimentExampleModel)
                                    .where(ExperimentExampleModel.experiment_id == experiment.id)
                                    .order_by(ExperimentExampleModel.id)))
    _check_trainable(experiment, examples)
    ner = experiment.mode == Mode.NER.value
    defaults = TRAINED_NER_VERSION_PARAMETERS if ner else TRAINED_VERSION_PARAMETERS
    try:
        parameters = TrainingParameters(**{**defaults, **(spec.parameters or {})})
    except ValueError as exc:
        raise BadRequestError(f"parameters: {exc}", code="invalid_parameters", param="parameters") from None
    unusable = check_parameters_for_task(experiment.task_type, parameters)
    if unusable is not None:
        raise BadRequestError(unusable, code="invalid_parameters", param="parameters.pooling")
    if not ner and parameters.pooling != TRAINED_VERSION_PARAMETERS["pooling"]:
        # The worker would refuse it: the head starts from version 1's, which reads the mean.
        raise BadRequestError(
            f"parameters.pooling {parameters.pooling!r}: a trained version starts from version 1's head, which "
            f"reads the normalised mean of the last hidden state, so pooling must stay "
            f"{TRAINED_VERSION_PARAMETERS['pooling']!r}", code="invalid_parameters", param="parameters.pooling")
    highest = session.scalar(select(func.max(TrainingJobModel.experiment_version))
                             .where(TrainingJobModel.experiment_id == experiment.id))
    version = int(highest or 0) + 1
    dataset = store_dataset(session, org_id, f"{experiment.name[:80]}-v{version}-examples",
                            [_jsonl(experiment, examples)], datasets_dir, max_dataset_bytes)
    _add_version(session, experiment, version, train_dataset_id=dataset.id, parameters=parameters)
    return version


def _check_trainable(experiment: ExperimentModel, examples: list[ExperimentExampleModel]) -> None:
    if len(examples) < MIN_EXAMPLES_TO_TRAIN:
        raise ConflictError(f"experiment {experiment.name} has {len(examples)} example(s); add at least "
                            f"{MIN_EXAMPLES_TO_TRAIN} to train a version (a fifth is held out to test it)",
                            code="not_enough_examples")
    if experiment.mode == Mode.NER.value:
        if not any(e.entities for e in examples):
            raise ConflictError(f"no example of experiment {experiment.name} marks an entity; add examples with "
                                "entities", code="not_enough_examples")
    elif experiment.mode != Mode.REGRESSION.value:
        seen = {e.label for e in examples}
        if len(seen) < 2:
            raise ConflictError(f"the examples of experiment {experiment.name} all have the label "
                                f"{next(iter(seen))!r}; add examples of another label", code="not_enough_examples")


def _jsonl(experiment: ExperimentModel, examples: list[ExperimentExampleModel]) -> bytes:
    lines = [json.dumps(_dataset_row(experiment.mode, e)) for e in examples]
    return ("\n".join(lines) + "\n").encode()


def _dataset_row(mode: str, example: ExperimentExampleModel) -> dict[str, Any]:
    if mode == Mode.NER.value:
        return {"text": example.text, "entities": example.entities or []}
    if mode == Mode.REGRESSION.value:
        return {"text": example.text, "value": example.value}
    return {"text": example.text, "label": example.label}


def version_job(session: Session, experiment_id: str, version: int) -> TrainingJobModel | None:
    """The training job of one version of the experiment; None when it has no such version."""
    return session.scalar(select(TrainingJobModel).where(TrainingJobModel.experiment_id == experiment_id,
                                                         TrainingJobModel.experiment_version == version))


def version_checkpoint(session: Session, org_id: str, experiment_id: str, version: int) -> tuple[str, str]:
    """(task type, checkpoint directory) of a version that succeeded: its best checkpoint."""
    experiment = get_experiment(session, org_id, experiment_id)
    job = version_job(session, experiment.id, version)
    if job is None:
        raise NotFoundError(f"experiment {experiment.name} has no version {version}", code="version_not_found",
                            param="version")
    checkpoint = best_checkpoint(job)
    if job.status != "Success" or checkpoint is None:
        raise ConflictError(f"version {version} of experiment {experiment.name} is {job.status}; deploy it once it "
                            "has succeeded", code="version_not_ready", param="version")
    return experiment.task_type, checkpoint.path


def best_checkpoint(job: TrainingJobModel) -> CheckpointModel | None:
    """The checkpoint with the best test results: highest entity F1 (ner), else highest accuracy,
    else lowest mae, else lowest eval loss; the last one when none has results."""
    if not job.checkpoints:
        return None
    return max(reversed(job.checkpoints), key=lambda checkpoint: _merit(checkpoint.test_results))


def _merit(results: dict[str, Any] | None) -> float:
    for key, sign in (("f1", 1.0), ("accuracy", 1.0), ("mae", -1.0), ("eval_loss", -1.0)):
        value = (results or {}).get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return sign * float(value)
    return -math.inf


# What a view of a version reads of its job, and of each of its checkpoints.
_VERSION_COLUMNS = (TrainingJobModel.experiment_id, TrainingJobModel.id, TrainingJobModel.experiment_version,
                    TrainingJobModel.status, TrainingJobModel.status_reason, TrainingJobModel.progress,
                    TrainingJobModel.created_at, TrainingJobModel.baseline_results)
_CHECKPOINT_COLUMNS = (CheckpointModel.training_job_id, CheckpointModel.test_results)


def experiment_view(session: Session, experiment: ExperimentModel) -> dict[str, Any]:
    return experiment_views(session, [experiment])[0]


def experiment_views(session: Session, experiments: Sequence[ExperimentModel]) -> list[dict[str, Any]]:
    """The API's view of each experiment, in three queries however many there are: their
    versions, the versions' checkpoints, and their counts of examples."""
    if not experiments:
        return []
    ids = [experiment.id for experiment in experiments]
    versions: defaultdict[str, list[Any]] = defaultdict(list)
    for row in session.execute(select(*_VERSION_COLUMNS).where(TrainingJobModel.experiment_id.in_(ids))
                               .order_by(TrainingJobModel.experiment_id, TrainingJobModel.experiment_version)):
        versions[row.experiment_id].append(row)
    job_ids = [row.id for rows in versions.values() for row in rows]
    results: defaultdict[str, list[dict[str, Any] | None]] = defaultdict(list)
    if job_ids:
        for job_id, test_results in session.execute(
                select(*_CHECKPOINT_COLUMNS).where(CheckpointModel.training_job_id.in_(job_ids))
                .order_by(CheckpointModel.training_job_id, CheckpointModel.checkpoint)):
            results[job_id].append(test_results)
    counts = _example_counts(session, ids)
    return [{
        "id": experiment.id,
        "object": "experiment",
        "name": experiment.name,
        "mode": experiment.mode,
        "task_type": experiment.task_type,
        "base_model": experiment.base_model,
        "classes": experiment.classes,
        "labels": labels_of(experiment),
        "examples": counts.get(experiment.id, 0),
        "latest_version": versions[experiment.id][-1].experiment_version if versions[experiment.id] else None,
        "versions": [_version_view(row, results.get(row.id, [])) for row in versions[experiment.id]],
        "created_at": iso(experiment.created_at),
    } for experiment in experiments]


def _version_view(row: Any, checkpoint_results: list[dict[str, Any] | None]) -> dict[str, Any]:
    # The best checkpoint's results, chosen as best_checkpoint chooses.
    best = max(reversed(checkpoint_results), key=_merit) if checkpoint_results else None
    return {
        "version": row.experiment_version,
        "kind": "zero-shot" if row.experiment_version == 1 else "trained",
        "status": row.status,
        "status_reason": row.status_reason,
        "training_id": row.id,
        "progress": round(row.progress, 1),
        "created_at": iso(row.created_at),
        "test_results": best,
        "baseline_results": row.baseline_results,
    }


def list_experiments(session: Session, org_id: str, page: PageRequest, task_type: str | None = None,
                     base_model: str | None = None) -> Page[ExperimentModel]:
    """A page of experiments, newest first (``experiment_views`` makes their views together)."""
    query = select(ExperimentModel.id).where(ExperimentModel.organization_id == org_id)
    query = of_task_and_base(query, ExperimentModel, task_type, base_model)
    ids = newest_first(session, query, ExperimentModel, org_id, page, "experiment")
    if not ids.items:
        return Page([], ids.has_more)
    found = {e.id: e for e in session.scalars(select(ExperimentModel).where(
        ExperimentModel.id.in_([row[0] for row in ids.items])))}
    return Page([found[row[0]] for row in ids.items], ids.has_more)
