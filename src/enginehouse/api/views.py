"""Rows → wire objects, and the JSON answer that carries them.

The rows come from the services' read functions (``services/reads.py``): JSON columns arrive as
the text the database holds and are embedded as is (``orjson.Fragment``), timestamps arrive as
ISO 8601 UTC text. Answers are serialised here, once, with orjson: FastAPI's ``jsonable_encoder``
walks every value of every dict in Python, which on a list of 10,000 deployments costs far more
than reading them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson
from orjson import Fragment
from starlette.responses import Response

from enginehouse.core.ids import iso, utcnow
from enginehouse.core.resource_management import NextTransition, next_transition
from enginehouse.core.status import DeploymentKind, EngineStatus
from enginehouse.services.deployments import ModelList
from enginehouse.services.engines import EngineRead
from enginehouse.services.pages import Page
from enginehouse.services.training_jobs import TrainingJobRead

Obj = dict[str, Any]
T = TypeVar("T")


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def stored_json(text: str | None) -> Fragment | None:
    """A JSON column's stored text (or NULL), embedded without parsing it."""
    return None if text is None else Fragment(text)


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


# Each function below unpacks a row in the order its read function selects the fields
# (``services.engines.DEPLOYMENT_FIELDS`` and the like): by position, since reading 10,000 rows'
# fields by name costs more than everything else a list does.


def deployment_to_dict(row: Sequence[Any]) -> Obj:
    (id_, name, engine_id, kind, source, status, status_reason, task_type, metadata, created_at,
     updated_at) = row
    return {
        "id": id_,
        "object": "deployment",
        "name": name,
        "engine_id": engine_id,
        "kind": kind,
        "source": Fragment(source),
        "status": status,
        "status_reason": status_reason,
        "task_type": task_type,
        "metadata": Fragment(metadata),
        "created_at": created_at,
        "updated_at": updated_at,
    }


def replica_to_dict(row: Sequence[Any], in_flight: int = 0) -> Obj:
    id_, _engine_id, status, url, started_at = row
    return {"id": id_, "status": status, "url": url, "in_flight": in_flight, "started_at": started_at}


def engine_to_dict(read: EngineRead, in_flight: dict[str, int]) -> Obj:
    """An engine with its replicas and deployments: whole, or in a list as the database built them
    in short (``EngineRead.deployments_json``: the whole object is in ``GET /v1/engines/{id}``
    and ``GET /v1/deployments/{id}``)."""
    (id_, name, task_type, base_model, status, status_reason, deployment_option, selected_option,
     autoscaling, resource_management, runtime_options, created_at, last_access_at,
     hold_until, autoscaler_decision) = read.engine
    upcoming = _next_transition(status, resource_management, last_access_at, hold_until)
    return {
        "id": id_,
        "object": "engine",
        "name": name,
        "task_type": task_type,
        "base_model": base_model,
        "status": status,
        "status_reason": status_reason,
        "deployment_option": deployment_option,
        "selected_deployment_option": stored_json(selected_option),
        "autoscaling": stored_json(autoscaling),
        "autoscaler": stored_json(autoscaler_decision),
        "resource_management_config": stored_json(resource_management),
        "runtime_options": stored_json(runtime_options),
        "replicas": [replica_to_dict(r, in_flight.get(r[0], 0)) for r in read.replicas],
        "deployments": (Fragment(read.deployments_json) if read.deployments_json is not None
                        else [deployment_to_dict(d) for d in read.deployments]),
        "created_at": created_at,
        "last_access_timestamp": last_access_at,
        "next_transition_at": iso(upcoming.at) if upcoming else None,
        "next_transition": upcoming.change.value if upcoming else None,
    }


def _next_transition(
    status: str, management: str | None, last_access_at: str | None, hold_until: str | None
) -> NextTransition | None:
    """When the engine next sleeps or wakes by itself (its resource management), from the row's
    stored text; engines without resource management, most of a long list, cost nothing."""
    if management is None:
        return None
    return next_transition(
        EngineStatus(status), json.loads(management), _parsed(last_access_at), _parsed(hold_until), utcnow()
    )


def _parsed(iso: str | None) -> datetime | None:
    return None if iso is None else datetime.fromisoformat(iso)



def training_job_to_dict(read: TrainingJobRead) -> Obj:
    (id_, name, task_type, base_model, status, status_reason, progress, progress_detail,
     train_dataset_id, test_dataset_id, split_ratio, parameters, created_at, started_at, finished_at,
     experiment_id, experiment_version) = read.job
    return {
        "id": id_,
        "object": "training_job",
        "name": name,
        "task_type": task_type,
        "base_model": base_model,
        "status": status,
        "status_reason": status_reason,
        "progress": round(progress, 1),
        "progress_detail": stored_json(progress_detail),
        "train_dataset_id": train_dataset_id,
        "test_dataset_id": test_dataset_id,
        "train_test_split_ratio": split_ratio,
        "parameters": stored_json(parameters),
        "checkpoints": [
            {"checkpoint": checkpoint, "path": path, "test_results": stored_json(test_results)}
            for _job_id, checkpoint, path, test_results in read.checkpoints
        ],
        "created_at": created_at,
        "started_at": started_at,
        "finished_at": finished_at,
        # Set when the job builds or trains a version of a Playground experiment.
        "experiment_id": experiment_id,
        "experiment_version": experiment_version,
    }


def dataset_to_dict(row: Sequence[Any]) -> Obj:
    id_, name, rows, size, created_at = row
    return {"id": id_, "object": "dataset", "name": name, "rows": rows, "bytes": size, "created_at": created_at}


def event_to_dict(row: Sequence[Any]) -> Obj:
    id_, at, object_id, object_name, from_status, to_status, reason = row
    return {
        "id": id_,
        "at": at,
        "object": object_id,
        "name": object_name,
        "from": from_status,
        "to": to_status,
        "reason": reason,
    }


_BASE = DeploymentKind.BASE.value


def models_body(models: ModelList) -> Obj:
    """``GET /v1/models``: OpenAI's model list, with each deployment's status and engine."""
    owner, parents = models.owner, models.base_names
    data = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": owner,
            "root": name,
            "parent": None if kind == _BASE else parents.get(engine_id),
            "status": status,
            "task_type": task_type,
            "engine_id": engine_id,
        }
        for name, created, kind, status, task_type, engine_id in models.models
    ]
    return {"object": "list", "data": data}
