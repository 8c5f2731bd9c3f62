"""ORM models. Specs are stored as JSON (pydantic ``model_dump``), never pickled.

Named ``*Model`` so they never get confused with the domain objects or wire envelopes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from enginehouse.core.ids import utcnow


class Base(DeclarativeBase):
    pass


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class OrganizationModel(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    created_at: Mapped[datetime] = _created()


class ApiKeyModel(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True, nullable=False
    )
    # sha256 of the key; the key itself is shown once and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DashboardSessionModel(Base):
    """A browser signed in to the dashboard with an API key. The cookie holds a random token; only
    its sha256 is stored. The session ends when it expires, on sign-out, or when its key is
    revoked (the key is checked on every request, so no stale session outlives it)."""

    __tablename__ = "dashboard_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's token
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True,
                                            nullable=False)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    # Sent back in every state-changing form; a cross-site page cannot read it.
    csrf_token: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class DatasetModel(Base):
    """An uploaded JSONL file, kept under the data directory; what a fine-tune trains on."""

    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_list", "organization_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    rows: Mapped[int] = mapped_column(Integer, nullable=False)
    bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created()


class ExperimentModel(Base):
    """A Playground experiment: classes described in words, examples, and versions (jobs)."""

    __tablename__ = "experiments"
    __table_args__ = (Index("ix_experiments_list", "organization_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    mode: Mapped[str] = mapped_column(String(20), nullable=False)
    task_type: Mapped[str] = mapped_column(String(40), nullable=False)
    base_model: Mapped[str] = mapped_column(Text, nullable=False)
    classes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = _created()


class ExperimentExampleModel(Base):
    __tablename__ = "experiment_examples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False, index=True
    )
    text: Mapped[str] = mapped_column(Text, nullable=False)
    label: Mapped[str | None] = mapped_column(String(100))
    value: Mapped[float | None] = mapped_column(Float)
    # An ner example's entities: [{"start", "end", "label"}, ...].
    entities: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class TrainingJobModel(Base):
    __tablename__ = "training_jobs"
    # Lists are read newest first, a page at a time, by (created_at, id) within an organization.
    __table_args__ = (Index("ix_training_jobs_list", "organization_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    task_type: Mapped[str] = mapped_column(String(40), nullable=False)
    base_model: Mapped[str] = mapped_column(Text, nullable=False)
    # Pending | Running | Testing | Success | Failed | Cancelled (SPEC §5.1); a job that registered
    # existing checkpoints is Success from the start.
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="Success")
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    # What a fine-tune trains on (NULL for registered checkpoints, or once a dataset is deleted).
    train_dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), index=True
    )
    test_dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), index=True
    )
    train_test_split_ratio: Mapped[float | None] = mapped_column(Float)
    parameters: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    progress: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, server_default="0")
    progress_detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A Playground experiment's version is a job too: version 1 built from the class
    # descriptions (zero-shot), the next ones trained on its examples.
    experiment_id: Mapped[str | None] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    experiment_version: Mapped[int | None] = mapped_column(Integer)
    # A trained version's test results of version 1 on the same held-out examples.
    baseline_results: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    checkpoints: Mapped[list["CheckpointModel"]] = relationship(
        back_populates="training_job",
        cascade="all, delete-orphan",
        order_by="CheckpointModel.checkpoint",
        lazy="selectin",
    )


class CheckpointModel(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("training_job_id", "checkpoint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    training_job_id: Mapped[str] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="CASCADE"), nullable=False
    )
    checkpoint: Mapped[int] = mapped_column(Integer, nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    test_results: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    training_job: Mapped[TrainingJobModel] = relationship(back_populates="checkpoints")


class EngineModel(Base):
    __tablename__ = "engines"
    __table_args__ = (
        UniqueConstraint("organization_id", "name"),
        Index("ix_engines_list", "organization_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    task_type: Mapped[str] = mapped_column(String(40), nullable=False)
    base_model: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    status_reason: Mapped[str | None] = mapped_column(Text)
    deployment_option: Mapped[str] = mapped_column(String(40), nullable=False, default="auto")
    # What "auto" resolved to and why: {"name": ..., "reason": ...}.
    selected_option: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    autoscaling: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    resource_management_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    runtime_options: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    last_access_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A cluster engine's last autoscaler decision: {"replicas", "reason", "at"}.
    autoscaler_decision: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Until when a manual deactivate or reactivate holds against the engine's schedule.
    schedule_hold_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set once the engine has been Active: the base deployment exists from then on.
    activated_once: Mapped[bool] = mapped_column(default=False, nullable=False)


class DeploymentModel(Base):
    __tablename__ = "deployments"
    __table_args__ = (
        UniqueConstraint("organization_id", "name"),
        Index("ix_deployments_list", "organization_id", "created_at", "id"),
        # An engine's deployments in order: its page of the list, and the set an engine page
        # loads for many engines at once (engine_id IN …).
        Index("ix_deployments_engine_list", "engine_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    engine_id: Mapped[str] = mapped_column(
        ForeignKey("engines.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    source: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # The checkpoint directory the source resolved to when the deployment was created.
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    status_reason: Mapped[str | None] = mapped_column(Text)
    task_type: Mapped[str] = mapped_column(String(40), nullable=False)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class ReplicaModel(Base):
    """A replica the control plane launched: its address and status. Where and how it runs
    (a process, its log) is its provider's to know."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    engine_id: Mapped[str] = mapped_column(
        ForeignKey("engines.id", ondelete="CASCADE"), index=True, nullable=False
    )
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    status_reason: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    # What every call to the replica must carry (enginehouse.replicaauth); never shown by the API.
    # NULL for a replica launched by a server older than replica secrets: it checks none.
    secret: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime] = _created()


class EventModel(Base):
    __tablename__ = "events"
    # An engine's events are read in the order they were recorded, a page at a time.
    __table_args__ = (Index("ix_events_engine_list", "engine_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True, nullable=False)
    engine_id: Mapped[str] = mapped_column(String(64), nullable=False)
    object_id: Mapped[str] = mapped_column(String(64), nullable=False)
    object_name: Mapped[str] = mapped_column(String(100), nullable=False)
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = _created()
