"""datasets and fine-tuning jobs

Uploaded datasets get their table; a training job gains what a fine-tune needs (its datasets,
parameters, progress, reason and times). Jobs that registered existing checkpoints were stored as
``Completed``; SPEC §5.1 names that state ``Success``.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("organization_id", sa.String(64),
                  sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_datasets_list", "datasets", ["organization_id", "created_at", "id"])
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("train_dataset_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("test_dataset_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("train_test_split_ratio", sa.Float(), nullable=True))
        batch.add_column(sa.Column("parameters", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("progress", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("progress_detail", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key("fk_training_jobs_train_dataset", "datasets", ["train_dataset_id"], ["id"],
                                 ondelete="SET NULL")
        batch.create_foreign_key("fk_training_jobs_test_dataset", "datasets", ["test_dataset_id"], ["id"],
                                 ondelete="SET NULL")
        batch.create_index("ix_training_jobs_train_dataset_id", ["train_dataset_id"])
        batch.create_index("ix_training_jobs_test_dataset_id", ["test_dataset_id"])
    op.execute("UPDATE training_jobs SET status = 'Success' WHERE status = 'Completed'")


def downgrade() -> None:
    op.execute("UPDATE training_jobs SET status = 'Completed' WHERE status = 'Success'")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_index("ix_training_jobs_test_dataset_id")
        batch.drop_index("ix_training_jobs_train_dataset_id")
        batch.drop_constraint("fk_training_jobs_test_dataset", type_="foreignkey")
        batch.drop_constraint("fk_training_jobs_train_dataset", type_="foreignkey")
        for column in ("finished_at", "started_at", "progress_detail", "progress", "parameters",
                       "train_test_split_ratio", "test_dataset_id", "train_dataset_id", "status_reason"):
            batch.drop_column(column)
    op.drop_index("ix_datasets_list", "datasets")
    op.drop_table("datasets")
