"""One reconcile step against a real database and the real local provider: an engine whose base
model no process can be given fails once, with the reason, and is not retried."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from enginehouse.core.specs import EngineSpec
from enginehouse.core.task_types import TaskType
from enginehouse.db.models import EngineModel, ReplicaModel
from enginehouse.db.session import Database
from enginehouse.providers.local import LocalProvider
from enginehouse.reconciler.engine_step import EngineStep
from enginehouse.reconciler.replica_client import ReplicaClient
from enginehouse.services import engines, orgs
from enginehouse.services.pages import PageRequest


async def _steps(database: Database, provider: LocalProvider, engine_id: str, count: int) -> None:
    async with httpx.AsyncClient() as client:
        step = EngineStep(database, provider, ReplicaClient(client), start_timeout_s=60)
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
    provider = LocalProvider(tmp_path / "logs")
    asyncio.run(_steps(database, provider, engine_id, count=3))
    with database.session() as session:
        engine = session.get(EngineModel, engine_id)
        assert engine is not None and engine.status == "Failed"
        assert "embedded null byte" in str(engine.status_reason)
        events = [e.to_status for e in engines.engine_events(session, org_id, engine_id, PageRequest()).items]
        assert events == ["Provisioning", "Failed"]
        assert list(session.scalars(select(ReplicaModel))) == []
