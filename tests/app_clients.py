"""An in-process server (``create_app`` under a TestClient) on either database, for the tests
that call the API or the dashboard without starting real processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from enginehouse.server import create_app
from enginehouse.settings import Settings
from tests.databases import postgres_schema


@contextmanager
def database_url_for(backend: str) -> Iterator[str]:
    """``""`` (the embedded SQLite) or the URL of a fresh PostgreSQL schema."""
    if backend == "sqlite":
        yield ""
    else:
        with postgres_schema() as url:
            yield url


@contextmanager
def app_client(backend: str, tmp_path: Path, key: str, *, quiet: tuple[str, ...] = ("training",),
               **settings: Any) -> Iterator[TestClient]:
    """A started app with ``key`` as its admin key. ``quiet`` names the background parts stopped
    once it is up (``training``: jobs stay Pending; ``reconciler``: no replica is started)."""
    with database_url_for(backend) as url:
        config = Settings(data_dir=tmp_path / "data", database_url=url, bootstrap_key=key, **settings)
        with TestClient(create_app(config), raise_server_exceptions=False) as client:
            for part in quiet:
                getattr(client.app.state, part).stop()  # type: ignore[attr-defined]
            yield client
