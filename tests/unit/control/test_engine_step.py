"""One reconcile step against a real database and the real local provider: an engine whose base
model no process can be given fails once, with the reason, and is not retried; an engine placed on
an option the provider cannot give waits, saying so; a manual change holds against the engine's
schedule."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from enginehouse.core import options
from enginehouse.core.specs import EngineSpec
from enginehouse.core.status import EngineStatus
from enginehouse.core.task_types import TaskType
from enginehouse.db.models import EngineModel, ReplicaModel
from enginehouse.db.session import Database
from enginehouse.providers.local import LocalProvider
from enginehouse.providers.local_gpus import LocalGpu, parse_probe
from enginehouse.reconciler.engine_step import EngineStep
from enginehouse.reconciler.replica_client import ReplicaClient
from enginehouse.reconciler.replica_plan import ReplicaLimits
from enginehouse.services import engines, orgs
from enginehouse.services.pages import PageRequest
from enginehouse.errors import NotFoundError
from enginehouse.services.status import switch_engine_status


async def _steps(database: Database, provider: LocalProvider, engine_id: str, count: int) -> None:
    async with httpx.AsyncClient() as client:
        step = EngineStep(database, provider, ReplicaClient(client), ReplicaLimits(start_timeout_s=60))
        for _ in range(count):
            await step.run(engine_id)


def test_a_base_model_no_process_can_take_fails_the_engine_once(database: Database, tmp_path: Path) -> None:
    # Such a row can only come from before bodies were checked; the reconciler must cope with it.
    # PostgreSQL never stores a NUL in text, so there such a row cannot exist at all.
    if database.engine.dialect.name == "postgresql":
        pytest.skip("PostgreSQL refuses NUL bytes in text: no such row can exist there")
    spec = EngineSpec.model_construct(name="nul", base_model="/models/a\x00b", task_type=TaskType.EMBEDDING)
    with database.session() as session:
        orgs.create_organization(session, "acme")
        org_id = orgs.create_api_key(session, "acme").organization_id
        engine_id = engines.create_engine(session, org_id, spec).id
    provider = LocalProvider(tmp_path)
    asyncio.run(_steps(database, provider, engine_id, count=3))
    with database.session() as session:
        engine = session.get(EngineModel, engine_id)
        assert engine is not None and engine.status == "Failed"
        assert "embedded null byte" in str(engine.status_reason)
        events = [e.to_status for e in engines.engine_events(session, org_id, engine_id, PageRequest()).items]
        assert events == ["Provisioning", "Failed"]
        assert list(session.scalars(select(ReplicaModel))) == []


@pytest.mark.parametrize("manual", [True, False])
def test_a_manual_deactivation_inside_the_window_holds_against_the_schedule(
    database: Database, tmp_path: Path, manual: bool
) -> None:
    always_open = {"management_type": "schedule", "management_config": {
        "timezone": "UTC", "start_time": "00:00", "end_time": "00:00"}}
    spec = EngineSpec.model_validate({"name": "sched", "base_model": "/models/base",
                                      "task_type": "text-generation",
                                      "resource_management_config": always_open})
    with database.session() as session:
        orgs.create_organization(session, "acme")
        org_id = orgs.create_api_key(session, "acme").organization_id
        engine = engines.create_engine(session, org_id, spec)
        switch_engine_status(session, engine, EngineStatus.ACTIVE)
        engines.deactivate_engine(session, org_id, engine.id, manual=manual)
        switch_engine_status(session, engine, EngineStatus.INACTIVE)
        engine_id = engine.id
    asyncio.run(_steps(database, LocalProvider(tmp_path), engine_id, count=1))
    with database.session() as session:
        engine = session.get(EngineModel, engine_id)
        assert engine is not None
        # Held by hand it stays down; deactivated by anything else, its open window wakes it.
        assert engine.status == ("Inactive" if manual else "Reactivating")


def test_an_engine_on_an_option_no_provider_gives_waits_and_says_for_what(
    database: Database, tmp_path: Path
) -> None:
    # Placed on a local GPU when the engine was created; this server's provider has none now.
    gone_gpu = options.local_gpu(0, "NVIDIA L4", 24 * 10**9)
    spec = EngineSpec(name="gpu", base_model="/models/base", task_type=TaskType.TEXT_GENERATION,
                      deployment_option=gone_gpu.name)
    with database.session() as session:
        orgs.create_organization(session, "acme")
        org_id = orgs.create_api_key(session, "acme").organization_id
        engine_id = engines.create_engine(session, org_id, spec, offers=options.listing([gone_gpu])).id
    provider = LocalProvider(tmp_path, find_gpus=lambda: [])
    assert [o.name for o in provider.deployment_options()] == ["cpu"]
    asyncio.run(_steps(database, provider, engine_id, count=2))
    with database.session() as session:
        engine = session.get(EngineModel, engine_id)
        assert engine is not None and engine.status == "Provisioning"
        assert engine.status_reason == options.waiting_reason(gone_gpu.name)
        assert list(session.scalars(select(ReplicaModel))) == []


def test_the_local_provider_offers_its_cpu_and_each_gpu(tmp_path: Path) -> None:
    gpus = [LocalGpu(0, "NVIDIA H200", 143_771_140_096), LocalGpu(1, "NVIDIA L4", 23_034_000_000)]
    provider = LocalProvider(tmp_path, find_gpus=lambda: gpus)
    offered = provider.deployment_options()
    assert [o.name for o in offered] == ["cpu", "local-gpu0-h200-144gb", "local-gpu1-l4-23gb"]
    assert offered[1].model_memory_bytes == 143_800_000_000
    assert parse_probe('[["NVIDIA A10G", 24000000000]]\n') == [LocalGpu(0, "NVIDIA A10G", 24_000_000_000)]


def test_a_deleted_engine_leaves_its_log_ending_with_the_deletion(database: Database, tmp_path: Path) -> None:
    spec = EngineSpec(name="gone", base_model="/models/base", task_type=TaskType.TEXT_GENERATION)
    with database.session() as session:
        orgs.create_organization(session, "acme")
        org_id = orgs.create_api_key(session, "acme").organization_id
        engine = engines.create_engine(session, org_id, spec)
        engines.delete_engine(session, org_id, engine.id)
        engine_id = engine.id
    asyncio.run(_steps(database, LocalProvider(tmp_path), engine_id, count=1))
    with database.session() as session:
        assert session.get(EngineModel, engine_id) is None
        events = engines.engine_events(session, org_id, engine_id, PageRequest()).items
        assert [(e.from_status, e.to_status) for e in events] == [
            (None, "Provisioning"), ("Provisioning", "Deleting"), ("Deleting", "Deleted")]
        with pytest.raises(NotFoundError):
            engines.engine_events(session, "org-someone-else", engine_id, PageRequest())
