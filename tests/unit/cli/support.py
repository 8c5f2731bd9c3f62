"""Helpers shared by the CLI tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from click.testing import Result

ADMIN_KEY = "eh-cli-tests-admin-key"
# An option this installation cannot provide: engines stay Provisioning and start no replica.
UNPROVIDED_OPTION = "gpu-h100-80gb"

Invoke = Callable[..., Result]


def run_json(cli: Invoke, *args: str, key: str | None = ADMIN_KEY) -> Any:
    """Run with --json, expect success, and parse stdout (which must be JSON and nothing else)."""
    result = cli(*args, "--json", key=key)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
