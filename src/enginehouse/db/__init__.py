"""Control-plane persistence: ORM models, sessions and Alembic migrations."""
