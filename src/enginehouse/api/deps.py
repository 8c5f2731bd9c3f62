"""Request dependencies: the database session and the caller's organization."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from enginehouse.core import options
from enginehouse.core.options import OptionOffer
from enginehouse.db.session import Database
from enginehouse.gateway.cache import TTLCache
from enginehouse.services import orgs


def get_database(request: Request) -> Database:
    return request.app.state.database


def db_session(request: Request) -> Iterator[Session]:
    with get_database(request).session() as session:
        yield session


def api_key_from(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def current_org(request: Request) -> str:
    """The organization id of the caller's key (401 otherwise).

    A key seen in the last ``KEY_TTL_S`` seconds is answered from memory, so a stream of calls
    costs no database round trip; a revoked key stops working within that time. The lookup has
    its own short session, so that a 401 never opens a write transaction.
    """
    key = api_key_from(request)
    keys: TTLCache[str, str] = request.app.state.key_cache
    if key is not None and (org_id := keys.get(key)) is not None:
        return org_id
    org_id = await asyncio.to_thread(_authenticate, get_database(request), key)
    if key is not None:
        keys.put(key, org_id)
    return org_id


def _authenticate(database: Database, key: str | None) -> str:
    with database.session() as session:
        return orgs.authenticate(session, key)


# "function" scope: commit before the response is sent, so a client never reads stale state and a
# failed commit becomes the answer.
# How long an authenticated key is trusted without asking the database again.
KEY_TTL_S = 2.0

def replica_ceiling(request: Request) -> int:
    """The most replicas this server lets one engine run (ENGINEHOUSE_MAX_REPLICAS_PER_ENGINE)."""
    return int(request.app.state.settings.max_replicas_per_engine)


def option_offers(request: Request) -> list[OptionOffer]:
    """Every deployment option, marked available when this server's provider can give it."""
    return options.listing(request.app.state.provider.deployment_options())


SessionDep = Annotated[Session, Depends(db_session, scope="function")]
OrgDep = Annotated[str, Depends(current_org)]
ReplicaCeilingDep = Annotated[int, Depends(replica_ceiling)]
OffersDep = Annotated[list[OptionOffer], Depends(option_offers)]
