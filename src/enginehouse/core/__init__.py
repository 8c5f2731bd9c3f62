"""Pure domain: specs, status enums and their transition tables. No FastAPI, no SQLAlchemy."""
