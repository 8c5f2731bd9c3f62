"""an engine's last autoscaler decision

The replica count a cluster engine's autoscaler last chose, why, and when; shown on the engine,
and where a restarted server's autoscaler starts from.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("engines") as batch:
        batch.add_column(sa.Column("autoscaler_decision", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("engines") as batch:
        batch.drop_column("autoscaler_decision")
