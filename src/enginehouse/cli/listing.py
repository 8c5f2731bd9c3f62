"""Reading the API's paged lists whole (or their first N items) for the list commands.

The API answers a page at a time (SPEC §5); a person asking for ``engines list`` wants the list,
and a script reading ``--json`` wants one document. So the commands follow ``after`` from page to
page and hand back one list object in the API's own shape, whose ``has_more`` says whether
``--limit`` left anything out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import RenderableType

from enginehouse.cli.client import ApiClient
from enginehouse.cli.output import message, print_json, show

Obj = dict[str, Any]

# Items per request. Engines come with all their deployments inline, so a page of them weighs
# what a hundred times as many deployments do: they are asked for in smaller pages.
PAGE_SIZE = 1000
ENGINE_PAGE_SIZE = 100
ENGINES_PATH = "/v1/engines"


def fetch_list(
    client: ApiClient, path: str, params: dict[str, str] | None = None, limit: int | None = None
) -> Obj:
    """Every item of the list at ``path`` in the API's order, or its first ``limit`` items."""
    page_size = ENGINE_PAGE_SIZE if path == ENGINES_PATH else PAGE_SIZE
    data: list[Obj] = []
    after: Any = None
    has_more = True
    while has_more and (limit is None or len(data) < limit):
        wanted = page_size if limit is None else min(page_size, limit - len(data))
        query = {**(params or {}), "limit": str(wanted)}
        if after is not None:
            query["after"] = str(after)
        page = client.get(path, params=query)
        data.extend(page["data"])
        has_more, after = bool(page.get("has_more")), page.get("last_id")
        if after is None:  # an empty page ends the list, whatever it says
            break
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0].get("id") if data else None,
        "last_id": data[-1].get("id") if data else None,
    }


def print_list(
    answer: Obj, as_json: bool, noun: str, render: Callable[[list[Obj]], RenderableType]
) -> None:
    """``--json``: the list object; else a table, "no <noun>s" or a note when ``--limit`` cut it."""
    if as_json:
        print_json(answer)
        return
    if not answer["data"]:
        message(f"no {noun}s", style="dim")
        return
    show(render(answer["data"]))
    if answer["has_more"]:
        message(f"the newest {len(answer['data'])} {noun}s; there are more (raise --limit, or "
                "leave it out for all)", style="dim")
