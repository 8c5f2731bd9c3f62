"""Alembic environment: always handed a live connection by ``enginehouse.db.migrate``."""

from alembic import context

from enginehouse.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through enginehouse.db.migrate.upgrade_to_head")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
