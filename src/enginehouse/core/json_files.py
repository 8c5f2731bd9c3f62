"""Reading the small JSON files that describe a model or a checkpoint (``config.json``,
``adapter_config.json``): each caller turns the one error into its own (a load error for a
replica, a training error for a job) with the same words."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class JsonFileError(ValueError):
    """The file cannot be read, is not JSON, or holds something other than an object."""


def read_json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JsonFileError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise JsonFileError(f"{path} must hold a JSON object")
    return value
