"""The databases the persistence and integration tests run on: SQLite always, PostgreSQL when
ENGINEHOUSE_TEST_DATABASE_URL names one (each use gets a schema of its own)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get("ENGINEHOUSE_TEST_DATABASE_URL", "")
BACKENDS = ["sqlite", "postgresql"]
SKIP_REASON = "PostgreSQL variant: set ENGINEHOUSE_TEST_DATABASE_URL to run it"


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose connections use a fresh schema of the test database; dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip(SKIP_REASON)
    schema = f"eh_{secrets.token_hex(6)}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()
