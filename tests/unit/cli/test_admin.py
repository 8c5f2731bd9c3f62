"""``enginehouse orgs`` and ``enginehouse keys``: straight on the server's database."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from tests.unit.cli.conftest import RunningServer
from tests.unit.cli.support import UNPROVIDED_OPTION, Invoke, run_json


def _admin(cli: Invoke, server: RunningServer, *args: str) -> object:
    result = cli(*args, "--data-dir", str(server.data_dir), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_new_organization_sees_only_its_own_engines(
    cli: Invoke, server: RunningServer, provisioning_engine: dict, unique: Callable[[str], str]
) -> None:
    org = unique("org")
    created = _admin(cli, server, "orgs", "create", org)
    assert created["name"] == org and created["id"].startswith("org-")
    issued = _admin(cli, server, "keys", "create", "--org", org)
    assert set(issued) == {"organization", "key"} and issued["organization"] == org

    assert run_json(cli, "engines", "list", key=issued["key"]) == {
        "object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None}
    hidden = cli("engines", "show", provisioning_engine["id"], key=issued["key"])
    assert hidden.exit_code == 1

    # Names are per organization: the other org's engine name is free here.
    engine = run_json(cli, "engines", "create", provisioning_engine["name"], "--base-model", "b",
                      "--task-type", "text-generation", "--deployment-option", UNPROVIDED_OPTION,
                      key=issued["key"])
    assert engine["id"] != provisioning_engine["id"]


def test_revoked_key_is_refused(
    cli: Invoke, server: RunningServer, unique: Callable[[str], str]
) -> None:
    org = unique("org")
    _admin(cli, server, "orgs", "create", org)
    key = _admin(cli, server, "keys", "create", "--org", org)["key"]
    assert run_json(cli, "jobs", "list", key=key)["data"] == []

    revoked = cli("keys", "revoke", key, "--data-dir", str(server.data_dir))
    assert revoked.exit_code == 0, revoked.output
    assert key not in revoked.stdout  # only a prefix is echoed back
    # A running server trusts a key it has just seen for up to two seconds (api/deps.py).
    deadline = time.monotonic() + 10
    refused = cli("jobs", "list", key=key)
    while refused.exit_code == 0 and time.monotonic() < deadline:
        time.sleep(0.25)
        refused = cli("jobs", "list", key=key)
    assert refused.exit_code == 1 and "invalid API key" in refused.stderr

    again = cli("keys", "revoke", key, "--data-dir", str(server.data_dir))
    assert again.exit_code == 1 and "no such active key" in again.stderr


def test_human_key_output_prints_the_key_once(
    cli: Invoke, server: RunningServer, unique: Callable[[str], str]
) -> None:
    org = unique("org")
    assert cli("orgs", "create", org, "--data-dir", str(server.data_dir)).exit_code == 0
    result = cli("keys", "create", "--org", org, "--data-dir", str(server.data_dir))
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("eh-") and result.stdout.count(key) == 1


def test_admin_errors(cli: Invoke, server: RunningServer, tmp_path: Path) -> None:
    duplicate = cli("orgs", "create", "default", "--data-dir", str(server.data_dir))
    assert duplicate.exit_code == 1 and "already exists" in duplicate.stderr
    unknown = cli("keys", "create", "--org", "nobody", "--data-dir", str(server.data_dir))
    assert unknown.exit_code == 1 and "organization 'nobody' not found" in unknown.stderr
    bad_name = cli("orgs", "create", "bad name!", "--data-dir", str(tmp_path / "fresh"))
    assert bad_name.exit_code == 1 and "invalid name" in bad_name.stderr
