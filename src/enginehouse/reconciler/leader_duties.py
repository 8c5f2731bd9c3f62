"""What only the leading server of a control plane runs (leadership.py elects it): the
reconciler, with its orphan sweeps; the training supervisor (two would both launch the same
Pending job); and the demo's set-up.

Every start builds them anew, on a provider made at that moment: a server that takes over from a
dead leader must read the replica and training records the dead one left in the shared data
directory then, not whatever it read while it stood by, so it adopts those replicas and workers
rather than starting duplicates. What the API and the gateway reach through ``app.state``
(``reconciler``, ``training``, ``provider``) is swapped to the new parts as they start.

A standby's API may still poke ``state.training``: that is a supervisor never started (put back
when the duties stop), so a poke only sets a flag nobody waits on, and the leader finds the change
on its own (the supervisor reads the jobs table every few seconds; the reconciler reads the events
table every two).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.datastructures import State

from enginehouse.db.session import Database
from enginehouse.gateway.service import Gateway
from enginehouse.observability.reconciler import ReconcilerMetrics
from enginehouse.providers.base import ReplicaProvider
from enginehouse.reconciler.loop import Reconciler
from enginehouse.reconciler.replica_plan import ReplicaLimits
from enginehouse.reconciler.training import TrainingSupervisor
from enginehouse.settings import Settings

if TYPE_CHECKING:
    from enginehouse.demo.setup import DemoSetup

log = logging.getLogger(__name__)


class LeaderDuties:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        make_provider: Callable[[], ReplicaProvider],
        gateway: Gateway,
        metrics: ReconcilerMetrics,
        state: State,
        demo: bool = False,
    ) -> None:
        self.database = database
        self.settings = settings
        self.make_provider = make_provider
        self.gateway = gateway
        self.metrics = metrics
        self.state = state
        self.demo = demo
        self._reconciler: Reconciler | None = None
        self._training: TrainingSupervisor | None = None
        self._demo_setup: DemoSetup | None = None
        # A standby's API answers from a provider and a supervisor that never run anything.
        state.provider = make_provider()
        self._standby_training = TrainingSupervisor(database, state.provider, settings.max_training_jobs)
        state.training = self._standby_training
        state.reconciler = None

    def start(self) -> None:
        provider = self.make_provider()
        reconciler = Reconciler(
            self.database, provider, self.settings.reconcile_interval_s,
            replica_limits(self.settings), metrics=self.metrics,
        )
        reconciler.in_flight = self.gateway.in_flight_by_replica
        reconciler.load = self.gateway.load
        training = TrainingSupervisor(self.database, provider, self.settings.max_training_jobs)
        self._reconciler, self._training = reconciler, training
        self.state.provider, self.state.reconciler, self.state.training = provider, reconciler, training
        reconciler.start()
        training.start()
        if self.demo:
            from enginehouse.demo.setup import DemoSetup

            # In a thread of its own: it trains and may download, and the server answers meanwhile.
            self._demo_setup = DemoSetup(self.database, self.settings, poke=training.poke)
            self._demo_setup.start()
        self.metrics.leader.set(1)

    def stop(self, stop_replicas: bool) -> None:
        """Stop what runs. ``stop_replicas``: also the replicas and training workers (a clean
        shutdown); without it (the lead was lost) they are left to the server that takes over."""
        self.metrics.leader.set(0)
        if self._demo_setup is not None:
            self._demo_setup.stop()  # before the supervisor: it must not queue jobs as workers stop
            self._demo_setup = None
        if self._training is not None:
            self._training.stop(stop_workers=stop_replicas)
            self.state.training = self._standby_training  # pokes land where they are harmless
        if self._reconciler is not None:
            self._reconciler.stop(stop_replicas=stop_replicas)
            self.state.reconciler = None
        self._training = self._reconciler = None


def replica_limits(settings: Settings) -> ReplicaLimits:
    return ReplicaLimits(
        start_timeout_s=settings.replica_start_timeout_s,
        hang_timeout_s=settings.replica_hang_timeout_s,
        drain_timeout_s=settings.replica_drain_timeout_s,
        max_crashes=settings.replica_max_crashes,
    )
