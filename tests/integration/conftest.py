"""Fixtures that start real servers on SQLite and, where ENGINEHOUSE_TEST_DATABASE_URL names
one, on PostgreSQL (each server in a schema of its own: see ``start_server``)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.app_clients import database_url_for
from tests.databases import BACKENDS, postgres_schema
from tests.integration.harness import ServerProcess

@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """"" for the embedded SQLite default, else a PostgreSQL URL with a schema of its own."""
    with database_url_for(request.param) as url:
        yield url


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[ServerFactory]:
    """Start servers on demand; every one started is stopped (with its replicas) at the end.

    On PostgreSQL each new server gets a schema of its own, as a server of its own would have a
    database of its own: servers on one database share a control plane, where only one runs the
    reconciler (reconciler/leadership.py). A server started again on an earlier one's data
    directory (a restart) finds that one's schema again."""
    servers: list[ServerProcess] = []
    schemas = ExitStack()
    urls: dict[Path, str] = {}

    def start(data_dir: Path | None = None, api_key: str | None = None,
              settings: dict[str, str] | None = None, demo: bool = False) -> ServerProcess:
        data_dir = data_dir or tmp_path_factory.mktemp("server")
        url = database_url
        if database_url:
            url = urls.get(data_dir) or urls.setdefault(data_dir, schemas.enter_context(postgres_schema()))
        server = ServerProcess(
            data_dir,
            api_key or f"eh-test-{secrets.token_hex(8)}",
            url,
            settings,
            demo=demo,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
    schemas.close()
