"""Request dependencies: the database session and the caller's organization."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from enginehouse.db.session import Database
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


def current_org(request: Request) -> str:
    """The organization id of the caller's key (401 otherwise). Its own short session, so that
    a 401 never opens a write transaction."""
    with get_database(request).session() as session:
        return orgs.authenticate(session, api_key_from(request))


# "function" scope: commit before the response is sent, so a client never reads stale state and a
# failed commit becomes the answer.
SessionDep = Annotated[Session, Depends(db_session, scope="function")]
OrgDep = Annotated[str, Depends(current_org)]
