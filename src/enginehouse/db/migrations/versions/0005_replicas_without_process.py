"""replicas without process ids or log paths

Where and how a replica runs is its provider's to know (the local provider keeps a record per
replica under the data directory); the control plane keeps only its address and status.

A server of an earlier version killed with its replicas running leaves their process ids only in
these columns: after this upgrade those replicas are not adopted (they are replaced, and the old
processes must be ended by hand). A clean shutdown before upgrading stops them.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.drop_column("pid")
        batch.drop_column("log_path")


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("log_path", sa.Text(), nullable=True))
