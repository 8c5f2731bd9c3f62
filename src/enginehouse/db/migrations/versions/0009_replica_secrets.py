"""replica secrets

Every replica answers only calls that carry its own secret, made when it is launched and kept
here so the gateway, the reconciler and a restarted server (adopting the replicas a crashed one
left running) can call it.

Rows already present keep NULL: their replicas were launched by an earlier release, check no
secret, and are called without one until they are replaced. Stepping down forgets the secrets: replicas
still running then refuse the older server's calls and are replaced.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.add_column(sa.Column("secret", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.drop_column("secret")
