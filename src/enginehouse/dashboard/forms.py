"""Dashboard forms → the API's own specs. A form's fields are flat text; each is turned into the
body the API takes (``EngineSpec``, a deployment source) and validated by the same models, so a
form refuses exactly what the API refuses, in the same words, next to the field named."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from enginehouse.core.specs import DeploymentSource, EngineSpec
from enginehouse.errors import EnginehouseError
from enginehouse.protocol.openai import describe_validation_item

Spec = TypeVar("Spec", bound=BaseModel)
_SOURCE = TypeAdapter(DeploymentSource)
# How the API names a field (its error's ``param``) → the form field it is shown beside.
_FIELD_OF = {
    "autoscaling": "max_replicas",
    "source": "source",
    "training_id": "source",
    "checkpoint": "source",
    "experiment_id": "source",
    "version": "source",
}


class FormError(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def engine_spec(form: dict[str, str]) -> EngineSpec:
    body: dict[str, Any] = {
        "name": form.get("engine_name", "").strip(),
        "base_model": form.get("base_model", "").strip(),
        "task_type": form.get("task_type", ""),
        "deployment_option": form.get("deployment_option", "auto") or "auto",
    }
    if form.get("max_replicas", "").strip():
        body["autoscaling"] = {"min_replicas": number(form, "min_replicas", "1"),
                               "max_replicas": number(form, "max_replicas")}
    management = form.get("management", "")
    if management == "always":
        set_aside = [f for f in ("inactive_duration", "start_time", "end_time") if form.get(f, "").strip()]
        if set_aside:
            raise FormError({set_aside[0]: f"{set_aside[0]} is set but 'Always on' is chosen: choose 'Sleep when "
                                           "idle' or 'On a schedule', or clear it"})
    if management == "inactive_timeout" or (not management and form.get("inactive_duration", "").strip()):
        body["resource_management_config"] = {
            "management_type": "inactive_timeout",
            "management_config": {"inactive_duration": number(form, "inactive_duration")}}
    elif management == "schedule":
        days = [day.strip().lower() for day in form.get("days", "").replace(",", " ").split() if day.strip()]
        body["resource_management_config"] = {
            "management_type": "schedule",
            "management_config": {"timezone": form.get("timezone", "").strip() or "UTC",
                                  "start_time": form.get("start_time", "").strip(),
                                  "end_time": form.get("end_time", "").strip(),
                                  **({"days": days} if days else {})}}
    # A refused schedule is shown beside the schedule's fields, an inactive timeout beside its own.
    shown_at = "schedule" if management == "schedule" else "inactive_duration"
    return validated(EngineSpec, body, {"name": "engine_name", "resource_management_config": shown_at})


def deployment_name(form: dict[str, str]) -> str | None:
    return form.get("name", "").strip() or None


def source(form: dict[str, str]) -> DeploymentSource:
    """The checkpoint a form picked: ``training_id`` + ``checkpoint``, or ``experiment_id`` +
    ``version``."""
    if form.get("experiment_id"):
        body = {"type": "experiment", "experiment_id": form["experiment_id"],
                "version": number(form, "version")}
    elif form.get("training_id"):
        body = {"type": "training_job", "training_id": form["training_id"],
                "checkpoint": number(form, "checkpoint")}
    else:
        raise FormError({"source": "pick a training job and a checkpoint, or an experiment and a version"})
    try:
        return _SOURCE.validate_python(body)
    except ValidationError as error:
        raise FormError({"source": message_of(error)}) from None


def errors_of(error: EnginehouseError, fields: dict[str, str] | None = None) -> dict[str, str]:
    """A service's refusal, shown beside the field its ``param`` names (or atop the form);
    ``fields`` maps the API's names to the form's where they differ."""
    param = (error.param or "").split(".")[0]
    return {_field(param, fields or {}): error.message}


def validated(model: type[Spec], body: dict[str, Any], fields: dict[str, str] | None = None) -> Spec:
    """``body`` as ``model``, or a FormError with each refused field's message beside it."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        errors: dict[str, str] = {}
        for item in error.errors():
            where, message = describe_validation_item(item)
            errors.setdefault(_field(where.split(".", 1)[0], fields or {}),
                              f"{where}: {message}" if where else message)
        raise FormError(errors) from None


def _field(param: str, fields: dict[str, str]) -> str:
    return fields.get(param) or _FIELD_OF.get(param, param) or "form"


def number(form: dict[str, str], field: str, default: str | None = None) -> float | int:
    text = form.get(field, "").strip() or default
    try:
        if text is None:
            raise ValueError
        value = float(text)
    except ValueError:
        raise FormError({field: f"{field}: a number is needed"}) from None
    return int(value) if value.is_integer() else value


def message_of(error: ValidationError) -> str:
    where, message = describe_validation_item(error.errors()[0])
    return f"{where}: {message}" if where else message
