"""Training parameters: SPEC §5.1 defaults, bounds a user hears about by field, no unknown field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from enginehouse.training.parameters import TrainingParameters, check_parameters_for_task


def test_defaults() -> None:
    assert TrainingParameters().model_dump() == {
        "num_train_epochs": 3, "learning_rate": 2e-4, "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
        "target_modules": None, "max_seq_length": 512, "seed": 0, "truncation": False, "pooling": "model",
    }


def test_partial_parameters_keep_the_other_defaults() -> None:
    parameters = TrainingParameters.model_validate({"lora_r": 8, "target_modules": ["q_proj", "v_proj"]})
    assert (parameters.lora_r, parameters.lora_alpha, parameters.target_modules) == (8, 32, ["q_proj", "v_proj"])
    assert TrainingParameters.model_validate({"learning_rate": 1}).learning_rate == 1.0  # an int is a number


@pytest.mark.parametrize(("field", "value"), [
    ("num_train_epochs", 0), ("num_train_epochs", 101), ("num_train_epochs", 2.5), ("num_train_epochs", "3"),
    ("learning_rate", 0), ("learning_rate", 1.5), ("learning_rate", -1e-4), ("learning_rate", float("nan")),
    ("per_device_train_batch_size", 0), ("per_device_train_batch_size", 1025), ("per_device_eval_batch_size", 0),
    ("lora_r", 0), ("lora_r", 257), ("lora_alpha", 0), ("lora_dropout", 1), ("lora_dropout", -0.1),
    ("target_modules", []), ("target_modules", [""]), ("target_modules", ["x" * 101]),
    ("target_modules", ["q"] * 65), ("target_modules", "q_proj"),
    ("max_seq_length", 7), ("max_seq_length", 32769), ("seed", -1), ("truncation", "true"), ("truncation", 1),
    ("pooling", "cls"), ("pooling", None), ("pooling", 1),
])
def test_out_of_bounds_values_are_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingParameters.model_validate({field: value})
    assert caught.value.errors()[0]["loc"][0] == field


def test_bounds_themselves_are_accepted() -> None:
    TrainingParameters.model_validate({
        "num_train_epochs": 100, "learning_rate": 1, "per_device_train_batch_size": 1024, "lora_r": 256,
        "lora_dropout": 0, "target_modules": ["q"] * 64, "max_seq_length": 8, "seed": 2**32 - 1, "truncation": True,
    })


def test_unknown_field_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingParameters.model_validate({"epochs": 3})
    assert caught.value.errors()[0]["type"] == "extra_forbidden"
    assert caught.value.errors()[0]["loc"] == ("epochs",)


def test_mean_pooling_fits_classification_and_regression_only() -> None:
    mean = TrainingParameters.model_validate({"pooling": "mean"})
    assert check_parameters_for_task("classification", mean) is None
    assert check_parameters_for_task("regression", mean) is None
    assert check_parameters_for_task("text-generation", TrainingParameters()) is None
    reason = check_parameters_for_task("text-generation", mean)
    assert reason is not None and "pooling 'mean'" in reason and "classification and regression" in reason
