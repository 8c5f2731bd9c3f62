"""dashboard sessions

A browser signed in to the dashboard: the sha256 of its cookie's token, the API key it signed in
with (a revoked key ends its sessions), and the token its forms carry against cross-site posts.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("api_key_id", sa.String(64), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False),
        sa.Column("organization_id", sa.String(64),
                  sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_dashboard_sessions_api_key_id", "dashboard_sessions", ["api_key_id"])


def downgrade() -> None:
    op.drop_index("ix_dashboard_sessions_api_key_id", table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
