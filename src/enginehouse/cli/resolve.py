"""Let users name objects the way they think of them: by id or by name.

An id is tried directly (one GET); anything else, or an id-looking name that is not an id, is
looked up in the organization's list (every page of it). Names of engines and deployments are
unique per organization; training job names need not be, so an ambiguous name is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from enginehouse.cli.client import ApiClient
from enginehouse.cli.errors import ApiError, CliError
from enginehouse.cli.listing import ENGINES_PATH, fetch_list


@dataclass(frozen=True)
class Kind:
    noun: str
    path: str
    id_prefix: str


ENGINE = Kind("engine", ENGINES_PATH, "engine-")
DEPLOYMENT = Kind("deployment", "/v1/deployments", "dp-")
TRAINING_JOB = Kind("training job", "/v1/training-jobs", "tr-")
DATASET = Kind("dataset", "/v1/datasets", "ds-")
EXPERIMENT = Kind("experiment", "/v1/experiments", "ex-")


def find(client: ApiClient, kind: Kind, ref: str) -> dict[str, Any]:
    """The object ``ref`` names (id or name) as the API returns it; CliError when none does."""
    if ref.startswith(kind.id_prefix):
        try:
            return client.get(f"{kind.path}/{ref}")
        except ApiError as exc:
            if exc.status != 404:
                raise
    everything = fetch_list(client, kind.path)["data"]
    matches = [obj for obj in everything if obj.get("name") == ref]
    if not matches:
        raise CliError(f"no {kind.noun} with the id or name {ref!r}")
    if len(matches) > 1:
        ids = ", ".join(obj["id"] for obj in matches)
        raise CliError(f"{len(matches)} {kind.noun}s are named {ref!r} ({ids}); give an id")
    return matches[0]


def find_id(client: ApiClient, kind: Kind, ref: str) -> str:
    return str(find(client, kind, ref)["id"])
