"""Fixtures that start real servers on SQLite and, where ENGINEHOUSE_TEST_DATABASE_URL names
one, on PostgreSQL (each server in a schema of its own)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.integration.harness import ServerProcess

POSTGRES_URL = os.environ.get("ENGINEHOUSE_TEST_DATABASE_URL", "")

pytestmark = pytest.mark.integration


def _postgres_schema_url(base_url: str) -> tuple[str, str]:
    """A fresh schema in the test database, and a URL whose connections use it."""
    schema = f"eh_{secrets.token_hex(6)}"
    engine = create_engine(base_url)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), schema


def _drop_schema(base_url: str, schema: str) -> None:
    engine = create_engine(base_url)
    with engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """"" for the embedded SQLite default, else a PostgreSQL URL with a schema of its own."""
    if request.param == "sqlite":
        yield ""
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL variant: set ENGINEHOUSE_TEST_DATABASE_URL to run it")
    url, schema = _postgres_schema_url(POSTGRES_URL)
    yield url
    _drop_schema(POSTGRES_URL, schema)


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[ServerFactory]:
    """Start servers on demand; every one started is stopped (with its replicas) at the end."""
    servers: list[ServerProcess] = []

    def start(data_dir: Path | None = None, api_key: str | None = None) -> ServerProcess:
        server = ServerProcess(
            data_dir or tmp_path_factory.mktemp("server"),
            api_key or f"eh-test-{secrets.token_hex(8)}",
            database_url,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
