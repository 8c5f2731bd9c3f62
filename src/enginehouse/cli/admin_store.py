"""The database side of ``enginehouse orgs|keys``: open the server's database, migrate it, run
one service call, and hand back plain dicts.

Kept apart from the typer commands so SQLAlchemy is imported only by the commands that use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from enginehouse.cli.config import cli_settings
from enginehouse.cli.errors import CliError
from enginehouse.core.ids import iso
from enginehouse.db.session import Database
from enginehouse.errors import EnginehouseError
from enginehouse.services import orgs


@contextmanager
def admin_session(data_dir: Path | None) -> Iterator[Session]:
    """A session committed on success, on a database migrated first (so this works before the
    server ever ran); service and database errors become CliErrors with their message."""
    url = cli_settings(data_dir=data_dir).resolved_database_url()
    database = Database(url)
    try:
        database.migrate()
        with database.session() as session:
            yield session
    except EnginehouseError as exc:
        raise CliError(exc.message) from None
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise CliError(f"database error at {redacted(url)}: {cause}") from None
    finally:
        database.close()


def redacted(url: str) -> str:
    """The database URL without its password, safe to print."""
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def create_organization(data_dir: Path | None, name: str) -> dict[str, Any]:
    with admin_session(data_dir) as session:
        org = orgs.create_organization(session, name)
        return {"id": org.id, "object": "organization", "name": org.name,
                "created_at": iso(org.created_at)}


def create_key(data_dir: Path | None, organization: str) -> dict[str, str]:
    with admin_session(data_dir) as session:
        issued = orgs.create_api_key(session, organization)
    return {"organization": issued.organization, "key": issued.key}


def revoke_key(data_dir: Path | None, key: str) -> None:
    with admin_session(data_dir) as session:
        orgs.revoke_api_key(session, key)
