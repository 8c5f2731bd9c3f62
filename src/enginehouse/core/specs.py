"""What a user asks an engine or deployment to be (SPEC §4.4–4.6), validated once, here.

These are pydantic models because they are both domain values and part of request bodies; they
are stored in the database as plain JSON (``model_dump``), never pickled.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from enginehouse.core.model_names import kept_model_name
from enginehouse.core.task_types import TaskType
from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator,
)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
NAME_RULE = "1-100 characters: letters, digits, '.', '_', ':', '-', starting with a letter or digit"
# Characters no file path, Hub id or identifier holds: NUL ends a C string (the OS refuses the
# path), and the other control characters only ever arrive by mistake.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

# Upper bounds that no real configuration reaches; beyond them a number is a typo (or an attack
# on the arithmetic that uses it, such as a timedelta that overflows on every reconcile pass).
MAX_REPLICAS = 10_000
MAX_DELAY_S = 86_400.0  # a day
MAX_INACTIVE_DURATION_S = 30 * 86_400.0  # thirty days
MAX_TARGET = 1_000_000.0
MAX_EPOCH = 1_000_000  # a checkpoint's epoch or an experiment's version


class StrictModel(BaseModel):
    """Unknown fields are refused, so a typo in a body is a 422 rather than silently ignored.

    Types are strict: ``"false"`` is not a boolean, ``"5"`` and ``true`` are not numbers (pydantic
    would otherwise convert them). Enum fields accept their values as strings (``LooseEnum``).
    Infinity and NaN, which Python's JSON parser accepts, are no numbers either.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def is_name(value: str) -> bool:
    # fullmatch: with match, "$" would also accept a name ending in a newline.
    return NAME_PATTERN.fullmatch(value) is not None


def check_name(value: str) -> str:
    if not is_name(value):
        raise ValueError(f"invalid name {value!r}: {NAME_RULE}")
    return value


def check_plain_text(value: str) -> str:
    """Refuses what no path, Hub id or identifier can hold: control characters (NUL above all)
    and lone surrogates (no file system or database stores them)."""
    if _CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters (such as NUL, tab or newline)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    if value != value.strip():
        raise ValueError("must not start or end with spaces")
    return value


E = TypeVar("E", bound=Enum)
# An enum field of a strict model that takes its values as strings, as JSON sends them.
LooseEnum = Annotated[E, Field(strict=False)]

# A user-chosen name (engine, deployment, training job, organization). Its schema states the
# pattern it is checked with (JSON Schema's "$" is Python's fullmatch end).
Name = Annotated[
    str,
    AfterValidator(check_name),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN.pattern, "description": NAME_RULE}),
]
# A local directory (kept as its absolute path) or a Hugging Face Hub id.
ModelSource = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(check_plain_text),
                        AfterValidator(kept_model_name)]
# A directory on the server's machine (PATH_MAX on Linux is 4096 bytes).
LocalPath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(check_plain_text)]
# The id of an object (``tr-…``, ``ex-…``) given in a body.
ObjectId = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(check_plain_text)]
Epoch = Annotated[int, Field(ge=1, le=MAX_EPOCH)]


class Autoscaling(StrictModel):
    # The server's own ceiling (ENGINEHOUSE_MAX_REPLICAS_PER_ENGINE) is checked when an engine
    # is created; MAX_REPLICAS only stops numbers that could never be meant.
    min_replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    max_replicas: int = Field(default=3, ge=1, le=MAX_REPLICAS)
    metric: Literal["concurrency", "qps"] = "concurrency"
    target: float = Field(default=10, gt=0, le=MAX_TARGET)
    upscale_delay_s: float = Field(default=10, ge=0, le=MAX_DELAY_S)
    downscale_delay_s: float = Field(default=300, ge=0, le=MAX_DELAY_S)

    @model_validator(mode="after")
    def _min_below_max(self) -> "Autoscaling":
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be at least min_replicas")
        return self


class InactiveTimeoutConfig(StrictModel):
    inactive_duration: float = Field(gt=0, le=MAX_INACTIVE_DURATION_S,
                                     description="seconds without an inference request")


class ScheduleConfig(StrictModel):
    timezone: str = "UTC"
    start_time: str
    end_time: str
    days: list[str] = Field(default_factory=lambda: list(WEEKDAYS), max_length=len(WEEKDAYS))

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value

    @field_validator("start_time", "end_time")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        match = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", value)
        if not match:
            raise ValueError(f"time {value!r} must be HH:MM (24-hour)")
        return value

    @field_validator("days")
    @classmethod
    def _weekdays(cls, value: list[str]) -> list[str]:
        days = [d.lower() for d in value]
        unknown = [d for d in days if d not in WEEKDAYS]
        if unknown or not days:
            raise ValueError(f"days must be a non-empty list of {', '.join(WEEKDAYS)}")
        return days


class InactiveTimeoutManagement(StrictModel):
    management_type: Literal["inactive_timeout"]
    management_config: InactiveTimeoutConfig


class ScheduleManagement(StrictModel):
    management_type: Literal["schedule"]
    management_config: ScheduleConfig


ResourceManagement = Annotated[
    InactiveTimeoutManagement | ScheduleManagement, Field(discriminator="management_type")
]


class RuntimeOptions(StrictModel):
    """What each replica holds. Absent values take the runtime's defaults for the hardware."""

    max_loras: int | None = Field(default=None, ge=1, le=1024)
    max_cpu_loras: int | None = Field(default=None, ge=1, le=100_000)
    max_lora_rank: int | None = Field(default=None, ge=1, le=1024)
    max_batch_size: int | None = Field(default=None, ge=1, le=4096)
    max_model_len: int | None = Field(default=None, ge=16, le=1_048_576)
    dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = None


class BaseSource(StrictModel):
    type: Literal["base"]


class TrainingJobSource(StrictModel):
    type: Literal["training_job"]
    training_id: ObjectId
    checkpoint: Epoch


class ExperimentSource(StrictModel):
    type: Literal["experiment"]
    experiment_id: ObjectId
    version: Epoch


DeploymentSource = Annotated[
    BaseSource | TrainingJobSource | ExperimentSource, Field(discriminator="type")
]


class EngineSpec(StrictModel):
    """The body of ``POST /v1/engines``: what the engine should be."""

    name: Name
    base_model: ModelSource
    task_type: LooseEnum[TaskType]
    deployment_option: str = Field(default="auto", min_length=1, max_length=100)
    autoscaling: Autoscaling | None = None
    resource_management_config: ResourceManagement | None = None
    runtime_options: RuntimeOptions = Field(default_factory=RuntimeOptions)
