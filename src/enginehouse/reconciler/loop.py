"""The reconciler: one asyncio task per engine, in a thread of its own, started explicitly.

Each engine is stepped on its own so that a slow adapter load on one never delays another.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping

import httpx
from sqlalchemy import exists, select

from enginehouse.core.status import EngineStatus
from enginehouse.db.models import EngineModel, ReplicaModel
from enginehouse.db.session import Database
from enginehouse.gateway.load import LoadMeter
from enginehouse.providers.base import ReplicaProvider
from enginehouse.reconciler import policy
from enginehouse.reconciler.engine_step import EngineStep
from enginehouse.reconciler.replica_client import ReplicaClient
from enginehouse.reconciler.replica_plan import ReplicaLimits
from enginehouse.services import replicas as replica_service

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        database: Database,
        provider: ReplicaProvider,
        interval_s: float = 0.5,
        start_timeout_s: float = 300.0,
        limits: ReplicaLimits | None = None,
    ) -> None:
        self.database = database
        self.provider = provider
        self.interval_s = interval_s
        self.start_timeout_s = start_timeout_s
        self.limits = limits
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._wake: asyncio.Event | None = None
        # Requests in flight on each replica, from the gateway (set before start(); it must be
        # safe to call from the reconciler's thread). Draining replicas stop once at zero.
        self.in_flight: Callable[[], Mapping[str, int]] = dict
        # The gateway's measure of each engine's load (set before start()), for autoscaling.
        self.load: LoadMeter | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_thread, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self, stop_replicas: bool = True) -> None:
        """Stop the loop; with ``stop_replicas`` also the replica processes this server started
        (their rows are removed, so the next start launches fresh ones)."""
        self._stopping.set()
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
        if stop_replicas:
            self.provider.stop_all()
            self._stop_recorded_replicas()

    def poke(self) -> None:
        """Run a pass now rather than at the next tick (after an API call changed something)."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _run_thread(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        async with httpx.AsyncClient() as client:
            step = EngineStep(self.database, self.provider, ReplicaClient(client), self.start_timeout_s,
                              self.in_flight, self.limits, self.load)
            tasks: dict[str, asyncio.Task[None]] = {}
            while not self._stopping.is_set():
                for engine_id in await asyncio.to_thread(self._engine_ids):
                    task = tasks.get(engine_id)
                    if task is None or task.done():
                        tasks[engine_id] = asyncio.create_task(self._step(step, engine_id))
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
                except asyncio.TimeoutError:
                    pass
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    async def _step(self, step: EngineStep, engine_id: str) -> None:
        try:
            await step.run(engine_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # one engine's trouble must never stop the loop for the others
            log.exception("reconcile step failed for engine %s", engine_id)

    def _engine_ids(self) -> list[str]:
        """The engines to step: all but those at rest (nothing for a step to do), so a server
        holding many sleeping engines costs next to nothing between changes."""
        has_replicas = exists().where(ReplicaModel.engine_id == EngineModel.id)
        query = select(EngineModel.id, EngineModel.status, EngineModel.resource_management_config, has_replicas)
        with self.database.session() as session:
            rows = session.execute(query).all()
        return [engine_id for engine_id, status, management, replicas in rows
                if not policy.at_rest(EngineStatus(status), management, bool(replicas))]

    def _stop_recorded_replicas(self) -> None:
        """Stop the replicas this server adopted from a previous one too, and forget them all:
        the next start launches fresh replicas for the engines that want them."""
        with self.database.session() as session:
            for replica, organization_id in replica_service.every_replica(session):
                self.provider.stop(replica.id, replica.pid)
                replica_service.remove_replica(session, organization_id, replica.id, "server stopped")
