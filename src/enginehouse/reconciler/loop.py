"""The reconciler: one asyncio task per engine step, in a thread of its own, started explicitly.

Each engine is stepped on its own so that a slow adapter load on one never delays another, and
only when something calls for it:

- a change to it: every write that matters records an event; the database tells the reconciler
  at once which engines a commit in this process touched, and the events table, read from where
  the last read stopped every couple of seconds, tells it of changes other processes made;
- a timer its last step set: its replicas' health checks, a launch or drain under way, a crash
  backoff, its schedule falling due;
- a slow periodic resync of every engine not at rest, a safety net for anything else.

An engine at rest costs nothing between changes, and one change costs one engine's step however
many engines the server holds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import httpx
from prometheus_client import CollectorRegistry
from sqlalchemy import exists, func, select

from enginehouse.core.status import EngineStatus
from enginehouse.db.models import EngineModel, EventModel, ReplicaModel
from enginehouse.db.session import Database
from enginehouse.gateway.load import LoadMeter
from enginehouse.observability.reconciler import ReconcilerMetrics, StepCause
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
# How often the events recorded since the last look are read, for changes made by another
# process (this one's own commits are announced as they happen).
CHANGE_FEED_S = 2.0
# How long after a change announced by this process its engine is stepped: long enough for the
# request that made it to send its answer first (a step right away competes with it for the
# interpreter), and for a burst of changes to one engine to cost one step.
CHANGE_SETTLE_S = 0.05
# How often every engine not at rest is stepped whatever its timers say: a safety net for a
# change nothing announced.
RESYNC_S = 300.0


class Reconciler:
    def __init__(
        self,
        database: Database,
        provider: ReplicaProvider,
        interval_s: float = 0.5,
        limits: ReplicaLimits | None = None,
        resync_s: float = RESYNC_S,
        metrics: ReconcilerMetrics | None = None,
    ) -> None:
        """``interval_s``: how soon an engine with replicas (or on its way to or from them) is
        stepped again; ``resync_s``: how often every engine not at rest is stepped anyway."""
        self.database = database
        self.provider = provider
        self.interval_s = interval_s
        self.resync_s = resync_s
        self.limits = limits
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._wake: asyncio.Event | None = None
        # Loop time at which each engine is next due a step, and why (absent: only a change
        # steps it).
        self._due: dict[str, tuple[float, StepCause]] = {}
        # Requests in flight on each replica, from the gateway (set before start(); it must be
        # safe to call from the reconciler's thread). Draining replicas stop once at zero.
        self.in_flight: Callable[[], Mapping[str, int]] = dict
        # The gateway's measure of each engine's load (set before start()), for autoscaling.
        self.load: LoadMeter | None = None
        self._strays_logged: set[str] = set()
        self.metrics = metrics or ReconcilerMetrics(CollectorRegistry())

    def start(self) -> None:
        # Told of changes from now until stop(): a reconciler never started is never told.
        self.database.on_engine_change(self.poke_engines)
        self._thread = threading.Thread(target=self._run_thread, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self, stop_replicas: bool = True) -> None:
        """Stop the loop; with ``stop_replicas`` also the replica processes this server started
        (their rows are removed, so the next start launches fresh ones)."""
        self._stopping.set()
        self.database.off_engine_change(self.poke_engines)  # as start() registered it
        self._call_in_loop(self._wake_up)
        if self._thread is not None:
            self._thread.join(timeout=30)
        if stop_replicas:
            self.provider.stop_all()
            self._stop_recorded_replicas()

    def poke_engines(self, engine_ids: Iterable[str]) -> None:
        """Step these engines now (something about them changed); safe from any thread."""
        if not self._stopping.is_set():
            self._call_in_loop(self._make_due, list(engine_ids), StepCause.CHANGE, CHANGE_SETTLE_S)

    def _call_in_loop(self, callback: Callable[..., None], *args: object) -> None:
        if self._loop is None:
            return  # not started: its first pass resyncs everything anyway
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the loop has closed (the server is stopping): nothing is stepped any more

    def _make_due(self, engine_ids: list[str], cause: StepCause, delay_s: float = 0.0) -> None:
        assert self._loop is not None
        at = self._loop.time() + delay_s
        for engine_id in engine_ids:
            if engine_id not in self._due or at < self._due[engine_id][0]:
                self._due[engine_id] = (at, cause)
        self._wake_up()

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _run_thread(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        # Where the events table stands, read before changes can be announced to this loop: a
        # commit made before the loop listens is found in the table instead.
        seen_event = await asyncio.to_thread(self._last_event_id)
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        async with httpx.AsyncClient() as client:
            step = EngineStep(self.database, self.provider, ReplicaClient(client), self.limits,
                              self.in_flight, self.load, busy_interval_s=self.interval_s)
            tasks: dict[str, asyncio.Task[None]] = {}
            next_sweep = next_resync = 0.0  # the first pass sweeps and resyncs before any step
            next_feed = self._loop.time() + CHANGE_FEED_S
            while not self._stopping.is_set():
                now = self._loop.time()
                if now >= next_feed:
                    changed, seen_event = await asyncio.to_thread(self._changed_since, seen_event)
                    self._make_due(changed, StepCause.CHANGE)
                    next_feed = self._loop.time() + CHANGE_FEED_S
                if now >= next_sweep:
                    # Awaited here, before new steps start: only the engines busy now can be
                    # between a launch and its row.
                    await self._sweep_orphans({e for e, task in tasks.items() if not task.done()})
                    next_sweep = self._loop.time() + ORPHAN_SWEEP_S
                if now >= next_resync:
                    self._make_due(await asyncio.to_thread(self._engine_ids), StepCause.RESYNC)
                    next_resync = self._loop.time() + self.resync_s
                now = self._loop.time()
                for engine_id, (at, cause) in list(self._due.items()):
                    task = tasks.get(engine_id)
                    if at <= now and (task is None or task.done()):
                        del self._due[engine_id]
                        tasks[engine_id] = asyncio.create_task(self._step(step, engine_id, cause))
                for engine_id in [e for e, task in tasks.items() if task.done()]:
                    del tasks[engine_id]
                self._wake.clear()
                # An engine whose step is still running is not waited for here: its step wakes
                # the loop when it ends.
                waiting = [at for engine_id, (at, _) in self._due.items() if engine_id not in tasks]
                soonest = min([*waiting, next_sweep, next_resync, next_feed])
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, soonest - self._loop.time()))
                except asyncio.TimeoutError:
                    pass
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    async def _step(self, step: EngineStep, engine_id: str, cause: StepCause) -> None:
        next_in: float | None = self.interval_s  # after a failed step, try again soon
        started = time.perf_counter()
        try:
            next_in = await step.run(engine_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # one engine's trouble must never stop the loop for the others
            log.exception("reconcile step failed for engine %s", engine_id)
        self.metrics.stepped(cause, time.perf_counter() - started)
        if next_in is not None:
            self._make_due([engine_id], StepCause.TIMER, next_in)
        else:
            self._wake_up()  # a change that came during the step may be waiting for it to end

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

    def _last_event_id(self) -> int:
        with self.database.session() as session:
            return session.scalar(select(func.max(EventModel.id))) or 0

    def _changed_since(self, event_id: int) -> tuple[list[str], int]:
        """The engines with events recorded after ``event_id``, and the last event id read. One
        read on the primary key; nothing comes back while nothing changes."""
        query = select(EventModel.id, EventModel.engine_id).where(EventModel.id > event_id)
        with self.database.session() as session:
            rows = session.execute(query).all()
        return list({engine_id for _, engine_id in rows}), max((i for i, _ in rows), default=event_id)

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
