"""The control plane's side of a replica's HTTP API (health, adapter load/unload). Every call
carries the replica's secret (``enginehouse.replicaauth``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from enginehouse.replicaauth import ReplicaAddress, is_foreign_replica


@dataclass(frozen=True)
class Health:
    ready: bool
    loaded: dict[str, str]  # adapter name → path
    body: dict[str, Any]


class AdapterLoadRefused(Exception):
    """The replica refused the adapter for a reason a retry will not fix (a 4xx)."""


class ReplicaClient:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def health(self, replica: ReplicaAddress) -> Health | None:
        """None when the replica does not answer at all (not up yet, gone, or hung); an answer
        other than a ready one (``is_foreign_replica`` too: the address is some other process's
        now) is a Health that is not ready."""
        try:
            response = await self.client.get(f"{replica.url}/health", headers=replica.headers(), timeout=5.0)
        except httpx.HTTPError:
            return None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if response.status_code != 200:
            return Health(ready=False, loaded={}, body=body)
        adapters = body.get("adapters") or {}
        loaded = {
            name: str(info.get("path"))
            for name, info in adapters.items()
            if isinstance(info, dict) and info.get("status") == "loaded"
        }
        return Health(ready=body.get("status") == "ready", loaded=loaded, body=body)

    async def load_adapter(self, replica: ReplicaAddress, name: str, path: str) -> None:
        """Raises AdapterLoadRefused on a permanent refusal, httpx.HTTPError on a transient one."""
        response = await self.client.put(
            f"{replica.url}/v1/adapters/{quote(name, safe='')}", json={"path": path},
            headers=replica.headers(), timeout=300.0,
        )
        # A foreign replica refuses the caller, not the adapter: the replica's next health check
        # settles that; the deployment must not fail for it.
        if 400 <= response.status_code < 500 and not is_foreign_replica(response.status_code):
            raise AdapterLoadRefused(error_message(response))
        response.raise_for_status()

    async def unload_adapter(self, replica: ReplicaAddress, name: str) -> None:
        response = await self.client.delete(
            f"{replica.url}/v1/adapters/{quote(name, safe='')}", headers=replica.headers(), timeout=60.0
        )
        if response.status_code not in (200, 404):
            response.raise_for_status()


def error_message(response: httpx.Response) -> str:
    """The message of an enginehouse error answer (``{"error": {"message"}}``), else its text."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:500] or f"HTTP {response.status_code}"
