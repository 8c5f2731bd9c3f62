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
from enginehouse.reconciler.orphans import find_orphans
from enginehouse.reconciler.replica_client import ReplicaClient
from enginehouse.reconciler.replica_plan import ReplicaLimits
from enginehouse.services import replicas as replica_service

log = logging.getLogger(__name__)

# How often the loop looks for replicas the provider has and the database does not (orphans.py).
ORPHAN_SWEEP_S = 30.0


class Reconciler:
    def __init__(
        self,
        database: Database,
        provider: ReplicaProvider,
        interval_s: float = 0.5,
        limits: ReplicaLimits | None = None,
    ) -> None:
        self.database = database
        self.provider = provider
        self.interval_s = interval_s
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
        self._strays_logged: set[str] = set()

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
            step = EngineStep(self.database, self.provider, ReplicaClient(client), self.limits,
                              self.in_flight, self.load)
            tasks: dict[str, asyncio.Task[None]] = {}
            next_sweep = 0.0  # the first pass sweeps before any step runs
            while not self._stopping.is_set():
                if self._loop.time() >= next_sweep:
                    # Awaited here, before new steps start: only the engines busy now can be
                    # between a launch and its row.
                    await self._sweep_orphans({e for e, task in tasks.items() if not task.done()})
                    next_sweep = self._loop.time() + ORPHAN_SWEEP_S
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

    async def _sweep_orphans(self, busy_engines: set[str]) -> None:
        try:
            listed = await asyncio.to_thread(self.provider.list_replicas)
            if not listed:
                return
            known_replicas, known_engines = await asyncio.to_thread(self._known_ids)
            orphans = find_orphans(listed, known_replicas, known_engines, busy_engines)
            for replica in orphans.stop:
                log.warning("stopping replica %s of engine %s: the database has no row for it "
                            "(launched just before a crash?)", replica.replica_id, replica.engine_id)
                await asyncio.to_thread(self.provider.stop, replica.replica_id)
            for replica in orphans.unknown_engine:
                if replica.replica_id not in self._strays_logged:
                    self._strays_logged.add(replica.replica_id)
                    log.warning("leaving replica %s alone: its engine %s is not in this database",
                                replica.replica_id, replica.engine_id)
        except Exception:  # a failed sweep is tried again at the next; steps must go on
            log.exception("looking for orphaned replicas failed")

    def _known_ids(self) -> tuple[set[str], set[str]]:
        with self.database.session() as session:
            replicas = set(session.scalars(select(ReplicaModel.id)))
            engines = set(session.scalars(select(EngineModel.id)))
        return replicas, engines

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
                self.provider.stop(replica.id)
                replica_service.remove_replica(session, organization_id, replica.id, "server stopped")
