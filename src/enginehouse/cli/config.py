"""From flags to a ready client or database: flags win over ENGINEHOUSE_* variables, which win
over the defaults in ``Settings``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from enginehouse.cli.client import ApiClient
from enginehouse.cli.errors import CliError, reporting_errors
from enginehouse.settings import Settings


def cli_settings(**flags: Any) -> Settings:
    """Settings with the given flags applied; a flag left at None means 'not given'."""
    given = {name: value for name, value in flags.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"invalid configuration: {problems}") from None


def resolve_api_key(settings: Settings) -> str:
    if settings.api_key:
        return settings.api_key
    # On the server's own machine the admin key is right there; reading it saves a copy-paste.
    key_file = settings.data_dir / "admin.key"
    key = _read_key_file(key_file)
    if key:
        return key
    raise CliError(
        "no API key: pass --api-key KEY, set ENGINEHOUSE_API_KEY, or run on the server's machine "
        f"where {key_file} holds the admin key (set ENGINEHOUSE_DATA_DIR if it lives elsewhere); "
        "`enginehouse keys create --org NAME` issues a new one"
    )


def _read_key_file(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@contextmanager
def connect(url: str | None, api_key: str | None) -> Iterator[ApiClient]:
    """A client for the server named by the flags/env; any CliError inside becomes exit 1."""
    with reporting_errors():
        settings = cli_settings(url=url, api_key=api_key)
        with ApiClient(settings.resolved_url(), resolve_api_key(settings)) as client:
            yield client
