"""The server: API, gateway and reconciler in one process; ``enginehouse up`` runs it."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry

from enginehouse import __version__
from enginehouse.api.deps import KEY_TTL_S
from enginehouse.api.errors import install_error_handlers
from enginehouse.api.openapi import install_openapi
from enginehouse.api.routers import (
    datasets, deployments, engines, experiments, replica_artifacts, training_artifacts, training_jobs,
)
from enginehouse.artifacts import DigestCache
from enginehouse.dashboard.app import install_dashboard
from enginehouse.db.session import Database
from enginehouse.gateway import router as gateway_router
from enginehouse.gateway.cache import TTLCache
from enginehouse.gateway.service import Gateway
from enginehouse.observability import router as metrics_router
from enginehouse.observability.gateway import GatewayMetrics
from enginehouse.observability.reconciler import ReconcilerMetrics
from enginehouse.providers.base import ReplicaProvider
from enginehouse.providers.local import LocalProvider
from enginehouse.reconciler.leader_duties import LeaderDuties
from enginehouse.reconciler.leadership import (
    AnotherServerError, LeaderElection, SqliteServerLock, claim_sqlite_database, leader_lock, one_server_at_a_time,
)
from enginehouse.requestlimits import RequestLimitMiddleware, RequestLimits
from enginehouse.services import orgs
from enginehouse.settings import Settings

log = logging.getLogger("enginehouse")


def create_app(
    settings: Settings, provider: ReplicaProvider | None = None, demo: bool = False,
    sqlite_lock: SqliteServerLock | None = None,
) -> FastAPI:
    """Build the application. Nothing starts until the app's lifespan runs (uvicorn does that).
    ``sqlite_lock``: the SQLite database's server lock, already taken (``serve`` takes it before
    uvicorn starts, to refuse a second server in one line); the lifespan takes it when not given,
    and gives it up when it ends."""
    # One registry per app, never the process-global one: tests build several apps in a process.
    registry = CollectorRegistry()
    gateway_metrics = GatewayMetrics(registry)
    reconciler_metrics = ReconcilerMetrics(registry)
    limits = RequestLimits.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = settings.resolved_database_url()
        async with AsyncExitStack() as held:  # given up in reverse order, however the lifespan ends
            # Before anything writes: on SQLite this refuses a second server on the same file.
            try:
                server_lock = sqlite_lock if sqlite_lock is not None else claim_sqlite_database(url)
            except AnotherServerError as exc:
                log.error("%s", exc)  # the reason, on its own line above uvicorn's traceback
                raise
            if server_lock is not None:
                held.callback(server_lock.release)  # last: by then the database is closed
            database = Database(url)
            held.callback(database.close)
            with one_server_at_a_time(url):
                database.migrate()
                _bootstrap(database, settings)

            def make_provider() -> ReplicaProvider:
                return provider or settings_provider(settings, limits)

            gateway = Gateway(
                database, settings.wake_wait_s, settings.gateway_timeout_s, gateway_metrics
            )
            app.state.database = database
            app.state.key_cache = TTLCache(KEY_TTL_S)
            app.state.gateway = gateway
            # Every server serves the API and the gateway; only the leader runs what must be single.
            duties = LeaderDuties(database, settings, make_provider, gateway, reconciler_metrics, app.state, demo)
            election = LeaderElection(leader_lock(database), settings.leader_poll_s, on_gain=duties.start,
                                      on_lose=lambda: duties.stop(stop_replicas=False))
            app.state.election = election
            await gateway.start()
            held.push_async_callback(gateway.close)
            # Replicas and workers stop before the leader lock is given up: a standby taking over
            # then finds none half-stopped.
            held.callback(election.stop, lambda: duties.stop(stop_replicas=True))
            election.start()
            # Everything alive now (modules, the app, its routes) lives as long as the server: out
            # of the garbage collector's reach, a full collection walks only what requests create,
            # which keeps a 10,000-row answer from paying for a walk over every module's objects.
            gc.freeze()
            yield

    app = FastAPI(title="enginehouse", version=__version__, lifespan=lifespan)
    app.state.metrics_registry = registry
    app.state.settings = settings
    # Outermost but for Starlette's own error middleware: no body is parsed before it is checked.
    app.add_middleware(RequestLimitMiddleware, limits=limits)
    install_error_handlers(app)
    # Inference first: Starlette tries routes in order, and every inference call would otherwise
    # be matched against each management route before its own (about 45 µs of a call's CPU here).
    app.include_router(gateway_router.router)
    app.include_router(engines.router)
    app.include_router(deployments.router)
    app.include_router(training_jobs.router)
    app.include_router(datasets.router)
    app.include_router(experiments.router)
    app.include_router(replica_artifacts.router)
    app.include_router(training_artifacts.router)
    app.state.artifact_digests = DigestCache()
    app.include_router(metrics_router.router)
    install_dashboard(app)

    @app.get("/health", tags=["operations"])
    def health(request: Request) -> dict[str, str]:
        election = getattr(request.app.state, "election", None)
        role = "leader" if election is not None and election.is_leader else "standby"
        return {"status": "ok", "version": __version__, "reconciler": role}

    install_openapi(app)
    return app


def _bootstrap(database: Database, settings: Settings) -> None:
    """First start: the default organization and its admin key, written to <data-dir>/admin.key."""
    with database.session() as session:
        issued = orgs.bootstrap(session, settings.bootstrap_key or None)
    if issued is None:
        return
    key_path = settings.data_dir / "admin.key"
    _write_secret(key_path, issued.key)
    log.warning("created organization %r; admin API key: %s (saved in %s)",
                issued.organization, issued.key, key_path)
    print(f"enginehouse: admin API key for organization '{issued.organization}': {issued.key}",
          flush=True)
    print(f"enginehouse: saved in {key_path}", flush=True)


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")
    os.chmod(path, 0o600)


def settings_provider(settings: Settings, limits: RequestLimits) -> ReplicaProvider:
    """The provider ``settings.provider`` names (ENGINEHOUSE_PROVIDER)."""
    if settings.provider == "ray":
        # Ray is an optional extra: imported only when asked for.
        from enginehouse.providers.ray_cluster import ArtifactSource, RayProvider, ray_namespace

        return RayProvider(settings.ray_address, settings.data_dir, threads=settings.replica_threads, limits=limits,
                           training_threads=settings.training_threads,
                           artifacts=ArtifactSource(settings.cluster_url or f"http://{settings.host}:{settings.port}",
                                                    settings.ray_fetch_artifacts),
                           namespace=ray_namespace(settings.resolved_database_url()),
                           training_cpus=settings.ray_training_cpus, training_gpus=settings.ray_training_gpus)
    return LocalProvider(settings.data_dir, threads=settings.replica_threads, limits=limits,
                         training_threads=settings.training_threads)


def serve(settings: Settings, demo: bool = False) -> None:
    """Run the server in the foreground until interrupted (``enginehouse up``). A second server
    on a SQLite database raises ``AnotherServerError`` here, before uvicorn starts."""
    import uvicorn

    sqlite_lock = claim_sqlite_database(settings.resolved_database_url())

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Every reconcile pass polls each replica's /health; one line per poll drowns the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_app(settings, demo=demo, sqlite_lock=sqlite_lock)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
