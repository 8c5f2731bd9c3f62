"""What a user asks an engine or deployment to be (SPEC §4.4–4.6), validated once, here.

These are pydantic models because they are both domain values and part of request bodies; they
are stored in the database as plain JSON (``model_dump``), never pickled.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from enginehouse.core.task_types import TaskType
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
NAME_RULE = "1-100 characters: letters, digits, '.', '_', ':', '-', starting with a letter or digit"

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class StrictModel(BaseModel):
    """Unknown fields are refused, so a typo in a body is a 422 rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


def check_name(value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(f"invalid name {value!r}: {NAME_RULE}")
    return value


# A user-chosen name (engine, deployment, training job, organization).
Name = Annotated[str, AfterValidator(check_name)]


class Autoscaling(StrictModel):
    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(default=3, ge=1)
    metric: Literal["concurrency", "qps"] = "concurrency"
    target: float = Field(default=10, gt=0)
    upscale_delay_s: float = Field(default=10, ge=0)
    downscale_delay_s: float = Field(default=300, ge=0)

    @model_validator(mode="after")
    def _min_below_max(self) -> "Autoscaling":
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be at least min_replicas")
        return self


class InactiveTimeoutConfig(StrictModel):
    inactive_duration: float = Field(gt=0, description="seconds without an inference request")


class ScheduleConfig(StrictModel):
    timezone: str = "UTC"
    start_time: str
    end_time: str
    days: list[str] = Field(default_factory=lambda: list(WEEKDAYS))

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
    training_id: str
    checkpoint: int = Field(ge=1)


class ExperimentSource(StrictModel):
    type: Literal["experiment"]
    experiment_id: str
    version: int = Field(ge=1)


DeploymentSource = Annotated[
    BaseSource | TrainingJobSource | ExperimentSource, Field(discriminator="type")
]


class EngineSpec(StrictModel):
    """The body of ``POST /v1/engines``: what the engine should be."""

    name: Name
    base_model: str = Field(min_length=1, max_length=1000)
    task_type: TaskType
    deployment_option: str = "auto"
    autoscaling: Autoscaling | None = None
    resource_management_config: ResourceManagement | None = None
    runtime_options: RuntimeOptions = Field(default_factory=RuntimeOptions)
