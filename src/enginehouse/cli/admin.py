"""``enginehouse orgs create`` and ``enginehouse keys create|revoke``.

These run on the server's machine against its database, not over the API: they are how the
first keys of a new organization come to exist, so they cannot require a key themselves.
``admin_store`` is imported inside each command so that only these commands load SQLAlchemy.
"""

from __future__ import annotations

from typing import Annotated

import typer

from enginehouse.cli.errors import reporting_errors
from enginehouse.cli.output import message, print_json
from enginehouse.cli.params import DataDirOption, JsonOption

orgs_app = typer.Typer(help="Organizations (on the server's machine).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (on the server's machine).", no_args_is_help=True)


@orgs_app.command("create")
def create_org(
    name: Annotated[str, typer.Argument(help="Organization name.")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an organization; then `enginehouse keys create --org NAME`."""
    from enginehouse.cli import admin_store

    with reporting_errors():
        org = admin_store.create_organization(data_dir, name)
    if as_json:
        print_json(org)
    else:
        message(f"created organization {org['name']} ({org['id']})")


@keys_app.command("create")
def create_key(
    org: Annotated[str, typer.Option("--org", help="Organization the key belongs to.")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue an API key; it is printed once and stored only as a hash."""
    from enginehouse.cli import admin_store

    with reporting_errors():
        issued = admin_store.create_key(data_dir, org)
    if as_json:
        print_json(issued)
        return
    message(f"API key for organization {issued['organization']} (shown once; store it now):")
    typer.echo(issued["key"])


@keys_app.command("revoke")
def revoke_key(
    key: Annotated[str, typer.Argument(help="The API key to revoke.")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke an API key; calls made with it answer 401 from now on."""
    from enginehouse.cli import admin_store

    with reporting_errors():
        admin_store.revoke_key(data_dir, key)
    if as_json:
        print_json({"prefix": key[:10], "revoked": True})
    else:
        message(f"revoked key {key[:10]}…")
