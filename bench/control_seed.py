"""The control plane's data at scale, written through the services layer before the server starts:
the organization and key the server will find, one training job, and engines that are Inactive
(so no replica starts) with their base deployment and fine-tuned deployments, all Deactivated.
Each engine sleeps on a schedule whose window opens hours after the run, as engines that serve
office hours do overnight: the reconciler must hold them all without stepping them idly.

Every row goes through the same service functions an API call uses (create_engine, the one door
for statuses, deploy), so the rows, events and indexes are what a real installation would have.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from bench.config import ControlConfig
from bench.runs import progress
from enginehouse.core.ids import new_id
from enginehouse.core.specs import EngineSpec, TrainingJobSource
from enginehouse.core.status import DeploymentStatus, EngineStatus
from enginehouse.db.models import DeploymentModel, EventModel
from enginehouse.db.session import Database
from enginehouse.services import deployments, engines, orgs, training_jobs
from enginehouse.services.status import switch_deployment_status, switch_engine_status


@dataclass(frozen=True)
class Seeded:
    """What the runs call: ids picked from the middle of the data, not its edges."""

    engine_ids: list[str]
    deployment_ids: list[str]
    training_id: str
    deployments: int
    events: int
    seconds: float


def fake_adapter(path: Path) -> Path:
    """A directory that passes registration's checks for a LoRA adapter; no replica loads it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (path / "adapter_model.safetensors").write_bytes(b"")
    return path


def seed(database_url: str, api_key: str, work_dir: Path, cfg: ControlConfig, engine_count: int | None = None
         ) -> Seeded:
    """``engine_count`` engines (``cfg.engines`` by default) of ``cfg.deployments_per_engine``."""
    started = time.monotonic()
    database = Database(database_url)
    try:
        database.migrate()
        with database.session() as session:
            orgs.bootstrap(session, api_key)
            org_id = orgs.authenticate(session, api_key)
            spec = training_jobs.TrainingJobSpec(
                name="bench-control", task_type="text-generation", base_model=str(work_dir / "base"),
                checkpoints=[training_jobs.CheckpointSpec(
                    checkpoint=1, path=str(fake_adapter(work_dir / "adapter")))],
            )
            job_id = training_jobs.register_training_job(session, org_id, spec).id
        schedule = _closed_schedule()
        engine_ids = [_seed_engine(database, org_id, job_id, i, cfg, work_dir, schedule)
                      for i in range(engine_count or cfg.engines)]
        with database.session() as session:
            deployment_ids = list(session.scalars(select(DeploymentModel.id).order_by(DeploymentModel.id)))
            events = session.scalar(select(func.count()).select_from(EventModel)) or 0
    finally:
        database.close()
    seconds = time.monotonic() - started
    progress(f"seeded {len(engine_ids)} engines, {len(deployment_ids)} deployments, {events} events "
             f"in {seconds:.0f} s")
    return Seeded(engine_ids, deployment_ids, job_id, len(deployment_ids), events, round(seconds, 1))


def _closed_schedule() -> dict[str, Any]:
    """A daily hour-long window opening twelve hours from now (UTC): closed for the whole run."""
    opens = datetime.now(timezone.utc) + timedelta(hours=12)
    return {"management_type": "schedule", "management_config": {
        "timezone": "UTC", "start_time": opens.strftime("%H:%M"),
        "end_time": (opens + timedelta(hours=1)).strftime("%H:%M")}}


def _seed_engine(database: Database, org_id: str, job_id: str, index: int, cfg: ControlConfig,
                 work_dir: Path, schedule: dict[str, Any]) -> str:
    """One engine, in one transaction: created, Active (its base deployment appears), then
    deactivated, then ``deployments_per_engine - 1`` fine-tunes deployed onto it."""
    name = f"engine-{index:03d}"
    spec = EngineSpec.model_validate({"name": name, "base_model": str(work_dir / "base"),
                                      "task_type": "text-generation", "resource_management_config": schedule})
    source = TrainingJobSource(type="training_job", training_id=job_id, checkpoint=1)
    with database.session() as session:
        engine = engines.create_engine(session, org_id, spec)
        switch_engine_status(session, engine, EngineStatus.ACTIVE, "replicas ready")
        base = deployments.create_base_deployment(session, engine)
        switch_engine_status(session, engine, EngineStatus.DEACTIVATING, "deactivation requested")
        switch_deployment_status(session, base, DeploymentStatus.DEACTIVATED, "engine deactivated")
        switch_engine_status(session, engine, EngineStatus.INACTIVE, "replicas stopped")
        for j in range(cfg.deployments_per_engine - 1):
            deployments.deploy(session, org_id, engine.id, f"{name}-ft-{j:03d}", source)
        if index % 20 == 19:
            progress(f"seeded {index + 1} engines")
        return engine.id


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A URL of the PostgreSQL database ``url`` whose connections use a new schema, dropped after."""
    schema = f"eh_bench_{new_id('s').split('-')[1]}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()
