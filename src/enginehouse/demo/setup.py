"""``enginehouse up --demo``: prepare, once, in the data directory, a demo that shows the product
on real content, while the server already answers:

- ``demo-embeddings``: an embedding engine on all-MiniLM-L6-v2;
- ``demo-classifier``: a classification engine on the same encoder, with ``support-tickets`` (a
  fine-tune on the project's support tickets, trained now) and ``urgency`` (a zero-shot
  Playground experiment) deployed on it;
- ``demo``: a text-generation engine on SmolLM2-135M-Instruct when the Hub can be reached, else on
  a tiny random model with two adapters (``textgen.py`` says which and why).

It runs in a thread that the leading server's duties (``LeaderDuties``) start and stop; the
console shows each step, the fine-tune's progress, and ``demo: ready`` once every demo deployment
serves. A later start finds everything by name and creates nothing again (``records.py``); a
fine-tune or experiment that a stopped server left Failed or Cancelled is started again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from enginehouse.core.status import DeploymentStatus, EngineStatus, ReplicaStatus
from enginehouse.db.session import Database
from enginehouse.demo import encoders
from enginehouse.demo.records import DemoSetupError, default_organization, find_engine
from enginehouse.demo.textgen import DEMO_ENGINE, prepare_textgen
from enginehouse.services import engines as engine_service
from enginehouse.settings import Settings

log = logging.getLogger(__name__)

DEMO_ENGINES = (encoders.EMBEDDING_ENGINE, encoders.CLASSIFIER_ENGINE, DEMO_ENGINE)
# How long the demo's replicas may take to serve before the console is told something is wrong.
READY_TIMEOUT_S = 900.0
POLL_S = 1.0
# How long a shutdown waits for the set-up thread to notice: a download under way is abandoned
# (it resumes on the next start).
STOP_TIMEOUT_S = 10.0


class DemoSetup:
    """Started by ``LeaderDuties`` on the leading server, after the training supervisor (``poke``
    tells it that jobs were queued), and stopped before it."""

    def __init__(self, database: Database, settings: Settings, poke: Callable[[], None]) -> None:
        self.database = database
        self.settings = settings
        self.poke = poke
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        log.info("demo: setting up in the background (the server answers meanwhile); "
                 "'demo: ready' says when every demo deployment serves")
        self._spawn("demo-setup", self._run)

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            log.info("demo: set-up interrupted by the shutdown; the next start with --demo carries on")

    def _spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        # Daemon threads: a download that cannot be interrupted must not hold the process open.
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def _run(self) -> None:
        started = time.monotonic()
        textgen = self._spawn("demo-textgen", lambda: self._guarded(
            "the text-generation demo", lambda: prepare_textgen(self.database, self.settings.data_dir / "demo")))
        self._guarded("the classification and embedding demo", self._encoders)
        while textgen.is_alive() and not self._stop.is_set():
            textgen.join(POLL_S)
        if not self._stop.is_set():
            self._guarded("the demo", lambda: self._await_serving(started))

    def _guarded(self, what: str, step: Callable[[], None]) -> None:
        """Run a step; its failure is said on the console and leaves the server running."""
        try:
            step()
        except DemoSetupError as exc:
            log.error("demo: %s", exc)
        except Exception:
            log.exception("demo: setting up %s failed; the server goes on without it", what)

    def _encoders(self) -> None:
        awaited = encoders.declare(self.database, self.settings)
        if awaited:
            self.poke()  # after the commit: the supervisor's next pass sees the jobs
        encoders.follow(self.database, awaited, self._stop, POLL_S)

    def _await_serving(self, started: float) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._stop.is_set():
            waiting, serving = serving_state(self.database)
            if not waiting:
                log.info("demo: ready after %.0f s; call %s", time.monotonic() - started, ", ".join(serving))
                return
            if time.monotonic() > deadline:
                log.warning("demo: still not serving after %.0f s: %s", READY_TIMEOUT_S, "; ".join(waiting))
                return
            self._stop.wait(POLL_S)


def serving_state(database: Database) -> tuple[list[str], list[str]]:
    """(what the demo still waits for, in words; the deployments that serve) over the demo's
    engines. A Failed engine or deployment is not waited for: its reason is logged by the
    reconciler, and GET /v1/engines/{id}/events says it again."""
    waiting: list[str] = []
    serving: list[str] = []
    with database.session(announce=False) as session:
        org_id = default_organization(session)
        for name in DEMO_ENGINES:
            engine = find_engine(session, org_id, name)
            if engine is None or engine.status == EngineStatus.FAILED.value:
                continue
            if engine.status != EngineStatus.ACTIVE.value:
                waiting.append(f"engine {name} is {engine.status}")
                continue
            # After a restart the statuses are as the last run left them while the replicas start
            # again; a ready replica has loaded every deployment before it takes traffic.
            replicas = engine_service.engine_replicas(session, engine.id)
            if not any(r.status == ReplicaStatus.READY.value for r in replicas):
                waiting.append(f"engine {name} has no ready replica yet")
                continue
            for deployment in engine_service.engine_deployments(session, engine.id):
                if deployment.status == DeploymentStatus.DEPLOYED.value:
                    # The bare encoder has no classification head: only its fine-tunes answer.
                    if deployment.name != encoders.CLASSIFIER_ENGINE:
                        serving.append(deployment.name)
                elif deployment.status != DeploymentStatus.FAILED.value:
                    waiting.append(f"{deployment.name} is {deployment.status}")
    return waiting, serving
