"""``?limit=`` and ``?after=`` of every paged list, read the same way everywhere.

Both are taken as text and checked here rather than by FastAPI's validation, so that a bad value
is a 400 naming the parameter, like every other bad query, not a 422 (which the API keeps for
request bodies).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from enginehouse.errors import BadRequestError
from enginehouse.services.pages import DEFAULT_LIMIT, MAX_LIMIT, PageRequest


async def page_request(
    limit: Annotated[
        str | None, Query(description=f"Rows per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).")
    ] = None,
    after: Annotated[
        str | None, Query(description="The last id of the previous page (its last_id).")
    ] = None,
) -> PageRequest:
    return PageRequest(_limit(limit), after)


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    # Four digits at most: 1000 is the ceiling, and int() of a huge string is itself an error.
    if text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= MAX_LIMIT:
        return int(text)
    raise BadRequestError(
        f"limit must be a whole number from 1 to {MAX_LIMIT} (got {text[:20]!r})",
        code="invalid_limit", param="limit",
    )


# async, though it awaits nothing: FastAPI runs a plain def dependency in a worker thread, and a
# thread hop costs more than parsing two query parameters.
PageDep = Annotated[PageRequest, Depends(page_request)]
