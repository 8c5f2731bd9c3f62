"""Lists a page at a time (SPEC §5): newest first, ``limit`` rows after the row ``after`` names.

The order is (created_at, id) descending: ids are unique, so rows created in the same instant
still have one fixed order, and a page continues strictly after its cursor row (a keyset, not an
offset), so rows added or removed meanwhile never make a page skip or repeat one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Row, Select, select, tuple_
from sqlalchemy.orm import Session

from enginehouse.core.model_names import kept_model_name
from enginehouse.errors import BadRequestError
from enginehouse.services.reads import read

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

T = TypeVar("T")


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    # The id of the last row of the previous page; None for the first page.
    after: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadRequestError(
                f"limit must be from 1 to {MAX_LIMIT} (got {self.limit})",
                code="invalid_limit", param="limit",
            )
        if self.after is not None and not self.after:
            raise BadRequestError("after must name an id", code="invalid_cursor", param="after")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool


def unknown_cursor(noun: str, after: str) -> BadRequestError:
    """An ``after`` that names no row of this list: deleted since, or never there. Answered like
    another organization's id, so it tells nothing about other organizations."""
    return BadRequestError(
        f"after: there is no {noun} {after!r} to continue from (it may have been deleted); "
        "list again from the first page",
        code="invalid_cursor", param="after",
    )


def newest_first(
    session: Session, query: Select[Any], model: Any, org_id: str, page: PageRequest, noun: str
) -> Page[Row[Any]]:
    """One page of ``query`` (which selects from ``model`` and filters the organization).

    ``model`` has ``id``, ``organization_id`` and ``created_at``. The cursor may be any row of
    the organization, also one the query's other filters leave out: its place in the order is
    still defined. One query for the cursor's position, one for the page.
    """
    if page.after is not None:
        position = select(model.created_at, model.id).where(
            model.id == page.after, model.organization_id == org_id
        )
        anchor = read(session, position).first()
        if anchor is None:
            raise unknown_cursor(noun, page.after)
        query = query.where(tuple_(model.created_at, model.id) < tuple_(anchor[0], anchor[1]))
    # One row more than asked tells whether another page follows, without counting.
    query = query.order_by(model.created_at.desc(), model.id.desc()).limit(page.limit + 1)
    rows = read(session, query).all()
    return Page(rows[: page.limit], len(rows) > page.limit)


def of_base_model(column: Any, base_model: str) -> Any:
    """Rows whose ``column`` names ``base_model``: as given, or as the server keeps a new one
    (a path as its absolute path; rows from before that kept paths as given)."""
    return column.in_({base_model, kept_model_name(base_model)})


def of_task_and_base(query: Select[Any], model: Any, task_type: str | None, base_model: str | None) -> Select[Any]:
    """``query`` narrowed to rows of ``task_type`` and ``base_model`` where given (what fits an
    engine: its engines, training jobs and experiments are listed by both)."""
    if task_type:
        query = query.where(model.task_type == task_type)
    if base_model:
        query = query.where(of_base_model(model.base_model, base_model))
    return query
