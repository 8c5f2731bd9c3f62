"""The migrations build exactly the schema the models describe, and step down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from enginehouse.db.migrate import alembic_config
from enginehouse.db.models import Base
from enginehouse.db.session import Database


def _differences(database: Database) -> list[object]:
    with database.engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def _migrate(database: Database, direction: str, revision: str) -> None:
    config = alembic_config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)


def test_the_migrated_schema_is_the_models(database: Database) -> None:
    assert _differences(database) == []
    indexes = {i["name"] for i in inspect(database.engine).get_indexes("deployments")}
    assert {"ix_deployments_list", "ix_deployments_engine_list"} <= indexes


def test_the_list_indexes_step_down_and_up(database: Database) -> None:
    _migrate(database, "downgrade", "0001")
    indexes = {i["name"] for i in inspect(database.engine).get_indexes("deployments")}
    assert "ix_deployments_list" not in indexes and "ix_deployments_engine_id" in indexes
    _migrate(database, "upgrade", "head")
    assert _differences(database) == []


def test_replicas_lose_their_process_columns_and_get_them_back(database: Database) -> None:
    def columns() -> set[str]:
        return {c["name"] for c in inspect(database.engine).get_columns("replicas")}

    assert not {"pid", "log_path"} & columns()
    _migrate(database, "downgrade", "0004")
    assert {"pid", "log_path"} <= columns()
    _migrate(database, "upgrade", "head")
    assert not {"pid", "log_path"} & columns()
    assert _differences(database) == []


def test_replica_secrets_step_down_and_up(database: Database) -> None:
    def columns() -> set[str]:
        return {c["name"] for c in inspect(database.engine).get_columns("replicas")}

    assert "secret" in columns()
    _migrate(database, "downgrade", "0008")
    assert "secret" not in columns()
    _migrate(database, "upgrade", "head")
    assert "secret" in columns()
    assert _differences(database) == []
