"""The one file a fine-tuning worker is started with: what to train, on what, and where to write.

The server writes it (``python -m enginehouse.training CONFIG_JSON_PATH``); its ``parameters``
were already checked by the API with the same ``TrainingParameters``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from enginehouse.core.specs import StrictModel
from enginehouse.training.parameters import TrainingParameters

TaskTypeName = Literal["text-generation", "classification", "regression"]


class ConfigError(ValueError):
    """A config file the worker cannot run; the message says what is wrong with it."""


class JobConfig(StrictModel):
    job_id: str = Field(min_length=1)
    task_type: TaskTypeName
    base_model: str = Field(min_length=1)
    train_path: str = Field(min_length=1)
    test_path: str | None = None
    # Used when there is no test file; with neither, there is no test split (test_results {}).
    train_test_split_ratio: float | None = Field(default=None, gt=0, lt=1)
    parameters: TrainingParameters = Field(default_factory=TrainingParameters)
    output_dir: str = Field(min_length=1)
    threads: int = Field(default=0, ge=0, description="torch threads; 0 leaves torch's default")

    @field_validator("parameters", mode="before")
    @classmethod
    def _no_parameters_means_defaults(cls, value: object) -> object:
        return {} if value is None else value


def read_config(path: Path) -> JobConfig:
    try:
        return JobConfig.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"the job configuration {path} cannot be read: {exc.strerror or exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'the file'}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"the job configuration is invalid: {problems}") from None
