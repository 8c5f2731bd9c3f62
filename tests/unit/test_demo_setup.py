"""The demo's set-up steps against a real migrated SQLite database, through the real services,
without a server or workers: what the first start creates, that a second creates nothing, that a
fine-tune or an experiment a stopped server left Failed or Cancelled is started again, and the
text-generation engine on a downloaded model or, offline, on the tiny model built here."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
from sqlalchemy import func, select

from enginehouse.db.models import DatasetModel, DeploymentModel, EngineModel, ExperimentModel, TrainingJobModel
from enginehouse.db.session import Database
from enginehouse.demo import encoders, hub, textgen
from enginehouse.demo.records import default_organization
from enginehouse.demo.setup import serving_state
from enginehouse.services import orgs
from enginehouse.services import training_jobs as job_service
from enginehouse.settings import Settings


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture()
def database(settings: Settings) -> Iterator[Database]:
    database = Database(settings.resolved_database_url())
    database.migrate()
    with database.session() as session:
        orgs.bootstrap(session, None)
    yield database
    database.close()


def counts(database: Database) -> dict[str, int]:
    with database.session() as session:
        return {model.__tablename__: int(session.scalar(select(func.count()).select_from(model)) or 0)
                for model in (EngineModel, DeploymentModel, DatasetModel, TrainingJobModel, ExperimentModel)}


def test_the_encoder_demo_is_declared_once(database: Database, settings: Settings) -> None:
    first = encoders.declare(database, settings)
    assert [item.deployment for item in first] == ["urgency", "support-tickets"]
    made = counts(database)
    # Two engines; a dataset; the fine-tune and the experiment's version 1.
    assert made == {"engines": 2, "deployments": 0, "datasets": 1, "training_jobs": 2, "experiments": 1}
    with database.session() as session:
        job = session.get(TrainingJobModel, first[1].job_id)
        assert job is not None and job.status == "Pending" and (job.parameters or {})["pooling"] == "mean"
        dataset = session.get(DatasetModel, job.train_dataset_id)
        assert dataset is not None and dataset.rows == 300
        assert Path(dataset.path).parent == settings.data_dir / "datasets"  # stored as an upload is

    again = encoders.declare(database, settings)
    assert [item.job_id for item in again] == [item.job_id for item in first]
    assert counts(database) == made
    # Not yet served: the engines have no replica in this test.
    waiting, serving = serving_state(database)
    assert serving == [] and "engine demo-classifier is Provisioning" in waiting


def test_jobs_a_stopped_server_ended_are_started_again(database: Database, settings: Settings) -> None:
    urgency, tickets = encoders.declare(database, settings)
    with database.session() as session:
        org_id = default_organization(session)
        for item in (urgency, tickets):
            job_service.cancel_training_job(session, org_id, item.job_id)
    retried = encoders.declare(database, settings)
    assert {item.job_id for item in retried}.isdisjoint({urgency.job_id, tickets.job_id})
    # A new job on the same dataset; a new experiment of the same name (version 1 cannot be redone).
    assert counts(database) == {"engines": 2, "deployments": 0, "datasets": 1, "training_jobs": 4,
                                "experiments": 2}


def test_offline_the_text_generation_demo_is_the_tiny_model_with_two_adapters(
    database: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub, "hub_offline", lambda: True)
    root = settings.data_dir / "demo"
    textgen.prepare_textgen(database, root)
    with database.session() as session:
        engine = session.scalar(select(EngineModel).where(EngineModel.name == "demo"))
        assert engine is not None and engine.base_model == str(root / "base")
        names = set(session.scalars(select(DeploymentModel.name)))
    assert names == {"demo-pirate", "demo-poet"}  # the base deployment comes once the engine is Active
    made = counts(database)
    textgen.prepare_textgen(database, root)
    assert counts(database) == made


def test_online_the_text_generation_demo_is_the_downloaded_model(
    database: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch, tiny_llama_dir: Path
) -> None:
    """The Hub stood in for by a download that copies the tiny Llama: what the demo does with a
    model that arrived (the network part is huggingface_hub's own)."""
    downloads: list[dict[str, Any]] = []

    def download(repo_id: str, *, local_dir: Path, allow_patterns: list[str]) -> str:
        downloads.append({"repo_id": repo_id, "allow_patterns": allow_patterns})
        shutil.copytree(tiny_llama_dir, local_dir, dirs_exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(hub, "hub_offline", lambda: False)
    monkeypatch.setattr(hub, "hub_reachable", lambda *_a, **_k: True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    root = settings.data_dir / "demo"
    textgen.prepare_textgen(database, root)
    assert downloads == [{"repo_id": hub.INSTRUCT_MODEL, "allow_patterns": hub.INSTRUCT_FILES}]
    model = root / textgen.INSTRUCT_DIR
    assert hub.is_complete(model)
    with database.session() as session:
        engine = session.scalar(select(EngineModel).where(EngineModel.name == "demo"))
        assert engine is not None and engine.base_model == str(model) and engine.task_type == "text-generation"
        assert list(session.scalars(select(DeploymentModel.name))) == []  # no adapters on the real model
    made = counts(database)
    textgen.prepare_textgen(database, root)
    assert counts(database) == made and len(downloads) == 1
