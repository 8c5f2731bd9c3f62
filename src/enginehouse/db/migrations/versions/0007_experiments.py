"""Playground experiments

An experiment holds classes described in words and labelled examples; each of its versions is a
training job (version 1 zero-shot, built from the descriptions; later ones trained on the
examples), so jobs gain the experiment and version they belong to and, for a trained version,
version 1's results on the same held-out examples.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("organization_id", sa.String(64),
                  sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("task_type", sa.String(40), nullable=False),
        sa.Column("base_model", sa.Text(), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_experiments_list", "experiments", ["organization_id", "created_at", "id"])
    op.create_table(
        "experiment_examples",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("experiment_id", sa.String(64), sa.ForeignKey("experiments.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("label", sa.String(100), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
    )
    op.create_index("ix_experiment_examples_experiment_id", "experiment_examples", ["experiment_id"])
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("experiment_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("experiment_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("baseline_results", sa.JSON(), nullable=True))
        batch.create_foreign_key("fk_training_jobs_experiment", "experiments", ["experiment_id"], ["id"],
                                 ondelete="CASCADE")
        batch.create_index("ix_training_jobs_experiment_id", ["experiment_id"])


def downgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_index("ix_training_jobs_experiment_id")
        batch.drop_constraint("fk_training_jobs_experiment", type_="foreignkey")
        for column in ("baseline_results", "experiment_version", "experiment_id"):
            batch.drop_column(column)
    op.drop_index("ix_experiment_examples_experiment_id", "experiment_examples")
    op.drop_table("experiment_examples")
    op.drop_index("ix_experiments_list", "experiments")
    op.drop_table("experiments")
