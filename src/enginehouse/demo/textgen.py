"""The demo's text-generation engine ``demo``: SmolLM2-135M-Instruct when it can be fetched from
the Hub, a real small chat model that answers sensibly; otherwise a tiny random Llama built here
in seconds, with two LoRA adapters (``demo-pirate``, ``demo-poet``), whose answers are noise but
which shows adapters served beside their base model.

Whichever the first start got, later starts keep: the engine is looked up by name and reused.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from enginehouse.core.specs import EngineSpec, TrainingJobSource
from enginehouse.core.task_types import TaskType
from enginehouse.db.session import Database
from enginehouse.demo.hub import INSTRUCT_MODEL, fetch_instruct_model
from enginehouse.demo.records import default_organization, find_engine, find_fine_tune
from enginehouse.services import deployments as deployment_service
from enginehouse.services import engines as engine_service
from enginehouse.services import training_jobs as job_service

log = logging.getLogger(__name__)

DEMO_ENGINE = "demo"
# The training job the tiny model's adapters are registered under.
DEMO_JOB = "demo-finetunes"
# (deployment name, checkpoint epoch, adapter seed)
DEMO_ADAPTERS = (("demo-pirate", 1, 101), ("demo-poet", 2, 202))
INSTRUCT_DIR = "smollm2-135m-instruct"


def build_demo_models(root: Path) -> tuple[Path, dict[int, Path]]:
    """The tiny base model's directory and {epoch: adapter directory}, built once."""
    from enginehouse.demo.tiny_models import build_lora_adapter, build_tiny_llama

    base = root / "base"
    with _quietly():
        if not (base / "config.json").is_file():
            log.info("demo: building the tiny text-generation model in %s", base)
            build_tiny_llama(base, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
                             intermediate_size=256, seed=7)
        adapters: dict[int, Path] = {}
        for _name, epoch, seed in DEMO_ADAPTERS:
            path = root / "adapters" / f"epoch-{epoch}"
            if not (path / "adapter_config.json").is_file():
                build_lora_adapter(base, path, seed=seed, r=8)
            adapters[epoch] = path
    return base, adapters


@contextmanager
def _quietly() -> Iterator[None]:
    """Without transformers' progress bars and developer notices: on the server's console they
    would drown the demo's own lines for a model that takes a second to write."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        transformers_logging.enable_progress_bar()


def prepare_textgen(database: Database, root: Path) -> None:
    """Create the engine (and the tiny model's adapters) unless an earlier start did; the model
    files live under ``root``."""
    with database.session() as session:
        if find_engine(session, default_organization(session), DEMO_ENGINE) is not None:
            log.info("demo: engine %r exists (an earlier start made it): reused", DEMO_ENGINE)
            return
    instruct = fetch_instruct_model(root / INSTRUCT_DIR)
    if instruct is not None:
        _create_instruct_engine(database, instruct)
        log.info("demo: engine %r (text-generation on %s) created", DEMO_ENGINE, INSTRUCT_MODEL)
        return
    base, adapters = build_demo_models(root)
    _create_tiny_engine(database, base, adapters)
    log.info("demo: engine %r (text-generation on a tiny random model) created, with adapters %s", DEMO_ENGINE,
             ", ".join(name for name, _epoch, _seed in DEMO_ADAPTERS))


def _create_instruct_engine(database: Database, model_dir: Path) -> None:
    with database.session() as session:
        org_id = default_organization(session)
        engine_service.create_engine(session, org_id, EngineSpec(
            name=DEMO_ENGINE, base_model=str(model_dir), task_type=TaskType.TEXT_GENERATION))


def _create_tiny_engine(database: Database, base: Path, adapters: dict[int, Path]) -> None:
    """The engine, the adapters' registration and their deployments in one transaction: an
    interrupted start leaves either all of it or none."""
    with database.session() as session:
        org_id = default_organization(session)
        job = find_fine_tune(session, org_id, DEMO_JOB) or job_service.register_training_job(
            session, org_id, job_service.TrainingJobSpec(
                name=DEMO_JOB, task_type=TaskType.TEXT_GENERATION, base_model=str(base),
                checkpoints=[job_service.CheckpointSpec(checkpoint=epoch, path=str(path))
                             for epoch, path in adapters.items()],
            ))
        engine = engine_service.create_engine(session, org_id, EngineSpec(
            name=DEMO_ENGINE, base_model=str(base), task_type=TaskType.TEXT_GENERATION))
        for name, epoch, _seed in DEMO_ADAPTERS:
            source = TrainingJobSource(type="training_job", training_id=job.id, checkpoint=epoch)
            deployment_service.deploy(session, org_id, engine.id, name, source)
