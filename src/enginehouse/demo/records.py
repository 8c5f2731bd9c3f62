"""Finding what an earlier ``--demo`` start created, by name, so a restart creates nothing twice.

Engines and deployments have unique names per organization; datasets, training jobs and
experiments do not (a user may reuse a name), so for those the newest of the name is the demo's.
Reads only: every write goes through ``services``, which also find a deployment by name
(``deployments.find_deployment_by_name``) and an experiment's version (``experiments.version_job``).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from enginehouse.db.models import DatasetModel, EngineModel, ExperimentModel, TrainingJobModel
from enginehouse.errors import NotFoundError
from enginehouse.services.orgs import DEFAULT_ORGANIZATION, get_organization_by_name


class DemoSetupError(RuntimeError):
    """Something the demo needs is missing; the message says what to do."""


def default_organization(session: Session) -> str:
    try:
        return get_organization_by_name(session, DEFAULT_ORGANIZATION).id
    except NotFoundError:
        raise DemoSetupError(f"the organization {DEFAULT_ORGANIZATION!r} does not exist; the demo is set up "
                             "in it, so start the server once without --demo to create it") from None


def find_engine(session: Session, org_id: str, name: str) -> EngineModel | None:
    return session.scalar(select(EngineModel).where(EngineModel.organization_id == org_id,
                                                    EngineModel.name == name))


def find_dataset(session: Session, org_id: str, name: str) -> DatasetModel | None:
    return session.scalars(
        select(DatasetModel).where(DatasetModel.organization_id == org_id, DatasetModel.name == name)
        .order_by(DatasetModel.created_at.desc(), DatasetModel.id.desc())
    ).first()


def find_fine_tune(session: Session, org_id: str, name: str) -> TrainingJobModel | None:
    """The newest training job of that name that is not an experiment's version."""
    return session.scalars(
        select(TrainingJobModel).where(TrainingJobModel.organization_id == org_id, TrainingJobModel.name == name,
                                       TrainingJobModel.experiment_id.is_(None))
        .order_by(TrainingJobModel.created_at.desc(), TrainingJobModel.id.desc())
    ).first()


def find_experiment(session: Session, org_id: str, name: str) -> ExperimentModel | None:
    return session.scalars(
        select(ExperimentModel).where(ExperimentModel.organization_id == org_id, ExperimentModel.name == name)
        .order_by(ExperimentModel.created_at.desc(), ExperimentModel.id.desc())
    ).first()
