"""``?tail=`` of every log the API answers (a training job's, a replica's), read one way.

Taken as text and checked here, as ``?limit=`` is (``api/paging.py``): a bad value is a 400
naming it, never a 422 or, for a number too long for ``int()``, a 500.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from enginehouse.errors import BadRequestError

MAX_LOG_LINES = 10000
DEFAULT_LOG_LINES = 1000


async def log_tail(
    tail: Annotated[str | None, Query(description=f"The last lines to answer, 1 to {MAX_LOG_LINES} "
                                                  f"(default {DEFAULT_LOG_LINES}).")] = None,
) -> int:
    if tail is None:
        return DEFAULT_LOG_LINES
    text = tail.strip()
    if text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= MAX_LOG_LINES:
        return int(text)
    raise BadRequestError(f"tail must be a whole number from 1 to {MAX_LOG_LINES} (got {tail[:20]!r})",
                          code="invalid_tail", param="tail")


# async for the reason PageDep is: no worker-thread hop to read one query parameter.
TailDep = Annotated[int, Depends(log_tail)]
