"""What the database says exists, read once per scrape: engines, their replicas and where those
listen. Read-only; runs in a worker thread."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import select
from sqlalchemy.orm import Session

from enginehouse.core.status import ReplicaStatus
from enginehouse.db.models import EngineModel, OrganizationModel, ReplicaModel
from enginehouse.replicaauth import ReplicaAddress


@dataclass(frozen=True)
class ReplicaRow:
    id: str
    status: str
    address: ReplicaAddress  # where it answers, with the secret its /metrics demands
    organization: str
    engine: str  # the engine's name: what users see (its base deployment's name too)

    @property
    def labels(self) -> dict[str, str]:
        """Added to every series this replica reports, so replicas never collide."""
        return {"organization": self.organization, "engine": self.engine, "replica": self.id}


@dataclass(frozen=True)
class Inventory:
    engines: list[tuple[str, str]]  # (organization name, engine name)
    replicas: list[ReplicaRow]

    def ready(self) -> list[ReplicaRow]:
        return [r for r in self.replicas if r.status == ReplicaStatus.READY.value]


def read_inventory(session: Session) -> Inventory:
    engines = session.execute(
        select(OrganizationModel.name, EngineModel.name)
        .join(OrganizationModel, EngineModel.organization_id == OrganizationModel.id)
        .order_by(OrganizationModel.name, EngineModel.name)
    )
    replicas = session.execute(
        select(ReplicaModel.id, ReplicaModel.status, ReplicaModel.url, OrganizationModel.name, EngineModel.name,
               ReplicaModel.secret)
        .join(EngineModel, ReplicaModel.engine_id == EngineModel.id)
        .join(OrganizationModel, EngineModel.organization_id == OrganizationModel.id)
        .order_by(ReplicaModel.started_at)
    )
    return Inventory(
        engines=[(org, engine) for org, engine in engines],
        replicas=[ReplicaRow(replica_id, status, ReplicaAddress(url, secret), organization, engine)
                  for replica_id, status, url, organization, engine, secret in replicas],
    )


def replica_counts(inventory: Inventory) -> GaugeMetricFamily:
    """Every engine gets every status, zeros included, so a series does not vanish at zero."""
    counts = Counter((r.organization, r.engine, r.status) for r in inventory.replicas)
    family = GaugeMetricFamily(
        "enginehouse_engine_replicas", "Replicas of each engine by status, from the control plane.",
        labels=["organization", "engine", "status"],
    )
    for organization, engine in inventory.engines:
        for status in ReplicaStatus:
            family.add_metric([organization, engine, status.value], counts[(organization, engine, status.value)])
    return family
