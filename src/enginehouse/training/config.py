"""The one file a fine-tuning worker is started with: what to train, on what, and where to write.

The server writes it (``python -m enginehouse.training CONFIG_JSON_PATH``); its ``parameters``
were already checked by the API with the same ``TrainingParameters``. Besides a plain fine-tune it
describes the two builds of a Playground experiment (SPEC §5.1): ``zero_shot`` (a checkpoint made
from class descriptions alone, no training) and a training that starts from such a checkpoint's
head (``init_checkpoint``) and is scored beside it (``baseline_checkpoint``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from enginehouse.core.specs import StrictModel
from enginehouse.training.data import ENTITY_TYPE_RULE, names_entity_type
from enginehouse.training.parameters import TrainingParameters

TaskTypeName = Literal["text-generation", "classification", "regression", "ner"]
ZeroShotMode = Literal["decision", "routing", "judge", "tool_calling", "regression", "ner"]
# The task types whose checkpoints a training can start from and be scored beside.
_HEAD_TASK_TYPES = ("classification", "regression", "ner")

# The shape of a Playground experiment, one copy for the API (``services/experiments.py``) and the
# worker that builds its checkpoints (``zero_shot``).
# A judge answers whether its one criterion holds; a regression answers one number, under the
# label a replica gives a regression head's output.
JUDGE_LABELS = ("pass", "fail")
REGRESSION_LABEL = "score"
_ONE_CLASS_MODES = ("judge", "regression")
REGRESSION_FIELDS = ("min_value", "max_value", "low_description", "high_description")


def mode_task_type(mode: str) -> str:
    """The task type of an experiment of ``mode``, and of its checkpoints."""
    return {"regression": "regression", "ner": "ner"}.get(mode, "classification")


def mode_labels(mode: str, class_names: Sequence[str]) -> list[str]:
    """The labels the checkpoints of an experiment of ``mode`` answer with, in their order (an
    ``ner`` experiment's: the entity types it finds)."""
    if mode == "judge":
        return list(JUDGE_LABELS)
    if mode == "regression":
        return [REGRESSION_LABEL]
    return list(class_names)


class _DescribedClass(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def min_value(self) -> float | None: ...
    @property
    def max_value(self) -> float | None: ...
    @property
    def low_description(self) -> str | None: ...
    @property
    def high_description(self) -> str | None: ...


def classes_problem(mode: str, classes: Sequence[_DescribedClass]) -> str | None:
    """What keeps ``classes`` from being those of an experiment of ``mode``; None when they fit."""
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        return "classes: each class needs a name of its own"
    if mode in _ONE_CLASS_MODES and len(classes) != 1:
        what = "its criterion" if mode == "judge" else "the quantity it scores"
        return f"classes: a {mode} experiment has exactly one class ({what}), got {len(classes)}"
    if mode == "ner":
        problem = _entity_types_problem(names)
        if problem is not None:
            return problem
    elif mode not in _ONE_CLASS_MODES and len(classes) < 2:
        return f"classes: a {mode} experiment needs at least two classes to choose from"
    for index, item in enumerate(classes):
        given = [f for f in REGRESSION_FIELDS if getattr(item, f) is not None]
        if mode == "regression":
            missing = [f for f in REGRESSION_FIELDS if f not in given]
            if missing:
                return f"classes[{index}]: a regression class needs {', '.join(missing)}"
            assert item.min_value is not None and item.max_value is not None
            if item.min_value >= item.max_value:
                return f"classes[{index}]: min_value must be less than max_value"
        elif given:
            return f"classes[{index}]: {', '.join(given)} belong to a regression experiment"
    return None


def _entity_types_problem(names: Sequence[str]) -> str | None:
    """An ner experiment's classes are entity types, which a replica reads back from its labels."""
    for index, name in enumerate(names):
        if not names_entity_type(name):
            return f"classes[{index}]: {name!r} cannot name an entity type ({ENTITY_TYPE_RULE})"
    return None


class ConfigError(ValueError):
    """A config file the worker cannot run; the message says what is wrong with it."""


class ZeroShotClass(StrictModel):
    """One class as an experiment describes it; a regression's one class also has its range and
    what each end of it means. Fields the worker has no use for are ignored."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    min_value: float | None = None
    max_value: float | None = None
    low_description: str | None = Field(default=None, min_length=1)
    high_description: str | None = Field(default=None, min_length=1)


class ZeroShotSpec(StrictModel):
    """``{"mode", "classes"}``: the checkpoint to build from the class descriptions."""

    mode: ZeroShotMode
    classes: list[ZeroShotClass] = Field(min_length=1)

    @property
    def task_type(self) -> TaskTypeName:
        task_type = mode_task_type(self.mode)
        assert task_type in ("classification", "regression", "ner")
        return task_type  # type: ignore[return-value]

    @property
    def labels(self) -> list[str]:
        return mode_labels(self.mode, [c.name for c in self.classes])

    @model_validator(mode="after")
    def _classes_fit_the_mode(self) -> ZeroShotSpec:
        problem = classes_problem(self.mode, self.classes)
        if problem is not None:
            raise ValueError(problem)
        return self


class JobConfig(StrictModel):
    job_id: str = Field(min_length=1)
    task_type: TaskTypeName
    base_model: str = Field(min_length=1)
    # None only for a zero-shot build, which trains on nothing.
    train_path: str | None = Field(default=None, min_length=1)
    test_path: str | None = None
    # Used when there is no test file; with neither, there is no test split (test_results {}).
    train_test_split_ratio: float | None = Field(default=None, gt=0, lt=1)
    parameters: TrainingParameters = Field(default_factory=TrainingParameters)
    output_dir: str = Field(min_length=1)
    threads: int = Field(default=0, ge=0, description="torch threads; 0 leaves torch's default")
    zero_shot: ZeroShotSpec | None = None
    # A classification or regression checkpoint whose head (and labels) the trained head starts from.
    init_checkpoint: str | None = Field(default=None, min_length=1)
    # A checkpoint scored on the test split before training, into baseline.json.
    baseline_checkpoint: str | None = Field(default=None, min_length=1)

    @field_validator("parameters", mode="before")
    @classmethod
    def _no_parameters_means_defaults(cls, value: object) -> object:
        return {} if value is None else value

    @model_validator(mode="after")
    def _inputs_fit_the_job(self) -> JobConfig:
        if self.zero_shot is not None:
            if self.zero_shot.task_type != self.task_type:
                raise ValueError(f"a zero-shot {self.zero_shot.mode} builds a {self.zero_shot.task_type} "
                                 f"checkpoint, not {self.task_type}")
            if self.init_checkpoint or self.baseline_checkpoint:
                raise ValueError("a zero-shot build trains nothing: it takes no init_checkpoint or "
                                 "baseline_checkpoint")
        elif self.train_path is None:
            raise ValueError("train_path is required (only a zero-shot build goes without one)")
        if (self.init_checkpoint or self.baseline_checkpoint) and self.task_type not in _HEAD_TASK_TYPES:
            raise ValueError("init_checkpoint and baseline_checkpoint are classification, regression and ner "
                             "checkpoints; a text-generation job takes neither")
        return self


def read_config(path: Path) -> JobConfig:
    try:
        return JobConfig.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"the job configuration {path} cannot be read: {exc.strerror or exc}") from None
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise ConfigError(f"the job configuration is invalid: {problems}") from None


def _problem(error: Any) -> str:
    # A check of the whole file (a model validator) has no field to name.
    message = str(error["msg"]).removeprefix("Value error, ")
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {message}" if where else message
