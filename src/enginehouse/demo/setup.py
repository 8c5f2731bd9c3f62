"""``enginehouse up --demo``: build a tiny model and two LoRA adapters in the data directory and
deploy them on an engine named ``demo``, so the README's example calls answer at once.

Idempotent: a restart reuses what is there.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select

from enginehouse.core.specs import EngineSpec, TrainingJobSource
from enginehouse.core.task_types import TaskType
from enginehouse.db.models import EngineModel, OrganizationModel, TrainingJobModel
from enginehouse.db.session import Database
from enginehouse.services import deployments as deployment_service
from enginehouse.services import engines as engine_service
from enginehouse.services import training_jobs as job_service
from enginehouse.services.orgs import DEFAULT_ORGANIZATION
from enginehouse.settings import Settings

log = logging.getLogger(__name__)

DEMO_ENGINE = "demo"
DEMO_JOB = "demo-finetunes"
# (deployment name, checkpoint epoch, adapter seed)
DEMO_ADAPTERS = (("demo-pirate", 1, 101), ("demo-poet", 2, 202))


def build_demo_models(root: Path) -> tuple[Path, dict[int, Path]]:
    """The base model directory and {epoch: adapter directory}, built once."""
    from enginehouse.demo.tiny_models import build_lora_adapter, build_tiny_llama

    base = root / "base"
    if not (base / "config.json").is_file():
        log.info("building the demo model in %s", base)
        build_tiny_llama(base, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
                         intermediate_size=256, seed=7)
    adapters: dict[int, Path] = {}
    for _name, epoch, seed in DEMO_ADAPTERS:
        path = root / "adapters" / f"epoch-{epoch}"
        if not (path / "adapter_config.json").is_file():
            build_lora_adapter(base, path, seed=seed, r=8)
        adapters[epoch] = path
    return base, adapters


def install_demo(database: Database, settings: Settings) -> None:
    base, adapters = build_demo_models(settings.data_dir / "demo")
    with database.session() as session:
        org_id = session.scalar(
            select(OrganizationModel.id).where(OrganizationModel.name == DEFAULT_ORGANIZATION)
        )
        assert org_id is not None, "the default organization is created before the demo"
        exists = select(EngineModel.id).where(
            EngineModel.organization_id == org_id, EngineModel.name == DEMO_ENGINE
        )
        if session.scalar(exists) is not None:
            return
        job = session.scalar(
            select(TrainingJobModel).where(
                TrainingJobModel.organization_id == org_id, TrainingJobModel.name == DEMO_JOB
            )
        ) or job_service.register_training_job(
            session,
            org_id,
            job_service.TrainingJobSpec(
                name=DEMO_JOB,
                task_type=TaskType.TEXT_GENERATION,
                base_model=str(base),
                checkpoints=[
                    job_service.CheckpointSpec(checkpoint=epoch, path=str(path))
                    for epoch, path in adapters.items()
                ],
            ),
        )
        engine = engine_service.create_engine(
            session,
            org_id,
            EngineSpec(name=DEMO_ENGINE, base_model=str(base), task_type=TaskType.TEXT_GENERATION),
        )
        for name, epoch, _seed in DEMO_ADAPTERS:
            source = TrainingJobSource(type="training_job", training_id=job.id, checkpoint=epoch)
            deployment_service.deploy(session, org_id, engine.id, name, source)
    log.info("demo: engine %r with deployments %s", DEMO_ENGINE,
             ", ".join(name for name, _, _ in DEMO_ADAPTERS))
