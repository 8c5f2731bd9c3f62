"""Rows → wire objects. One function per kind of object, used by the API and the dashboard."""

from __future__ import annotations

from typing import Any

from enginehouse.core.ids import iso
from enginehouse.db.models import (
    CheckpointModel,
    DeploymentModel,
    EngineModel,
    EventModel,
    ReplicaModel,
    TrainingJobModel,
)


def deployment_to_dict(deployment: DeploymentModel) -> dict[str, Any]:
    return {
        "id": deployment.id,
        "object": "deployment",
        "name": deployment.name,
        "engine_id": deployment.engine_id,
        "kind": deployment.kind,
        "source": deployment.source,
        "status": deployment.status,
        "status_reason": deployment.status_reason,
        "task_type": deployment.task_type,
        "metadata": deployment.metadata_ or {},
        "created_at": iso(deployment.created_at),
        "updated_at": iso(deployment.updated_at),
    }


def replica_to_dict(replica: ReplicaModel, in_flight: int = 0) -> dict[str, Any]:
    return {
        "id": replica.id,
        "status": replica.status,
        "url": replica.url,
        "in_flight": in_flight,
        "started_at": iso(replica.started_at),
    }


def engine_to_dict(
    engine: EngineModel,
    deployments: list[DeploymentModel],
    replicas: list[ReplicaModel],
    in_flight: dict[str, int] | None = None,
) -> dict[str, Any]:
    in_flight = in_flight or {}
    return {
        "id": engine.id,
        "object": "engine",
        "name": engine.name,
        "task_type": engine.task_type,
        "base_model": engine.base_model,
        "status": engine.status,
        "status_reason": engine.status_reason,
        "deployment_option": engine.deployment_option,
        "selected_deployment_option": engine.selected_option,
        "autoscaling": engine.autoscaling,
        "resource_management_config": engine.resource_management_config,
        "runtime_options": engine.runtime_options or {},
        "replicas": [replica_to_dict(r, in_flight.get(r.id, 0)) for r in replicas],
        "deployments": [deployment_to_dict(d) for d in deployments],
        "created_at": iso(engine.created_at),
        "last_access_timestamp": iso(engine.last_access_at),
    }


def checkpoint_to_dict(checkpoint: CheckpointModel) -> dict[str, Any]:
    return {
        "checkpoint": checkpoint.checkpoint,
        "path": checkpoint.path,
        "test_results": checkpoint.test_results,
    }


def training_job_to_dict(job: TrainingJobModel) -> dict[str, Any]:
    return {
        "id": job.id,
        "object": "training_job",
        "name": job.name,
        "task_type": job.task_type,
        "base_model": job.base_model,
        "status": job.status,
        "checkpoints": [checkpoint_to_dict(c) for c in job.checkpoints],
        "created_at": iso(job.created_at),
    }


def event_to_dict(event: EventModel) -> dict[str, Any]:
    return {
        "at": iso(event.at),
        "object": event.object_id,
        "name": event.object_name,
        "from": event.from_status,
        "to": event.to_status,
        "reason": event.reason,
    }
