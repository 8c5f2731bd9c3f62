"""One reconcile step for one engine: load → observe → act on replicas → write statuses.

The database is read at the start and written at the end, each in its own short session; the
process and HTTP work in between happens outside any transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import httpx
from sqlalchemy import select

from enginehouse.core import options
from enginehouse.core.ids import iso, new_id, utcnow
from enginehouse.core.options import DeploymentOption
from enginehouse.core.resource_management import resource_decision
from enginehouse.core.specs import Autoscaling
from enginehouse.core.status import DELETED, DeploymentKind, DeploymentStatus, EngineStatus, ReplicaStatus
from enginehouse.core.task_types import TaskType
from enginehouse.db.models import DeploymentModel, EngineModel
from enginehouse.db.session import Database
from enginehouse.gateway.load import LoadMeter
from enginehouse.providers.base import LaunchError, ProviderReplica, ReplicaExit, ReplicaLaunch, ReplicaProvider
from enginehouse.reconciler import policy
from enginehouse.reconciler.policy import CrashStreak, DeploymentFacts, Fault, ReplicaFacts
from enginehouse.reconciler.autoscaler import AutoscalerState, Decision, decide
from enginehouse.reconciler.replica_plan import ObservedReplica, ReplicaLimits, judge, plan_replicas
from enginehouse.reconciler.replica_client import AdapterLoadRefused, ReplicaClient
from enginehouse.reconciler.snapshot import EngineSnapshot, ReplicaRow, load_snapshot
from enginehouse.replicaauth import ReplicaAddress, new_secret
from enginehouse.services import deployments as deployment_service
from enginehouse.services import engines as engine_service
from enginehouse.services import replicas as replica_service
from enginehouse.services.status import (
    StatusChangedError, record_removed, switch_deployment_status, switch_engine_status,
)

log = logging.getLogger(__name__)

# A replica the database knows and its provider does not list (a provider that lost it, or a
# record removed by hand) is gone: the plan replaces it.
_NOT_LISTED = ReplicaExit(code=None, reason="replica is gone (its provider no longer has it)", permanent=False)


@dataclass
class EngineMemory:
    """What the reconciler remembers about an engine between steps (in memory only)."""

    crashes: CrashStreak = field(default_factory=CrashStreak)
    load_errors: dict[str, str] = field(default_factory=dict)  # deployment id → reason
    load_tries: dict[str, policy.LoadTries] = field(default_factory=dict)  # deployment id → transient failures
    # Per replica: when its health check last answered, and when it began draining (wall clock).
    answered_at: dict[str, float] = field(default_factory=dict)
    draining_since: dict[str, float] = field(default_factory=dict)
    # A cluster engine's autoscaler: its state, and the replica count it last chose.
    autoscaler: AutoscalerState = field(default_factory=AutoscalerState)
    desired: int | None = None

    def rest(self) -> None:
        """The engine sleeps: its next wake starts the autoscaler afresh, from min_replicas."""
        self.autoscaler, self.desired = AutoscalerState(), None

    def forget(self, replica_ids: set[str]) -> None:
        for replica_id in replica_ids:
            self.answered_at.pop(replica_id, None)
            self.draining_since.pop(replica_id, None)


@dataclass
class StepOutcome:
    replicas: list[ReplicaFacts]
    ready_ids: set[str]  # answered their health check ready (adapters are loaded onto these)
    failure: str | None
    removed: dict[str, str]  # replica id → why it is gone
    launched: dict[str, ReplicaAddress]  # replicas this step launched: id → where, with its secret
    # Why no replica is started: the engine's option is one no provider can give now, or a
    # crash backoff.
    waiting_for: str | None = None
    drain: list[str] = field(default_factory=list)  # ready replicas to move to draining
    # A cluster engine's autoscaler decision in this step (recorded on the engine when it
    # changed the count), else None.
    scaled: Decision | None = None
    # The ready replicas that take traffic (set when the step writes; see _serving_ids).
    serving_ids: set[str] = field(default_factory=set)


class EngineStep:
    def __init__(
        self,
        database: Database,
        provider: ReplicaProvider,
        replicas: ReplicaClient,
        limits: ReplicaLimits | None = None,
        in_flight: Callable[[], Mapping[str, int]] = dict,
        load: LoadMeter | None = None,
        busy_interval_s: float = 0.5,
    ) -> None:
        """``in_flight``: requests the gateway has running on each replica now (by replica id);
        ``load``: the gateway's measure of each engine's load, which cluster engines scale by;
        ``busy_interval_s``: how soon an engine with replicas (or on its way to or from them) is
        stepped again, which is how often its replicas' health is checked."""
        self.database = database
        self.provider = provider
        self.replicas = replicas
        self.limits = limits or ReplicaLimits()
        self.in_flight = in_flight
        self.load = load or LoadMeter()
        self.busy_interval_s = busy_interval_s
        self.memory: dict[str, EngineMemory] = {}

    async def run(self, engine_id: str) -> float | None:
        """Step the engine once; returns the seconds until it needs its next step on its own
        account, or None when only a change to it (or the periodic resync) calls for one."""
        # Database work runs in worker threads: the loop stays free for every other engine's
        # health checks and adapter loads.
        snapshot = await asyncio.to_thread(self._load, engine_id)
        if snapshot is None:
            self.memory.pop(engine_id, None)
            return None
        memory = self.memory.setdefault(engine_id, EngineMemory())
        if await asyncio.to_thread(self._apply_resource_policy, snapshot):
            return 0.0  # it was just told to sleep or wake: the next step carries that out
        outcome = await self._reconcile_replicas(snapshot, memory)
        has_replicas = bool(outcome.replicas or outcome.launched)
        # Statuses are written before the adapters load (so a deployment shows Deploying while
        # it loads) and again after.
        status = await asyncio.to_thread(self._write, snapshot, snapshot.status, outcome, memory)
        if status is not None and status.wants_replicas and outcome.ready_ids:
            await self._reconcile_adapters(snapshot, outcome, memory)
            status = await asyncio.to_thread(self._write, snapshot, status, outcome, memory)
        if status is None:
            # A request changed the engine meanwhile, or it is being deleted: look again soon.
            return self.busy_interval_s
        return policy.next_step_in(status, snapshot.resource_management, has_replicas,
                                   snapshot.last_access_at, snapshot.schedule_hold_until, utcnow(),
                                   self.busy_interval_s)

    def _load(self, engine_id: str) -> EngineSnapshot | None:
        with self.database.session(announce=False) as session:
            return load_snapshot(session, engine_id)

    # -- time-based deactivation and reactivation ------------------------------------------

    def _apply_resource_policy(self, snapshot: EngineSnapshot) -> bool:
        decision = resource_decision(
            snapshot.status, snapshot.resource_management, snapshot.last_access_at, utcnow(),
            snapshot.schedule_hold_until,
        )
        if decision is None:
            return False
        new_status, reason = decision
        change = (engine_service.reactivate_engine if new_status is EngineStatus.REACTIVATING
                  else engine_service.deactivate_engine)
        try:
            with self.database.session(announce=False) as session:
                engine = session.get(EngineModel, snapshot.engine_id)
                if engine is not None and engine.status == snapshot.status.value:
                    change(session, engine.organization_id, engine.id, reason, manual=False)
        except StatusChangedError:
            pass  # a request changed the engine first; it wins, and the next step sees it
        return True

    # -- replicas -------------------------------------------------------------------------

    async def _reconcile_replicas(self, snapshot: EngineSnapshot, memory: EngineMemory) -> StepOutcome:
        # One question to the provider per step: which of this engine's replicas still run.
        provided = await asyncio.to_thread(self.provider.list_replicas, snapshot.engine_id)
        listed = {r.replica_id: r for r in provided}
        facts = await asyncio.gather(*(self._observe(snapshot, r, listed.get(r.replica_id))
                                       for r in snapshot.replicas))
        now = time.time()
        in_flight = self.in_flight()  # one copy of the gateway's counts for the whole step
        observed = [self._observed(row, fact, memory, now, in_flight.get(row.replica_id, 0))
                    for row, fact in zip(snapshot.replicas, facts)]
        option = next((o for o in self.provider.deployment_options() if o.name == snapshot.selected_option), None)
        scaled = None
        if snapshot.status.wants_replicas:
            desired, scaled = self._desired_replicas(snapshot, memory, observed, option)
        else:
            desired = 0
            memory.rest()
        plan = plan_replicas(snapshot.status, observed, desired, memory.crashes, now, self.limits,
                             can_launch=option is not None)
        # An exited replica is stopped too: that is how its provider forgets it.
        for replica_id in [*plan.stop, *plan.gone]:
            await asyncio.to_thread(self.provider.stop, replica_id)
        streak, failure = plan.streak, plan.failure
        launched: dict[str, ReplicaAddress] = {}
        if plan.launch:
            launched, fault = await self._launch_missing(snapshot, plan.launch)
            if fault is not None:
                streak, failure = judge([fault], streak, now, self.limits)
        memory.crashes = streak
        memory.forget({row.replica_id for row in snapshot.replicas if not plan.keeps(row.replica_id)})
        live = [f for f in facts if plan.keeps(f.replica_id)]
        draining = set(plan.drain) | {o.facts.replica_id for o in observed if o.draining_s is not None}
        ready_ids = {f.replica_id for f in live if f.ready and f.replica_id not in draining}
        waiting_for = None if option is not None else options.waiting_reason(snapshot.selected_option)
        return StepOutcome(live, ready_ids, failure, {**plan.gone, **plan.stop}, launched,
                           waiting_for or plan.held_back, plan.drain, scaled)

    def _desired_replicas(
        self, snapshot: EngineSnapshot, memory: EngineMemory, observed: list[ObservedReplica],
        option: DeploymentOption | None,
    ) -> tuple[int, Decision | None]:
        """How many replicas the engine should run: one, or for a cluster engine what its
        autoscaler decides from the gateway's measure of its load (and that decision)."""
        if not snapshot.autoscaling:
            return 1, None
        config = Autoscaling.model_validate(snapshot.autoscaling)
        current = memory.desired or int((snapshot.autoscaler_decision or {}).get("replicas", 0)) or config.min_replicas
        ready = sum(1 for o in observed if o.facts.ready and o.draining_s is None)
        capacity = options.replica_capacity(option, snapshot.replica_bytes) if option else None
        now = self.load.clock()
        decision, memory.autoscaler = decide(config, memory.autoscaler, self.load.sample(snapshot.engine_id, now),
                                             ready, current, capacity, now)
        memory.desired = decision.desired
        return decision.desired, decision

    def _observed(
        self, row: ReplicaRow, facts: ReplicaFacts, memory: EngineMemory, now: float, in_flight: int
    ) -> ObservedReplica:
        """A replica's facts with what the plan also weighs: how long since it last answered,
        its requests in flight, how long it has drained (remembered between steps)."""
        if facts.answered:
            memory.answered_at[row.replica_id] = now
        unanswered_s = now - memory.answered_at.setdefault(row.replica_id, now)
        status = ReplicaStatus(row.status)
        draining_s = None
        if status is ReplicaStatus.DRAINING:
            draining_s = now - memory.draining_since.setdefault(row.replica_id, now)
        # A draining replica stops once it has no request: counted by the replica too, so a call
        # another server's gateway sent it is not cut.
        return ObservedReplica(facts, status, unanswered_s, policy.requests_on(facts, in_flight), draining_s)

    async def _launch_missing(
        self, snapshot: EngineSnapshot, missing: int
    ) -> tuple[dict[str, ReplicaAddress], Fault | None]:
        """Launch up to ``missing`` replicas; stops at the first that cannot be launched."""
        launched: dict[str, ReplicaAddress] = {}
        for _ in range(max(0, missing)):
            try:
                replica_id, address = await asyncio.to_thread(self._launch, snapshot)
                launched[replica_id] = address
            except LaunchError as exc:
                log.warning("engine %s: %s", snapshot.engine_id, exc.reason)
                return launched, Fault(exc.reason, exc.permanent)
        return launched, None

    async def _observe(
        self, snapshot: EngineSnapshot, row: ReplicaRow, listed: ProviderReplica | None
    ) -> ReplicaFacts:
        age_s = (utcnow() - row.started_at).total_seconds()
        exit_info = listed.exit if listed is not None else _NOT_LISTED
        if exit_info is not None:
            return ReplicaFacts(row.replica_id, ready=False, exited=True, exit_reason=exit_info.reason,
                                permanent_failure=exit_info.permanent, age_s=age_s)
        health = await self.replicas.health(row.address)
        ready = bool(health and health.ready and health.body.get("served_name") == snapshot.name)
        loaded = health.loaded if health else {}
        base_served = bool(health.body.get("base_served", True)) if health else True
        return ReplicaFacts(row.replica_id, ready=ready, exited=False, loaded=loaded, age_s=age_s,
                            base_served=base_served, answered=health is not None,
                            busy=policy.replica_busy(health.body) if health else 0)

    def _launch(self, snapshot: EngineSnapshot) -> tuple[str, ReplicaAddress]:
        # A secret of its own per replica: one leaked (a log, a core dump) opens no other.
        secret = new_secret()
        launched = self.provider.launch(
            ReplicaLaunch(
                replica_id=new_id("replica"),
                engine_id=snapshot.engine_id,
                served_name=snapshot.name,
                task_type=snapshot.task_type,
                base_model=snapshot.base_model,
                secret=secret,
                runtime_options=snapshot.runtime_options,
                deployment_option=snapshot.selected_option,
            )
        )
        return launched.replica_id, ReplicaAddress(launched.url, secret)

    # -- adapters -------------------------------------------------------------------------

    async def _reconcile_adapters(
        self, snapshot: EngineSnapshot, outcome: StepOutcome, memory: EngineMemory
    ) -> None:
        if not snapshot.status.wants_replicas:
            return
        desired = _desired_adapters(snapshot, memory)
        serves_lora = TaskType(snapshot.task_type).serves_lora
        by_name = {d.name: d for d in snapshot.deployments}
        ready = [f for f in outcome.replicas if f.replica_id in outcome.ready_ids]
        address_of = {r.replica_id: r.address for r in snapshot.replicas}
        updated = await asyncio.gather(
            *(self._sync_replica(address_of[f.replica_id], f, desired, by_name, memory, serves_lora)
              for f in ready)
        )
        replaced = {f.replica_id: f for f in updated}
        outcome.replicas = [replaced.get(f.replica_id, f) for f in outcome.replicas]

    async def _sync_replica(
        self,
        address: ReplicaAddress,
        facts: ReplicaFacts,
        desired: dict[str, str],
        by_name: dict[str, DeploymentFacts],
        memory: EngineMemory,
        serves_lora: bool,
    ) -> ReplicaFacts:
        to_load, to_unload = policy.plan_adapters(desired, facts.loaded)
        loaded = dict(facts.loaded)
        try:
            for name in to_unload:
                await self.replicas.unload_adapter(address, name)
                loaded.pop(name, None)
        except httpx.HTTPError as exc:
            log.warning("replica %s: adapter unload failed, will retry: %s", facts.replica_id, exc)
        now = time.time()
        for name, path in to_load:
            deployment_id = by_name[name].deployment_id
            if memory.load_tries.get(deployment_id, policy.LoadTries()).retry_at > now:
                continue  # backing off after a transient failure
            try:
                await self.replicas.load_adapter(address, name, path)
                loaded[name] = path
                memory.load_tries.pop(deployment_id, None)
            except AdapterLoadRefused as refused:  # the adapter itself is wrong: no retry helps
                memory.load_errors[deployment_id] = str(refused)
            except httpx.HTTPError as exc:
                tries, failure = policy.after_load_error(memory.load_tries.get(deployment_id, policy.LoadTries()),
                                                         _describe(exc), now)
                memory.load_tries[deployment_id] = tries
                if failure is not None:
                    memory.load_errors[deployment_id] = failure
                log.warning("replica %s: loading adapter %s failed (try %d): %s", facts.replica_id, name,
                            tries.count, exc)
        base_served = facts.base_served
        if loaded != facts.loaded and not serves_lora:
            base_served = not loaded  # a single-model replica's fine-tune takes the base's place
        return replace(facts, loaded=loaded, base_served=base_served)

    # -- statuses -------------------------------------------------------------------------

    def _write(
        self, snapshot: EngineSnapshot, expected: EngineStatus, outcome: StepOutcome, memory: EngineMemory
    ) -> EngineStatus | None:
        """Record what this step observed and derived; returns the engine's status afterwards, or
        None when the engine is gone or was changed by a request meanwhile (the next step sees it)."""
        outcome.serving_ids = _serving_ids(snapshot, outcome, memory)
        # Replicas first, on their own: a process launched or stopped is a fact whatever a request
        # did to the engine meanwhile.
        with self.database.session(announce=False) as session:
            if session.get(EngineModel, snapshot.engine_id) is not None:
                self._write_replicas(session, snapshot, outcome)
        try:
            with self.database.session(announce=False) as session:
                engine = session.get(EngineModel, snapshot.engine_id)
                if engine is None or engine.status != expected.value:
                    return None
                if expected is EngineStatus.DELETING:
                    if not outcome.replicas:
                        _delete_engine_rows(session, engine)
                    return None
                self._write_engine(session, engine, outcome)
                self._write_deployments(session, engine, outcome, memory)
                return EngineStatus(engine.status)
        except StatusChangedError as exc:
            log.info("engine %s: %s; the next step takes it from there", snapshot.engine_id, exc.message)
            return None

    def _write_replicas(self, session, snapshot: EngineSnapshot, outcome: StepOutcome) -> None:  # type: ignore[no-untyped-def]
        org = snapshot.organization_id
        for replica_id, reason in outcome.removed.items():
            replica_service.remove_replica(session, org, replica_id, reason)
        for replica_id, address in outcome.launched.items():
            replica_service.add_replica(session, org, snapshot.engine_id, replica_id, address)
        was_ready = {r.replica_id for r in snapshot.replicas if r.status == ReplicaStatus.READY.value}
        for replica_id in outcome.serving_ids - was_ready:
            replica_service.mark_replica(session, org, replica_id, ReplicaStatus.READY,
                                         "health check passed, deployments loaded")
        for replica_id in outcome.drain:
            replica_service.mark_replica(session, org, replica_id, ReplicaStatus.DRAINING, "scaled down")
        outcome.removed, outcome.launched, outcome.drain = {}, {}, []  # written once

    def _write_engine(self, session, engine: EngineModel, outcome: StepOutcome) -> None:  # type: ignore[no-untyped-def]
        current = EngineStatus(engine.status)
        ready = [f for f in outcome.replicas if f.replica_id in outcome.ready_ids]
        derived = policy.derive_engine_status(current, outcome.replicas, outcome.failure)
        if derived is not None:
            new_status, reason = derived
            switch_engine_status(session, engine, new_status, reason)
            if new_status is EngineStatus.ACTIVE:
                engine.last_access_at = utcnow()
                if not engine.activated_once:
                    engine.activated_once = True
                    deployment_service.create_base_deployment(session, engine)
        elif current.wants_replicas and (note := _held_back(outcome)):
            # Held back (a crash backoff, an option no provider gives, a provider's bound on the
            # replica count): the reason says by what, and till when.
            switch_engine_status(session, engine, current, note)
        elif current is EngineStatus.ACTIVE and engine.status_reason and ready:
            switch_engine_status(session, engine, current, None)
        scaled = outcome.scaled
        if scaled is not None and (scaled.changed or engine.autoscaler_decision is None):
            engine.autoscaler_decision = {"replicas": scaled.desired, "reason": scaled.reason,
                                          "at": iso(utcnow())}

    def _write_deployments(  # type: ignore[no-untyped-def]
        self, session, engine: EngineModel, outcome: StepOutcome, memory: EngineMemory
    ) -> None:
        ready = [f for f in outcome.replicas if f.replica_id in outcome.serving_ids]
        engine_status = EngineStatus(engine.status)
        # Decided on plain rows; only a deployment whose status changes is loaded as an object
        # (an engine may hold hundreds of deployments, and most steps change none of them).
        columns = (DeploymentModel.id, DeploymentModel.name, DeploymentModel.kind, DeploymentModel.status,
                   DeploymentModel.checkpoint_path, DeploymentModel.status_reason)
        query = (select(*columns).where(DeploymentModel.engine_id == engine.id)
                 .order_by(DeploymentModel.created_at, DeploymentModel.id))
        rows = session.execute(query).all()
        facts_of = {
            row[0]: DeploymentFacts(row[0], row[1], DeploymentKind(row[2]), DeploymentStatus(row[3]), row[4])
            for row in rows
        }
        replaced_by = None
        if not TaskType(engine.task_type).serves_lora:
            replaced_by = policy.single_model_replacement(
                [f for f in facts_of.values() if f.deployment_id not in memory.load_errors]
            )
        for row in rows:
            facts = facts_of[row[0]]
            status, reason = policy.derive_deployment_status(
                engine_status, engine.status_reason, facts, ready, memory.load_errors.get(row[0]),
                replaced_by,
            )
            if status is not facts.status or (reason and reason != row[5]):
                deployment = session.get(DeploymentModel, row[0])
                if deployment is not None:
                    switch_deployment_status(session, deployment, status, reason)
        memory.load_errors = {k: v for k, v in memory.load_errors.items() if k in facts_of}
        memory.load_tries = {k: v for k, v in memory.load_tries.items() if k in facts_of}


