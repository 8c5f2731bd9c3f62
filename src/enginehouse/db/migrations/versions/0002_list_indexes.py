"""indexes for paged lists

Lists are read newest first by (created_at, id) within an organization, and an engine page loads
the deployments of all its engines at once (engine_id IN …, in order). Composite indexes serve
those reads straight from the index; the single-column indexes they start with become redundant.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# (table, new index, its columns, the single-column index it replaces, that index's column)
_INDEXES = [
    ("engines", "ix_engines_list", ["organization_id", "created_at", "id"],
     "ix_engines_organization_id", "organization_id"),
    ("deployments", "ix_deployments_list", ["organization_id", "created_at", "id"],
     "ix_deployments_organization_id", "organization_id"),
    ("deployments", "ix_deployments_engine_list", ["engine_id", "created_at", "id"],
     "ix_deployments_engine_id", "engine_id"),
    ("training_jobs", "ix_training_jobs_list", ["organization_id", "created_at", "id"],
     "ix_training_jobs_organization_id", "organization_id"),
    ("events", "ix_events_engine_list", ["engine_id", "id"], "ix_events_engine_id", "engine_id"),
]


def upgrade() -> None:
    for table, name, columns, replaced, _column in _INDEXES:
        op.create_index(name, table, columns)
        op.drop_index(replaced, table_name=table)


def downgrade() -> None:
    for table, name, _columns, replaced, column in reversed(_INDEXES):
        op.create_index(replaced, table, [column])
        op.drop_index(name, table_name=table)
