"""ner examples

An ner experiment's example is a text and the entities in it (character offsets and a type),
kept as JSON beside the text; a classification example's ``label`` and a regression's ``value``
are unchanged, and rows already present keep NULL.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("experiment_examples") as batch:
        batch.add_column(sa.Column("entities", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiment_examples") as batch:
        batch.drop_column("entities")