def _desired_adapters(snapshot: EngineSnapshot, memory: EngineMemory) -> dict[str, str]:
    """What every ready replica of the engine should hold (name → checkpoint path)."""
    wanted = [d for d in snapshot.deployments if d.deployment_id not in memory.load_errors]
    desired = policy.desired_adapters(wanted)
    if not TaskType(snapshot.task_type).serves_lora:  # one model at a time: the replacement, or none
        replacement = policy.single_model_replacement(wanted)
        desired = {n: p for n, p in desired.items() if n == replacement}
    return desired


def _serving_ids(snapshot: EngineSnapshot, outcome: StepOutcome, memory: EngineMemory) -> set[str]:
    """The ready replicas that take traffic: those already serving, and a new one once it holds
    the engine's full deployment set (it loads them all before its first request)."""
    serving = {r.replica_id for r in snapshot.replicas if r.status == ReplicaStatus.READY.value}
    desired = _desired_adapters(snapshot, memory)
    return {f.replica_id for f in outcome.replicas
            if f.replica_id in outcome.ready_ids and (f.replica_id in serving or policy.holds_all(f, desired))}


def _describe(error: httpx.HTTPError) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return f"the replica answered {error.response.status_code}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _held_back(outcome: StepOutcome) -> str | None:
    if outcome.waiting_for:
        return outcome.waiting_for
    if outcome.scaled is not None and outcome.scaled.capped:
        return f"autoscaler: {outcome.scaled.reason}"
    return None


def _delete_engine_rows(session, engine: EngineModel) -> None:  # type: ignore[no-untyped-def]
    """The engine's rows go; its events stay, ending with each object's removal."""
    org = engine.organization_id
    for row in engine_service.engine_deployments(session, engine.id):
        record_removed(session, org, engine.id, row.id, row.name, row.status, DELETED, "engine deleted")
        session.delete(row)
    for replica in engine_service.engine_replicas(session, engine.id):
        replica_service.remove_replica(session, org, replica.id, "engine deleted")
    record_removed(session, org, engine.id, engine.id, engine.name, engine.status, DELETED, "deletion requested")
    session.flush()
    session.delete(engine)

