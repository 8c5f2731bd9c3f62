"""Fixtures that start real servers on SQLite and, where ENGINEHOUSE_TEST_DATABASE_URL names
one, on PostgreSQL (each server in a schema of its own)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.databases import BACKENDS, postgres_schema
from tests.integration.harness import ServerProcess

@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """"" for the embedded SQLite default, else a PostgreSQL URL with a schema of its own."""
    if request.param == "sqlite":
        yield ""
        return
    with postgres_schema() as url:
        yield url


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[ServerFactory]:
    """Start servers on demand; every one started is stopped (with its replicas) at the end."""
    servers: list[ServerProcess] = []

    def start(data_dir: Path | None = None, api_key: str | None = None,
              settings: dict[str, str] | None = None, demo: bool = False) -> ServerProcess:
        server = ServerProcess(
            data_dir or tmp_path_factory.mktemp("server"),
            api_key or f"eh-test-{secrets.token_hex(8)}",
            database_url,
            settings,
            demo=demo,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
