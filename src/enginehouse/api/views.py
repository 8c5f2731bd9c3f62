"""Rows → wire objects, and the JSON answer that carries them.

The rows come from the services' read functions (``services/reads.py``): JSON columns arrive as
the text the database holds and are embedded as is (``orjson.Fragment``), timestamps arrive as
naive UTC datetimes and orjson writes them as ISO 8601 with a ``Z``. Answers are serialised here,
once, with orjson: FastAPI's ``jsonable_encoder`` walks every value of every dict in Python,
which on a list of 10,000 deployments costs far more than reading them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
from starlette.responses import Response

from enginehouse.core.status import DeploymentKind
from enginehouse.services.deployments import ModelList
from enginehouse.services.engines import EngineRead
from enginehouse.services.pages import Page
from enginehouse.services.training_jobs import TrainingJobRead

Obj = dict[str, Any]
T = TypeVar("T")

# Naive datetimes are UTC (the read functions make them so); "Z" rather than "+00:00".
_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)


def stored_json(text: str | None) -> orjson.Fragment | None:
    """A JSON column's stored text, embedded without parsing it."""
    return None if text is None else orjson.Fragment(text)


def page_body(page: Page[T], to_dict: Callable[[T], Obj], id_key: str = "id") -> Obj:
    """SPEC §5's list envelope around one page."""
    data = [to_dict(item) for item in page.items]
    return list_body(data, page.has_more, id_key)


def list_body(data: Sequence[Obj], has_more: bool, id_key: str = "id") -> Obj:
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0][id_key] if data else None,
        "last_id": data[-1][id_key] if data else None,
    }


def deployment_to_dict(deployment: Any) -> Obj:
    return {
        "id": deployment.id,
        "object": "deployment",
        "name": deployment.name,
        "engine_id": deployment.engine_id,
        "kind": deployment.kind,
        "source": stored_json(deployment.source),
        "status": deployment.status,
        "status_reason": deployment.status_reason,
        "task_type": deployment.task_type,
        "metadata": stored_json(deployment.metadata_),
        "created_at": deployment.created_at,
        "updated_at": deployment.updated_at,
    }


def replica_to_dict(replica: Any, in_flight: int = 0) -> Obj:
    return {
        "id": replica.id,
        "status": replica.status,
        "url": replica.url,
        "in_flight": in_flight,
        "started_at": replica.started_at,
    }


def engine_to_dict(read: EngineRead, in_flight: dict[str, int]) -> Obj:
    engine = read.engine
    return {
        "id": engine.id,
        "object": "engine",
        "name": engine.name,
        "task_type": engine.task_type,
        "base_model": engine.base_model,
        "status": engine.status,
        "status_reason": engine.status_reason,
        "deployment_option": engine.deployment_option,
        "selected_deployment_option": stored_json(engine.selected_option),
        "autoscaling": stored_json(engine.autoscaling),
        "resource_management_config": stored_json(engine.resource_management_config),
        "runtime_options": stored_json(engine.runtime_options),
        "replicas": [replica_to_dict(r, in_flight.get(r.id, 0)) for r in read.replicas],
        "deployments": [deployment_to_dict(d) for d in read.deployments],
        "created_at": engine.created_at,
        "last_access_timestamp": engine.last_access_at,
    }


def training_job_to_dict(read: TrainingJobRead) -> Obj:
    job = read.job
    return {
        "id": job.id,
        "object": "training_job",
        "name": job.name,
        "task_type": job.task_type,
        "base_model": job.base_model,
        "status": job.status,
        "checkpoints": [
            {"checkpoint": c.checkpoint, "path": c.path, "test_results": stored_json(c.test_results)}
            for c in read.checkpoints
        ],
        "created_at": job.created_at,
    }


def event_to_dict(event: Any) -> Obj:
    return {
        "id": event.id,
        "at": event.at,
        "object": event.object_id,
        "name": event.object_name,
        "from": event.from_status,
        "to": event.to_status,
        "reason": event.reason,
    }


_BASE = DeploymentKind.BASE.value


def models_body(models: ModelList) -> Obj:
    """``GET /v1/models``: OpenAI's model list, with each deployment's status and engine."""
    data = [
        {
            "id": m.name,
            "object": "model",
            "created": m.created,
            "owned_by": models.owner,
            "root": m.name,
            "parent": None if m.kind == _BASE else models.base_names.get(m.engine_id),
            "status": m.status,
            "task_type": m.task_type,
            "engine_id": m.engine_id,
        }
        for m in models.models
    ]
    return {"object": "list", "data": data}
