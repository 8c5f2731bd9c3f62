"""The replica's HTTP app: health, metrics, adapter management and the runner's inference routes.

The control plane and the gateway are its only clients: every call must carry the replica's
secret (``enginehouse.replicaauth``), health and metrics included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from enginehouse.core.specs import LocalPath
from enginehouse.errors import NotFoundError, ServiceUnavailableError, ValidationFailedError
from enginehouse.replicaauth import ReplicaSecretMiddleware
from enginehouse.requestlimits import RequestLimitMiddleware, RequestLimits
from enginehouse.runtime.artifacts import ArtifactFetcher, ArtifactFetchError
from enginehouse.runtime.base import ModelRunner
from enginehouse.runtime.helper_threads import helper_executor
from enginehouse.runtime.http import install_error_handlers, parse_body


class LoadAdapterRequest(BaseModel):
    path: LocalPath


def create_app(runner: ModelRunner, limits: RequestLimits | None = None, secret: str | None = None,
               fetcher: ArtifactFetcher | None = None) -> FastAPI:
    """``runner`` must be loaded already: the server only starts serving a ready model. ``limits``
    bound request bodies as the server's do (the settings' defaults when not given). ``secret``:
    every request must carry it; None checks nothing (an app built inside a test, never reachable
    over the network; the replica process refuses to start without one unless told otherwise).
    ``fetcher``: adapters named by a path of the server's are fetched from it first (a replica on
    a node that cannot see the server's disk)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # asyncio.to_thread's threads (adapter reads, tokenizing) must not keep OpenMP pools.
        asyncio.get_running_loop().set_default_executor(helper_executor())
        runner.start()
        try:
            yield
        finally:
            await asyncio.to_thread(runner.stop)

    app = FastAPI(title=f"enginehouse replica ({runner.task_type})", lifespan=lifespan)
    app.add_middleware(RequestLimitMiddleware, limits=limits or RequestLimits.default())
    if secret is not None:
        # Added last, so outermost: a caller without the secret gets its 401 before any body is read.
        app.add_middleware(ReplicaSecretMiddleware, secret=secret)
    install_error_handlers(app)

    # A fetched copy's path → the server's path it was asked for: the replica reports adapters
    # by the path the control plane gave, which is what it compares with what it wants loaded.
    asked_as: dict[str, str] = {}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        fields = runner.health()
        if asked_as and isinstance(fields.get("adapters"), dict):
            fields["adapters"] = {name: {**info, "path": asked_as.get(info.get("path"), info.get("path"))}
                                  for name, info in fields["adapters"].items()}
        return {
            "status": "ready",
            "task_type": runner.task_type,
            "base_model": runner.base_model,
            "served_name": runner.served_name,
            **fields,
        }

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        # Prometheus text format; the server scrapes this and re-exposes it with engine labels.
        return Response(runner.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        created = int(time.time())
        cards = [
            {"id": name, "object": "model", "created": created, "owned_by": "enginehouse", "parent": parent}
            for name, parent in runner.served_models()
        ]
        return {"object": "list", "data": cards}

    if runner.serves_adapters:

        @app.put("/v1/adapters/{name}")
        async def load_adapter(name: str, request: Request) -> dict[str, Any]:
            body = await parse_body(request, LoadAdapterRequest, invalid=ValidationFailedError)
            # Fetching, reading and checking the files takes a while; the event loop keeps serving.
            path = await asyncio.to_thread(_fetched, fetcher, body.path) if fetcher else body.path
            if path != body.path:
                asked_as[path] = body.path
            answer = await asyncio.to_thread(runner.load_adapter, name, path)
            return {**answer, "path": body.path} if "path" in answer else answer

        @app.delete("/v1/adapters/{name}")
        async def unload_adapter(name: str) -> dict[str, Any]:
            if not await asyncio.to_thread(runner.unload_adapter, name):
                raise NotFoundError(f"adapter '{name}' is not loaded", code="adapter_not_found")
            return {"name": name, "status": "unloaded"}

    app.include_router(runner.router())
    return app


def _fetched(fetcher: ArtifactFetcher, path: str) -> str:
    """``path`` as this node can load it. A refusal that will not change (tampered files, a path
    the server does not give this replica) fails the load like a bad checkpoint (400); one that
    may pass (the server unreachable now) is a 503, which the reconciler tries again."""
    try:
        return fetcher.resolve(path)
    except ArtifactFetchError as exc:
        if exc.permanent:
            raise ValidationFailedError(str(exc), param="path") from None
        raise ServiceUnavailableError(str(exc), code="artifact_unavailable") from None
