"""Reading objects for the API: plain rows of the columns a view needs, not ORM objects.

A list of 10,000 deployments costs little in the database; what costs is Python work per value:
building an ORM object per row, parsing every JSON column only to serialise it again, parsing
every timestamp into a datetime only to format it again. So the rows read here carry JSON
columns as the text the database holds (the views embed it as is) and timestamps as ISO 8601 UTC
text with a ``Z``, formatted by the database. Fields come in the order the read functions name
them (``*_FIELDS``); views unpack rows by position, which costs a fraction of reading by name.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, CursorResult, DateTime, Executable, Integer, Row, String, Text, cast, func,
)
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement


def read(session: Session, query: Executable) -> CursorResult[Any]:
    """Run a select of columns on the session's connection, as Core: the ORM's per-row work
    (a third of the time of a 10,000-row read) is skipped. What the session holds unwritten is
    flushed first, so that a read right after a change sees it."""
    session.flush()
    return session.connection().execute(query)


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


def read_columns(session: Session, model: Any, names: Sequence[str]) -> list[ColumnElement[Any]]:
    """The columns ``names`` of ``model`` as a view reads them (see the module's docstring)."""
    return list(_columns(model, tuple(names), dialect_of(session)))


@functools.cache
def _columns(model: Any, names: tuple[str, ...], dialect: str) -> tuple[ColumnElement[Any], ...]:
    # Built once per model, field list and dialect: SQL expressions are immutable, and building
    # a dozen of them costs a small read more than running it.
    return tuple(_readable(getattr(model, name), dialect).label(name) for name in names)


def _readable(attribute: InstrumentedAttribute[Any], dialect: str) -> ColumnElement[Any]:
    kind = attribute.type
    if isinstance(kind, JSON):
        return cast(attribute, Text)
    if isinstance(kind, DateTime):
        return iso_text(attribute, dialect)
    return attribute  # type: ignore[return-value]


def iso_text(attribute: InstrumentedAttribute[Any], dialect: str) -> ColumnElement[str]:
    """A timestamp as ``2026-01-02T03:04:05.123456Z`` (UTC, microseconds always shown)."""
    if dialect == "postgresql":
        # timezone('UTC', …) first: timestamptz is otherwise shown in the session's time zone.
        utc = func.timezone("UTC", attribute)
        return func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"', type_=String())
    # SQLite holds them as UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff' (SQLAlchemy's storage format).
    return func.replace(attribute, " ", "T", type_=String()).op("||")("Z")


def epoch_seconds(session: Session, attribute: InstrumentedAttribute[Any]) -> ColumnElement[int]:
    """Whole seconds since 1970 (UTC) of a timestamp column, computed by the database."""
    if dialect_of(session) == "postgresql":
        return cast(func.floor(func.extract("epoch", attribute)), BigInteger)
    # SQLite keeps timestamps as UTC text, which strftime reads; %s truncates like int().
    return cast(func.strftime("%s", attribute), Integer)


def grouped(rows: Iterable[Row[Any]], key: int) -> defaultdict[str, list[Row[Any]]]:
    """Rows of one query over many parents, by parent (field ``key`` is the parent's id)."""
    groups: defaultdict[str, list[Row[Any]]] = defaultdict(list)
    for row in rows:
        groups[row[key]].append(row)
    return groups
