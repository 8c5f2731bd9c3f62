"""Reading objects for the API: plain rows of the columns a view needs, not ORM objects.

A list of 10,000 deployments costs little in the database; what costs is building an ORM object
per row, parsing every JSON column only to serialise it again, and converting every timestamp
in Python. So the rows read here carry JSON columns as the text the database holds (the views
embed it as is) and timestamps as naive UTC datetimes, whatever the database session's time
zone (the views serialise them with a ``Z``). Each row's fields are named after the model's
attributes, so a view reads ``row.status`` as it would read the object's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, Row, Text, cast, func
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


def read_columns(session: Session, model: Any, names: Sequence[str]) -> list[ColumnElement[Any]]:
    """The columns ``names`` of ``model`` as a view reads them (see the module's docstring)."""
    dialect = dialect_of(session)
    return [_readable(getattr(model, name), dialect).label(name) for name in names]


def _readable(attribute: InstrumentedAttribute[Any], dialect: str) -> ColumnElement[Any]:
    kind = attribute.type
    if isinstance(kind, JSON):
        return cast(attribute, Text)
    if isinstance(kind, DateTime) and dialect == "postgresql":
        # timestamptz comes back in the session's time zone; timezone('UTC', …) gives UTC.
        return func.timezone("UTC", attribute, type_=DateTime())
    return attribute  # type: ignore[return-value]


def epoch_seconds(session: Session, attribute: InstrumentedAttribute[Any]) -> ColumnElement[int]:
    """Whole seconds since 1970 (UTC) of a timestamp column, computed by the database."""
    if dialect_of(session) == "postgresql":
        return cast(func.floor(func.extract("epoch", attribute)), BigInteger)
    # SQLite keeps timestamps as UTC text, which strftime reads; %s truncates like int().
    return cast(func.strftime("%s", attribute), Integer)


def grouped(rows: Iterable[Row[Any]], key: str) -> defaultdict[str, list[Row[Any]]]:
    """Rows of one query over many parents, by parent (``key`` names the parent's id)."""
    groups: defaultdict[str, list[Row[Any]]] = defaultdict(list)
    for row in rows:
        groups[getattr(row, key)].append(row)
    return groups
