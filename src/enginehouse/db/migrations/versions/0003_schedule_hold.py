"""an engine's manual hold against its schedule

A manual deactivation inside an engine's schedule window holds until the window next opens, a
manual reactivation outside it until the window next closes; the engine keeps that instant.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("engines") as batch:
        batch.add_column(sa.Column("schedule_hold_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("engines") as batch:
        batch.drop_column("schedule_hold_until")
