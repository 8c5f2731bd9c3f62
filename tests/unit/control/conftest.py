from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from enginehouse.db.session import Database
from enginehouse.services import orgs
from tests.databases import BACKENDS, postgres_schema


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated database: SQLite, and PostgreSQL where the suite is given one."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'test.db'}")
        db.migrate()
        yield db
        db.close()
        return
    with postgres_schema() as url:
        db = Database(url)
        db.migrate()
        yield db
        db.close()


@pytest.fixture()
def session(database: Database) -> Iterator[Session]:
    with database.session() as session:
        yield session


@pytest.fixture()
def org_id(session: Session) -> str:
    orgs.create_organization(session, "acme")
    return orgs.create_api_key(session, "acme").organization_id


def fake_lora_checkpoint(path: Path, peft_type: str = "LORA") -> Path:
    """Registration checks files only; the weights are looked at by a replica later."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type, "r": 8}))
    (path / "adapter_model.safetensors").write_bytes(b"")
    return path
