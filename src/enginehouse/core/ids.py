"""Identifiers and timestamps."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone


def new_id(prefix: str) -> str:
    """``engine-3f9a…``: a prefix that says what the object is, then 16 random hex digits."""
    return f"{prefix}-{secrets.token_hex(8)}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z`` and microseconds always shown, as the database formats the
    timestamps the views read (services/reads.py); databases may hand back naive datetimes,
    which are UTC here."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
